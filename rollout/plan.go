package rollout

import (
	"fmt"
	"slices"
	"time"
)

// Kind names what a plan is for; it changes only messages and which
// failure policy applies (see Plan.Watched).
type Kind string

// The kinds of plan.
const (
	KindUpdate   Kind = "update"
	KindStart    Kind = "start"
	KindRestart  Kind = "restart"
	KindStop     Kind = "stop"
	KindRollback Kind = "rollback"
	KindRecover  Kind = "recover"
)

// Strategy is how an update moves lockers.
type Strategy string

// The strategies.
const (
	// Rolling replaces lockers with at most K down at once.
	Rolling Strategy = "rolling"
	// Offline stops every locker first, then starts them all (K = all).
	Offline Strategy = "offline"
)

// Action is what a tripped failure policy does (Swarm's failure_action).
type Action string

// The failure actions. Either way the release is marked bad and current
// goes back to the fallback.
const (
	// Pause leaves the lockers that moved healthy where they are and brings
	// back only those that are down.
	Pause Action = "pause"
	// Rollback moves every locker the job touched back to the fallback.
	Rollback Action = "rollback"
)

// Op is what a plan does to one locker.
type Op string

// The per-locker operations.
const (
	// OpReplace stops a running locker and starts it on the target.
	OpReplace Op = "replace"
	// OpStart starts a stopped locker on the target.
	OpStart Op = "start"
	// OpStop stops a running locker.
	OpStop Op = "stop"
)

// Item is one locker of a plan.
type Item struct {
	Name string `json:"name"`
	Op   Op     `json:"op"`
	// Delay is waited after this locker's launch before the next one
	// (its lxc.start.delay, as lxc-autostart honours it).
	Delay time.Duration `json:"delay,omitempty"`
}

// Policy is how a plan moves lockers: its limits, its health over time and
// its failure policy. Durations are time.Duration (nanoseconds in JSON).
type Policy struct {
	// MaxUnavailable is K, the most lockers down because of the job at
	// once, from a locker's stop until it passed the monitor window
	// (Kubernetes' maxUnavailable, Swarm's parallelism); > 0.
	MaxUnavailable int `json:"max_unavailable"`
	// MaxStarting is W ≤ K, the most lockers starting at once (from their
	// stop, for a replace, to their first healthy check); 0, or more than
	// K, means K. With adaptive pacing it is W's first value, and W moves
	// between 1 and K (all lockers for offline and start plans).
	MaxStarting int `json:"max_starting,omitempty"`
	// Pacing: Adaptive (DefaultPolicy) or Fixed; empty is Fixed, as plans
	// journaled before pacing existed ran.
	Pacing Pacing `json:"pacing,omitempty"`
	// Pace are the adaptive pacer's targets; zero fields disable a signal.
	Pace PaceTargets `json:"pace,omitempty"`
	// StopParallel is the most lockers stopping at once in a stop phase
	// (stop-all, offline); 0 means K.
	StopParallel int `json:"stop_parallel,omitempty"`
	// StopTimeout is each locker's grace period before it is killed.
	StopTimeout time.Duration `json:"stop_timeout"`
	// Deadline bounds a locker's start to its first healthy check.
	Deadline time.Duration `json:"deadline"`
	// Delay is waited between two launches (lxc.start.delay's role).
	Delay time.Duration `json:"delay,omitempty"`
	// Monitor is how long a locker must stay healthy after its first
	// healthy check to count as moved (Swarm's monitor, Nomad's
	// min_healthy_time); 0 counts it at the first check.
	Monitor time.Duration `json:"monitor"`
	// Interval is the time between two checks in the monitor window and the
	// soak; default 500ms.
	Interval time.Duration `json:"interval,omitempty"`
	// Canary lockers move first, alone, then stay healthy for Soak before
	// the rest moves; any canary failure trips the policy.
	Canary int           `json:"canary,omitempty"`
	Soak   time.Duration `json:"soak,omitempty"`
	// MaxFailureRatio trips the failure policy when more than this share of
	// the plan's lockers, or of the last K finished ones, failed (Swarm's
	// max_failure_ratio); 0 trips on the first failure.
	MaxFailureRatio float64 `json:"max_failure_ratio"`
	// FailureAction is what a tripped policy does.
	FailureAction Action `json:"failure_action"`
}

