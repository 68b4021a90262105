package mounts

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// seededLayout returns a layout with a template folder and a provisioned
// locker "a".
func seededLayout(t *testing.T) Layout {
	t.Helper()
	l := tempLayout(t)
	l.Templates = filepath.Join(filepath.Dir(l.Root), "templates")
	writeFile(t, filepath.Join(l.Templates, "app.json"), `{"port": 4100}`)
	writeFile(t, filepath.Join(l.Templates, "nginx/site.conf"), "server {}\n")
	writeFile(t, filepath.Join(l.Templates, "secrets.env"), "TOKEN=x\n")
	if err := os.Chmod(filepath.Join(l.Templates, "secrets.env"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(l.Templates, "nginx"), 0o750); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	for _, f := range []string{"app.json", "nginx/site.conf", "secrets.env"} {
		if err := os.Chtimes(filepath.Join(l.Templates, f), old, old); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Provision("a", testOwner()); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestSeedConfig(t *testing.T) {
	l := seededLayout(t)
	owner := testOwner()
	copied, err := l.SeedConfig("a", owner)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"app.json", "nginx/site.conf", "secrets.env"}; !slices.Equal(copied, want) {
		t.Errorf("got %q, want %q", copied, want)
	}
	for _, f := range []string{"app.json", "nginx", "nginx/site.conf", "secrets.env"} {
		src, err := os.Stat(filepath.Join(l.Templates, f))
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(l.ConfigDir("a"), f)
		got, err := os.Lstat(dst)
		if err != nil {
			t.Fatal(err)
		}
		if got.Mode() != src.Mode() {
			t.Errorf("%s: got mode %v, want %v", f, got.Mode(), src.Mode())
		}
		if o := ownerOf(t, dst); o != owner {
			t.Errorf("%s: got owner %v, want %v", f, o, owner)
		}
		if !src.IsDir() && !got.ModTime().Equal(src.ModTime()) {
			t.Errorf("%s: got mtime %v, want %v", f, got.ModTime(), src.ModTime())
		}
	}
	if drift, err := l.ConfigDrift("a"); err != nil || drift != nil {
		t.Errorf("got %v, %v, want no drift", drift, err)
	}

	// A second run copies nothing; an operator's edit survives, a deleted
	// file comes back.
	edited := filepath.Join(l.ConfigDir("a"), "app.json")
	writeFile(t, edited, `{"port": 4242}`)
	if err := os.Remove(filepath.Join(l.ConfigDir("a"), "secrets.env")); err != nil {
		t.Fatal(err)
	}
	copied, err = l.SeedConfig("a", owner)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"secrets.env"}; !slices.Equal(copied, want) {
		t.Errorf("got %q, want %q", copied, want)
	}
	if b, _ := os.ReadFile(edited); string(b) != `{"port": 4242}` {
		t.Errorf("got %q, want the operator's edit kept", b)
	}
}

// TestSeedConfigNeverWritesThroughSymlinks: a symlink where a template file
// goes is left alone, and so is its target.
func TestSeedConfigNeverWritesThroughSymlinks(t *testing.T) {
	l := seededLayout(t)
	victim := filepath.Join(t.TempDir(), "victim")
	writeFile(t, victim, "precious")
	symlink(t, victim, filepath.Join(l.ConfigDir("a"), "app.json"))
	symlink(t, filepath.Join(t.TempDir(), "dangling"), filepath.Join(l.ConfigDir("a"), "secrets.env"))
	copied, err := l.SeedConfig("a", testOwner())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"nginx/site.conf"}; !slices.Equal(copied, want) {
		t.Errorf("got %q, want %q", copied, want)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("got %q, want the symlink's target untouched", b)
	}
	drift, err := l.ConfigDrift("a")
	if err != nil {
		t.Fatal(err)
	}
	want := []Drift{{"app.json", DriftNotFile}, {"secrets.env", DriftNotFile}}
	if !slices.Equal(drift, want) {
		t.Errorf("got %v, want %v", drift, want)
	}
}

