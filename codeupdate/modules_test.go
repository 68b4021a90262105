package codeupdate_test

import (
	"context"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lxcfleet/codeupdate"
)

// TestModules builds the testdata app (is-number from the npm registry, a
// root postinstall that generates a file and patches a dependency in
// place) through the cases where reusing node_modules used to be wrong:
// an app-only change (node_modules reused, the postinstall still runs, the
// old release untouched), package.json changed without its lockfile (the
// build fails with npm's message, CheckUpdate says so), an .npmrc change
// (npm runs), a one-dependency lockfile change (an incremental install
// over an independent copy: the old release's files stay byte for byte),
// and a project without a lockfile whose package.json did not change
// (reused).
func TestModules(t *testing.T) {
	t.Parallel()
	requireNpm(t)
	o := newTestOrigin(t, appFiles())
	m, _ := newManager(t, "", o.url, 2*time.Minute)
	root := m.Root()
	ctx := context.Background()
	read := func(t *testing.T, rel codeupdate.Release, name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(rel.Path, name))
		if err != nil {
			t.Fatalf("release %s: %v", rel.Name, err)
		}
		return string(b)
	}
	build := func(t *testing.T, target string) (codeupdate.Release, time.Duration) {
		t.Helper()
		begin := time.Now()
		rel, err := m.Build(ctx, target, nil)
		if err != nil {
			t.Fatalf("Build(%s): %v", target, err)
		}
		return rel, time.Since(begin)
	}

	relA, tookA := build(t, "main")
	if relA.Npm != "ran" || read(t, relA, "generated.txt") != "generated from input 1\n" {
		t.Fatalf("first build: got npm %q, generated %q, want ran and generated from input 1", relA.Npm, read(t, relA, "generated.txt"))
	}
	if _, err := m.Switch(ctx, relA, "first"); err != nil {
		t.Fatal(err)
	}
	t.Logf("first build (npm ci, cache warm after the first run): %v", tookA)

	var relB codeupdate.Release
	t.Run("app-only change reuses node_modules and runs the postinstall", func(t *testing.T) {
		before := treeSums(t, relA.Path)
		o.commit("app change", map[string]string{"gen-input.txt": "input 2\n"})
		rel, took := build(t, "main")
		relB = rel
		t.Logf("app-only build with a root postinstall: %v (%s)", took, rel.ModulesCopy)
		if rel.Npm != "reused" || rel.NpmFrom != relA.Name {
			t.Errorf("Npm: got %q from %q, want reused from %s", rel.Npm, rel.NpmFrom, relA.Name)
		}
		if got := read(t, rel, "generated.txt"); got != "generated from input 2\n" {
			t.Errorf("generated.txt: got %q, want the postinstall's output from input 2", got)
		}
		if rel.ModulesCopy == "hardlink" {
			t.Errorf("ModulesCopy: got hardlink, want an independent copy (a postinstall runs)")
		}
		if inode(t, filepath.Join(rel.Path, "node_modules/is-number/index.js")) == inode(t, filepath.Join(relA.Path, "node_modules/is-number/index.js")) {
			t.Errorf("node_modules/is-number/index.js shares its inode with the old release")
		}
		if after := treeSums(t, relA.Path); !maps.Equal(before, after) {
			t.Errorf("the old release changed while building the new one")
		}
		if _, err := m.Switch(ctx, rel, "app change"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("package.json disagrees with the lockfile", func(t *testing.T) {
		pushBranch(t, o.url, "mismatch", func(dir string) {
			pj, _ := os.ReadFile(filepath.Join(dir, "package.json"))
			writeFile(t, filepath.Join(dir, "package.json"), strings.Replace(string(pj), `"is-number": "7.0.0"`, `"is-number": "6.0.0"`, 1), 0o644)
		})
		info, err := m.CheckUpdate(ctx, "mismatch")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(info.LockMismatch, "lock file's is-number@7.0.0 does not satisfy is-number@6.0.0") || !info.NpmNeeded {
			t.Errorf("CheckUpdate: got npm needed %v, lock mismatch %q, want npm's message", info.NpmNeeded, info.LockMismatch)
		}
		before := takeSnapshot(t, root)
		_, err = m.Build(ctx, "mismatch", nil)
		t.Logf("Build: %v", err)
		if !errors.Is(err, codeupdate.ErrLockMismatch) || !strings.Contains(err.Error(), "npm error `npm ci` can only install packages when your package.json and package-lock.json") {
			t.Errorf("Build: got %v, want ErrLockMismatch with npm's own message", err)
		}
		if after := takeSnapshot(t, root); after != before {
			t.Errorf("after a failed build: got %+v, want %+v", after, before)
		}
	})

	t.Run("an .npmrc change runs npm", func(t *testing.T) {
		pushBranch(t, o.url, "npmrc", func(dir string) {
			writeFile(t, filepath.Join(dir, ".npmrc"), "omit=dev\n", 0o644)
		})
		info, err := m.CheckUpdate(ctx, "npmrc")
		if err != nil || !info.NpmNeeded {
			t.Errorf("CheckUpdate: got npm needed %v, %v, want true", info.NpmNeeded, err)
		}
		rel, _ := build(t, "npmrc")
		if rel.Npm != "ran" {
			t.Errorf("Npm: got %q, want ran", rel.Npm)
		}
	})

	t.Run("one dependency changes: incremental install", func(t *testing.T) {
		before := treeSums(t, relB.Path)
		o.commit("is-number 6", map[string]string{
			"package-lock.json": "@lock-is-number-6.json",
			"package.json":      strings.Replace(read(t, relB, "package.json"), `"is-number": "7.0.0"`, `"is-number": "6.0.0"`, 1),
			"gen-input.txt":     "input 3\n",
		})
		info, err := m.CheckUpdate(ctx, "main")
		if err != nil || !info.NpmNeeded || info.LockMismatch != "" {
			t.Errorf("CheckUpdate: got %+v, %v, want npm needed, no mismatch", info, err)
		}
		rel, took := build(t, "main")
		t.Logf("one-dependency lockfile change: lxcfleet build %v (npm %s from %q, %s)", took, rel.Npm, rel.NpmFrom, rel.ModulesCopy)
		if rel.Npm != "ran" || rel.NpmFrom != relB.Name || rel.ModulesCopy == "hardlink" || rel.ModulesCopy == "" {
			t.Errorf("Npm: got %q from %q (%s), want ran over an independent copy of %s", rel.Npm, rel.NpmFrom, rel.ModulesCopy, relB.Name)
		}
		if v := readJSON(t, filepath.Join(rel.Path, "node_modules/is-number/package.json"))["version"]; v != "6.0.0" {
			t.Errorf("new release's is-number: got %v, want 6.0.0", v)
		}
		if got := read(t, rel, "generated.txt"); got != "generated from input 3\n" {
			t.Errorf("generated.txt: got %q, want from input 3", got)
		}
		if v := readJSON(t, filepath.Join(relB.Path, "node_modules/is-number/package.json"))["version"]; v != "7.0.0" {
			t.Errorf("old release's is-number: got %v, want 7.0.0", v)
		}
		if after := treeSums(t, relB.Path); !maps.Equal(before, after) {
			for k, v := range before {
				if after[k] != v {
					t.Errorf("old release's %s changed", k)
				}
			}
			t.Errorf("the old release changed while npm installed into the copy")
		}
		if lock := read(t, rel, "package-lock.json"); lock != readFileT(t, "testdata/lock-is-number-6.json") {
			t.Errorf("the release's package-lock.json differs from the commit's")
		}

		// The operators' way on the same change, for comparison: npm
		// install in place in a copy of the old release.
		inPlace := filepath.Join(t.TempDir(), "inplace")
		if out, err := exec.Command("cp", "-a", relB.Path, inPlace).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		for _, f := range []string{"package.json", "package-lock.json", "gen-input.txt"} {
			writeFile(t, filepath.Join(inPlace, f), read(t, rel, f), 0o644)
		}
		cmd := exec.Command("npm", "install", "--no-audit", "--no-fund")
		cmd.Dir = inPlace
		cmd.Env = append(os.Environ(), "npm_config_cache="+npmCache)
		begin := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm install in place: %v %s", err, out)
		}
		t.Logf("one-dependency lockfile change: npm install in place %v", time.Since(begin))
	})

	t.Run("no lockfile and package.json unchanged reuses node_modules", func(t *testing.T) {
		pj := `{"name":"t","version":"1.0.0","private":true,"dependencies":{"is-number":"7.0.0"}}` + "\n"
		pushBranch(t, o.url, "nolock", func(dir string) {
			writeFile(t, filepath.Join(dir, "package.json"), pj, 0o644)
			os.Remove(filepath.Join(dir, "package-lock.json"))
		})
		first, took1 := build(t, "nolock")
		pushBranch(t, o.url, "nolock2", func(dir string) {
			writeFile(t, filepath.Join(dir, "package.json"), pj, 0o644)
			os.Remove(filepath.Join(dir, "package-lock.json"))
			writeFile(t, filepath.Join(dir, "server.js"), "// changed\n", 0o644)
		})
		// The current release decides first; make the no-lockfile one current.
		if _, err := m.Switch(ctx, first, "nolock"); err != nil {
			t.Fatal(err)
		}
		second, took2 := build(t, "nolock2")
		t.Logf("no lockfile: first build %v (npm %s), second with package.json unchanged %v (npm %s, %s)", took1, first.Npm, took2, second.Npm, second.ModulesCopy)
		if first.Npm != "ran" || second.Npm != "reused" || second.NpmFrom != first.Name {
			t.Errorf("Npm: got %q then %q from %q, want ran then reused from %s", first.Npm, second.Npm, second.NpmFrom, first.Name)
		}
		if second.ModulesCopy != "hardlink" {
			t.Errorf("ModulesCopy: got %q, want hardlink (no root scripts: nothing writes into it)", second.ModulesCopy)
		}
		if _, err := os.Stat(filepath.Join(second.Path, "node_modules/is-number/index.js")); err != nil {
			t.Errorf("node_modules: %v", err)
		}
	})
}

func readFileT(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
