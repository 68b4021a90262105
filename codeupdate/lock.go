package codeupdate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Lock takes the host-wide update lock, an flock(2) on Root/lock, without
// waiting. While it is held, a second Lock (from this or any other process)
// fails at once with an error wrapping ErrLocked that names the holder:
// "update already running (lock held by pid N since T)". The lock goes away
// with the process, so a crashed update never leaves it behind. unlock is
// safe to call more than once.
func (m *Manager) Lock() (unlock func() error, err error) {
	path := filepath.Join(m.root, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening update lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (lock held by %s)", ErrLocked, lockHolder(f))
		}
		return nil, fmt.Errorf("taking update lock %s: %w", path, err)
	}
	info := fmt.Sprintf("pid %d since %s\n", os.Getpid(), time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(info), 0)
	}
	var once sync.Once
	var cerr error
	return func() error {
		once.Do(func() { cerr = unlockClose(f) })
		return cerr
	}, nil
}

// unlockClose drops the flock on f's open file description, then closes f.
// Closing alone is not enough: a child forked by any goroutine of this
// process shares the description between fork and exec (O_CLOEXEC takes
// effect only at exec), and an flock lives until every descriptor of it is
// closed, so the next Lock would see the lock "held by" this very process
// (TestLockReleasedUnderForks). LOCK_UN acts on the description itself.
func unlockClose(f *os.File) error {
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return f.Close()
}

// lockHolder reads "pid N since T" from a lock file held by someone else.
func lockHolder(f *os.File) string {
	b := make([]byte, 128)
	n, _ := f.ReadAt(b, 0)
	s := strings.TrimSpace(string(b[:n]))
	if !strings.HasPrefix(s, "pid ") {
		return "another process"
	}
	fields := strings.Fields(s)
	if len(fields) >= 2 {
		if _, err := strconv.Atoi(fields[1]); err != nil {
			return "another process"
		}
	}
	return s
}

// flockWait takes an exclusive flock on path, polling until ctx is done.
// It is used for the mirror, where a short wait is better than an error.
func flockWait(ctx context.Context, path string) (func(), error) {
	return flockWaitHow(ctx, path, unix.LOCK_EX)
}

// flockWaitHow takes a flock (unix.LOCK_EX or LOCK_SH) on path, polling
// until ctx is done.
func flockWaitHow(ctx context.Context, path string, how int) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return func() { unlockClose(f) }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for %s: %w", path, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