// DefaultPolicy returns the defaults documented in the package doc.
func DefaultPolicy() Policy {
	return Policy{
		MaxUnavailable:  4,
		StopTimeout:     10 * time.Second,
		Deadline:        60 * time.Second,
		Monitor:         10 * time.Second,
		Interval:        500 * time.Millisecond,
		MaxFailureRatio: 0.1,
		FailureAction:   Rollback,
		Pacing:          Adaptive,
		Pace:            DefaultPaceTargets(),
	}
}

// Validate reports the first field out of range, naming it.
func (p Policy) Validate() error {
	switch {
	case p.MaxUnavailable <= 0:
		return fmt.Errorf("max unavailable (K) must be positive, got %d", p.MaxUnavailable)
	case p.MaxStarting < 0:
		return fmt.Errorf("max starting (W) must not be negative, got %d", p.MaxStarting)
	case p.StopParallel < 0:
		return fmt.Errorf("stop parallel must not be negative, got %d", p.StopParallel)
	case p.StopTimeout <= 0:
		return fmt.Errorf("stop timeout must be positive, got %v", p.StopTimeout)
	case p.Deadline <= 0:
		return fmt.Errorf("start deadline must be positive, got %v", p.Deadline)
	case p.Delay < 0 || p.Monitor < 0 || p.Interval < 0 || p.Soak < 0:
		return fmt.Errorf("delay, monitor, interval and soak must not be negative")
	case p.Canary < 0:
		return fmt.Errorf("canary must not be negative, got %d", p.Canary)
	case p.MaxFailureRatio < 0 || p.MaxFailureRatio > 1:
		return fmt.Errorf("max failure ratio must be between 0 and 1, got %v", p.MaxFailureRatio)
	case p.Pacing != "" && p.Pacing != Adaptive && p.Pacing != Fixed:
		return fmt.Errorf("unknown pacing %q (want adaptive or fixed)", p.Pacing)
	case p.Pace.CPU < 0 || p.Pace.Memory < 0 || p.Pace.IO < 0 || p.Pace.SlowFactor < 0:
		return fmt.Errorf("pace targets must not be negative, got %+v", p.Pace)
	}
	switch p.FailureAction {
	case Pause, Rollback:
	default:
		return fmt.Errorf("unknown failure action %q (want pause or rollback)", p.FailureAction)
	}
	return nil
}

func (p Policy) starting() int {
	if p.MaxStarting <= 0 || p.MaxStarting > p.MaxUnavailable {
		return p.MaxUnavailable
	}
	return p.MaxStarting
}

func (p Policy) stopping() int {
	if p.StopParallel <= 0 {
		return p.MaxUnavailable
	}
	return p.StopParallel
}

func (p Policy) interval() time.Duration {
	if p.Interval <= 0 {
		return 500 * time.Millisecond
	}
	return p.Interval
}

// Plan is a job's work as data: it is journaled with the job, so that
// recovery resumes or undoes this plan rather than inventing another.
type Plan struct {
	Kind     Kind     `json:"kind"`
	Strategy Strategy `json:"strategy,omitempty"`
	// Target is the release the lockers end on ("" when the plan starts
	// lockers on whatever current is and no release store is configured).
	Target string `json:"target,omitempty"`
	// Fallback is the last good release: where a tripped policy, a cancel
	// or a failed switch puts current back ("" when there is none).
	Fallback string `json:"fallback,omitempty"`
	// Switch points current at Target before any locker starts on it.
	Switch bool `json:"switch,omitempty"`
	// Unproven is true when Target has not yet passed a monitor window on
	// this host: the failure policy applies (I3) and the run proves it.
	Unproven bool   `json:"unproven,omitempty"`
	Items    []Item `json:"items"`
	Policy   Policy `json:"policy"`
}

// Watched reports whether the failure policy applies: to every update, and
// to any plan that starts lockers on an unproven release (I3).
func (p Plan) Watched() bool { return p.Kind == KindUpdate || p.Unproven }

// Names returns the plan's lockers with op (all when op is "").
func (p Plan) Names(op Op) []string {
	var out []string
	for _, it := range p.Items {
		if op == "" || it.Op == op {
			out = append(out, it.Name)
		}
	}
	return out
}

