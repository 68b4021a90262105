package lockerverbs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
)

// Containers is what the verbs need of lxcctl; *lxcctl.Host provides it.
type Containers interface {
	Stop(ctx context.Context, name string, timeout time.Duration) (lxcctl.StopOutcome, error)
	StartHealthy(ctx context.Context, name string, hc lxcctl.HealthCheck, deadline time.Duration) lxcctl.StartResult
	CheckRunning(ctx context.Context, name string, hc lxcctl.HealthCheck) error
}

// Verbs is rollout.Host over Containers with one health check.
type Verbs struct {
	C      Containers
	Health lxcctl.HealthCheck
}

var _ rollout.Host = Verbs{}

// Stop stops one container: its halt signal, timeout, then a kill.
func (v Verbs) Stop(ctx context.Context, name string, timeout time.Duration) (rollout.StopOutcome, error) {
	so, err := v.C.Stop(ctx, name, timeout)
	return rollout.StopOutcome(so), err
}

// Start starts one container and waits for its first healthy check.
func (v Verbs) Start(ctx context.Context, name string, deadline time.Duration) (rollout.StartOutcome, error) {
	r := v.C.StartHealthy(ctx, name, v.Health, deadline)
	return rollout.StartOutcome(r.Outcome), r.Err
}

// Check runs one health check that passes only while the container runs;
// a stopped container's error wraps rollout.ErrNotRunning.
func (v Verbs) Check(ctx context.Context, name string) error {
	err := v.C.CheckRunning(ctx, name, v.Health)
	if errors.Is(err, lxcctl.ErrNotRunning) {
		return fmt.Errorf("%w: %w", rollout.ErrNotRunning, err)
	}
	return err
}

// StartAll starts names with at most opts.Window starting at once, each
// counted once its check passes or its deadline expires, through the
// rollout executor (no failure policy, no monitor window: a tool for tests
// and the benchmark's fleet; jobs plan their own starts). Results come in
// the order of names.
func StartAll(ctx context.Context, c Containers, names []string, opts lxcctl.StartOptions) ([]lxcctl.StartResult, error) {
	switch {
	case opts.Window <= 0:
		return nil, fmt.Errorf("starting containers: window must be positive, got %d", opts.Window)
	case opts.Deadline <= 0:
		return nil, fmt.Errorf("starting containers: deadline must be positive, got %v", opts.Deadline)
	case opts.Delay < 0:
		return nil, fmt.Errorf("starting containers: delay must not be negative, got %v", opts.Delay)
	}
	p := rollout.Plan{Kind: rollout.KindStart, Policy: rollout.Policy{
		MaxUnavailable: max(len(names), 1), MaxStarting: opts.Window, StopTimeout: time.Second,
		Deadline: opts.Deadline, Delay: opts.Delay, FailureAction: rollout.Rollback, MaxFailureRatio: 1,
	}}
	for _, n := range names {
		p.Items = append(p.Items, rollout.Item{Name: n, Op: rollout.OpStart})
	}
	res := rollout.Run(ctx, p, rollout.Env{Host: Verbs{C: c, Health: opts.Health}, Observe: relay(opts.OnEvent)})
	if res.Err != nil {
		return nil, res.Err
	}
	out := make([]lxcctl.StartResult, len(res.Outcomes))
	for i, o := range res.Outcomes {
		r := lxcctl.StartResult{Name: o.Name, Duration: o.Duration}
		switch o.Outcome {
		case rollout.OutStarted:
			r.Outcome = lxcctl.Started
		case rollout.OutAlreadyRunning:
			r.Outcome = lxcctl.AlreadyRunning
		case rollout.OutSkipped:
			r.Outcome, r.Err = lxcctl.StartFailed, context.Cause(ctx)
		default:
			r.Outcome = lxcctl.StartFailed
			if o.Start == rollout.StartUnhealthy {
				r.Outcome = lxcctl.StartUnhealthy
			}
		}
		if o.Error != "" {
			r.Err = errors.New(o.Error)
		}
		out[i] = r
	}
	return out, nil
}

// StopAll stops names, at most opts.Parallel at once, in reverse order
// (names in start order), through the rollout executor. Results come in
// the order of names; a cancelled ctx leaves the rest untouched, reported
// failed with ctx's error.
func StopAll(ctx context.Context, c Containers, names []string, opts lxcctl.StopOptions) ([]lxcctl.StopResult, error) {
	switch {
	case opts.Parallel <= 0:
		return nil, fmt.Errorf("stopping containers: parallel must be positive, got %d", opts.Parallel)
	case opts.Timeout <= 0:
		return nil, fmt.Errorf("stopping containers: timeout must be positive, got %v", opts.Timeout)
	}
	p := rollout.Plan{Kind: rollout.KindStop, Policy: rollout.Policy{
		MaxUnavailable: 1, StopParallel: opts.Parallel, StopTimeout: opts.Timeout, Deadline: time.Second, FailureAction: rollout.Rollback,
	}}
	for _, n := range names {
		p.Items = append(p.Items, rollout.Item{Name: n, Op: rollout.OpStop})
	}
	res := rollout.Run(ctx, p, rollout.Env{Host: Verbs{C: c}, Observe: relay(opts.OnEvent)})
	if res.Err != nil {
		return nil, res.Err
	}
	out := make([]lxcctl.StopResult, len(res.Outcomes))
	for i, o := range res.Outcomes {
		r := lxcctl.StopResult{Name: o.Name, Duration: o.Duration, Outcome: lxcctl.StopFailed}
		switch o.Outcome {
		case rollout.OutStopped:
			r.Outcome = lxcctl.StoppedClean
		case rollout.OutKilled:
			r.Outcome = lxcctl.StoppedKilled
		case rollout.OutAlreadyStopped:
			r.Outcome = lxcctl.AlreadyStopped
		case rollout.OutSkipped:
			r.Err = context.Cause(ctx)
		}
		if o.Error != "" {
			r.Err = errors.New(o.Error)
		}
		out[i] = r
	}
	return out, nil
}

// relay turns rollout's events into lxcctl's (nil when fn is nil).
func relay(fn func(lxcctl.Event)) func(rollout.Event) {
	if fn == nil {
		return nil
	}
	return func(e rollout.Event) {
		if e.Container == "" {
			return
		}
		ph := lxcctl.Phase(e.Phase)
		switch e.Phase {
		case rollout.PhaseMoved:
			return
		case rollout.PhaseStopped:
			if e.Outcome == string(rollout.AlreadyStopped) {
				ph = lxcctl.PhaseSkipped
			}
		}
		fn(lxcctl.Event{Time: e.Time, Container: e.Container, Phase: ph, Outcome: e.Outcome, Duration: e.Duration, Error: e.Error})
	}
}
