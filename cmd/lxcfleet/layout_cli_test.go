package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
)

// layoutDirs makes an empty layout root, a config template folder and a
// private lxcpath.
func layoutDirs(t *testing.T) (root, templates, lxcpath string) {
	t.Helper()
	dir := t.TempDir()
	root, templates, lxcpath = filepath.Join(dir, "root"), filepath.Join(dir, "templates"), filepath.Join(dir, "lxc")
	for _, d := range []string{root, templates, lxcpath} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(templates, "app.json"), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, templates, lxcpath
}

// emptyDir fails the test when dir holds anything (a missing dir is empty).
func emptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("%s: got %q, want nothing half-written", dir, names)
	}
}

func TestLayoutCLIBadInput(t *testing.T) {
	root, templates, lxcpath := layoutDirs(t)
	l := []string{"--lxcpath", lxcpath, "--root", root, "--templates", templates}
	prov := append([]string{"provision", "--template", "busybox"}, l...)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"provision without names", prov, "at least one NAME"},
		{"invalid name", append(prov, "ok-1", "../etc"), "invalid container name"},
		{"traversal", append(prov, "a/../../b"), "invalid container name"},
		{"dot dot", append(prov, ".."), "invalid container name"},
		{"space", append(prov, "a b"), "invalid container name"},
		{"missing root", []string{"provision", "--lxcpath", lxcpath, "--root", "/nonexistent/lxcfleet-root", "--template", "busybox", "x1"}, "/nonexistent/lxcfleet-root does not exist"},
		{"relative root", []string{"provision", "--lxcpath", lxcpath, "--root", "rel/root", "--template", "busybox", "x1"}, "absolute"},
		{"missing templates", []string{"provision", "--lxcpath", lxcpath, "--root", root, "--templates", "/nonexistent/tmpl", "--template", "busybox", "x1"}, "/nonexistent/tmpl does not exist"},
		{"bad network", append(prov, "--network", "bridge", "x1"), "network"},
		{"missing node", append(prov, "--node", "/nonexistent/node", "x1"), "node"},
		{"bad idmap", append(prov, "--network", "empty", "--idmap", "u 0 x 65536", "x1"), "idmap"},
		{"idmap without gid map", append(prov, "--network", "empty", "--idmap", "u 0 100000 65536", "x1"), "idmap"},
		{"missing lxcpath", []string{"provision", "--lxcpath", "/nonexistent/lxc", "--root", root, "--template", "busybox", "x1"}, "/nonexistent/lxc"},
		{"adopt without names", append([]string{"adopt"}, l...), "--all"},
		{"adopt names and all", append([]string{"adopt", "--all", "x1"}, l...), "not both"},
		{"adopt all of nothing", append([]string{"adopt", "--all"}, l...), "no containers"},
		{"adopt unknown", append([]string{"adopt", "ghost-1"}, l...), "ghost-1"},
		{"adopt traversal", append([]string{"adopt", "../../etc"}, l...), "invalid container name"},
		{"check unknown", append([]string{"check", "ghost-2"}, l...), "ghost-2"},
		{"check invalid", append([]string{"check", "x/y"}, l...), "invalid container name"},
		{"check missing root", []string{"check", "--lxcpath", lxcpath, "--root", "/nonexistent/r"}, "does not exist"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := runCLI(t, tc.args...)
			if code != 2 {
				t.Errorf("exit code: got %d, want 2 (stdout %q stderr %q)", code, out, stderr)
			}
			if !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "panic") {
				t.Errorf("stderr %q: want a clear message containing %q", stderr, tc.want)
			}
		})
	}
	emptyDir(t, root)
	emptyDir(t, lxcpath)
}

// statusLine is what the test reads of `status --json`.
type statusLine struct {
	Name           string `json:"name"`
	State          string `json:"state"`
	Release        string `json:"release"`
	ReleaseDeleted bool   `json:"release_deleted"`
}

