package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// workGlob matches the work folders Run makes (see Options.WorkDir).
const workGlob = "/var/tmp/lockerbench-*"

// pidFile in a work folder holds the PID of the run that uses it;
// cgroupFile the lockers' cgroup parent it made.
const (
	pidFile    = "lockerbench.pid"
	cgroupFile = "cgroup-parent"
)

// Clean destroys what runs killed with SIGKILL left behind: for every
// lockerbench work folder whose run is no longer alive, every container in
// its private lxcpath, then its cgroup parent, then the folder. It returns the folders removed.
func Clean(ctx context.Context) ([]string, error) {
	dirs, err := filepath.Glob(workGlob)
	if err != nil {
		return nil, err
	}
	var done []string
	var errs []error
	for _, d := range dirs {
		if runAlive(d) {
			continue
		}
		lxcpath := filepath.Join(d, "lxc")
		ents, _ := os.ReadDir(lxcpath)
		failed := false
		for _, e := range ents {
			if !e.IsDir() || !fileExists(filepath.Join(lxcpath, e.Name(), "config")) {
				continue
			}
			if _, err := run(ctx, lxcpath, "lxc-destroy", "-P", lxcpath, "-n", e.Name(), "-f"); err != nil {
				errs = append(errs, err)
				failed = true
			}
		}
		if failed {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(d, cgroupFile)); err == nil {
			if err := removeCgroupParent(strings.TrimSpace(string(b))); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, d)
	}
	return done, errors.Join(errs...)
}

// runAlive reports whether the run that made work folder d still runs.
func runAlive(d string) bool {
	b, err := os.ReadFile(filepath.Join(d, pidFile))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

func writePID(dir string) error {
	return os.WriteFile(filepath.Join(dir, pidFile), []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644)
}
