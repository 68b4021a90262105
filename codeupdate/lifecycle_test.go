package codeupdate_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"lxcfleet/codeupdate"
	"lxcfleet/internal/testfleet"
)

// TestLifecycle walks one host through the life of its code: check before
// anything exists, first build (npm runs), switch, app-only update (npm
// reused), lockfile update (npm runs), rollback twice, a build of a bad
// release, and pruning. The subtests run in order and share one origin and
// one root, so npm installs only twice.
func TestLifecycle(t *testing.T) {
	testfleet.RequireNode(t)
	origin := testfleet.NewOrigin(t)
	m, _ := newManager(t, "", origin.URL, 0)
	root := m.Root()
	ctx := context.Background()
	var relA, relB, relC codeupdate.Release

	t.Run("check before any release", func(t *testing.T) {
		info, err := m.CheckUpdate(ctx, "main")
		if err != nil {
			t.Fatal(err)
		}
		wantBuild, _ := strconv.Atoi(origin.Count())
		for _, c := range []struct {
			what      string
			got, want any
		}{
			{"Available", info.Available, true},
			{"NpmNeeded", info.NpmNeeded, true},
			{"Behind", info.Behind, wantBuild},
			{"TargetSHA", info.TargetSHA, origin.Head()},
			{"TargetBuild", info.TargetBuild, wantBuild},
			{"CurrentRelease", info.CurrentRelease, ""},
			{"len(Commits)", len(info.Commits), wantBuild},
			{"ChangedFiles", info.ChangedFiles, 3},
		} {
			if c.got != c.want {
				t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
			}
		}
	})

	t.Run("first build runs npm", func(t *testing.T) {
		var st steps
		rel, err := m.Build(ctx, "main", st.add)
		if err != nil {
			t.Fatal(err)
		}
		relA = rel
		head := origin.Head()
		wantBuild, _ := strconv.Atoi(origin.Count())
		for _, c := range []struct {
			what      string
			got, want any
		}{
			{"Name", rel.Name, fmt.Sprintf("%d-%s", 1, head[:12])},
			{"Path", rel.Path, filepath.Join(root, "releases", rel.Name)},
			{"Build", rel.Build, 1},
			{"Commits", rel.Commits, wantBuild},
			{"Describe", rel.Describe, head[:7]},
			{"SHA", rel.SHA, head},
			{"Short", rel.Short, head[:12]},
			{"Ref", rel.Ref, "main"},
			{"Subject", rel.Subject, "build A: the fixture app"},
			{"Npm", rel.Npm, "ran"},
			{"State", rel.State, codeupdate.StateGood},
			{"Current", rel.Current, false},
			{"Node empty", rel.Node == "", false},
			{"NpmVersion empty", rel.NpmVersion == "", false},
			{"LockHash length", len(rel.LockHash), 64},
			{"CommitTime set", rel.CommitTime.IsZero(), false},
		} {
			if c.got != c.want {
				t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
			}
		}
		for _, s := range []string{"fetching", "resolved main", "checking out", "npm ci", "release " + rel.Name + " (build 1, "} {
			if !st.has(s) {
				t.Errorf("progress steps %q: got no %q", st.list, s)
			}
		}
		bj := readJSON(t, filepath.Join(rel.Path, "BUILD.json"))
		for _, k := range []string{"build", "sha", "short", "ref", "subject", "commit_time", "build_time", "node", "npm_version", "npm", "lock_hash"} {
			if _, ok := bj[k]; !ok {
				t.Errorf("BUILD.json key %s: got none, want one (%v)", k, bj)
			}
		}
		// The host's view of the release is not the file's.
		for _, k := range []string{"path", "state", "bad_reason", "current"} {
			if v, ok := bj[k]; ok {
				t.Errorf("BUILD.json key %s: got %v, want none", k, v)
			}
		}
		if _, ok := bj["origin"]; !ok {
			t.Errorf("BUILD.json key origin: got none, want one (%v)", bj)
		}
		if got, want := bj["build"], float64(1); got != want {
			t.Errorf("BUILD.json build: got %v, want %v", got, want)
		}
		for _, p := range []string{"server.js", "package.json", "node_modules/ms/index.js", ".lxcfleet/npm.log"} {
			if _, err := os.Stat(filepath.Join(rel.Path, p)); err != nil {
				t.Errorf("release file %s: got %v, want it present", p, err)
			}
		}
		if _, err := m.Current(); !errors.Is(err, codeupdate.ErrNoCurrent) {
			t.Errorf("Current before any switch: got %v, want ErrNoCurrent", err)
		}
		left, _ := filepath.Glob(filepath.Join(root, "releases", ".tmp-*"))
		if len(left) > 0 {
			t.Errorf("staging folders: got %v, want none", left)
		}
	})
	if relA.Name == "" {
		t.Fatal("first build failed; the rest depends on it")
	}

	t.Run("build of a built commit returns it", func(t *testing.T) {
		origin.Tag("v1")
		for _, target := range []string{"main", "v1", origin.Head(), origin.Head()[:7], "refs/heads/main"} {
			var st steps
			rel, err := m.Build(ctx, target, st.add)
			if err != nil {
				t.Fatalf("Build(%s): %v", target, err)
			}
			if rel.Name != relA.Name || !st.has("release "+relA.Name+" is already built") {
				t.Errorf("Build(%s): got %s (steps %q), want existing %s", target, rel.Name, st.list, relA.Name)
			}
		}
	})

	t.Run("switch to the first release", func(t *testing.T) {
		prev, err := m.Switch(ctx, relA, "first")
		if err != nil {
			t.Fatal(err)
		}
		if prev.Name != "" {
			t.Errorf("previous: got %q, want none", prev.Name)
		}
		cur, err := m.Current()
		if err != nil || cur.Name != relA.Name || !cur.Current {
			t.Fatalf("Current: got %v %v, want %s", cur.Name, err, relA.Name)
		}
		link, _ := os.Readlink(filepath.Join(root, "current"))
		if want := filepath.Join("releases", relA.Name); link != want {
			t.Errorf("current link: got %q, want %q", link, want)
		}
		b, _ := os.ReadFile(filepath.Join(root, "BUILD"))
		want := fmt.Sprintf("%d %s main %s %s\n", relA.Build, relA.Short, relA.CommitTime.UTC().Format(time.RFC3339), relA.Short[:7])
		if string(b) != want {
			t.Errorf("BUILD: got %q, want %q", b, want)
		}
		info, err := m.CheckUpdate(ctx, "main")
		if err != nil {
			t.Fatal(err)
		}
		if info.Available || info.Behind != 0 || info.CurrentRelease != relA.Name || !info.TargetBuilt {
			t.Errorf("CheckUpdate when up to date: got %+v, want not available, behind 0", info)
		}
	})

	t.Run("app-only change reuses node_modules", func(t *testing.T) {
		origin.AppChange("app change 1")
		origin.AppChange("app change 2")
		info, err := m.CheckUpdate(ctx, "main")
		if err != nil {
			t.Fatal(err)
		}
		var subjects []string
		for _, c := range info.Commits {
			subjects = append(subjects, c.Subject)
		}
		for _, c := range []struct {
			what      string
			got, want any
		}{
			{"Available", info.Available, true},
			{"Behind", info.Behind, 2},
			{"Commits", strings.Join(subjects, ","), "app change 2,app change 1"},
			{"NpmNeeded", info.NpmNeeded, false},
			{"ChangedFiles", info.ChangedFiles, 1},
			{"TargetBuilt", info.TargetBuilt, false},
		} {
			if c.got != c.want {
				t.Errorf("CheckUpdate %s: got %v, want %v", c.what, c.got, c.want)
			}
		}

		begin := time.Now()
		var st steps
		rel, err := m.Build(ctx, "main", st.add)
		took := time.Since(begin)
		if err != nil {
			t.Fatal(err)
		}
		relB = rel
		if took > 2*time.Second {
			t.Errorf("app-only build took %v, want well under 2s", took)
		}
		if rel.Npm != "reused" || !st.has("reusing node_modules from "+relA.Name) {
			t.Errorf("Npm: got %q (steps %q), want reused from %s", rel.Npm, st.list, relA.Name)
		}
		if want, _ := strconv.Atoi(origin.Count()); rel.Commits != want || rel.Build != relA.Build+1 {
			t.Errorf("Build, Commits: got %v, %v, want %v, %v", rel.Build, rel.Commits, relA.Build+1, want)
		}
		if _, err := os.Stat(filepath.Join(rel.Path, ".lxcfleet", "npm.log")); !os.IsNotExist(err) {
			t.Errorf("npm log of a reused release: got %v, want none", err)
		}
		for _, f := range []string{"node_modules/ms/index.js", "node_modules/ms/package.json", "node_modules/.package-lock.json"} {
			a, b := inode(t, filepath.Join(relA.Path, f)), inode(t, filepath.Join(rel.Path, f))
			if a != b {
				t.Errorf("%s inode: got %d, want %d (hard link)", f, b, a)
			}
		}
		if _, err := m.Switch(ctx, rel, "app change"); err != nil {
			t.Fatal(err)
		}
		t.Logf("app-only build took %v", took)
	})

	t.Run("lockfile change runs npm", func(t *testing.T) {
		lock, err := os.ReadFile(filepath.Join(testfleet.AppSource(), "package-lock.json"))
		if err != nil {
			t.Fatal(err)
		}
		origin.Write("lockfile reformatted", map[string]string{"package-lock.json": string(lock) + "\n\n"})
		info, err := m.CheckUpdate(ctx, "main")
		if err != nil {
			t.Fatal(err)
		}
		if !info.NpmNeeded || info.Behind != 1 || info.ChangedFiles != 1 {
			t.Errorf("CheckUpdate: got npm %v behind %d changed %d, want true 1 1", info.NpmNeeded, info.Behind, info.ChangedFiles)
		}
		rel, err := m.Build(ctx, "main", nil)
		if err != nil {
			t.Fatal(err)
		}
		relC = rel
		if rel.Npm != "ran" || rel.LockHash == relB.LockHash {
			t.Errorf("Npm: got %q lock %s, want ran with a new lock hash", rel.Npm, rel.LockHash)
		}
		if _, err := os.Stat(filepath.Join(rel.Path, ".lxcfleet", "npm.log")); err != nil {
			t.Errorf("npm log: got %v, want one", err)
		}
		prev, err := m.Switch(ctx, rel, "lockfile change")
		if err != nil || prev.Name != relB.Name {
			t.Fatalf("Switch: got previous %q, %v, want %s", prev.Name, err, relB.Name)
		}
		hist, err := m.History()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, h := range hist {
			got = append(got, h.From+">"+h.To+":"+h.Reason)
		}
		want := []string{">" + relA.Name + ":first", relA.Name + ">" + relB.Name + ":app change", relB.Name + ">" + relC.Name + ":lockfile change"}
		if !slices.Equal(got, want) {
			t.Errorf("history: got %q, want %q", got, want)
		}
	})
	if relC.Name == "" {
		t.Fatal("no third release; the rest depends on it")
	}

	t.Run("rollback twice goes back two releases", func(t *testing.T) {
		for _, want := range []codeupdate.Release{relB, relA} {
			cur, err := m.Current()
			if err != nil {
				t.Fatal(err)
			}
			pg, err := m.PreviousGood()
			if err != nil || pg.Name != want.Name {
				t.Fatalf("PreviousGood from %s: got %q, %v, want %s", cur.Name, pg.Name, err, want.Name)
			}
			if err := m.MarkBad(cur.Name, "rolled back by test"); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Switch(ctx, pg, "rollback"); err != nil {
				t.Fatal(err)
			}
		}
		if pg, err := m.PreviousGood(); !errors.Is(err, codeupdate.ErrNoPreviousGood) {
			t.Errorf("third PreviousGood: got %q, %v, want ErrNoPreviousGood", pg.Name, err)
		}
		rels, err := m.Releases()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rels {
			got = append(got, fmt.Sprintf("%s:%s:%v", r.Name, r.State, r.Current))
		}
		want := []string{relC.Name + ":bad:false", relB.Name + ":bad:false", relA.Name + ":good:true"}
		if !slices.Equal(got, want) {
			t.Errorf("Releases: got %q, want %q", got, want)
		}
		b, _ := os.ReadFile(filepath.Join(root, "BUILD"))
		if !strings.HasPrefix(string(b), fmt.Sprintf("%d %s ", relA.Build, relA.Short)) {
			t.Errorf("BUILD after rollback: got %q, want build %d", b, relA.Build)
		}
	})

	t.Run("build of a bad release returns it marked bad", func(t *testing.T) {
		rel, err := m.Build(ctx, "main", nil)
		if err != nil {
			t.Fatal(err)
		}
		if rel.Name != relC.Name || rel.State != codeupdate.StateBad || rel.BadReason != "rolled back by test" {
			t.Errorf("Build: got %s %s %q, want %s bad", rel.Name, rel.State, rel.BadReason, relC.Name)
		}
		info, err := m.CheckUpdate(ctx, "main")
		if err != nil || !info.TargetBad || !info.NpmNeeded || info.Behind != 3 {
			t.Errorf("CheckUpdate: got %+v, %v, want target bad, npm needed, behind 3", info, err)
		}
	})

	t.Run("prune", func(t *testing.T) {
		// A forced update back to C: current C, previous good A, B bad.
		if err := m.MarkGood(relC.Name, "forced"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Switch(ctx, relC, "forced update"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Prune(ctx, 0, nil); err == nil {
			t.Errorf("Prune(keep 0): got no error, want one")
		}
		for _, c := range []struct {
			name    string
			keep    int
			inUse   map[string]int
			removed []string
			left    []string
		}{
			{"keep covers all", 5, nil, nil, []string{relC.Name, relB.Name, relA.Name}},
			{"in use, current and previous good stay", 1, map[string]int{relB.Name: 2, relA.Name: 0}, nil, []string{relC.Name, relB.Name, relA.Name}},
			{"oldest unprotected goes", 1, map[string]int{relB.Name: 0}, []string{relB.Name}, []string{relC.Name, relA.Name}},
			{"nothing more to remove", 1, nil, nil, []string{relC.Name, relA.Name}},
		} {
			t.Run(c.name, func(t *testing.T) {
				removed, err := m.Prune(ctx, c.keep, c.inUse)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(removed, c.removed) {
					t.Errorf("removed: got %q, want %q", removed, c.removed)
				}
				rels, err := m.Releases()
				if err != nil {
					t.Fatal(err)
				}
				if got := names(rels); !slices.Equal(got, c.left) {
					t.Errorf("left: got %q, want %q", got, c.left)
				}
			})
		}
		if _, err := os.Stat(relA.Path); err != nil {
			t.Errorf("previous good release: got %v, want it kept", err)
		}
		if _, err := m.Release(relB.Name); !errors.Is(err, codeupdate.ErrNoRelease) {
			t.Errorf("Release(pruned): got %v, want ErrNoRelease", err)
		}
	})
}