func statusJSON(t *testing.T, args ...string) map[string]statusLine {
	t.Helper()
	out, stderr, code := runCLI(t, append([]string{"status", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("status --json: exit %d: %s", code, stderr)
	}
	var st struct {
		Containers []statusLine `json:"containers"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	m := map[string]statusLine{}
	for _, c := range st.Containers {
		m[c.Name] = c
	}
	return m
}

func TestLayoutCLIProvisionStatusCheckAdopt(t *testing.T) {
	testfleet.RequireLXC(t)
	testfleet.RequireNode(t)
	root, templates, lxcpath := layoutDirs(t)
	app := testfleet.App(t)
	for _, r := range []string{"r1", "r2"} {
		dir := filepath.Join(root, "releases", r)
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", "-a", app, dir).CombinedOutput(); err != nil {
			t.Fatalf("cp -a: %v %s", err, out)
		}
		if err := os.WriteFile(filepath.Join(dir, "BUILD.json"), []byte(`{"build":"`+r+`"}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("releases/r1", filepath.Join(root, "current")); err != nil {
		t.Fatal(err)
	}
	node := testfleet.NodeBinary(t)
	h, err := lxcctl.NewHost(lxcctl.Options{LXCPath: lxcpath})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	prefix := "lxlc" + hex.EncodeToString(b) + "-"
	var names []string
	for i := range 4 {
		names = append(names, fmt.Sprintf("%s%d", prefix, i))
	}
	for _, name := range append(names, prefix+"bad") {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := h.Stop(ctx, name, 2*time.Second); err != nil && !errors.Is(err, lxcctl.ErrNotFound) {
				t.Logf("cleanup: stopping %s: %v", name, err)
			}
			if err := h.Destroy(ctx, name); err != nil {
				t.Errorf("cleanup: destroying %s: %v", name, err)
			}
		})
	}
	l := []string{"--lxcpath", lxcpath, "--root", root}
	provision := append([]string{"provision", "--templates", templates, "--template", "busybox", "--node", node,
		"--init", "/usr/bin/node /opt/app/server.js", "--port-base", strconv.Itoa(testfleet.PortRange(t, 4))}, l...)

	// A provision that fails leaves nothing behind, and exits 1.
	out, stderr, code := runCLI(t, append(provision[:len(provision):len(provision)], "--template", "lxcfleet-no-such-template", prefix+"bad")...)
	if code != 1 || !strings.Contains(out, "FAILED "+prefix+"bad") {
		t.Errorf("failed provision: exit %d, stdout %q stderr %q; want 1 and FAILED", code, out, stderr)
	}
	emptyDir(t, filepath.Join(root, "lockers"))
	emptyDir(t, lxcpath)

	out, stderr, code = runCLI(t, append(append(provision, "--json"), names...)...)
	if code != 0 {
		t.Fatalf("provision: exit %d\n%s%s", code, out, stderr)
	}
	var pr struct {
		Lockers []struct{ Name, Outcome string }
	}
	if err := json.Unmarshal([]byte(out), &pr); err != nil || len(pr.Lockers) != 4 {
		t.Fatalf("provision --json: %v\n%s", err, out)
	}
	for _, r := range pr.Lockers {
		if r.Outcome != "provisioned" {
			t.Errorf("%s: outcome %s, want provisioned", r.Name, r.Outcome)
		}
	}
	health := "http://127.0.0.1:{port}/healthz"
	if out, stderr, code := runCLI(t, "start-all", "--lxcpath", lxcpath, "--health", health, "-t", "20s"); code != 0 {
		t.Fatalf("start-all: exit %d\n%s%s", code, out, stderr)
	}
	for _, n := range names {
		if st := statusJSON(t, l...)[n]; st.State != "RUNNING" || st.Release != "r1" {
			t.Errorf("status %s: got %+v, want RUNNING on r1", n, st)
		}
	}

	// Flip current; restart two lockers: status tells which run what.
	tmp := filepath.Join(root, "current.new")
	if err := os.Symlink("releases/r2", tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(root, "current")); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := runCLI(t, "stop-all", "--lxcpath", lxcpath, names[0], names[1]); code != 0 {
		t.Fatalf("stop-all: exit %d\n%s%s", code, out, stderr)
	}
	if out, stderr, code := runCLI(t, "start-all", "--lxcpath", lxcpath, "--health", health, "-t", "20s", names[0], names[1]); code != 0 {
		t.Fatalf("start-all: exit %d\n%s%s", code, out, stderr)
	}
	out, _, code = runCLI(t, append([]string{"status"}, l...)...)
	if code != 0 {
		t.Fatalf("status: exit %d", code)
	}
	for i, n := range names {
		want := "r1"
		if i < 2 {
			want = "r2"
		}
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(n) + `\s+RUNNING\s.*\s` + want + `$`).MatchString(out) {
			t.Errorf("status: want %s RUNNING on %s:\n%s", n, want, out)
		}
	}
	if !strings.Contains(out, "r1: 2, r2: 2") {
		t.Errorf("status: want the release counts r1: 2, r2: 2:\n%s", out)
	}

	// check: all fine, then one deviation named with its reason.
	if out, stderr, code := runCLI(t, append([]string{"check", "--templates", templates}, l...)...); code != 0 || !strings.Contains(out, "4 lockers checked") {
		t.Fatalf("check: exit %d\n%s%s", code, out, stderr)
	}
	if _, err := h.EditConfig(names[3], func(old []byte) ([]byte, error) {
		return []byte(strings.Replace(string(old), "/current opt/app none bind,ro,", "/current opt/app none bind,", 1)), nil
	}); err != nil {
		t.Fatal(err)
	}
	out, _, code = runCLI(t, append([]string{"check"}, l...)...)
	if code != 1 || !strings.Contains(out, "DEVIATES "+names[3]) || !strings.Contains(out, "/opt/app is mounted read-write (rw), want read-only (ro)") || strings.Contains(out, "DEVIATES "+names[2]) {
		t.Errorf("check after an edit: exit %d, want 1 naming only %s and why:\n%s", code, names[3], out)
	}

	// adopt repairs it (backing up the config), then changes nothing.
	out, stderr, code = runCLI(t, append([]string{"adopt", "--templates", templates, names[3]}, l...)...)
	if code != 0 || !strings.Contains(out, "adopted "+names[3]) || !strings.Contains(out, "config.lxcfleet-backup-") || !strings.Contains(out, "restarts") {
		t.Errorf("first adopt: exit %d\n%s%s", code, out, stderr)
	}
	out, stderr, code = runCLI(t, append([]string{"adopt", "--templates", templates, "--all"}, l...)...)
	if code != 0 || !strings.Contains(out, "4 lockers: 4 unchanged") {
		t.Errorf("second adopt: exit %d, want 4 unchanged\n%s%s", code, out, stderr)
	}

	// Deleting a release under running lockers shows as //deleted and
	// is a deviation.
	if err := os.RemoveAll(filepath.Join(root, "releases", "r1")); err != nil {
		t.Fatal(err)
	}
	out, _, _ = runCLI(t, append([]string{"status"}, l...)...)
	if !strings.Contains(out, "r1//deleted") {
		t.Errorf("status after deleting r1: want r1//deleted:\n%s", out)
	}
	if out, _, code := runCLI(t, append([]string{"check"}, l...)...); code != 1 || !strings.Contains(out, "whose folder was deleted") {
		t.Errorf("check after deleting r1: exit %d, want 1 naming the deleted release:\n%s", code, out)
	}
}
