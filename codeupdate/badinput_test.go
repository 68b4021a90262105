package codeupdate_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lxcfleet/codeupdate"
	"lxcfleet/internal/testfleet"
)

// TestBadInput builds and switches one good release, then feeds the
// manager each kind of bad input and checks the error and that nothing
// changed: current, BUILD and the set of releases are as before, and no
// staging folder is left.
func TestBadInput(t *testing.T) {
	testfleet.RequireNode(t)
	origin := testfleet.NewOrigin(t)
	m, _ := newManager(t, "", origin.URL, 0)
	root := m.Root()
	ctx := context.Background()
	good, err := m.Build(ctx, "main", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Switch(ctx, good, "setup"); err != nil {
		t.Fatal(err)
	}

	lock, err := os.ReadFile(filepath.Join(testfleet.AppSource(), "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	pushBranch(t, origin.URL, "nopkg", func(dir string) {
		os.Remove(filepath.Join(dir, "package.json"))
		os.Remove(filepath.Join(dir, "package-lock.json"))
	})
	pushBranch(t, origin.URL, "outofsync", func(dir string) {
		// package.json asks for ms 2.1.2, the (changed, so not reusable)
		// lockfile pins 2.1.3: npm ci refuses before touching the network.
		writeFile(t, filepath.Join(dir, "package.json"), `{"name":"lxcfleet-test-locker","version":"1.0.0","private":true,"dependencies":{"ms":"2.1.2"}}`+"\n", 0o644)
		writeFile(t, filepath.Join(dir, "package-lock.json"), string(lock)+"\n\n\n", 0o644)
	})
	pushBranch(t, origin.URL, "slow", func(dir string) {
		writeFile(t, filepath.Join(dir, "package-lock.json"), string(lock)+"\n", 0o644)
	})
	hex := "0123abcd0123abcd0123abcd0123abcd0123abcd"
	// A submodule (a gitlink entry) and a Git LFS pointer: things the
	// checkout cannot reproduce.
	sub := filepath.Join(t.TempDir(), "sub")
	git(t, filepath.Dir(sub), "clone", "--quiet", origin.URL, sub)
	git(t, sub, "checkout", "--quiet", "-b", "submodule")
	git(t, sub, "update-index", "--add", "--cacheinfo", "160000,"+origin.Head()+",vendor/lib")
	git(t, sub, "commit", "--quiet", "-m", "a submodule")
	git(t, sub, "push", "--quiet", "origin", "submodule")
	pushBranch(t, origin.URL, "lfs", func(dir string) {
		writeFile(t, filepath.Join(dir, ".gitattributes"), "*.bin filter=lfs diff=lfs merge=lfs -text\n", 0o644)
		writeFile(t, filepath.Join(dir, "model.bin"), "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n", 0o644)
	})

	for _, c := range []struct {
		name    string
		origin  string // default: the test origin
		timeout time.Duration
		target  string
		check   bool   // also CheckUpdate(target)
		want    string // in the error
		is      error
	}{
		{name: "unreachable origin path", origin: "/nonexistent/app.git", target: "main", check: true, want: "fetching /nonexistent/app.git: origin unreachable"},
		{name: "unreachable origin url", origin: "http://127.0.0.1:1/app.git", target: "main", check: true, want: "origin unreachable"},
		{name: "unknown branch", target: "nope", check: true, want: `unknown target "nope": not a branch, tag or commit of ` + origin.URL, is: codeupdate.ErrUnknownTarget},
		{name: "unknown commit", target: hex, check: true, want: `unknown target "` + hex + `"`, is: codeupdate.ErrUnknownTarget},
		{name: "unknown short commit", target: "deadbee", want: `unknown target "deadbee"`, is: codeupdate.ErrUnknownTarget},
		{name: "empty target", target: "", want: "empty target", is: codeupdate.ErrUnknownTarget},
		{name: "no package.json", target: "nopkg", want: "release has no package.json"},
		{name: "submodule", target: "submodule", want: "vendor/lib is a git submodule", is: codeupdate.ErrIncomplete},
		{name: "git lfs pointer", target: "lfs", want: "writing model.bin: commit cannot be checked out whole: it is a Git LFS pointer", is: codeupdate.ErrIncomplete},
		{name: "package.json and lockfile disagree", target: "outofsync", want: "`npm ci` can only install packages when your package.json and package-lock.json", is: codeupdate.ErrLockMismatch},
		{name: "npm times out", timeout: 50 * time.Millisecond, target: "slow", want: `timed out after 50ms`},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := origin.URL
			if c.origin != "" {
				o = c.origin
			}
			mm, _ := newManager(t, root, o, c.timeout)
			before := takeSnapshot(t, root)
			_, err := mm.Build(ctx, c.target, nil)
			t.Logf("Build(%q): %v", c.target, err)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Build(%q): got %v, want an error with %q", c.target, err, c.want)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("Build(%q): got %v, want errors.Is %v", c.target, err, c.is)
			}
			if c.check {
				_, err := mm.CheckUpdate(ctx, c.target)
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Errorf("CheckUpdate(%q): got %v, want an error with %q", c.target, err, c.want)
				}
			}
			if after := takeSnapshot(t, root); after != before {
				t.Errorf("after a failed build: got %+v, want %+v", after, before)
			}
			if cur, err := mm.Current(); err != nil || cur.Name != good.Name {
				t.Errorf("Current: got %q, %v, want %s", cur.Name, err, good.Name)
			}
		})
	}

	t.Run("failed npm log is kept", func(t *testing.T) {
		logs, _ := filepath.Glob(filepath.Join(root, "releases", ".failed-*.npm.log"))
		if len(logs) == 0 {
			t.Fatalf("failed npm logs: got none, want one")
		}
		var all string
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			all += string(b)
		}
		if !strings.Contains(all, "npm ci --dry-run") || !strings.Contains(all, "EUSAGE") {
			t.Errorf("failed npm logs: got %q, want the npm ci output", all)
		}
	})

	t.Run("checkout keeps exec bits, symlinks and folders", func(t *testing.T) {
		pushBranch(t, origin.URL, "modes", func(dir string) {
			writeFile(t, filepath.Join(dir, "bin", "run.sh"), "#!/bin/sh\necho run\n", 0o755)
			writeFile(t, filepath.Join(dir, "lib", "a", "b.txt"), "deep\n", 0o644)
			if err := os.Symlink("server.js", filepath.Join(dir, "main.js")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("../lib/a", filepath.Join(dir, "bin", "a")); err != nil {
				t.Fatal(err)
			}
		})
		rel, err := m.Build(ctx, "modes", nil)
		if err != nil {
			t.Fatal(err)
		}
		if rel.Npm != "reused" || rel.Ref != "modes" {
			t.Errorf("Build(modes): got npm %q ref %q, want reused, modes", rel.Npm, rel.Ref)
		}
		for _, c := range []struct {
			path string
			mode os.FileMode
			link string
		}{
			{"bin/run.sh", 0o755, ""},
			{"server.js", 0o644, ""},
			{"lib/a/b.txt", 0o644, ""},
			{"lib", os.ModeDir | 0o755, ""},
			{"main.js", os.ModeSymlink, "server.js"},
			{"bin/a", os.ModeSymlink, "../lib/a"},
		} {
			p := filepath.Join(rel.Path, c.path)
			fi, err := os.Lstat(p)
			if err != nil {
				t.Errorf("%s: %v", c.path, err)
				continue
			}
			got := fi.Mode()
			if c.mode == os.ModeSymlink {
				got = fi.Mode().Type()
			}
			if got != c.mode {
				t.Errorf("%s mode: got %v, want %v", c.path, got, c.mode)
			}
			if c.link != "" {
				if l, _ := os.Readlink(p); l != c.link {
					t.Errorf("%s target: got %q, want %q", c.path, l, c.link)
				}
			}
		}
		if fi, err := os.Stat(rel.Path); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("release folder: got %v %v, want mode 0755", fi.Mode(), err)
		}
		if cur, _ := m.Current(); cur.Name != good.Name {
			t.Errorf("Current after a build: got %s, want %s (Build never switches)", cur.Name, good.Name)
		}
	})

	t.Run("npm modes without a lockfile", func(t *testing.T) {
		for _, c := range []struct {
			branch  string
			pkg     string
			wantNpm string
			step    string
			modules bool
		}{
			{"nodeps", `{"name":"lxcfleet-test-locker","version":"1.0.0","private":true}`, "none", "no dependencies", false},
			{"nolock", `{"name":"lxcfleet-test-locker","version":"1.0.0","private":true,"dependencies":{"ms":"2.1.3"}}`, "ran", "npm install", true},
		} {
			t.Run(c.branch, func(t *testing.T) {
				pushBranch(t, origin.URL, c.branch, func(dir string) {
					writeFile(t, filepath.Join(dir, "package.json"), c.pkg+"\n", 0o644)
					os.Remove(filepath.Join(dir, "package-lock.json"))
				})
				var st steps
				rel, err := m.Build(ctx, c.branch, st.add)
				if err != nil {
					t.Fatal(err)
				}
				if rel.Npm != c.wantNpm || !st.has(c.step) || rel.LockHash != "" {
					t.Errorf("Build(%s): got npm %q lock %q (steps %q), want %q after %q, no lock hash", c.branch, rel.Npm, rel.LockHash, st.list, c.wantNpm, c.step)
				}
				_, err = os.Stat(filepath.Join(rel.Path, "node_modules", "ms", "index.js"))
				if got := err == nil; got != c.modules {
					t.Errorf("node_modules/ms present: got %v, want %v", got, c.modules)
				}
			})
		}
	})
}
