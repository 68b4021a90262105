package lxcctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	lxc "github.com/lxc/go-lxc"
	"golang.org/x/sys/unix"
)

// StopOutcome says how a container came to be stopped.
type StopOutcome string

// The outcomes of a stop.
const (
	// StoppedClean: the init exited on the halt signal within the timeout.
	StoppedClean StopOutcome = "clean"
	// StoppedKilled: the timeout passed and the container was killed.
	StoppedKilled StopOutcome = "killed"
	// AlreadyStopped: the container was not running.
	AlreadyStopped StopOutcome = "already-stopped"
	// StopFailed: the container could not be stopped.
	StopFailed StopOutcome = "failed"
)

// settleTimeout bounds the wait for LXC to report STOPPED once init exited
// or was killed.
const settleTimeout = 10 * time.Second

// Stop stops a container gracefully: it sends the container's halt signal
// (lxc.signal.halt), waits up to timeout for the init process to exit (on
// its pidfd, so the wait has sub-second precision and costs no polling),
// then kills the container. It returns how the container stopped. A
// cancelled ctx ends the wait early without killing.
func (h *Host) Stop(ctx context.Context, name string, timeout time.Duration) (StopOutcome, error) {
	if timeout <= 0 {
		return StopFailed, fmt.Errorf("stopping container %q: timeout must be positive, got %v", name, timeout)
	}
	c, err := h.open(name)
	if err != nil {
		return StopFailed, err
	}
	defer c.Release()
	if !c.Running() {
		return AlreadyStopped, nil
	}
	// A held socket's last copy may be the app's (its holder died): the
	// holder (started again) takes it back first, or the stop would close
	// it and refuse connections until the next start.
	if h.before != nil {
		if err := h.before(ctx, name); err != nil {
			h.log.Warn("holding a container's socket before its stop: connections may be refused until it starts", "container", name, "err", err)
		}
	}
	pidfd, err := c.InitPidFd()
	if err != nil {
		pidfd = nil // old kernel or the init just exited: fall back to polling
	}
	if pidfd != nil {
		defer pidfd.Close()
	}
	// Shutdown(0) sends the halt signal and returns at once: go-lxc passes
	// int(t.Seconds()) and liblxc does not wait for 0. It does not kill.
	if err := c.Shutdown(0); err != nil && c.Running() {
		return StopFailed, fmt.Errorf("sending halt signal to container %q: %s", name, err)
	}
	deadline := time.Now().Add(timeout)
	exited, err := waitExit(ctx, c, pidfd, deadline)
	if err != nil {
		return StopFailed, fmt.Errorf("stopping container %q: %w", name, err)
	}
	outcome := StoppedClean
	if !exited {
		outcome = StoppedKilled
		if err := c.Stop(); err != nil && c.Running() {
			return StopFailed, fmt.Errorf("killing container %q after %v: %s", name, timeout, err)
		}
	}
	if err := waitStopped(ctx, c, time.Now().Add(settleTimeout)); err != nil {
		return StopFailed, fmt.Errorf("stopping container %q: %w", name, err)
	}
	return outcome, nil
}

// waitExit waits until the container's init exits or deadline passes. It
// reports whether the init exited.
func waitExit(ctx context.Context, c *lxc.Container, pidfd *os.File, deadline time.Time) (bool, error) {
	for {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		step := min(left, 100*time.Millisecond) // wake up for ctx
		if pidfd != nil {
			fds := []unix.PollFd{{Fd: int32(pidfd.Fd()), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, int(step.Milliseconds())+1)
			if err != nil && !errors.Is(err, unix.EINTR) {
				return false, fmt.Errorf("polling init pidfd: %w", err)
			}
			if n > 0 {
				return true, nil
			}
			continue
		}
		if !c.Running() {
			return true, nil
		}
		time.Sleep(min(step, 10*time.Millisecond))
	}
}

// waitStopped polls until LXC reports the container STOPPED.
func waitStopped(ctx context.Context, c *lxc.Container, deadline time.Time) error {
	for sleep := time.Millisecond; ; sleep = min(2*sleep, 20*time.Millisecond) {
		if c.State() == lxc.STOPPED {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still %s after the init exited", c.State())
		}
		time.Sleep(sleep)
	}
}
