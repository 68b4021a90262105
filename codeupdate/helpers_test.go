package codeupdate_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lxcfleet/codeupdate"
)

// lockHelperEnv makes the test binary a lock holder (see TestMain).
const lockHelperEnv = "CODEUPDATE_TEST_LOCK_ROOT"

func TestMain(m *testing.M) {
	if root := os.Getenv(lockHelperEnv); root != "" {
		os.Exit(lockHelper(root))
	}
	os.Exit(m.Run())
}

// lockHelper takes the lock under root; it prints "locked" and holds it
// until stdin closes, or prints the error and exits 3.
func lockHelper(root string) int {
	m, err := codeupdate.New(codeupdate.Options{Root: root, Origin: "unused"})
	if err != nil {
		fmt.Println("error:", err)
		return 2
	}
	unlock, err := m.Lock()
	if err != nil {
		fmt.Println("error:", err)
		return 3
	}
	fmt.Println("locked")
	_, _ = bytes.NewBuffer(nil).ReadFrom(os.Stdin)
	_ = unlock()
	return 0
}

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newManager returns a Manager over root (a new temp folder if "") and the
// log it writes.
func newManager(t *testing.T, root, origin string, npmTimeout time.Duration) (*codeupdate.Manager, *logBuffer) {
	t.Helper()
	if root == "" {
		root = t.TempDir()
	}
	logs := &logBuffer{}
	m, err := codeupdate.New(codeupdate.Options{
		Root:       root,
		Origin:     origin,
		NpmTimeout: npmTimeout,
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m, logs
}

// steps records progress steps.
type steps struct {
	mu   sync.Mutex
	list []string
}

func (s *steps) add(step string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, step)
}

func (s *steps) has(prefix string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.list {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// git runs git in dir with a fixed identity and returns its trimmed output.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=lxcfleet test", "GIT_AUTHOR_EMAIL=test@localhost",
		"GIT_COMMITTER_NAME=lxcfleet test", "GIT_COMMITTER_EMAIL=test@localhost",
		"GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// pushBranch clones origin, lets change edit the work tree on a new branch
// made from main, commits and pushes it; it returns the commit.
func pushBranch(t *testing.T, origin, branch string, change func(dir string)) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "work")
	git(t, filepath.Dir(dir), "clone", "--quiet", origin, dir)
	git(t, dir, "checkout", "--quiet", "-b", branch)
	change(dir)
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "--quiet", "--allow-empty", "-m", "branch "+branch)
	git(t, dir, "push", "--quiet", "origin", branch)
	return git(t, dir, "rev-parse", "HEAD")
}

func writeFile(t *testing.T, path, body string, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

// snapshot is what a failed operation must leave unchanged.
type snapshot struct {
	current  string
	releases string
	build    string
}

func takeSnapshot(t *testing.T, root string) snapshot {
	t.Helper()
	cur, _ := os.Readlink(filepath.Join(root, "current"))
	build, _ := os.ReadFile(filepath.Join(root, "BUILD"))
	entries, err := os.ReadDir(filepath.Join(root, "releases"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".failed-") {
			continue // kept npm logs of failed builds
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return snapshot{current: cur, releases: strings.Join(names, " "), build: string(build)}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

func names(rs []codeupdate.Release) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}
