package agent

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
)

// Tally is the one account of a job's lockers that every view renders:
// the console's panels (progress, steps, failures, the map and the
// lockers table during a job), the CLI's tail and the job history. It is
// a reduction of the job's events (apply), settled by the job's result at
// its end (settle), and it rides on the job record (Job.Tally), so that a
// view never counts events of its own.
//
// A locker's State is where it is now; Failed says it failed in the run,
// even when the way back brought it up again; Reason says why a locker
// failed or was not moved (I5).
type Tally struct {
	// Total is the lockers of the plan; Done those whose part in the run
	// ended (moved, started, stopped, failed, skipped, left alone), Failed
	// those that failed in the run or on the way back.
	Total  int `json:"total"`
	Done   int `json:"done"`
	Failed int `json:"failed"`
	// States counts the lockers per state (see the Tally* states).
	States map[string]int `json:"states"`
	// Steps are the job's steps in the order they began: canary (only
	// when the plan has canaries), rollout, stop, start, rollback, ...
	Steps []TallyStep `json:"steps"`
	// Lockers is every locker of the plan, in plan order.
	Lockers []LockerTally `json:"lockers"`
	// Ended is true once the job's result settled the tally.
	Ended bool `json:"ended,omitempty"`
	// Serving says, once the job ended, which lockers serve on which
	// release ("4 of 4 serving on 7-abc (rolled back)").
	Serving string `json:"serving,omitempty"`

	plan      *rollout.Plan
	index     map[string]int
	step      string // the step lockers launched now belong to
	back      string // the step of the way back
	canaries  int    // canaries still to be launched
	launched  map[string]bool
	stopCause string // why launching stopped (a trip, a cancel, ...)
	// tripFailed is the failed lockers when the failure policy tripped
	// (-1: it did not trip); lockers in flight then may fail after.
	tripFailed int
	steps      map[string]*stepLockers
	order      []string // steps in the order they began
}

// stepLockers is where each locker of one step is in that step, and
// whether it failed there.
type stepLockers struct {
	state  map[string]string
	failed map[string]bool
}

// The states of a locker in a Tally (the console's tile colours).
const (
	TallyPending  = "pending"  // not reached yet
	TallyStopping = "stopping" // being stopped
	TallyDown     = "down"     // stopped
	TallyStarting = "starting" // starting, not healthy yet
	TallyUp       = "up"       // healthy (in or past its monitor window)
	TallyFailed   = "failed"   // failed and not brought back
	TallyBroken   = "broken"   // LXC cannot load it: left alone
)

// TallySkipped is a locker's state in the "not moved" step: the run
// never reached it.
const TallySkipped = "skipped"

// TallyStep is one step of a job and its lockers per state in it: a
// locker that failed in the rollout and came back in the rollback counts
// as failed in the first and up in the second.
type TallyStep struct {
	Name   string         `json:"name"`
	States map[string]int `json:"states"`
	// Failed counts the lockers that failed in this step (whatever their
	// state now).
	Failed int `json:"failed"`
}

// LockerTally is one locker's line in a Tally.
type LockerTally struct {
	Name    string `json:"name"`
	Op      string `json:"op,omitempty"`
	Step    string `json:"step,omitempty"`
	State   string `json:"state"`
	Outcome string `json:"outcome,omitempty"`
	Failed  bool   `json:"failed,omitempty"`
	Back    string `json:"back,omitempty"`
	Release string `json:"release,omitempty"`
	Reason  string `json:"reason,omitempty"`
	done    bool
}

// newTally starts the tally of plan: every locker pending.
func newTally(plan *rollout.Plan) *Tally {
	t := &Tally{plan: plan, index: map[string]int{}, launched: map[string]bool{}, Total: len(plan.Items), steps: map[string]*stepLockers{}, tripFailed: -1}
	t.step = firstStep(plan)
	t.back = "way back"
	if plan.Kind == rollout.KindRollback {
		t.back = "rollback"
	}
	for i, it := range plan.Items {
		t.index[it.Name] = i
		t.Lockers = append(t.Lockers, LockerTally{Name: it.Name, Op: string(it.Op), State: TallyPending})
	}
	t.recount()
	return t
}

// firstStep names the step a plan's first launches belong to.
func firstStep(p *rollout.Plan) string {
	switch {
	case p.Kind == rollout.KindStop:
		return "stop"
	case p.Kind == rollout.KindUpdate && p.Strategy == rollout.Offline:
		return "start" // each locker's stop is part of its start
	case p.Kind == rollout.KindUpdate:
		return "rollout"
	}
	return string(p.Kind)
}

