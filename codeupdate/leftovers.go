package codeupdate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrDiskFull means a build or fetch ran out of space (ENOSPC). The error
// names the free space left; nothing is re-cloned or marked corrupt.
var ErrDiskFull = errors.New("disk full")

// diskFull turns an error caused by ENOSPC into one wrapping ErrDiskFull
// that says how much space is free on the file system of path; other
// errors pass unchanged.
func diskFull(err error, path string) error {
	if err == nil || errors.Is(err, ErrDiskFull) {
		return err
	}
	if !errors.Is(err, syscall.ENOSPC) && !strings.Contains(err.Error(), "no space left on device") {
		return err
	}
	var st unix.Statfs_t
	if serr := unix.Statfs(path, &st); serr != nil {
		return fmt.Errorf("%w on the file system of %s: %w", ErrDiskFull, path, err)
	}
	free := st.Bavail * uint64(st.Bsize)
	total := st.Blocks * uint64(st.Bsize)
	return fmt.Errorf("%w: %s free of %s on the file system of %s: %w", ErrDiskFull, mib(free), mib(total), path, err)
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// buildLock takes Root/build.lock shared for a build or fetch, waiting
// while the start-up cleanup holds it.
func (m *Manager) buildLock(ctx context.Context) (func(), error) {
	return flockWaitHow(ctx, filepath.Join(m.root, "build.lock"), unix.LOCK_SH)
}

// removeLeftovers removes what a dead agent's builds and fetches left:
// staging and trash folders under releases/, tmp_pack and tmp_idx files
// in the mirror, half-made mirrors beside it and temporary current links.
// It runs only when nothing holds the host lock (Root/lock), the build
// lock (every Build and fetch holds it shared) or the mirror lock, so
// that no running build, in this process or another, loses its files.
func (m *Manager) removeLeftovers() {
	var held []*os.File
	defer func() {
		for _, f := range held {
			unlockClose(f)
		}
	}()
	for _, n := range []string{"lock", "build.lock", "repo.lock"} {
		f, err := os.OpenFile(filepath.Join(m.root, n), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			m.log.Warn("not removing leftovers", "lock", n, "err", err)
			return
		}
		held = append(held, f)
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			m.log.Info("not removing leftovers: a build or update is running", "lock", n)
			return
		}
	}
	var globs = []string{
		filepath.Join(m.releasesDir(), ".tmp-*"),
		filepath.Join(m.releasesDir(), ".trash-*"),
		filepath.Join(m.mirrorDir(), "objects", "pack", "tmp_*"),
		m.mirrorDir() + ".new-*",
		m.mirrorDir() + ".old-*",
		filepath.Join(m.root, ".current-*"),
	}
	for _, g := range globs {
		paths, _ := filepath.Glob(g)
		for _, p := range paths {
			if err := os.RemoveAll(p); err != nil {
				m.log.Warn("removing leftover", "path", p, "err", err)
				continue
			}
			m.log.Info("removed leftover of an interrupted build or fetch", "path", p)
		}
	}
}
