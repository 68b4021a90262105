package lxcctl

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	lxc "github.com/lxc/go-lxc"
)

// ForkStartCommand is the hidden subcommand through which a Host starts a
// container: the Host re-executes its binary as
//
//	<exe> forkstart <lxcpath> <name> <logfile> [<cgroup parent>]
//
// and the child calls go-lxc's Start with daemonize. liblxc forks the
// container's monitor from that short-lived child, so the long-running
// process stays in its own cgroups (a Start from the daemon itself moves the
// daemon into lxc.monitor.<name> cgroups and leaks them; measured, see the
// README's "How containers are started and stopped") and no fd of the
// daemon leaks into a monitor. The cost is one exec per start (~5 ms).
//
// Binaries that use a Host must route this subcommand to ForkStartMain:
// cmd/lxcfleet has it as a hidden cobra command, test binaries check
// os.Args in TestMain.
const ForkStartCommand = "forkstart"

// maxLogBytes is the size past which a container's start log is rotated
// before the next start.
const maxLogBytes = 1 << 20

// ForkStartMain is the body of the forkstart subcommand: args are lxcpath,
// name, log file and, optionally, the cgroup parent (lxc.cgroup.dir, set in
// memory unless the config sets one). It returns the process exit code and
// writes a one-line error to stderr on failure.
func ForkStartMain(args []string) int {
	if len(args) != 3 && len(args) != 4 {
		fmt.Fprintf(os.Stderr, "usage: %s LXCPATH NAME LOGFILE [CGROUP_PARENT]\n", ForkStartCommand)
		return 2
	}
	lxcpath, name, logfile := args[0], args[1], args[2]
	c, err := lxc.NewContainer(name, lxcpath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "opening container %q: %s\n", name, err)
		return 1
	}
	defer c.Release()
	if !c.Defined() {
		fmt.Fprintf(os.Stderr, "container %q is not defined in %s\n", name, lxcpath)
		return 1
	}
	if c.Running() {
		return 0
	}
	if c.LogFile() == "" {
		if err := c.SetLogFile(logfile); err != nil {
			fmt.Fprintf(os.Stderr, "setting log file of %q: %s\n", name, err)
			return 1
		}
		_ = c.SetLogLevel(lxc.WARN)
	}
	if len(args) == 4 && args[3] != "" && !ownCgroupDir(c) {
		if err := c.SetConfigItem("lxc.cgroup.dir", args[3]); err != nil {
			fmt.Fprintf(os.Stderr, "placing %q under cgroup %s: %s\n", name, args[3], err)
			return 1
		}
	}
	if err := c.WantDaemonize(true); err != nil {
		fmt.Fprintf(os.Stderr, "daemonizing %q: %s\n", name, err)
		return 1
	}
	if err := c.WantCloseAllFds(true); err != nil {
		fmt.Fprintf(os.Stderr, "closing fds for %q: %s\n", name, err)
		return 1
	}
	if err := c.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "%s\n", err)
		return 1
	}
	return 0
}

// LogFile returns the log file lxcfleet gives a container when its config
// sets none.
func (h *Host) LogFile(name string) string {
	return filepath.Join(h.lxcpath, name, "lxcfleet.log")
}

// Start starts a stopped container through the forkstart re-exec and returns
// once LXC reports it RUNNING (not healthy: see StartAll for health). A
// running container is left alone. A failed start's error carries the ERROR
// lines the start wrote to the container's log.
func (h *Host) Start(ctx context.Context, name string) error {
	c, err := h.open(name)
	if err != nil {
		return err
	}
	running := c.Running()
	logfile := c.LogFile()
	_ = c.Release()
	if running {
		return nil
	}
	if h.before != nil {
		if err := h.before(ctx, name); err != nil {
			return fmt.Errorf("starting container %q: %w", name, err)
		}
	}
	if logfile == "" {
		logfile = h.LogFile(name)
	}
	rotateLog(logfile)
	rotateLog(h.AppLogFile(name))
	offset := fileSize(logfile)

	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, h.exe, ForkStartCommand, h.lxcpath, name, logfile, h.cgroupParent())
	cmd.Stdout = io.Discard
	cmd.Stderr = &stderr
	// The container's monitor is forked from the child; should it ever keep
	// the child's stderr open, do not wait for it past the child's exit.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("starting container %q: %w", name, ctx.Err())
		}
		msg := strings.TrimSpace(stderr.String())
		if lines := errorLines(logfile, offset, 5); lines != "" {
			msg += "; log: " + lines
		}
		return fmt.Errorf("starting container %q: %s (%s %s %s %s %s: %v)", name, msg, h.exe, ForkStartCommand, h.lxcpath, name, logfile, err)
	}
	return nil
}

// cgroupParent creates the parent cgroup at the first start and returns
// its path, or "" when it cannot be made (warned once).
func (h *Host) cgroupParent() string {
	h.cgroupOnce.Do(func() {
		if err := h.cgroup.Ensure(); err != nil {
			h.log.Warn("starting lockers without a parent cgroup: the agent competes with each locker for CPU", "err", err)
			h.cgroup = CgroupParent{}
		}
	})
	return h.cgroup.Path
}

// ownCgroupDir: the container's config places it itself. (go-lxc returns
// "(null)" for an unset key.)
func ownCgroupDir(c *lxc.Container) bool {
	for _, k := range []string{"lxc.cgroup.dir", "lxc.cgroup.dir.container"} {
		if v := c.ConfigItem(k); len(v) > 0 && v[0] != "" && v[0] != "(null)" {
			return true
		}
	}
	return false
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// rotateLog moves a log over maxLogBytes to path.1 (replacing the older
// one) so that a log takes at most about twice maxLogBytes.
func rotateLog(path string) {
	if fileSize(path) > maxLogBytes {
		_ = os.Rename(path, path+".1")
	}
}

// errorLines returns up to max ERROR lines written to path after offset,
// joined with " | ".
func errorLines(path string, offset int64, max int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, " ERROR ") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	if len(lines) > max {
		lines = lines[len(lines)-max:]
	}
	return strings.Join(lines, " | ")
}