// apply reduces one event of the job into the tally.
func (t *Tally) apply(e Event) {
	switch e.Type {
	case "stage":
		t.applyStage(e)
		return
	case "container":
	default:
		return
	}
	i, ok := t.index[e.Container]
	if !ok {
		return // not a locker of the plan
	}
	l := &t.Lockers[i]
	launch := e.Phase == string(rollout.PhaseStopping) || e.Phase == string(rollout.PhaseStarting)
	step := l.Step
	switch {
	case e.Back:
		step = t.back
	case launch && !t.launched[l.Name]:
		t.launched[l.Name] = true
		step = t.step
		if t.canaries > 0 {
			step = "canary"
			if t.canaries--; t.canaries == 0 {
				t.step = "rollout"
			}
		}
	}
	if !e.Back {
		l.Step = step
	}
	if e.Release != "" {
		l.Release = e.Release
	}
	switch rollout.Phase(e.Phase) {
	case rollout.PhaseStopping:
		l.State = TallyStopping
	case rollout.PhaseStopped:
		l.State = TallyDown
		if t.plan.Kind == rollout.KindStop && !e.Back {
			l.done, l.Outcome = true, e.Outcome
		}
	case rollout.PhaseStarting, rollout.PhaseWatching:
		l.State = TallyStarting
	case rollout.PhaseHealthy:
		l.State = TallyUp
		if e.Back {
			l.Back = rollout.BackRolledBack
		}
	case rollout.PhaseMoved:
		l.State, l.done, l.Outcome = TallyUp, true, e.Outcome
	case rollout.PhaseSkipped:
		l.done, l.Outcome = true, e.Outcome
		if e.Outcome == rollout.OutAlreadyRunning {
			l.State = TallyUp
		}
	case rollout.PhaseFailed:
		l.State = TallyFailed
		if e.Back {
			l.Back = rollout.BackFailed
		} else {
			l.done, l.Outcome = true, rollout.OutFailed
		}
		l.Failed = true
		l.Reason = orDash(e.Error)
		if e.Back {
			l.Reason = "failed on the way back: " + l.Reason
		}
	}
	if step != "" {
		t.mark(step, l.Name, l.State, rollout.Phase(e.Phase) == rollout.PhaseFailed)
	}
	t.recount()
}

// mark records a locker's state in a step, and a failure there.
func (t *Tally) mark(step, name, state string, failed bool) {
	sl := t.steps[step]
	if sl == nil {
		sl = &stepLockers{state: map[string]string{}, failed: map[string]bool{}}
		t.steps[step] = sl
		t.order = append(t.order, step)
	}
	sl.state[name] = state
	if failed {
		sl.failed[name] = true
	}
}

// applyStage follows the stages that change what launches mean: the
// canaries, and why launching stopped.
func (t *Tally) applyStage(e Event) {
	switch e.Stage {
	case "canary":
		if n := t.plan.Policy.Canary; n > 0 {
			t.canaries = n
		}
	case "trip":
		t.stopCause = e.Message
		if t.tripFailed < 0 {
			t.tripFailed = t.Failed
		}
		t.back = "rollback"
	case "cancel":
		t.stopCause = "cancelled"
		t.back = "undo"
	case "interrupted", "fence":
		t.stopCause = e.Message
	case "rollback":
		t.back = "rollback"
	}
}

