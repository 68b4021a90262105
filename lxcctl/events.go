package lxcctl

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// This file holds the shapes of starting and stopping containers: phases,
// events, options and results. The per-container verbs are Stop
// (stop.go) and StartHealthy (verbs.go); moving many containers in a
// bounded window is the rollout executor's (lockerverbs adapts
// these verbs to it).

// Phase is a step of one container in a bulk operation.
type Phase string

// The phases reported through OnEvent.
const (
	PhaseStopping Phase = "stopping"
	PhaseStopped  Phase = "stopped"
	PhaseStarting Phase = "starting"
	PhaseRunning  Phase = "running" // LXC says RUNNING; health not yet checked
	PhaseHealthy  Phase = "healthy"
	PhaseFailed   Phase = "failed"
	PhaseSkipped  Phase = "skipped" // nothing to do (already in the wanted state)
)

// Event is one container's progress in a bulk operation.
type Event struct {
	Time      time.Time     `json:"time"`
	Container string        `json:"container"`
	Phase     Phase         `json:"phase"`
	Outcome   string        `json:"outcome,omitempty"`
	Duration  time.Duration `json:"duration,omitempty"`
	Error     string        `json:"error,omitempty"`
}

// emit calls fn (when set) with an event stamped now.
func emit(fn func(Event), e Event) {
	if fn != nil {
		e.Time = time.Now()
		fn(e)
	}
}

// StopOptions tunes StopAll.
type StopOptions struct {
	// Parallel is the most containers stopping at once (P); must be > 0.
	Parallel int
	// Timeout is each container's grace period before it is killed; > 0.
	Timeout time.Duration
	// OnEvent, when set, receives progress; it must not block for long.
	OnEvent func(Event)
}

// StopResult is the outcome of stopping one container.
type StopResult struct {
	Name     string        `json:"name"`
	Outcome  StopOutcome   `json:"outcome"`
	Duration time.Duration `json:"duration"`
	Err      error         `json:"-"`
}

// StartOutcome says how a container's start ended.
type StartOutcome string

// The outcomes of a start.
const (
	// Started: running and healthy (or running, with no health check).
	Started StartOutcome = "healthy"
	// AlreadyRunning: the container was running before; it was left alone.
	AlreadyRunning StartOutcome = "already-running"
	// StartUnhealthy: it runs, but its check did not pass before the deadline.
	StartUnhealthy StartOutcome = "unhealthy"
	// StartFailed: LXC could not start it, or it stopped while starting.
	StartFailed StartOutcome = "failed"
)

// StartOptions tunes StartAll.
type StartOptions struct {
	// Window is the most containers starting at once (K); must be > 0. A
	// container holds its place from its start until it is healthy or its
	// deadline passes, so K bounds the startup load, not just the forks.
	Window int
	// Delay is waited between two launches (not after the last one).
	Delay time.Duration
	// Health is the check that says a container has started.
	Health HealthCheck
	// Deadline bounds each container's start-to-healthy time; > 0.
	Deadline time.Duration
	// Pace, when set, is called before each launch and may hold it back
	// (the rollout executor's Pacer holds launches back under pressure); its error ends the launch loop.
	Pace func(ctx context.Context) error
	// OnEvent, when set, receives progress; it must not block for long.
	OnEvent func(Event)
}

// StartResult is the outcome of starting one container.
type StartResult struct {
	Name     string        `json:"name"`
	Outcome  StartOutcome  `json:"outcome"`
	Duration time.Duration `json:"duration"`
	Err      error         `json:"-"`
}

// OK reports whether the container runs healthy after the start.
func (r StartResult) OK() bool { return r.Outcome == Started || r.Outcome == AlreadyRunning }

// startOne starts one container and waits for it to be healthy.
func (h *Host) startOne(ctx context.Context, chk *checker, name string, opts StartOptions) StartResult {
	begin := time.Now()
	fail := func(outcome StartOutcome, err error) StartResult {
		r := StartResult{Name: name, Outcome: outcome, Duration: time.Since(begin), Err: err}
		emit(opts.OnEvent, Event{Container: name, Phase: PhaseFailed, Outcome: string(outcome), Duration: r.Duration, Error: err.Error()})
		return r
	}
	in, err := h.Info(ctx, name)
	if err != nil {
		return fail(StartFailed, err)
	}
	if in.State == StateRunning {
		emit(opts.OnEvent, Event{Container: name, Phase: PhaseSkipped, Outcome: string(AlreadyRunning)})
		return StartResult{Name: name, Outcome: AlreadyRunning}
	}
	emit(opts.OnEvent, Event{Container: name, Phase: PhaseStarting})
	appLog := h.AppLogFile(name)
	rotateLog(appLog)
	appOffset := fileSize(appLog)
	deadline := begin.Add(opts.Deadline)
	sctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := h.Start(sctx, name); err != nil {
		return fail(StartFailed, err)
	}
	endBoost := h.boostStart(ctx, name)
	emit(opts.OnEvent, Event{Container: name, Phase: PhaseRunning, Duration: time.Since(begin)})
	err = chk.waitHealthy(ctx, opts.Health, in, deadline)
	endBoost()
	if err != nil {
		if ctx.Err() == nil {
			if why := readAppExit(appLog, appOffset).String(); why != "" {
				err = fmt.Errorf("%w: %s", err, why)
			}
		}
		if errors.Is(err, errUnhealthy) {
			return fail(StartUnhealthy, err)
		}
		return fail(StartFailed, err)
	}
	d := time.Since(begin)
	emit(opts.OnEvent, Event{Container: name, Phase: PhaseHealthy, Outcome: string(Started), Duration: d})
	return StartResult{Name: name, Outcome: Started, Duration: d}
}

// boostStart gives a container that just started its startup CPU boost
// (CgroupParent.StartCPUWeight) and returns what ends it (a no-op without
// a boost). A boost that cannot be given or ended is logged, never an
// error of the start.
func (h *Host) boostStart(ctx context.Context, name string) func() {
	none := func() {}
	if h.cgroup.StartCPUWeight == 0 {
		return none
	}
	in, err := h.Info(ctx, name)
	if err != nil || in.InitPID <= 0 {
		return none // stopped already: waitHealthy says so
	}
	restore, err := h.cgroup.boostStart(in.InitPID)
	if err != nil {
		h.log.Warn("starting without a startup CPU boost", "container", name, "err", err)
		return none
	}
	return func() {
		if err := restore(); err != nil {
			h.log.Warn("the startup CPU boost did not end", "container", name, "err", err)
		}
	}
}
