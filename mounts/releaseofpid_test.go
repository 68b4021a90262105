package mounts

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startMounted starts a process in a private mount namespace that
// bind-mounts src onto dst, as LXC does for the app path, and sleeps. It
// returns the process's pid; the process is killed when the test ends.
func startMounted(t *testing.T, src, dst string) int {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		skipOrFail(t, "unshare(1) is not installed")
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private",
		"sh", "-c", `mount --bind "$1" "$2" && echo ready && exec sleep 300`, "sh", src, dst)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // only the process this test started
		_ = cmd.Wait()
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		if line != "ready\n" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			skipOrFail(t, "cannot bind-mount in a private mount namespace: "+strings.Join(cmd.Args, " ")+": "+stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%v: no ready line after 10s; stderr: %s", cmd.Args, stderr.String())
	}
	return cmd.Process.Pid
}

// gonePID returns the pid of a process that has exited.
func gonePID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func releaseLayout(t *testing.T, releases ...string) Layout {
	t.Helper()
	l := tempLayout(t)
	for _, r := range releases {
		writeFile(t, filepath.Join(l.Releases, r, "server.js"), "// "+r)
	}
	symlink(t, filepath.Join("releases", releases[0]), l.Current)
	return l
}

// flip points current at another release atomically, as codeupdate does.
func flip(t *testing.T, l Layout, release string) {
	t.Helper()
	tmp := l.Current + ".new"
	symlink(t, filepath.Join("releases", release), tmp)
	if err := os.Rename(tmp, l.Current); err != nil {
		t.Fatal(err)
	}
}

// appDir makes a container-like target folder ending in the app path, with
// a blank in its name so that mountinfo escapes it.
func appDir(t *testing.T, l Layout, name string) string {
	t.Helper()
	dst := filepath.Join(filepath.Dir(l.Root), name+" rootfs", l.AppPath)
	mkdirAll(t, dst)
	return dst
}

func TestReleaseOfPID(t *testing.T) {
	needRoot(t)
	l := releaseLayout(t, "000001-aaaaaaaaaaaa", "000002-bbbbbbbbbbbb", "000003-cccccccccccc")
	pid1 := startMounted(t, l.Current, appDir(t, l, "one"))

	check := func(t *testing.T, pid int, wantRelease string, wantDeleted bool) {
		t.Helper()
		rel, deleted, err := ReleaseOfPID(pid, l)
		if err != nil {
			t.Fatal(err)
		}
		if rel != wantRelease || deleted != wantDeleted {
			t.Errorf("got %q, %v, want %q, %v", rel, deleted, wantRelease, wantDeleted)
		}
	}
	t.Run("running", func(t *testing.T) { check(t, pid1, "000001-aaaaaaaaaaaa", false) })

	// After a switch, the running locker keeps its release; a new one gets
	// the new release.
	flip(t, l, "000002-bbbbbbbbbbbb")
	pid2 := startMounted(t, l.Current, appDir(t, l, "two"))
	t.Run("after a switch", func(t *testing.T) {
		check(t, pid1, "000001-aaaaaaaaaaaa", false)
		check(t, pid2, "000002-bbbbbbbbbbbb", false)
	})

	t.Run("as a locker", func(t *testing.T) {
		for pid, want := range map[int]string{
			pid1: "000001-aaaaaaaaaaaa", pid2: "000002-bbbbbbbbbbbb",
			0:           "", // stopped
			gonePID(t):  "",
			os.Getpid(): "", // nothing at the app path
		} {
			got, _, err := ReleaseOfLocker(pid, l)
			if err != nil || got != want {
				t.Errorf("pid %d: got %q, %v, want %q, no error", pid, got, err, want)
			}
		}
	})

	// Renaming a release folder: the mount follows the folder.
	if err := os.Rename(filepath.Join(l.Releases, "000002-bbbbbbbbbbbb"), filepath.Join(l.Releases, "000002-bbbbbbbbbbbb.old")); err != nil {
		t.Fatal(err)
	}
	t.Run("renamed", func(t *testing.T) { check(t, pid2, "000002-bbbbbbbbbbbb.old", false) })

	// Deleting a release a running locker uses: the kernel marks it.
	if err := os.RemoveAll(filepath.Join(l.Releases, "000001-aaaaaaaaaaaa")); err != nil {
		t.Fatal(err)
	}
	t.Run("deleted", func(t *testing.T) {
		check(t, pid1, "000001-aaaaaaaaaaaa", true)
		if rel, deleted, err := ReleaseOfLocker(pid1, l); rel != "000001-aaaaaaaaaaaa" || !deleted || err != nil {
			t.Errorf("got %q, %v, %v, want 000001-aaaaaaaaaaaa, true, no error", rel, deleted, err)
		}
	})

	t.Run("errors", func(t *testing.T) {
		if _, _, err := ReleaseOfPID(gonePID(t), l); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("got %v, want fs.ErrNotExist", err)
		}
		if _, _, err := ReleaseOfPID(os.Getpid(), l); !errors.Is(err, ErrNoAppMount) {
			t.Errorf("got %v, want ErrNoAppMount", err)
		}
		if _, _, err := ReleaseOfPID(0, l); err == nil {
			t.Errorf("got %v, want an error for pid 0", err)
		}
		// A locker whose app mount is not a release makes the safety check
		// fail: retention must not guess.
		other := startMounted(t, t.TempDir(), appDir(t, l, "three"))
		if _, _, err := ReleaseOfLocker(other, l); err == nil {
			t.Errorf("got %v, want an error for an app mount that is not a release", err)
		}
	})
}

