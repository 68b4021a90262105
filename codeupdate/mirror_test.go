package codeupdate_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lxcfleet/codeupdate"
	"lxcfleet/internal/testfleet"
)

// TestCorruptMirror damages the mirror in several ways; Build and
// CheckUpdate re-clone it into a fresh folder and say so in the log, and
// current stays where it was. With the origin gone as well, the error says
// what is wrong and the damaged mirror is left for the operator.
func TestCorruptMirror(t *testing.T) {
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
	mirror := filepath.Join(root, "repo.git")
	zero := func(glob string) func(t *testing.T) {
		return func(t *testing.T) {
			files, _ := filepath.Glob(filepath.Join(mirror, glob))
			if len(files) == 0 {
				t.Fatalf("no %s in the mirror", glob)
			}
			for _, f := range files {
				fi, err := os.Stat(f)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(f, make([]byte, fi.Size()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, c := range []struct {
		name    string
		reclone bool // false: the forced fetch itself repairs the damage
		damage  func(t *testing.T)
	}{
		{"objects removed", false, func(t *testing.T) {
			if err := os.RemoveAll(filepath.Join(mirror, "objects")); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(mirror, "objects"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"packs zeroed", true, zero("objects/pack/*.pack")},
		{"pack indexes zeroed", true, zero("objects/pack/*.idx")},
		{"config garbage", true, func(t *testing.T) {
			writeFile(t, filepath.Join(mirror, "config"), "[[[ not a git config\n", 0o644)
		}},
		{"branch points nowhere", false, func(t *testing.T) {
			writeFile(t, filepath.Join(mirror, "refs", "heads", "main"), "0123456789012345678901234567890123456789\n", 0o644)
		}},
	} {
		for _, op := range []string{"Build", "CheckUpdate"} {
			t.Run(c.name+"/"+op, func(t *testing.T) {
				mm, logs := newManager(t, root, origin.URL, 0)
				c.damage(t)
				before := takeSnapshot(t, root)
				var err error
				if op == "Build" {
					var rel codeupdate.Release
					rel, err = mm.Build(ctx, "main", nil)
					if err == nil && rel.Name != good.Name {
						t.Errorf("Build: got %s, want %s", rel.Name, good.Name)
					}
				} else {
					var info codeupdate.UpdateInfo
					info, err = mm.CheckUpdate(ctx, "main")
					if err == nil && info.Available {
						t.Errorf("CheckUpdate: got available, want up to date")
					}
				}
				if err != nil {
					t.Fatalf("%s on a damaged mirror: got %v, want it re-cloned", op, err)
				}
				recloned := strings.Contains(logs.String(), "mirror is corrupt; re-cloning") && strings.Contains(logs.String(), "mirror re-cloned")
				if recloned != c.reclone {
					t.Errorf("re-cloned: got %v, want %v (log %q)", recloned, c.reclone, logs.String())
				}
				if after := takeSnapshot(t, root); after != before {
					t.Errorf("after a re-clone: got %+v, want %+v", after, before)
				}
				left, _ := filepath.Glob(mirror + ".*")
				if len(left) > 0 {
					t.Errorf("left beside the mirror: got %v, want nothing", left)
				}
			})
		}
	}

	t.Run("healthy mirror is not re-cloned", func(t *testing.T) {
		mm, logs := newManager(t, root, origin.URL, 0)
		if _, err := mm.Build(ctx, "main", nil); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(logs.String(), "corrupt") {
			t.Errorf("log: got %q, want no corruption", logs.String())
		}
	})

	t.Run("corrupt mirror and origin gone", func(t *testing.T) {
		mm, _ := newManager(t, root, filepath.Join(t.TempDir(), "gone.git"), 0)
		writeFile(t, filepath.Join(mirror, "config"), "[[[ not a git config\n", 0o644)
		before := takeSnapshot(t, root)
		_, err := mm.Build(ctx, "main", nil)
		t.Logf("Build: %v", err)
		if err == nil || !strings.Contains(err.Error(), "mirror "+mirror+" is corrupt") || !strings.Contains(err.Error(), "origin unreachable") {
			t.Errorf("Build: got %v, want the mirror named corrupt and the origin unreachable", err)
		}
		if after := takeSnapshot(t, root); after != before {
			t.Errorf("after a failed build: got %+v, want %+v", after, before)
		}
		if _, err := os.Stat(filepath.Join(mirror, "HEAD")); err != nil {
			t.Errorf("damaged mirror: got %v, want it left in place", err)
		}
	})
}