// settle ends the tally with the job's result: each locker's outcome,
// where the way back left it, and why each one not moved was not (I5).
// now is the release each running locker of the plan runs at the job's
// end (releasesNow; nil: not known), what the serving line counts by.
func (t *Tally) settle(res *Result, state JobState, jobErr string, now map[string]string) {
	t.Ended = true
	cause := t.stopCause
	if res != nil {
		switch {
		case res.Tripped != "":
			cause = "the failure policy tripped: " + res.Tripped
		case res.Halted != "":
			cause = "launching stopped early: " + res.Halted
		case res.Cancelled:
			cause = "the job was cancelled"
		case res.Interrupted:
			cause = "the agent stopped: the next agent finishes or undoes the job"
		}
	}
	if cause == "" {
		switch {
		case jobErr != "":
			cause = "the job " + string(state) + ": " + jobErr
		case state != JobSucceeded:
			cause = "the job " + string(state)
		}
	}
	if res != nil {
		for _, o := range res.Outcomes {
			i, ok := t.index[o.Name]
			if !ok {
				if o.Op == "load" { // a locker LXC cannot load (reportingBroken)
					t.index[o.Name] = len(t.Lockers)
					t.Lockers = append(t.Lockers, LockerTally{Name: o.Name, Op: "load", State: TallyBroken, Outcome: o.Outcome, Failed: true,
						Reason: "LXC cannot load it, left alone: " + o.Error})
					t.Total++
				}
				continue
			}
			l := &t.Lockers[i]
			t.settleOne(l, o, cause)
		}
	}
	for i := range t.Lockers {
		l := &t.Lockers[i]
		if l.State == TallyPending || l.State == TallyStopping || l.State == TallyStarting {
			// No outcome says otherwise: it was never reached, or the
			// result is lost; it stays as the plan found it.
			l.State = untouched(rollout.Op(l.Op))
			if l.Reason == "" {
				l.Reason = "not reached: " + orDash(cause)
			}
		}
		l.done = true
	}
	t.recount()
	t.Serving = t.serving(res, now)
}

// settleOne sets one locker's end from its outcome.
func (t *Tally) settleOne(l *LockerTally, o rollout.Outcome, cause string) {
	l.Outcome, l.Back = o.Outcome, o.Back
	if o.Release != "" {
		l.Release = o.Release
	}
	l.Failed = o.Failed()
	switch o.Outcome {
	case rollout.OutMoved, rollout.OutStarted, rollout.OutUnverified, rollout.OutAlreadyRunning:
		l.State = TallyUp
	case rollout.OutStopped, rollout.OutKilled, rollout.OutAlreadyStopped:
		l.State = TallyDown
	case rollout.OutFailed:
		l.State = TallyFailed
		if o.Op == rollout.OpStop {
			l.State = TallyUp // a stop that failed leaves it running
		}
		l.Reason = orDash(o.Error)
	case rollout.OutSkipped:
		l.State = untouched(o.Op)
		l.Reason = "not moved"
		if t.plan.Target != "" {
			l.Reason += " to " + t.plan.Target
		}
		l.Reason += ": " + orDash(cause)
	}
	switch o.Back {
	case rollout.BackRolledBack:
		l.State = TallyUp
		on := ""
		if o.Release != "" {
			on = " on " + o.Release
		}
		l.Reason = strings.TrimPrefix(l.Reason+"; ", "; ") + "up" + on + " after the " + t.back
	case rollout.BackFailed:
		l.State = TallyFailed
		l.Reason = strings.TrimPrefix(l.Reason+"; ", "; ") + "failed on the way back: " + orDash(o.BackError)
	}
	if o.Outcome == rollout.OutSkipped && l.Step == "" {
		l.Step = "not moved"
		t.mark(l.Step, l.Name, TallySkipped, false)
	}
}

// untouched is the state a locker the run did not reach keeps: a start
// leaves it down, a replace or a stop leaves it running where it was.
func untouched(op rollout.Op) string {
	if op == rollout.OpStart {
		return TallyDown
	}
	return TallyUp
}

// serving says which lockers of the plan serve, on which release, once
// the job ended: by now (the release each running locker runs, read after
// the job) when known, else by what the job's events said. When the
// failure policy tripped and lockers in flight then failed after, it says
// so, so that the trip's count and the failed count agree.
func (t *Tally) serving(res *Result, now map[string]string) string {
	if len(t.Lockers) == 0 {
		return ""
	}
	on := map[string]int{}
	up := 0
	for _, l := range t.Lockers {
		if now != nil {
			if l.State == TallyBroken {
				continue
			}
			rel, running := now[l.Name]
			if !running {
				continue
			}
			up++
			if rel == "" {
				rel = "a release not told"
			}
			on[rel]++
			continue
		}
		if l.State != TallyUp {
			continue
		}
		up++
		rel := l.Release
		if rel == "" && (l.Outcome == rollout.OutSkipped || l.Outcome == rollout.OutAlreadyRunning || l.Op == string(rollout.OpStop)) {
			rel = "the release it ran before"
		}
		if rel == "" && res != nil {
			rel = res.Current
		}
		on[orDash(rel)]++
	}
	var parts []string
	for rel, n := range on {
		parts = append(parts, fmt.Sprintf("%d on %s", n, rel))
	}
	sort.Strings(parts)
	s := fmt.Sprintf("%d of %s serving", up, nLockers(len(t.Lockers)))
	if len(parts) > 0 {
		s += ": " + strings.Join(parts, ", ")
	}
	if res != nil && res.RolledBack {
		s += " (after the rollback)"
	}
	if t.tripFailed >= 0 && t.Failed > t.tripFailed {
		s += fmt.Sprintf("; %d failed: %d when the failure policy tripped, %d more that were already starting", t.Failed, t.tripFailed, t.Failed-t.tripFailed)
	}
	return s
}

