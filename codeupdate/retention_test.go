package codeupdate_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"lxcfleet/codeupdate"
)

// plainFiles is an app without dependencies: its builds run no npm.
func plainFiles(body string) map[string]string {
	return map[string]string{
		"package.json": `{"name":"t","version":"1.0.0","private":true}` + "\n",
		"server.js":    body,
	}
}

// TestPruneKeepsGoodReleases reproduces a host where two updates failed
// (each release marked bad and rolled back): with keep = 3, the bad
// releases go and the three good ones stay (the old Prune kept the newest
// three, bad included, and removed the oldest good one). A release a
// locker uses stays whatever its state, and the configured target's
// release counts among the good ones kept.
func TestPruneKeepsGoodReleases(t *testing.T) {
	t.Parallel()
	requireNpm(t)
	o := newTestOrigin(t, plainFiles("// A\n"))
	m, _ := newManagerOpts(t, codeupdate.Options{Origin: o.url})
	ctx := context.Background()
	o.commit("tag stable", nil)
	git(t, o.work, "tag", "stable")
	git(t, o.work, "push", "--quiet", "origin", "stable")
	step := func(target, reason string) codeupdate.Release {
		t.Helper()
		rel, err := m.Build(ctx, target, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Switch(ctx, rel, reason); err != nil {
			t.Fatal(err)
		}
		return rel
	}
	relA := step("stable", "first")
	o.commit("B", map[string]string{"server.js": "// B\n"})
	relB := step("main", "update")
	o.commit("C", map[string]string{"server.js": "// C\n"})
	relC := step("main", "update")
	var bad []codeupdate.Release
	for _, n := range []string{"D", "E"} {
		o.commit(n, map[string]string{"server.js": "// " + n + "\n"})
		rel := step("main", "update")
		if err := m.MarkBad(rel.Name, "failed update"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Switch(ctx, relC, "rollback"); err != nil {
			t.Fatal(err)
		}
		bad = append(bad, rel)
	}
	relD, relE := bad[0], bad[1]

	removed, err := m.Prune(ctx, 3, map[string]int{relE.Name: 2})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{relD.Name}; !slices.Equal(removed, want) {
		t.Errorf("Prune(3) with %s in use: removed %q, want %q", relE.Name, removed, want)
	}
	removed, err = m.Prune(ctx, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{relE.Name}; !slices.Equal(removed, want) {
		t.Errorf("Prune(3): removed %q, want %q", removed, want)
	}
	rels, err := m.Releases()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(rels), []string{relC.Name, relB.Name, relA.Name}; !slices.Equal(got, want) {
		t.Errorf("left: got %q, want %q", got, want)
	}
	// Rollback still has somewhere to go, twice.
	if pg, err := m.PreviousGood(); err != nil || pg.Name != relB.Name {
		t.Errorf("PreviousGood: got %q, %v, want %s", pg.Name, err, relB.Name)
	}

	// keep = 2: current and previous good stay; the oldest good release
	// stays only when it is the configured target's.
	for _, c := range []struct {
		target string
		left   []string
	}{
		{"stable", []string{relC.Name, relB.Name, relA.Name}},
		{"", []string{relC.Name, relB.Name}},
	} {
		t.Run(fmt.Sprintf("target %q", c.target), func(t *testing.T) {
			mm, _ := newManagerOpts(t, codeupdate.Options{Root: m.Root(), Origin: o.url, Target: c.target})
			if _, err := mm.Prune(ctx, 2, nil); err != nil {
				t.Fatal(err)
			}
			rels, err := mm.Releases()
			if err != nil {
				t.Fatal(err)
			}
			if got := names(rels); !slices.Equal(got, c.left) {
				t.Errorf("left: got %q, want %q", got, c.left)
			}
		})
	}
}

// TestBuildNumbers checks that build numbers are the host's: unique and
// increasing whatever the origin does. A force-push that keeps the commit
// count, and a tag moved to a commit with fewer ancestors, both get new,
// higher numbers (a commit count gave the first the same number and the
// second a lower one). Release takes a build number as well as a name,
// BUILD and BUILD.json show the commit and `git describe`, and a host
// whose releases were numbered by commit count goes on above them.
func TestBuildNumbers(t *testing.T) {
	t.Parallel()
	requireNpm(t)
	o := newTestOrigin(t, plainFiles("// 1\n"))
	o.commit("two", map[string]string{"server.js": "// 2\n"})
	git(t, o.work, "tag", "v1")
	git(t, o.work, "push", "--quiet", "origin", "v1")
	m, _ := newManager(t, "", o.url, 0)
	ctx := context.Background()
	build := func(target string) codeupdate.Release {
		t.Helper()
		rel, err := m.Build(ctx, target, nil)
		if err != nil {
			t.Fatalf("Build(%s): %v", target, err)
		}
		return rel
	}
	first := build("main")

	// Force-push: main rewritten to another commit with the same count.
	git(t, o.work, "commit", "--quiet", "--amend", "-m", "two, rewritten")
	git(t, o.work, "push", "--quiet", "--force", "origin", "main")
	rewritten := build("main")
	if rewritten.SHA == first.SHA || rewritten.Commits != first.Commits {
		t.Fatalf("test setup: got %s/%d and %s/%d, want two commits with one count", first.Short, first.Commits, rewritten.Short, rewritten.Commits)
	}
	if rewritten.Build <= first.Build {
		t.Errorf("after a force-push: got build %d, want more than %d", rewritten.Build, first.Build)
	}

	// v1 names the first commit; then it moves to a new root commit.
	if rel := build("v1"); rel.Name != first.Name {
		t.Errorf("Build(v1): got %s, want the existing %s", rel.Name, first.Name)
	}
	git(t, o.work, "checkout", "--quiet", "--orphan", "other")
	writeFile(t, filepath.Join(o.work, "server.js"), "// other\n", 0o644)
	git(t, o.work, "add", "-A")
	git(t, o.work, "commit", "--quiet", "-m", "other root")
	git(t, o.work, "tag", "--force", "v1")
	git(t, o.work, "push", "--quiet", "--force", "origin", "v1")
	moved := build("v1")
	if moved.Commits != 1 || moved.Build <= rewritten.Build {
		t.Errorf("moved tag: got build %d (%d commits), want more than %d", moved.Build, moved.Commits, rewritten.Build)
	}
	if first.Describe != "v1" || rewritten.Describe != rewritten.Short[:7] || moved.Describe != "v1" {
		t.Errorf("Describe: got %q, %q, %q, want v1, %s, v1", first.Describe, rewritten.Describe, moved.Describe, rewritten.Short[:7])
	}
	for _, r := range []codeupdate.Release{first, rewritten, moved} {
		if want := fmt.Sprintf("%d-%s", r.Build, r.Short); r.Name != want {
			t.Errorf("Name: got %s, want %s", r.Name, want)
		}
		bj := readJSON(t, filepath.Join(r.Path, "BUILD.json"))
		if bj["build"] != float64(r.Build) || bj["commits"] != float64(r.Commits) || bj["describe"] != r.Describe {
			t.Errorf("BUILD.json: got %v, want build %d commits %d describe %s", bj, r.Build, r.Commits, r.Describe)
		}
	}

	// Release by number (what `rollback --to 7` passes) and by name.
	for _, r := range []codeupdate.Release{first, moved} {
		for _, key := range []string{fmt.Sprint(r.Build), r.Name} {
			got, err := m.Release(key)
			if err != nil || got.Name != r.Name {
				t.Errorf("Release(%q): got %q, %v, want %s", key, got.Name, err, r.Name)
			}
		}
	}
	for _, key := range []string{"999", "0", "-1", "007"} {
		if _, err := m.Release(key); err == nil {
			t.Errorf("Release(%q): got no error, want ErrNoRelease", key)
		}
	}
	if _, err := m.Switch(ctx, moved, "test"); err != nil {
		t.Fatal(err)
	}
	line, _ := os.ReadFile(filepath.Join(m.Root(), "BUILD"))
	if want := fmt.Sprintf("%d %s v1 ", moved.Build, moved.Short); !strings.HasPrefix(string(line), want) || !strings.HasSuffix(string(line), " v1\n") {
		t.Errorf("BUILD: got %q, want %q... v1", line, want)
	}

	// CheckUpdate names the number a build would get, and the existing one.
	o.commit("three", map[string]string{"server.js": "// 3\n"})
	info, err := m.CheckUpdate(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	if info.TargetBuild != moved.Build+1 || info.TargetDescribe != "v1-1-g"+info.TargetSHA[:7] {
		t.Errorf("CheckUpdate: got build %d describe %q, want %d and v1-1-g%s", info.TargetBuild, info.TargetDescribe, moved.Build+1, info.TargetSHA[:7])
	}
	if got := build("other"); got.Build != info.TargetBuild || got.Name != info.TargetRelease {
		t.Errorf("Build after CheckUpdate: got %s, want %s", got.Name, info.TargetRelease)
	}

	// A host whose releases were numbered by commit count goes on above.
	legacy := filepath.Join(m.Root(), "releases", "6049-0123456789ab")
	writeFile(t, filepath.Join(legacy, "package.json"), "{}\n", 0o644)
	writeFile(t, filepath.Join(legacy, "BUILD.json"), `{"name":"6049-0123456789ab","build":6049,"sha":"0123456789ab0123456789ab0123456789ab0123","short":"0123456789ab","npm":"none"}`+"\n", 0o644)
	o.commit("four", map[string]string{"server.js": "// 4\n"})
	if got := build("other"); got.Build != 6050 {
		t.Errorf("Build above a legacy release 6049: got %d, want 6050", got.Build)
	}
	if r, err := m.Release("6049"); err != nil || r.Name != "6049-0123456789ab" {
		t.Errorf("Release(6049): got %q, %v, want the legacy release", r.Name, err)
	}
}
