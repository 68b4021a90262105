package mounts

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// ownerOf returns the uid and gid of a path.
func ownerOf(t *testing.T, p string) Owner {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	uid, gid, ok := fileOwner(fi)
	if !ok {
		t.Fatalf("no owner for %s", p)
	}
	return Owner{uid, gid}
}

func TestProvision(t *testing.T) {
	l := tempLayout(t)
	owner := testOwner()
	created, err := l.Provision("shop-1", owner)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{l.Lockers, l.LockerDir("shop-1"), l.MeDir("shop-1"), l.ConfigDir("shop-1")}
	if !slices.Equal(created, want) {
		t.Errorf("got %q, want %q", created, want)
	}
	modes := map[string]fs.FileMode{
		l.Lockers:             0o711,
		l.LockerDir("shop-1"): 0o750,
		l.MeDir("shop-1"):     0o750,
		l.ConfigDir("shop-1"): 0o750,
	}
	for p, mode := range modes {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode(); got != fs.ModeDir|mode {
			t.Errorf("%s: got mode %v, want %v", p, got, fs.ModeDir|mode)
		}
	}
	for _, p := range want[1:] {
		if got := ownerOf(t, p); got != owner {
			t.Errorf("%s: got owner %v, want %v", p, got, owner)
		}
	}
	if got := l.CheckFolders("shop-1", owner); got != nil {
		t.Errorf("got deviations %q, want none", got)
	}

	// A second run changes nothing and keeps what is inside.
	writeFile(t, filepath.Join(l.MeDir("shop-1"), "data.db"), "owner data")
	created, err = l.Provision("shop-1", owner)
	if err != nil {
		t.Fatal(err)
	}
	if created != nil {
		t.Errorf("got %q, want nothing created", created)
	}
	if b, err := os.ReadFile(filepath.Join(l.MeDir("shop-1"), "data.db")); err != nil || string(b) != "owner data" {
		t.Errorf("got %q, %v, want the owner data kept", b, err)
	}

	// Another locker reuses lockers/.
	created, err = l.Provision("shop-2", owner)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{l.LockerDir("shop-2"), l.MeDir("shop-2"), l.ConfigDir("shop-2")}; !slices.Equal(created, want) {
		t.Errorf("got %q, want %q", created, want)
	}
}

func TestProvisionRefuses(t *testing.T) {
	outside := t.TempDir()
	tests := []struct {
		name    string
		locker  string
		setup   func(t *testing.T, l Layout) Layout
		wantErr string
	}{
		{"bad name", "../etc", nil, "invalid container name"},
		{"missing root", "a", func(t *testing.T, l Layout) Layout {
			return LayoutAt(filepath.Join(l.Root, "absent"))
		}, "does not exist"},
		{"locker folder is a symlink out of the root", "a", func(t *testing.T, l Layout) Layout {
			mkdirAll(t, l.Lockers)
			symlink(t, outside, l.LockerDir("a"))
			return l
		}, "is a symlink; refusing to follow it"},
		{"locker folder is an absolute symlink to /etc", "a", func(t *testing.T, l Layout) Layout {
			mkdirAll(t, l.Lockers)
			symlink(t, "/etc", l.LockerDir("a"))
			return l
		}, "is a symlink; refusing to follow it"},
		{"locker folder is a symlink to another locker", "a", func(t *testing.T, l Layout) Layout {
			mkdirAll(t, filepath.Join(l.Lockers, "b"))
			symlink(t, "b", l.LockerDir("a"))
			return l
		}, "is a symlink; refusing to follow it"},
		{"Me is a symlink", "a", func(t *testing.T, l Layout) Layout {
			mkdirAll(t, l.LockerDir("a"))
			symlink(t, outside, l.MeDir("a"))
			return l
		}, "is a symlink; refusing to follow it"},
		{"lockers is a symlink out of the root", "a", func(t *testing.T, l Layout) Layout {
			symlink(t, outside, l.Lockers)
			return l
		}, "escapes"},
		{"Config is a file", "a", func(t *testing.T, l Layout) Layout {
			writeFile(t, l.ConfigDir("a"), "x")
			return l
		}, "exists and is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := tempLayout(t)
			if tt.setup != nil {
				l = tt.setup(t, l)
			}
			created, err := l.Provision(tt.locker, testOwner())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
			if created != nil {
				t.Errorf("got %q, want nothing created", created)
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Errorf("got %d entries in the outside folder, want none", len(entries))
			}
		})
	}
	if _, err := os.Stat("/etc/Me"); err == nil {
		t.Errorf("/etc/Me exists: a provision followed a symlink")
	}
}

