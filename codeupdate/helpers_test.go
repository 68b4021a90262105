package codeupdate_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
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
	"lxcfleet/internal/npmregistry"
)

// lockHelperEnv makes the test binary a lock holder (see TestMain).
const lockHelperEnv = "CODEUPDATE_TEST_LOCK_ROOT"

// npmCache is the npm cache the package's tests share (one download of
// each package per run).
var npmCache string

func TestMain(m *testing.M) {
	if root := os.Getenv(lockHelperEnv); root != "" {
		os.Exit(lockHelper(root))
	}
	if root := os.Getenv(buildHelperEnv); root != "" {
		os.Exit(buildHelper(root))
	}
	dir, err := os.MkdirTemp("", "codeupdate-npm-cache-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	npmCache = dir
	if _, err := npmregistry.Use(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	npmregistry.Done()
	os.RemoveAll(dir)
	os.Exit(code)
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
	return newManagerOpts(t, codeupdate.Options{Root: root, Origin: origin, NpmTimeout: npmTimeout})
}

// newManagerOpts is newManager with more options; Root "" is a new temp
// folder, NpmCache "" the package's shared test cache.
func newManagerOpts(t *testing.T, opts codeupdate.Options) (*codeupdate.Manager, *logBuffer) {
	t.Helper()
	if opts.Root == "" {
		opts.Root = t.TempDir()
	}
	if opts.NpmCache == "" {
		opts.NpmCache = npmCache
	}
	logs := &logBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := codeupdate.New(opts)
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

// requireNpm skips (or fails under CI=true) a test that needs node and npm
// with the npm registry.
func requireNpm(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"node", "npm", "git"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI=true and %s is missing: run scripts/setup-host", bin)
			}
			t.Skipf("%s not found", bin)
		}
	}
}

// requireRoot skips (or fails under CI=true) a test that needs root.
func requireRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and not root: %s needs root", why)
		}
		t.Skipf("not root: %s needs root", why)
	}
}

// testOrigin is a bare git origin made by the test from testdata files,
// with a work tree to commit from.
type testOrigin struct {
	t    *testing.T
	url  string
	work string
}

// newTestOrigin makes a bare origin whose first commit on main holds files
// (path -> content; a value starting with "@" names a file under
// testdata to copy).
func newTestOrigin(t *testing.T, files map[string]string) *testOrigin {
	t.Helper()
	dir := t.TempDir()
	o := &testOrigin{t: t, url: filepath.Join(dir, "origin.git"), work: filepath.Join(dir, "work")}
	git(t, dir, "init", "--quiet", "--bare", "--initial-branch=main", o.url)
	git(t, dir, "init", "--quiet", "--initial-branch=main", o.work)
	git(t, o.work, "remote", "add", "origin", o.url)
	o.commit("first", files)
	return o
}

// commit writes files (see newTestOrigin; "" removes the file), commits
// and pushes the current branch; it returns the commit.
func (o *testOrigin) commit(msg string, files map[string]string) string {
	o.t.Helper()
	for name, body := range files {
		p := filepath.Join(o.work, name)
		if body == "" {
			os.Remove(p)
			continue
		}
		if strings.HasPrefix(body, "@") {
			b, err := os.ReadFile(filepath.Join("testdata", body[1:]))
			if err != nil {
				o.t.Fatal(err)
			}
			body = string(b)
		}
		writeFile(o.t, p, body, 0o644)
	}
	git(o.t, o.work, "add", "-A")
	git(o.t, o.work, "commit", "--quiet", "--allow-empty", "-m", msg)
	git(o.t, o.work, "push", "--quiet", "--force", "origin", "HEAD")
	return git(o.t, o.work, "rev-parse", "HEAD")
}

// appFiles is the testdata app: is-number 7.0.0 with its lockfile and a
// root postinstall (gen.js) that writes generated.txt and patches
// node_modules/is-number/index.js.
func appFiles() map[string]string {
	return map[string]string{
		"package.json":      "@app/package.json",
		"package-lock.json": "@app/package-lock.json",
		"gen.js":            "@app/gen.js",
		"gen-input.txt":     "@app/gen-input.txt",
		".gitignore":        "@app/.gitignore",
		"server.js":         "@app/server.js",
	}
}

// treeSums returns the sha256 of every regular file under dir (relative
// path -> hex), symlinks as "-> target".
func treeSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out[rel] = "-> " + l
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			out[rel] = hex.EncodeToString(h[:])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
