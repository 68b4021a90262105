package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// OpWatch is a locker that a previous (dead) agent already started on the
// target, and that may still be starting or inside its monitor window
// (PlanRecovery). The run holds a place in K for it from its beginning,
// checks it (Host.Check until healthy or Policy.Deadline, then the monitor
// window) before anything new launches beyond K, and counts it like a
// start: healthy through its window, it is moved; a failure counts for
// the failure policy and keeps its place (I1). One that does not run at
// all is started once, as OpStart (its outcome is then started). On the
// way back it is stopped and started like any locker the run moved.
const OpWatch Op = "watch"

// PhaseWatching: an OpWatch locker's checks began (or, with Outcome
// "not-running", it was found stopped and will be started).
const PhaseWatching Phase = "watching"

// watchHealthy checks name every interval until it passes (nil), is found
// not running (ErrNotRunning), or Deadline passed. It runs to its end
// whatever ctx does, as a start does.
func watchHealthy(ctx context.Context, h Host, c Clock, pol Policy, name string) error {
	ctx = context.WithoutCancel(ctx)
	iv := pol.interval()
	for waited := time.Duration(0); ; waited += iv {
		err := h.Check(ctx, name)
		if err == nil || errors.Is(err, ErrNotRunning) {
			return err
		}
		if waited >= pol.Deadline {
			return fmt.Errorf("%s, left starting by the last agent, not healthy within %v: %w", name, pol.Deadline, err)
		}
		_ = c.Sleep(ctx, iv)
	}
}

// launchWatch begins item i's checks: it needs no start place (this run
// did not start it), and its place in K is held since the run began.
func (s *state) launchWatch(acts []action, i int, now time.Time) []action {
	it := &s.it[i]
	it.launched, it.begin = true, now
	s.opens(i)
	it.o = Outcome{Name: s.plan.Items[i].Name, Op: OpWatch}
	return s.run(acts, vWatch, i, Event{Container: it.o.Name, Phase: PhaseWatching, Op: "watch", Release: s.plan.Target})
}

// watchDone takes the end of an OpWatch's checks: healthy (its monitor
// window begins), not running (it is started, first in line), or failed.
func (s *state) watchDone(d done, now time.Time, acts []action) []action {
	i := d.item
	it := &s.it[i]
	name := s.plan.Items[i].Name
	switch {
	case d.err == nil:
		it.o.Start, it.o.Outcome, it.o.Downtime = Started, OutMoved, now.Sub(it.begin)
		acts = append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseHealthy, Op: "watch", Outcome: string(Started), Release: s.plan.Target, Duration: it.o.Downtime}})
		return s.monitor(acts, i)
	case errors.Is(d.err, ErrNotRunning):
		// From here on it is a stopped locker to start, untouched until
		// its start launches (a trip before that starts it on the
		// fallback, as OpStart).
		it.restart, it.launched = true, false
		s.open--
		s.queue = append([]int{i}, s.queue...)
		return append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseWatching, Op: "watch", Outcome: "not-running", Message: "not running: it starts as a stopped locker", Release: s.plan.Target}})
	}
	it.o.Start, it.o.Outcome, it.o.Error, it.o.Duration = StartUnhealthy, OutFailed, d.err.Error(), now.Sub(it.begin)
	acts = append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseFailed, Op: "watch", Outcome: string(StartUnhealthy), Error: d.err.Error(), Duration: it.o.Duration}})
	return s.record(acts, i, true)
}
