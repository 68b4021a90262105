package testfleet

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"lxcfleet/internal/npmregistry"
)

// Origin is a real bare git repository holding the fixture app, standing in
// for the app's upstream. Tests push new builds to it with the git binary.
type Origin struct {
	// URL is what a mirror fetches from (a path of a bare repository).
	URL  string
	work string
	t    testing.TB
}

// NewOrigin makes a bare origin with one commit: the fixture app ("build
// A"). It needs git (installed by scripts/setup-host). Builds of it
// install from the test registry (npmregistry.Use).
func NewOrigin(t testing.TB) *Origin {
	t.Helper()
	npmregistry.MustUse(t)
	if _, err := exec.LookPath("git"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and git is missing: run scripts/setup-host")
		}
		t.Skip("git not found")
	}
	dir := t.TempDir()
	o := &Origin{URL: filepath.Join(dir, "origin.git"), work: filepath.Join(dir, "work"), t: t}
	o.git(dir, "init", "--quiet", "--bare", "--initial-branch=main", o.URL)
	o.git(dir, "init", "--quiet", "--initial-branch=main", o.work)
	if err := CopyApp(o.work); err != nil {
		t.Fatalf("copying the fixture app: %v", err)
	}
	o.git(o.work, "remote", "add", "origin", o.URL)
	o.commit("build A: the fixture app")
	return o
}

// git runs a git command in dir with a fixed identity.
func (o *Origin) git(dir string, args ...string) string {
	o.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=lxcfleet test", "GIT_AUTHOR_EMAIL=test@localhost",
		"GIT_COMMITTER_NAME=lxcfleet test", "GIT_COMMITTER_EMAIL=test@localhost",
		"GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		o.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit commits everything in the work tree and pushes main.
func (o *Origin) commit(msg string) string {
	o.t.Helper()
	o.git(o.work, "add", "-A")
	o.git(o.work, "commit", "--quiet", "--allow-empty", "-m", msg)
	o.git(o.work, "push", "--quiet", "origin", "HEAD:main")
	return o.git(o.work, "rev-parse", "HEAD")
}

// Write changes files of the app (path relative to the app root) and
// commits them as one new build; it returns the commit.
func (o *Origin) Write(msg string, files map[string]string) string {
	o.t.Helper()
	for name, body := range files {
		p := filepath.Join(o.work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			o.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			o.t.Fatal(err)
		}
	}
	return o.commit(msg)
}

// AppChange commits an app-only change (the lockfile stays the same).
func (o *Origin) AppChange(msg string) string {
	o.t.Helper()
	src := o.read("server.js")
	return o.Write(msg, map[string]string{"server.js": src + "\n// " + msg + "\n"})
}

// Broken commits a build whose app exits at start.
func (o *Origin) Broken(msg string) string {
	o.t.Helper()
	src := o.read("server.js")
	return o.Write(msg, map[string]string{"server.js": "'use strict';\nconsole.error('broken build');\nprocess.exit(4);\n" + src})
}

// Tag tags the head commit and pushes the tag.
func (o *Origin) Tag(name string) {
	o.t.Helper()
	o.git(o.work, "tag", name)
	o.git(o.work, "push", "--quiet", "origin", name)
}

// Head is the commit main points to.
func (o *Origin) Head() string { return o.git(o.work, "rev-parse", "HEAD") }

// Count is `git rev-list --count HEAD`: the build number of the head.
func (o *Origin) Count() string { return o.git(o.work, "rev-list", "--count", "HEAD") }

func (o *Origin) read(name string) string {
	o.t.Helper()
	b, err := os.ReadFile(filepath.Join(o.work, name))
	if err != nil {
		o.t.Fatal(err)
	}
	return string(b)
}
