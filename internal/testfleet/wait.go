package testfleet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The waits below block on a kernel event (inotify, a pidfd), not on a
// clock: a test waits on the thing itself.

// WaitFile waits until path exists and is not empty (made, moved in or
// written under its folder, seen through inotify), at most within.
func WaitFile(path string, within time.Duration) error {
	return waitInotify(filepath.Dir(path), unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_MODIFY|unix.IN_CLOSE_WRITE, within, func() bool {
		fi, err := os.Stat(path)
		return err == nil && fi.Size() > 0
	}, "waiting for "+path)
}

// WaitFileContains waits until the file at path holds substr (each write
// to it seen through inotify), at most within.
func WaitFileContains(path, substr string, within time.Duration) error {
	return waitInotify(filepath.Dir(path), unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_MODIFY|unix.IN_CLOSE_WRITE, within, func() bool {
		b, err := os.ReadFile(path)
		return err == nil && strings.Contains(string(b), substr)
	}, fmt.Sprintf("waiting for %q in %s", substr, path))
}

// WaitCgroupEmpty waits until the cgroup v2 folder dir holds no process
// (its cgroup.events says "populated 0"; the kernel signals each change
// of that file to inotify), at most within.
func WaitCgroupEmpty(dir string, within time.Duration) error {
	events := filepath.Join(dir, "cgroup.events")
	return waitInotify(events, unix.IN_MODIFY, within, func() bool {
		b, err := os.ReadFile(events)
		return err != nil || strings.Contains(string(b), "populated 0")
	}, "waiting for cgroup "+dir+" to empty")
}

// waitInotify watches path for mask and returns once done() holds (it is
// asked first, then after each event).
func waitInotify(path string, mask uint32, within time.Duration, done func() bool, what string) error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("%s: inotify: %w", what, err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, path, mask); err != nil {
		return fmt.Errorf("%s: watching %s: %w", what, path, err)
	}
	deadline := time.Now().Add(within)
	buf := make([]byte, 64*1024)
	for !done() {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("%s: not within %v", what, within)
		}
		if err := pollIn(fd, left); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		for { // drain the events; done() decides
			if _, err := unix.Read(fd, buf); err != nil {
				break
			}
		}
	}
	return nil
}

// WaitExit waits until the process pid has exited (a zombie counts: its
// pidfd turns readable when it exits), at most within; it reports whether
// it did.
func WaitExit(pid int, within time.Duration) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return true
	}
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return pollIn(fd, within) == nil
}

// pollIn waits until fd is readable, at most within.
func pollIn(fd int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("no event within %v", within)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}