// Locker is what a planner knows of one locker.
type Locker struct {
	Name    string `json:"name"`
	Running bool   `json:"running"`
	// Release is the release its init really uses ("" when stopped or
	// unknown); Stale is true when that release folder was deleted.
	Release string `json:"release,omitempty"`
	Stale   bool   `json:"stale,omitempty"`
	// WantRunning is its desired state.
	WantRunning bool `json:"want_running"`
	// StartDelay is its lxc.start.delay.
	StartDelay time.Duration `json:"start_delay,omitempty"`
}

// on reports whether the locker runs release rel, intact.
func (l Locker) on(rel string) bool {
	return l.Running && !l.Stale && rel != "" && l.Release == rel
}

// Releases are the release facts a planner needs.
type ReleaseFacts struct {
	// Current is the release current points at ("" before the first).
	Current string
	// CurrentProven is true when Current passed a monitor window.
	CurrentProven bool
	// LastGood is the newest good release other than Current (the
	// rollback stack's top; "" when there is none).
	LastGood string
}

// fallback is where a plan on facts goes back: current when it is proven,
// else the last good release.
func (f ReleaseFacts) fallback() string {
	if f.CurrentProven && f.Current != "" {
		return f.Current
	}
	return f.LastGood
}

// PlanUpdate moves every locker whose desired state is running onto target:
// running ones not on it are replaced, stopped ones are started. Lockers
// whose desired state is stopped are left alone. targetProven says whether
// target already passed a monitor window on this host.
func PlanUpdate(lockers []Locker, f ReleaseFacts, target string, targetProven bool, strategy Strategy, pol Policy) Plan {
	p := Plan{Kind: KindUpdate, Strategy: strategy, Target: target, Fallback: f.fallback(), Switch: true, Unproven: !targetProven, Policy: pol}
	if p.Fallback == target {
		p.Fallback = f.LastGood
	}
	p.Items = moveTo(lockers, target)
	return p
}

// moveTo is the items that bring lockers onto target: running ones not on
// it are replaced, stopped ones whose desired state is running started.
func moveTo(lockers []Locker, target string) []Item {
	var items []Item
	for _, l := range lockers {
		switch {
		case l.on(target):
		case l.Running:
			items = append(items, Item{l.Name, OpReplace, l.StartDelay})
		case l.WantRunning:
			items = append(items, Item{l.Name, OpStart, l.StartDelay})
		}
	}
	return items
}

// PlanStart starts the given lockers on current, at most W starting at
// once (K = all: a stopped locker is down already). On an unproven current
// the failure policy applies (I3: e.g. after lxc-stop-all; update-code).
func PlanStart(lockers []Locker, f ReleaseFacts, pol Policy) Plan {
	p := Plan{Kind: KindStart, Target: f.Current, Fallback: f.fallback(), Unproven: f.Current != "" && !f.CurrentProven, Policy: pol}
	if p.Fallback == p.Target {
		p.Fallback = ""
	}
	for _, l := range lockers {
		p.Items = append(p.Items, Item{l.Name, OpStart, l.StartDelay})
	}
	p.Policy.MaxStarting = pol.starting()
	p.Policy.MaxUnavailable = max(len(p.Items), 1)
	return p
}

// PlanRestart replaces each running locker (stopped ones are started) on
// current with at most K down at once.
func PlanRestart(lockers []Locker, f ReleaseFacts, pol Policy) Plan {
	p := Plan{Kind: KindRestart, Target: f.Current, Fallback: f.fallback(), Unproven: f.Current != "" && !f.CurrentProven, Policy: pol}
	if p.Fallback == p.Target {
		p.Fallback = ""
	}
	for _, l := range lockers {
		op := OpReplace
		if !l.Running {
			op = OpStart
		}
		p.Items = append(p.Items, Item{l.Name, op, l.StartDelay})
	}
	return p
}

// PlanStop stops the given lockers, StopParallel at once.
func PlanStop(lockers []Locker, pol Policy) Plan {
	p := Plan{Kind: KindStop, Policy: pol}
	for _, l := range lockers {
		p.Items = append(p.Items, Item{Name: l.Name, Op: OpStop})
	}
	return p
}