// TestProvisionUndoes checks that a failed provision removes what it made,
// and only that.
func TestProvisionUndoes(t *testing.T) {
	t.Run("existing folders kept", func(t *testing.T) {
		l := tempLayout(t)
		writeFile(t, l.ConfigDir("a"), "in the way") // makes lockers/ and lockers/a
		_, err := l.Provision("a", testOwner())
		if err == nil {
			t.Fatal("got no error, want one")
		}
		if _, err := os.Lstat(l.MeDir("a")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("got %v for Me, want it removed again", err)
		}
		if b, err := os.ReadFile(l.ConfigDir("a")); err != nil || string(b) != "in the way" {
			t.Errorf("got %q, %v, want the existing file kept", b, err)
		}
	})
	t.Run("disk full", func(t *testing.T) {
		// A root with room for 4 inodes: itself, lockers/, lockers/a and
		// Me. Creating Config fails with ENOSPC.
		needRoot(t)
		l := tempLayout(t)
		mountTmpfs(t, l.Root, "nr_inodes=4,size=1m,mode=755")
		_, err := l.Provision("a", testOwner())
		if err == nil || !strings.Contains(err.Error(), "no space left") {
			t.Fatalf("got %v, want no space left on device", err)
		}
		if entries, err := os.ReadDir(l.Root); err != nil || len(entries) != 0 {
			t.Errorf("got %v, %v in the root, want it empty again", entries, err)
		}
	})
}

func TestRemove(t *testing.T) {
	l := tempLayout(t)
	l.Templates = filepath.Join(filepath.Dir(l.Root), "templates")
	writeFile(t, filepath.Join(l.Templates, "app.json"), `{"a":1}`)
	writeFile(t, filepath.Join(l.Templates, "nginx/site.conf"), "server {}")
	owner := testOwner()
	provision := func(t *testing.T, name string) {
		t.Helper()
		if _, err := l.Provision(name, owner); err != nil {
			t.Fatal(err)
		}
		if _, err := l.SeedConfig(name, owner); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("provisioned and seeded", func(t *testing.T) {
		provision(t, "a")
		if err := l.Remove("a"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(l.LockerDir("a")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("got %v, want the locker folder gone", err)
		}
		if _, err := os.Stat(l.Lockers); err != nil {
			t.Errorf("got %v, want lockers/ kept", err)
		}
	})
	t.Run("absent", func(t *testing.T) {
		if err := l.Remove("never"); err != nil {
			t.Errorf("got %v, want no error", err)
		}
	})
	refusals := []struct {
		name    string
		edit    func(t *testing.T, name string)
		wantErr string
	}{
		{"owner data", func(t *testing.T, name string) {
			writeFile(t, filepath.Join(l.MeDir(name), "data.db"), "x")
		}, "is owner data"},
		{"edited config", func(t *testing.T, name string) {
			writeFile(t, filepath.Join(l.ConfigDir(name), "nginx/site.conf"), "server { listen 80; }")
		}, "differs from its template"},
		{"extra config", func(t *testing.T, name string) {
			writeFile(t, filepath.Join(l.ConfigDir(name), "local.json"), "{}")
		}, "differs from its template"},
		{"extra folder", func(t *testing.T, name string) {
			mkdirAll(t, filepath.Join(l.LockerDir(name), "logs"))
		}, "is not a folder lxcfleet makes"},
		{"symlink inside", func(t *testing.T, name string) {
			symlink(t, "/etc/passwd", filepath.Join(l.ConfigDir(name), "passwd"))
		}, "is a symlink"},
	}
	for i, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			name := "r" + string(rune('0'+i))
			provision(t, name)
			tt.edit(t, name)
			err := l.Remove(name)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
			// Nothing was deleted.
			for _, p := range []string{l.MeDir(name), filepath.Join(l.ConfigDir(name), "app.json")} {
				if _, err := os.Lstat(p); err != nil {
					t.Errorf("got %v, want %s kept", err, p)
				}
			}
		})
	}
	t.Run("locker folder is a symlink", func(t *testing.T) {
		outside := t.TempDir()
		mkdirAll(t, filepath.Join(outside, "Me"))
		symlink(t, outside, l.LockerDir("s"))
		err := l.Remove("s")
		if err == nil || !strings.Contains(err.Error(), "is a symlink") {
			t.Fatalf("got %v, want a symlink error", err)
		}
		if _, err := os.Stat(filepath.Join(outside, "Me")); err != nil {
			t.Errorf("got %v, want the outside folder untouched", err)
		}
	})
}

