package agent

import (
	"context"
	"errors"
	"slices"
	"time"

	"lxcfleet/internal/fakecode"
	"lxcfleet/internal/fakehost"
	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
)

// fakeContainers is the agent's Containers over internal/fakehost (the
// rollout package's fake host), with the release current in code: agent
// tests of the planning and recovery glue that need no root, LXC or npm,
// beside the real-LXC tests of the same paths.
type fakeContainers struct {
	h    *fakehost.Host
	code *fakecode.Code
}

func (f fakeContainers) names() []string {
	var out []string
	for _, l := range f.h.Lockers(nil) {
		out = append(out, l.Name)
	}
	return out
}

func (f fakeContainers) Select(ctx context.Context, names []string, group string) ([]lxcctl.Info, error) {
	var out []lxcctl.Info
	for i, l := range f.h.Lockers(nil) {
		if len(names) > 0 && !slices.Contains(names, l.Name) {
			continue // the pid stays the locker's index among all
		}
		in := lxcctl.Info{Name: l.Name, State: lxcctl.StateStopped}
		if l.Running {
			in.State, in.InitPID = lxcctl.StateRunning, i+1
		}
		out = append(out, in)
	}
	return out, nil
}

func (f fakeContainers) Stop(ctx context.Context, name string, timeout time.Duration) (lxcctl.StopOutcome, error) {
	so, err := f.h.Stop(ctx, name, timeout)
	return lxcctl.StopOutcome(so), err
}

func (f fakeContainers) StartHealthy(ctx context.Context, name string, hc lxcctl.HealthCheck, deadline time.Duration) lxcctl.StartResult {
	if cur, err := f.code.Current(); err == nil && cur.Name != f.h.Current() {
		_ = f.h.Switch(ctx, cur.Name, "follow the release manager")
	}
	st, err := f.h.Start(ctx, name, deadline)
	return lxcctl.StartResult{Name: name, Outcome: lxcctl.StartOutcome(st), Err: err}
}

func (f fakeContainers) CheckRunning(ctx context.Context, name string, hc lxcctl.HealthCheck) error {
	err := f.h.Check(ctx, name)
	if errors.Is(err, rollout.ErrNotRunning) {
		return errors.Join(err, lxcctl.ErrNotRunning)
	}
	return err
}

// releaseOf is Deps.ReleaseOf: the release the locker with that fake pid
// runs.
func (f fakeContainers) releaseOf(pid int) (string, bool, error) {
	names := f.names()
	if pid < 1 || pid > len(names) {
		return "", false, errors.New("no such pid")
	}
	return f.h.Where()[names[pid-1]], false, nil
}

var _ Containers = fakeContainers{}

// hookedContainers is fakeContainers with hooks: afterStop runs after each
// stop, beforeStart before each start, beforeCheck before each
// CheckRunning (nil: none). The agent tests put an inventory refresh or
// an operator's job at those points, where the 5 s refresh or an
// operator could fall.
type hookedContainers struct {
	fakeContainers
	afterStop, beforeStart, beforeCheck func()
}

func (f hookedContainers) Stop(ctx context.Context, name string, timeout time.Duration) (lxcctl.StopOutcome, error) {
	so, err := f.fakeContainers.Stop(ctx, name, timeout)
	if f.afterStop != nil {
		f.afterStop()
	}
	return so, err
}

func (f hookedContainers) StartHealthy(ctx context.Context, name string, hc lxcctl.HealthCheck, deadline time.Duration) lxcctl.StartResult {
	if f.beforeStart != nil {
		f.beforeStart()
	}
	return f.fakeContainers.StartHealthy(ctx, name, hc, deadline)
}

func (f hookedContainers) CheckRunning(ctx context.Context, name string, hc lxcctl.HealthCheck) error {
	if f.beforeCheck != nil {
		f.beforeCheck()
	}
	return f.fakeContainers.CheckRunning(ctx, name, hc)
}

// agentRef lets hooks reach the agent made around them.
type agentRef struct{ a *Agent }
