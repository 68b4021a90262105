package mounts

import (
	"flag"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// needRoot skips a test that needs root, or fails it when CI=true: a skipped
// real-system test is not a passing one.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root")
	}
}

// skipOrFail skips with a reason, or fails in CI.
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and this real-system test cannot run: %s", why)
	}
	t.Skip(why)
}

// testOwner returns the owner an unprivileged locker would have when the
// test runs as root, and the test's own ids otherwise (chown to another uid
// needs root).
func testOwner() Owner {
	if os.Geteuid() == 0 {
		return Owner{UID: 100000, GID: 100000}
	}
	return Owner{UID: os.Geteuid(), GID: os.Getegid()}
}

// tempLayout makes a layout under a fresh temporary root (which exists; its
// subfolders do not).
func tempLayout(t *testing.T) Layout {
	t.Helper()
	tmp := t.TempDir()
	// t.TempDir's folders are 0700; a host's /var/lib is not, and
	// CheckFolders looks at the whole path for unprivileged owners.
	for _, p := range []string{filepath.Dir(tmp), tmp} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(tmp, "lxcfleet")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	return LayoutAt(root)
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s: got\n%s\nwant\n%s", name, got, want)
	}
}

// mountTmpfs mounts a tmpfs with options at dir in the host's mount table,
// and unmounts it when the test ends. Needs root.
func mountTmpfs(t *testing.T, dir, opts string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Fatalf("mounting a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
}

func mkdirAll(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	mkdirAll(t, filepath.Dir(p))
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func syscallMkfifo(p string) error { return syscall.Mkfifo(p, 0o644) }