func TestSeedConfigRefuses(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(t *testing.T, l *Layout)
		wantErr string
	}{
		{"no template folder configured", func(t *testing.T, l *Layout) { l.Templates = "" }, "has no config template folder"},
		{"template folder missing", func(t *testing.T, l *Layout) {
			l.Templates = filepath.Join(l.Root, "absent")
		}, "config template folder " + "%T does not exist"},
		{"not provisioned", func(t *testing.T, l *Layout) {
			os.RemoveAll(l.LockerDir("a"))
		}, "does not exist: provision the locker first"},
		{"Config is a symlink", func(t *testing.T, l *Layout) {
			os.Remove(l.ConfigDir("a"))
			symlink(t, t.TempDir(), l.ConfigDir("a"))
		}, "is a symlink; refusing to follow it"},
		{"template folder where the locker has a symlink", func(t *testing.T, l *Layout) {
			symlink(t, t.TempDir(), filepath.Join(l.ConfigDir("a"), "nginx"))
		}, "is not a folder"},
		{"a fifo in the templates", func(t *testing.T, l *Layout) {
			if err := syscallMkfifo(filepath.Join(l.Templates, "pipe")); err != nil {
				t.Fatal(err)
			}
		}, "is not a regular file or a folder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := seededLayout(t)
			tt.edit(t, &l)
			copied, err := l.SeedConfig("a", testOwner())
			want := strings.ReplaceAll(tt.wantErr, "%T", l.Templates)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v, want an error containing %q", err, want)
			}
			if copied != nil {
				t.Errorf("got %q, want nothing copied", copied)
			}
		})
	}
}

// TestSeedConfigUndoes: when a copy fails half-way (here: the disk is
// full), neither the partial file nor the files copied before it are left.
func TestSeedConfigUndoes(t *testing.T) {
	needRoot(t)
	l := tempLayout(t)
	mountTmpfs(t, l.Root, "size=64k,mode=755")
	l.Templates = filepath.Join(filepath.Dir(l.Root), "templates")
	writeFile(t, filepath.Join(l.Templates, "a.conf"), "small")
	writeFile(t, filepath.Join(l.Templates, "b/big.bin"), strings.Repeat("x", 1<<20))
	if _, err := l.Provision("a", testOwner()); err != nil {
		t.Fatal(err)
	}
	_, err := l.SeedConfig("a", testOwner())
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("got %v, want no space left on device", err)
	}
	entries, err := os.ReadDir(l.ConfigDir("a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("got %d entries in Config, want none", len(entries))
	}
}

func TestConfigDrift(t *testing.T) {
	l := seededLayout(t)
	if _, err := l.SeedConfig("a", testOwner()); err != nil {
		t.Fatal(err)
	}
	cfg := l.ConfigDir("a")
	now := time.Now()
	// A template changed after seeding: drift.
	writeFile(t, filepath.Join(l.Templates, "nginx/site.conf"), "server { gzip on; }\n")
	// A template touched but unchanged: no drift.
	if err := os.Chtimes(filepath.Join(l.Templates, "app.json"), now, now); err != nil {
		t.Fatal(err)
	}
	// An operator's edit newer than the template: no drift.
	writeFile(t, filepath.Join(cfg, "secrets.env"), "TOKEN=y\n")
	// A new template: missing.
	writeFile(t, filepath.Join(l.Templates, "new/extra.conf"), "x")
	// A file only the locker has: not drift.
	writeFile(t, filepath.Join(cfg, "local.json"), "{}")
	got, err := l.ConfigDrift("a")
	if err != nil {
		t.Fatal(err)
	}
	want := []Drift{{"new/extra.conf", DriftMissing}, {"nginx/site.conf", DriftTemplateNewer}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}

	// Config's nginx replaced by a file: the template file under it is not
	// a file in the locker.
	if err := os.RemoveAll(filepath.Join(cfg, "nginx")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(cfg, "nginx"), "")
	got, err = l.ConfigDrift("a")
	if err != nil {
		t.Fatal(err)
	}
	want = []Drift{{"new/extra.conf", DriftMissing}, {"nginx/site.conf", DriftNotFile}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}

	// The template folder gone: a clear error.
	if err := os.RemoveAll(l.Templates); err != nil {
		t.Fatal(err)
	}
	if _, err := l.ConfigDrift("a"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("got %v, want a missing template folder error", err)
	}
	if _, err := os.Stat(l.Templates); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("got %v, want the template folder still absent", err)
	}
}
