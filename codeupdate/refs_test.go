package codeupdate_test

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"lxcfleet/codeupdate"
	"lxcfleet/internal/testfleet"
)

// TestRefs resolves the ways a target can be named, counts commits across
// merges like `git rev-list --count`, numbers builds in the order they are
// made, and builds one commit from two managers at once.
func TestRefs(t *testing.T) {
	testfleet.RequireNode(t)
	origin := testfleet.NewOrigin(t)
	m, _ := newManager(t, "", origin.URL, 0)
	ctx := context.Background()
	base, err := m.Build(ctx, "main", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Switch(ctx, base, "setup"); err != nil {
		t.Fatal(err)
	}

	// A merge: side and merged both branch off main; merged merges side.
	work := filepath.Join(t.TempDir(), "work")
	git(t, filepath.Dir(work), "clone", "--quiet", origin.URL, work)
	git(t, work, "checkout", "--quiet", "-b", "side")
	writeFile(t, filepath.Join(work, "side.txt"), "side\n", 0o644)
	git(t, work, "add", "-A")
	git(t, work, "commit", "--quiet", "-m", "side commit")
	git(t, work, "checkout", "--quiet", "-b", "merged", "main")
	writeFile(t, filepath.Join(work, "other.txt"), "other\n", 0o644)
	git(t, work, "add", "-A")
	git(t, work, "commit", "--quiet", "-m", "other commit")
	git(t, work, "merge", "--quiet", "--no-edit", "side")
	git(t, work, "tag", "-a", "v2", "-m", "annotated release tag")
	git(t, work, "push", "--quiet", "origin", "side", "merged", "v2")
	mergedSHA := git(t, work, "rev-parse", "merged")
	mergedCount, _ := strconv.Atoi(git(t, work, "rev-list", "--count", "merged"))
	sideSHA := git(t, work, "rev-parse", "side")

	last := base.Build
	for _, c := range []struct {
		target string
		sha    string
		ref    string
	}{
		{"merged", mergedSHA, "merged"},
		{"v2", mergedSHA, "v2"},
		{"origin/merged", mergedSHA, "merged"},
		{"refs/tags/v2", mergedSHA, "v2"},
		{mergedSHA, mergedSHA, ""},
		{strings.ToUpper(mergedSHA[:10]), mergedSHA, ""},
		{"merged~1", git(t, work, "rev-parse", "merged~1"), ""},
		{sideSHA[:9], sideSHA, ""},
	} {
		t.Run(c.target, func(t *testing.T) {
			var st steps
			rel, err := m.Build(ctx, c.target, st.add)
			if err != nil {
				t.Fatal(err)
			}
			wantCount, _ := strconv.Atoi(git(t, work, "rev-list", "--count", c.sha))
			if rel.SHA != c.sha || rel.Commits != wantCount {
				t.Errorf("Build(%s): got %s commits %d, want %s commits %d", c.target, rel.SHA, rel.Commits, c.sha, wantCount)
			}
			if st.has("release " + rel.Name + " is already built") {
				if rel.Build > last {
					t.Errorf("Build(%s) of a built commit: got build %d, want at most %d", c.target, rel.Build, last)
				}
			} else if rel.Build != last+1 {
				t.Errorf("Build(%s): got build %d, want %d (the next on this host)", c.target, rel.Build, last+1)
			}
			last = max(last, rel.Build)
			// The ref is the one of the first build of that commit.
			if !st.has("release "+rel.Name+" is already built") && rel.Ref != c.ref {
				t.Errorf("Build(%s) ref: got %q, want %q", c.target, rel.Ref, c.ref)
			}
		})
	}
	if mergedCount != 4 {
		t.Errorf("merged rev-list count: got %d, want 4 (test setup: A, side, other, merge)", mergedCount)
	}

	t.Run("two managers build one commit at once", func(t *testing.T) {
		origin.AppChange("concurrent")
		errs := make(chan error, 2)
		rels := make(chan codeupdate.Release, 2)
		for range 2 {
			go func() {
				mm, _ := newManager(t, m.Root(), origin.URL, 0)
				rel, err := mm.Build(ctx, "main", nil)
				errs <- err
				rels <- rel
			}()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		a, b := <-rels, <-rels
		if a.Name != b.Name || a.Name == "" {
			t.Errorf("releases: got %q and %q, want one", a.Name, b.Name)
		}
		left, _ := filepath.Glob(filepath.Join(m.Root(), "releases", ".tmp-*"))
		if len(left) > 0 {
			t.Errorf("staging folders: got %v, want none", left)
		}
	})
}