// PlanRollback moves the fleet to target, a good release chosen by
// RollbackTarget: running lockers on another release are replaced and
// stopped lockers whose desired state is running are started (I6).
func PlanRollback(lockers []Locker, target string, pol Policy) Plan {
	return Plan{Kind: KindRollback, Target: target, Fallback: target, Switch: true, Policy: pol, Items: moveTo(lockers, target)}
}

// RecoveryTarget decides where an interrupted plan ends (I4): its target
// when that is proven now, else its fallback; with no interrupted plan,
// current.
func RecoveryTarget(interrupted *Plan, f ReleaseFacts, proven func(string) bool) (target string, unproven bool) {
	if interrupted != nil && interrupted.Target != "" {
		if proven(interrupted.Target) || interrupted.Fallback == "" {
			return interrupted.Target, !proven(interrupted.Target)
		}
		return interrupted.Fallback, !proven(interrupted.Fallback)
	}
	return f.Current, f.Current != "" && !f.CurrentProven
}

// PlanRecovery drives every locker whose desired state is running (or that
// an interrupted job stopped, stoppedByJob) to target: stopped ones are
// started, running ones on another release (or a deleted one) replaced.
// Lockers whose desired state is stopped and that no job stopped stay
// alone. unproven applies the failure policy (I3) with fallback f.LastGood.
func PlanRecovery(lockers []Locker, stoppedByJob map[string]bool, target string, unproven bool, f ReleaseFacts, pol Policy) Plan {
	p := Plan{Kind: KindRecover, Target: target, Switch: target != "" && target != f.Current, Unproven: unproven, Policy: pol}
	if unproven {
		p.Fallback = f.LastGood
		if p.Fallback == target {
			p.Fallback = ""
		}
	} else {
		p.Fallback = target
	}
	for _, l := range lockers {
		if !l.WantRunning && !stoppedByJob[l.Name] {
			continue
		}
		switch {
		case !l.Running:
			p.Items = append(p.Items, Item{l.Name, OpStart, l.StartDelay})
		case target != "" && (l.Stale || (l.Release != "" && l.Release != target)):
			p.Items = append(p.Items, Item{l.Name, OpReplace, l.StartDelay})
		}
	}
	return p
}

// Switched is one past switch of current, oldest first in a history.
type Switched struct {
	From, To string
}

// RollbackTarget returns where a rollback from current goes (I6). The
// rollback stack is the switch history replayed: a switch to a release
// already on the stack (a rollback, or a failure policy going back) pops
// every release above it; any other switch pushes. With to set, the target
// is that release, refused when it is current, bad, gone, or not on the
// stack below current (never forward); else it is the nearest release
// below current that still exists and is not bad. exists says whether a
// release is still on disk; bad whether it is marked bad.
func RollbackTarget(history []Switched, current, to string, exists, bad func(string) bool) (string, error) {
	var stack []string
	for _, h := range history {
		if h.To == "" {
			continue
		}
		if len(stack) == 0 && h.From != "" && h.From != h.To {
			stack = append(stack, h.From)
		}
		if i := slices.Index(stack, h.To); i >= 0 {
			stack = stack[:i+1]
		} else {
			stack = append(stack, h.To)
		}
	}
	if i := slices.Index(stack, current); i >= 0 {
		stack = stack[:i] // what lies below current
	}
	if to != "" {
		switch {
		case to == current:
			return "", fmt.Errorf("rolling back to %s: it is already current", to)
		case !exists(to):
			return "", fmt.Errorf("rolling back to %s: no such release on this host", to)
		case bad(to):
			return "", fmt.Errorf("rolling back to %s: it is marked bad", to)
		case !slices.ContainsFunc(history, func(h Switched) bool { return h.To == to || h.From == to }):
			return "", fmt.Errorf("rolling back to %s: it was never current on this host (use update-code)", to)
		case !slices.Contains(stack, to):
			return "", fmt.Errorf("rolling back to %s: it is not below %s on the rollback stack (a rollback never moves forward; use update-code)", to, orNone(current))
		}
		return to, nil
	}
	for i := len(stack) - 1; i >= 0; i-- {
		if r := stack[i]; exists(r) && !bad(r) {
			return r, nil
		}
	}
	return "", fmt.Errorf("rolling back from %s: no good release was current before it", orNone(current))
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