// TestReleaseOfPIDReleasesOnOwnFilesystem: when the releases folder is a
// mount of its own, the app mount's root is relative to it ("/<release>")
// and only the host's mount table maps it back.
func TestReleaseOfPIDReleasesOnOwnFilesystem(t *testing.T) {
	needRoot(t)
	l := tempLayout(t)
	mkdirAll(t, l.Releases)
	mountTmpfs(t, l.Releases, "size=1m,mode=755")
	writeFile(t, filepath.Join(l.Releases, "000007-eeeeeeeeeeee", "server.js"), "//")
	symlink(t, "releases/000007-eeeeeeeeeeee", l.Current)
	pid := startMounted(t, l.Current, appDir(t, l, "one"))

	rel, deleted, err := ReleaseOfPID(pid, l)
	if err != nil || rel != "000007-eeeeeeeeeeee" || deleted {
		t.Errorf("got %q, %v, %v, want 000007-eeeeeeeeeeee, false, no error", rel, deleted, err)
	}

	// Without the host's table the root alone ("/000007-...") does not say
	// where it is: ReleaseFromMountinfo refuses to guess.
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "mountinfo"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReleaseFromMountinfo(bytes.NewReader(b), l); err == nil || !strings.Contains(err.Error(), "is not a release in") {
		t.Errorf("got %v, want a not-a-release error", err)
	}
}

// TestReleaseCache: the cache answers as ReleaseOfLocker does through a
// locker's life and its release folder's (kept, switched away from,
// renamed, deleted, deleted and built again under its name), and reads
// no mount table for a process and folder that did not change.
func TestReleaseCache(t *testing.T) {
	needRoot(t)
	l := releaseLayout(t, "000001-aaaaaaaaaaaa", "000002-bbbbbbbbbbbb", "000003-cccccccccccc")
	c := NewReleaseCache(l)
	check := func(t *testing.T, pid int, wantRelease string, wantDeleted bool) {
		t.Helper()
		rel, deleted, err := c.ReleaseOfLocker(pid)
		if err != nil || rel != wantRelease || deleted != wantDeleted {
			t.Errorf("pid %d: got %q, %v, %v, want %q, %v, no error", pid, rel, deleted, err, wantRelease, wantDeleted)
		}
		if r, d, e := ReleaseOfLocker(pid, l); r != rel || d != deleted || (e == nil) != (err == nil) {
			t.Errorf("pid %d: the cache says %q, %v, %v; ReleaseOfLocker %q, %v, %v", pid, rel, deleted, err, r, d, e)
		}
	}
	reads := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.reads
	}
	pid1 := startMounted(t, l.Current, appDir(t, l, "one"))
	check(t, pid1, "000001-aaaaaaaaaaaa", false)
	before := reads()
	for range 3 {
		check(t, pid1, "000001-aaaaaaaaaaaa", false)
	}
	if got := reads() - before; got != 0 {
		t.Errorf("an unchanged locker read the mount tables %d times in 3 calls, want 0", got)
	}

	flip(t, l, "000002-bbbbbbbbbbbb")
	pid2 := startMounted(t, l.Current, appDir(t, l, "two"))
	check(t, pid1, "000001-aaaaaaaaaaaa", false)
	check(t, pid2, "000002-bbbbbbbbbbbb", false)

	// Renamed: the kept answer's folder is gone from its path.
	if err := os.Rename(filepath.Join(l.Releases, "000002-bbbbbbbbbbbb"), filepath.Join(l.Releases, "000002-bbbbbbbbbbbb.old")); err != nil {
		t.Fatal(err)
	}
	check(t, pid2, "000002-bbbbbbbbbbbb.old", false)

	// Deleted.
	if err := os.RemoveAll(filepath.Join(l.Releases, "000001-aaaaaaaaaaaa")); err != nil {
		t.Fatal(err)
	}
	check(t, pid1, "000001-aaaaaaaaaaaa", true)

	// Deleted and built again under its name (on a reused inode, often):
	// the running locker's folder is the deleted one.
	flip(t, l, "000003-cccccccccccc")
	pid3 := startMounted(t, l.Current, appDir(t, l, "three"))
	check(t, pid3, "000003-cccccccccccc", false)
	dir3 := filepath.Join(l.Releases, "000003-cccccccccccc")
	if err := os.RemoveAll(dir3); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir3, "server.js"), "// built again")
	check(t, pid3, "000003-cccccccccccc", true)

	// Gone, and a stopped locker: no release, no error.
	check(t, gonePID(t), "", false)
	check(t, 0, "", false)
}