func TestCheckFolders(t *testing.T) {
	owner := testOwner()
	tests := []struct {
		name  string
		setup func(t *testing.T, l Layout)
		want  func(l Layout) []string
	}{
		{"good", func(t *testing.T, l Layout) {
			if _, err := l.Provision("a", owner); err != nil {
				t.Fatal(err)
			}
		}, func(Layout) []string { return nil }},
		{"nothing", func(*testing.T, Layout) {}, func(l Layout) []string {
			return []string{l.LockerDir("a") + " is missing"}
		}},
		{"Me missing, Config a file", func(t *testing.T, l Layout) {
			if _, err := l.Provision("a", owner); err != nil {
				t.Fatal(err)
			}
			os.Remove(l.MeDir("a"))
			os.Remove(l.ConfigDir("a"))
			writeFile(t, l.ConfigDir("a"), "")
		}, func(l Layout) []string {
			return []string{l.MeDir("a") + " is missing", l.ConfigDir("a") + " is not a directory"}
		}},
		{"locker folder a symlink", func(t *testing.T, l Layout) {
			mkdirAll(t, l.Lockers, filepath.Join(l.Root, "elsewhere/Me"), filepath.Join(l.Root, "elsewhere/Config"))
			symlink(t, "../elsewhere", l.LockerDir("a"))
		}, func(l Layout) []string { return []string{l.LockerDir("a") + " is a symlink"} }},
		{"Me a symlink", func(t *testing.T, l Layout) {
			if _, err := l.Provision("a", owner); err != nil {
				t.Fatal(err)
			}
			os.Remove(l.MeDir("a"))
			symlink(t, "Config", l.MeDir("a"))
		}, func(l Layout) []string { return []string{l.MeDir("a") + " is a symlink"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := tempLayout(t)
			tt.setup(t, l)
			got := l.CheckFolders("a", owner)
			if want := tt.want(l); !slices.Equal(got, want) {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

// TestCheckFoldersOwnerAndSearch needs root: it gives folders to other ids.
func TestCheckFoldersOwnerAndSearch(t *testing.T) {
	needRoot(t)
	l := tempLayout(t)
	owner := Owner{100000, 100000}
	if _, err := l.Provision("a", Owner{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(l.Lockers, 0o700); err != nil {
		t.Fatal(err)
	}
	got := l.CheckFolders("a", owner)
	want := []string{
		l.MeDir("a") + " is owned by 0:0, want 100000:100000",
		l.ConfigDir("a") + " is owned by 0:0, want 100000:100000",
		l.Lockers + " (-rwx------, 0:0) cannot be passed through by uid 100000, the container's root: its bind mounts would fail",
		l.LockerDir("a") + " (-rwxr-x---, 0:0) cannot be passed through by uid 100000, the container's root: its bind mounts would fail",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestProvisionConcurrent provisions lockers in parallel on a fresh layout,
// as the benchmark's fleet builder does (4 at once): each creates the
// shared lockers/ folder if it is missing, and the one that loses the race
// must take the folder the winner made, not fail with "file exists" (this
// failed the benchmark's smoke test on a fresh machine).
func TestProvisionConcurrent(t *testing.T) {
	for round := range 20 {
		l := LayoutAt(t.TempDir())
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = l.Provision(fmt.Sprintf("c%d", i), Owner{})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, locker c%d: got %v, want nil", round, i, err)
			}
			if fi, err := os.Stat(filepath.Join(l.Lockers, fmt.Sprintf("c%d", i), "Me")); err != nil || !fi.IsDir() {
				t.Fatalf("round %d, locker c%d: Me folder: %v", round, i, err)
			}
		}
	}
}
