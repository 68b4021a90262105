package rollout

import (
	"context"
	"errors"
	"time"
)

// StopOutcome says how a locker came to be stopped (lxcctl's words).
type StopOutcome string

// The stop outcomes.
const (
	StoppedClean   StopOutcome = "clean"
	StoppedKilled  StopOutcome = "killed"
	AlreadyStopped StopOutcome = "already-stopped"
	StopFailed     StopOutcome = "failed"
)

// StartOutcome says how a locker's start ended (lxcctl's words).
type StartOutcome string

// The start outcomes.
const (
	Started        StartOutcome = "healthy"
	AlreadyRunning StartOutcome = "already-running"
	StartUnhealthy StartOutcome = "unhealthy"
	StartFailed    StartOutcome = "failed"
)

// ErrNotRunning is wrapped by Host.Check when the locker is not running
// (it failed for good; a failed probe of a running locker may pass again).
var ErrNotRunning = errors.New("not running")

// Host is the three per-locker verbs the executor needs (I7: none of them
// touches /Me). The agent adapts lxcctl to it; internal/fakehost fakes it.
type Host interface {
	// Stop stops one locker: its halt signal, timeout, then a kill.
	Stop(ctx context.Context, name string, timeout time.Duration) (StopOutcome, error)
	// Start starts one stopped locker (on whatever current is) and waits
	// for its first healthy check or the deadline.
	Start(ctx context.Context, name string, deadline time.Duration) (StartOutcome, error)
	// Check runs one health check: nil when the locker runs and its check
	// passes; an error wrapping ErrNotRunning when it stopped.
	Check(ctx context.Context, name string) error
}

// Releases is the release store the executor needs; nil for plans that do
// not switch (stop, start without a code origin).
type Releases interface {
	// Switch points current at release (atomically).
	Switch(ctx context.Context, release, reason string) error
	// MarkBad marks a release bad: it is never a fallback again.
	MarkBad(release, reason string) error
	// MarkProven records that release passed a monitor window.
	MarkProven(release string) error
	// CurrentRelease is where current points now (after a switch that
	// failed half way, say).
	CurrentRelease() (string, error)
}

// Clock is time as the executor sees it; tests use a fake that does not
// sleep (tailscale's tstime.Clock pattern).
type Clock interface {
	Now() time.Time
	// Sleep waits d or until ctx ends (then it returns ctx's error).
	Sleep(ctx context.Context, d time.Duration) error
}

// RealClock is the wall clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// Sleep waits d or until ctx ends.
func (RealClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Phase is a step of one locker in a run, as reported to Env.Observe.
type Phase string

// The phases of a locker.
const (
	PhaseStopping Phase = "stopping"
	PhaseStopped  Phase = "stopped"
	PhaseStarting Phase = "starting"
	PhaseHealthy  Phase = "healthy" // first healthy check; monitor window begins
	PhaseMoved    Phase = "moved"   // passed the monitor window
	// PhaseMonitoring: healthy, its place in K given back; its monitor
	// window goes on in the background (MonitorUntilProven, once the
	// release is proven). It ends moved or failed as any window does.
	PhaseMonitoring Phase = "monitoring"
	PhaseFailed     Phase = "failed"
	PhaseSkipped    Phase = "skipped"
)

// Event is one step of a run: a locker's phase (Container set) or a stage
// of the run (Stage set: switch, mark-bad, proven, canary, soak, trip,
// rollback, undo, cancel).
type Event struct {
	Time      time.Time     `json:"time"`
	Container string        `json:"container,omitempty"`
	Phase     Phase         `json:"phase,omitempty"`
	Op        string        `json:"op,omitempty"` // stop, start (the verb that ran)
	Outcome   string        `json:"outcome,omitempty"`
	Release   string        `json:"release,omitempty"`
	Stage     string        `json:"stage,omitempty"`
	Message   string        `json:"message,omitempty"`
	Error     string        `json:"error,omitempty"`
	Duration  time.Duration `json:"duration,omitempty"`
	// Back is true for steps of the way back (rollback, undo).
	Back bool `json:"back,omitempty"`
	// MaxStarting is W when this locker's start place was taken, and
	// Starting how many held start places then, this one included (never
	// more than MaxStarting); on the starting and stopping events of the
	// run's launches (a replace's place is taken at its stop). The loop
	// sends every event in the order places are taken and freed, so
	// Starting is also the start places the stream shows held then.
	MaxStarting int `json:"max_starting,omitempty"`
	Starting    int `json:"starting,omitempty"`
}

// Env is what Run works with.
type Env struct {
	Host     Host
	Releases Releases // nil: the plan must not switch
	Clock    Clock    // nil: RealClock
	// Observe receives every event, from Run's goroutine only (never two
	// at once); it must not block for long: the run waits for it.
	Observe func(Event)
	// Reason is added to switches and marks ("job <id>").
	Reason string
	// Gauge feeds the adaptive pacer pressure; nil: starts and failures
	// alone set W. It is called from many goroutines at once; its first
	// error is reported as a "pacing" stage, and W then follows starts and
	// failures until a read succeeds.
	Gauge Gauge
	// Fence, when set, is asked before the run decides anything that may
	// begin a locker move (a fleet host's hold on its slot, fleet.CheckHold):
	// an error ends launching at once, as a Shutdown does (the lockers in
	// flight finish, an unproven current goes back, nothing else moves),
	// with the error as the cause. The way back, once begun, is not fenced.
	Fence func() error
}

// Shutdown is the cancel cause that means "the agent is stopping": Run
// stops launching, lets lockers in flight finish their start, puts current
// back on the fallback when the target is unproven, and returns an
// interrupted Result for the next agent to recover (I4). Any other cause
// (an operator's cancel) undoes an unproven move.
var Shutdown = errors.New("the agent is shutting down")
