package lxcctl

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrNotRunning is wrapped by CheckRunning when the container is not
// RUNNING (or its init changed during the check: it restarted).
var ErrNotRunning = errors.New("not running")

// StartHealthy starts one stopped container and waits for hc to pass or
// deadline (> 0) to expire: the per-locker start verb of the rollout
// executor. A running container is left alone (AlreadyRunning). Failures
// carry the container's LXC log ERROR lines.
func (h *Host) StartHealthy(ctx context.Context, name string, hc HealthCheck, deadline time.Duration) StartResult {
	if deadline <= 0 {
		return StartResult{Name: name, Outcome: StartFailed, Err: fmt.Errorf("starting container %q: deadline must be positive, got %v", name, deadline)}
	}
	return h.startOne(ctx, h.healthChecker(), name, StartOptions{Window: 1, Deadline: deadline, Health: hc})
}

// CheckRunning runs one attempt of hc against a container and passes only
// when the container is RUNNING before and after the attempt with the same
// init: a check answered while the container stopped (by another process
// holding its port, say) does not count. An HTTP or TCP check must also be
// answered by a socket a process of the container holds: one answered by
// another process holding the container's port (the app died of
// EADDRINUSE but its init runs on) gives an error wrapping
// ErrForeignListener that names that process. A container that is not
// running gives an error wrapping ErrNotRunning.
func (h *Host) CheckRunning(ctx context.Context, name string, hc HealthCheck) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// One load of the container for both reads of its state: loading
	// parses its config, which was half of a monitor window's check
	// (issue 19, profiled: 20 checks per locker per window).
	c, _, err := h.load(name)
	if err != nil {
		return err
	}
	defer c.Release()
	before := infoOf(c)
	if before.State != StateRunning {
		return fmt.Errorf("container %q is %s%s: %w", name, before.State, h.exitNote(name), ErrNotRunning)
	}
	checkErr := h.healthChecker().once(ctx, hc, before)
	after := Info{State: State(c.State().String())}
	if after.State == StateRunning {
		after.InitPID = c.InitPid()
	}
	if after.State != StateRunning || after.InitPID != before.InitPID {
		return fmt.Errorf("container %q stopped during its health check (%s, init %d -> %d)%s: %w", name, after.State, before.InitPID, after.InitPID, h.exitNote(name), ErrNotRunning)
	}
	if checkErr != nil {
		return fmt.Errorf("health check of container %q: %w", name, checkErr)
	}
	return nil
}

// exitNote is "; " and what the app log says of the app's exit, or "".
func (h *Host) exitNote(name string) string {
	if s := h.LastAppExit(name).String(); s != "" {
		return "; " + s
	}
	return ""
}
