package rollout

import (
	"fmt"
	"slices"
	"strings"
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
	// Offline moves every locker with K = all and W paced: no serving
	// capacity is kept, each locker is stopped just before its start.
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
	// Stopping is true when an interrupted job began to stop it and
	// recorded no end: the halt signal may be on its way, so RUNNING now
	// says nothing about a moment later (PlanRecovery replaces it).
	Stopping bool `json:"stopping,omitempty"`
	// Starting is true when an interrupted job started it and recorded
	// neither its failure nor the end of its monitor window: it may still
	// be starting, or inside its monitor window (PlanRecovery watches it:
	// OpWatch holds its place in K and checks it before anything new
	// launches, I1 across agent exits).
	Starting bool `json:"starting,omitempty"`
	// Restart is true when an interrupted restart job was to restart it
	// and journaled no step of it: the operator asked for its restart and
	// did not get it, so PlanRecovery restarts it (finishing the restart,
	// not only its lockers in flight).
	Restart bool `json:"restart,omitempty"`
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
	// K is all (a stopped locker is down already); W is max starting,
	// or the configured K when it is unset (start-all's window).
	if p.Policy.MaxStarting <= 0 {
		p.Policy.MaxStarting = pol.MaxUnavailable
	}
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
// started, running ones on another release (or a deleted one) replaced,
// and running ones an interrupted restart had not reached (Locker.Restart)
// restarted. Lockers whose desired state is stopped and that no job
// stopped stay alone. unproven applies the failure policy (I3) with
// fallback f.LastGood.
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
		case l.Starting && !l.Stopping && !l.Stale && (target == "" || l.Release == "" || l.Release == target):
			// Left starting or monitoring on the target: it holds its
			// place and is checked, not counted as done.
			p.Items = append(p.Items, Item{l.Name, OpWatch, l.StartDelay})
		case l.Stopping:
			// The dead agent's stop may still land: stop it for good
			// (bounded, then a kill) and start it again.
			p.Items = append(p.Items, Item{l.Name, OpReplace, l.StartDelay})
		case l.Restart:
			p.Items = append(p.Items, Item{l.Name, OpReplace, l.StartDelay})
		case target != "" && (l.Stale || (l.Release != "" && l.Release != target)):
			p.Items = append(p.Items, Item{l.Name, OpReplace, l.StartDelay})
		}
	}
	// Lockers left in flight come first: they hold their places from the
	// run's beginning.
	slices.SortStableFunc(p.Items, func(a, b Item) int {
		return boolInt(b.Op == OpWatch) - boolInt(a.Op == OpWatch)
	})
	if n := len(p.Items); n > 0 && len(p.Names(OpStart)) == n {
		// Only stopped lockers to start (a boot, a stop-all's end):
		// nothing serving is touched, so it runs as a start plan does
		// (PlanStart): K is all, W max starting even above the
		// configured K. At K 1 (the held-socket default) a boot's
		// recovery would otherwise start 300 lockers one at a time.
		p.Policy.MaxStarting = min(p.Policy.startingAllDown(), n)
		p.Policy.MaxUnavailable = n
	}
	return p
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
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
		// Every reason at once: the first alone can mislead (a release
		// marked bad that is also above current: --force cannot help).
		var why []string
		switch {
		case to == current:
			return "", fmt.Errorf("rolling back to %s: it is already current", to)
		case !exists(to):
			return "", fmt.Errorf("rolling back to %s: no such release on this host", to)
		}
		never := !slices.ContainsFunc(history, func(h Switched) bool { return h.To == to || h.From == to })
		if never {
			why = append(why, "it was never current on this host (use update-code)")
		} else if !slices.Contains(stack, to) {
			why = append(why, fmt.Sprintf("it is not below %s on the rollback stack (a rollback never moves forward; use update-code)", orNone(current)))
		}
		if bad(to) {
			why = append(why, "it is marked bad (--force allows it)")
		}
		if len(why) > 0 {
			return "", fmt.Errorf("rolling back to %s: %s", to, strings.Join(why, "; "))
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