// releasesNow reads, at the end of a job, the release each running locker
// of plan runs (its init's mounts, as the inventory reads them): what the
// tally's serving line counts by. A locker whose release cannot be read
// maps to "". It is nil when it cannot be told (no ReleaseOf, the listing
// failed).
func (a *Agent) releasesNow(plan *rollout.Plan) map[string]string {
	if plan == nil || len(plan.Items) == 0 || a.deps.ReleaseOf == nil {
		return nil
	}
	names := make([]string, 0, len(plan.Items))
	for _, it := range plan.Items {
		names = append(names, it.Name)
	}
	ctx, cancel := context.WithTimeout(a.base, planTimeout)
	defer cancel()
	infos, err := a.deps.Containers.Select(ctx, names, "")
	if err != nil {
		a.log.Debug("reading the lockers' releases after a job", "err", err)
		return nil
	}
	now := map[string]string{}
	for _, in := range infos {
		if in.State != lxcctl.StateRunning || in.InitPID <= 0 {
			continue
		}
		rel, _, err := a.deps.ReleaseOf(in.InitPID)
		if err != nil {
			rel = ""
		}
		now[in.Name] = rel
	}
	return now
}

// recount recomputes the counts from the lockers.
func (t *Tally) recount() {
	t.States = map[string]int{}
	t.Done, t.Failed = 0, 0
	for _, l := range t.Lockers {
		t.States[l.State]++
		if l.done {
			t.Done++
		}
		if l.Failed {
			t.Failed++
		}
	}
	t.Steps = t.Steps[:0]
	for _, name := range t.order {
		sl := t.steps[name]
		st := TallyStep{Name: name, States: map[string]int{}, Failed: len(sl.failed)}
		for _, state := range sl.state {
			st.States[state]++
		}
		t.Steps = append(t.Steps, st)
	}
	sort.SliceStable(t.Steps, func(a, b int) bool { return stepRank(t.Steps[a].Name) < stepRank(t.Steps[b].Name) })
}

// stepRank orders steps as a job runs them.
func stepRank(name string) int {
	for i, s := range []string{"stop", "canary", "rollout", "start", "restart", "recover", "rollback", "undo", "way back", "not moved"} {
		if s == name {
			return i
		}
	}
	return 100
}

// copyOf is a copy for a job record (the lockers and counts are fresh
// slices and maps; the reducer's own state stays behind).
func (t *Tally) copyOf() *Tally {
	if t == nil {
		return nil
	}
	c := &Tally{Total: t.Total, Done: t.Done, Failed: t.Failed, Ended: t.Ended, Serving: t.Serving,
		States: make(map[string]int, len(t.States)), Lockers: append([]LockerTally(nil), t.Lockers...)}
	for k, v := range t.States {
		c.States[k] = v
	}
	for _, s := range t.Steps {
		ns := TallyStep{Name: s.Name, Failed: s.Failed, States: make(map[string]int, len(s.States))}
		for k, v := range s.States {
			ns.States[k] = v
		}
		c.Steps = append(c.Steps, ns)
	}
	return c
}

// counts is the tally without its lockers and steps, for lists of jobs.
func (t *Tally) counts() *Tally {
	if t == nil {
		return nil
	}
	return &Tally{Total: t.Total, Done: t.Done, Failed: t.Failed, States: t.States, Ended: t.Ended, Serving: t.Serving}
}

// Undone lists the lockers that were not moved as planned, each with its
// reason (I5): failed, not reached (skipped), or left alone because LXC
// cannot load them. Lockers that moved and were then brought back by the
// way back are in Serving's count, not listed one by one.
func (t *Tally) Undone() []LockerTally {
	if t == nil {
		return nil
	}
	var out []LockerTally
	for _, l := range t.Lockers {
		if l.Failed || l.Outcome == rollout.OutSkipped || l.State == TallyBroken {
			out = append(out, l)
		}
	}
	return out
}
