package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// loop.go: Run as one loop, in the shape of nomad's deployment watcher.
// The goroutine that calls Run owns the state (next.go); workers run one
// verb each and report done on one channel; next decides what follows.

// Run carries plan out on env and returns what happened. A locker it
// stopped is started again before it returns: one whose start failed gets
// one more start when the run halts, is cancelled, or has nowhere to go
// back, and is reported failed if that fails too (I5). Only on Shutdown
// does it leave lockers for the next agent's recovery (I4). See the
// package doc for the invariants. Env.Observe is called from Run's own
// goroutine only, in the order of the run's state.
func Run(ctx context.Context, plan Plan, env Env) Result {
	if env.Clock == nil {
		env.Clock = RealClock{}
	}
	if env.Observe == nil {
		env.Observe = func(Event) {}
	}
	s := &state{plan: plan, pol: plan.Policy, releases: env.Releases != nil, wave: !plan.Unproven,
		out: make([]Outcome, len(plan.Items)), it: make([]item, len(plan.Items))}
	for i, it := range plan.Items {
		s.out[i] = Outcome{Name: it.Name, Op: it.Op, Outcome: OutSkipped}
	}
	x := &loop{s: s, env: env, done: make(chan done)}
	if err := plan.Policy.Validate(); err != nil {
		x.res.Err = fmt.Errorf("running %s plan: %w", plan.Kind, err)
		return x.result()
	}
	if (plan.Switch || plan.Watched()) && plan.Target != "" && env.Releases == nil {
		x.res.Err = fmt.Errorf("running %s plan to %s: no release store", plan.Kind, plan.Target)
		return x.result()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	x.cancel = cancel
	x.run(ctx)
	x.workers.Wait()
	return x.result()
}

// loop is the one goroutine's view: the state, and how to reach the world.
type loop struct {
	s    *state
	env  Env
	done chan done
	// gate cancels the launch delay's worker (launching stopped).
	gate    context.CancelFunc
	workers sync.WaitGroup // joins the workers at the end
	res     Result
	// cancel ends the run's context (a fence that failed).
	cancel context.CancelCauseFunc
}

// fenced asks Env.Fence before next may begin a move: a failed fence
// cancels the run with a cause wrapping Shutdown and its error, so that
// next stops launching before it decides anything else.
func (x *loop) fenced(ctx context.Context) {
	if x.env.Fence == nil || x.s.cancelled || x.s.mode == mBack || ctx.Err() != nil {
		return
	}
	if err := x.env.Fence(); err != nil {
		if !errors.Is(err, Shutdown) {
			err = fmt.Errorf("%w (%w)", err, Shutdown)
		}
		x.cancel(err)
		x.stage("fence", "launching stopped: "+err.Error())
	}
}

func (x *loop) result() Result {
	x.res.Outcomes = x.s.out
	return x.res
}

func (x *loop) observe(e Event) {
	e.Time = x.env.Clock.Now()
	x.env.Observe(e)
}

func (x *loop) stage(stage, msg string) { x.observe(Event{Stage: stage, Message: msg}) }

func (x *loop) reason(what string) string {
	if x.env.Reason == "" {
		return what
	}
	return what + ", " + x.env.Reason
}

// drive feeds next the events of one phase (mode, queue) until no worker
// runs and nothing more can launch.
func (x *loop) drive(ctx context.Context, m mode, queue []int, slots int) {
	s := x.s
	s.mode, s.queue, s.slots = m, queue, slots
	if m == mBack {
		ctx = context.WithoutCancel(ctx) // the way back runs to its end
	}
	x.fenced(ctx)
	x.sync(ctx)
	x.do(ctx, s.next(event{kind: evGo, now: x.env.Clock.Now()}))
	cancelled := ctx.Done()
	if s.cancelled {
		cancelled = nil
	}
	for s.busy > 0 {
		select {
		case d := <-x.done:
			if cancelled != nil {
				x.fenced(ctx)
			}
			if cancelled != nil && ctx.Err() != nil {
				// A cancel comes first: nothing launches after it.
				cancelled = nil
				x.do(ctx, s.next(event{kind: evCancel, now: x.env.Clock.Now()}))
			}
			x.do(ctx, s.next(event{kind: evDone, d: d, now: x.env.Clock.Now()}))
		case <-cancelled:
			cancelled = nil
			x.do(ctx, s.next(event{kind: evCancel, now: x.env.Clock.Now()}))
		}
	}
	s.queue = nil
}

// sync tells next of a ctx that ended before the loop saw it.
func (x *loop) sync(ctx context.Context) {
	if ctx.Err() != nil && !x.s.cancelled {
		x.do(ctx, x.s.next(event{kind: evCancel, now: x.env.Clock.Now()}))
	}
}

// do carries out next's actions in order.
func (x *loop) do(ctx context.Context, acts []action) {
	for _, a := range acts {
		switch a.kind {
		case aEmit:
			x.observe(a.ev)
		case aProve:
			x.markProven()
		case aStopDelay:
			if x.gate != nil {
				x.gate()
			}
		case aRun:
			x.spawn(ctx, a)
		}
	}
}

// spawn starts one worker for one verb; it reports on x.done.
func (x *loop) spawn(ctx context.Context, a action) {
	var name string
	if a.item >= 0 {
		name = x.s.plan.Items[a.item].Name
	}
	pol, host, clock := x.s.pol, x.env.Host, x.env.Clock
	gauge := x.env.Gauge
	if x.s.pacer == nil {
		gauge = nil
	}
	var soak []string
	wctx, cancel := context.WithCancel(ctx)
	switch a.verb {
	case vSoak:
		soak = x.s.soakNames()
	case vDelay:
		x.gate = cancel
	}
	x.workers.Add(1)
	go func() {
		defer x.workers.Done()
		defer cancel()
		d := done{item: a.item, verb: a.verb}
		begin := clock.Now()
		switch a.verb {
		case vPhaseStop, vStop, vBackStop:
			// A stop once begun runs to its end.
			d.stop, d.err = host.Stop(context.WithoutCancel(wctx), name, pol.StopTimeout)
			if d.err == nil && d.stop == StopFailed {
				d.err = errors.New("stop failed")
			}
			if d.err != nil {
				d.stop = StopFailed
			}
		case vStart, vBackStart:
			d.start, d.err = host.Start(context.WithoutCancel(wctx), name, pol.Deadline)
			if gauge != nil && a.verb == vStart {
				p, err := gauge.Pressure()
				if err == nil {
					d.pr = &p
				}
				d.gaugeErr = err
			}
		case vWatch:
			d.err = watchHealthy(wctx, host, clock, pol, name)
		case vMonitor:
			iv := pol.interval()
			if a.d > 0 {
				iv = a.d // a window in the background
			}
			d.who, d.err = holdHealthy(wctx, host, clock, iv, []string{name}, pol.Monitor, "in its monitor window")
		case vSoak:
			d.who, d.err = holdHealthy(wctx, host, clock, pol.interval(), soak, pol.Soak, "during the soak")
		case vDelay:
			_ = clock.Sleep(wctx, a.d)
		}
		d.cut = errors.Is(d.err, errCut)
		d.took = clock.Now().Sub(begin)
		x.done <- d
	}()
}

// errCut ends a monitor window early (cancel or shutdown).
var errCut = errors.New("monitor window cut short")

// unhealthyChecks is how many failed checks in a row fail a running
// locker in its monitor window (Kubernetes' failureThreshold default);
// a locker that stopped fails at once.
const unhealthyChecks = 3

// holdHealthy checks names every iv for d; the first to fail ends
// it with an error naming it (and every other one failing its checks
// then). A window does not end on a failed check: it goes on until the
// locker passes a check again or fails unhealthyChecks in a row (a window
// of one check that failed is no healthy window). A ctx that ends cuts it
// (errCut); the lockers failing their checks then are returned with it:
// they are down, not healthy once.
func holdHealthy(ctx context.Context, h Host, c Clock, iv time.Duration, names []string, d time.Duration, where string) ([]string, error) {
	bad := map[string]int{}
	last := map[string]error{}
	failing := func() bool {
		for _, n := range bad {
			if n > 0 {
				return true
			}
		}
		return false
	}
	for waited := time.Duration(0); waited < d || failing(); waited += iv {
		step := iv
		if waited < d {
			step = min(iv, d-waited)
		}
		if err := c.Sleep(ctx, step); err != nil {
			// The agent stops, a fence failed, or the operator
			// cancelled: the window is cut, and the locker is not
			// counted as moved. One failing its checks is checked once
			// more now: a check that failed only because this process
			// was frozen through it (SIGSTOP past its timeout: a fleet
			// host's fence then cuts the window) is no sign that the
			// locker is down.
			var who []string
			for _, n := range names {
				if bad[n] == 0 {
					continue
				}
				err := h.Check(context.WithoutCancel(ctx), n)
				if err == nil {
					continue
				}
				last[n] = err
				who = append(who, n)
			}
			if len(who) == 0 {
				return nil, errCut
			}
			return who, fmt.Errorf("%s failed its last check when its window was cut, %s: %v: %w", who[0], where, last[who[0]], errCut)
		}
		for _, n := range names {
			err := h.Check(ctx, n)
			if err == nil {
				bad[n] = 0
				continue
			}
			bad[n]++
			last[n] = err
			if errors.Is(err, ErrNotRunning) || bad[n] >= unhealthyChecks {
				// n failed, and so did every other one failing its
				// checks now: none of them is healthy through the window.
				who := []string{n}
				for _, m := range names {
					if m != n && bad[m] > 0 {
						who = append(who, m)
					}
				}
				return who, fmt.Errorf("%s failed %v after its first healthy check, %s: %w", n, (waited + step).Round(time.Millisecond), where, err)
			}
		}
	}
	return nil, nil
}

// soakNames are the canaries' names.
func (s *state) soakNames() []string {
	var names []string
	for i := range s.plan.Items {
		if s.it[i].launched {
			names = append(names, s.plan.Items[i].Name)
		}
	}
	return names
}

// markProven marks the target proven (next asked for it, once).
func (x *loop) markProven() {
	t := x.s.plan.Target
	if err := x.env.Releases.MarkProven(t); err != nil {
		x.observe(Event{Stage: "proven", Release: t, Error: err.Error()})
		return
	}
	x.res.Proven = true
	x.observe(Event{Stage: "proven", Release: t, Message: fmt.Sprintf("%s is proven: %d lockers passed the monitor window", t, x.s.moved)})
}

// run is the run's phases, in order: the stop phase (stop plans),
// the switch, the canaries and their soak, the rest, the end.
func (x *loop) run(ctx context.Context) {
	s, plan := x.s, x.s.plan
	if plan.Kind == KindStop {
		x.drive(ctx, mStop, reversed(s.indices(OpStop)), s.pol.stopping())
		x.endCancel(ctx)
		return
	}
	if plan.Strategy == Offline {
		// No serving capacity to protect: K = all, at most W starting.
		// Each locker is stopped just before its own start (a replace
		// takes its start place before its stop), not all of them
		// first: stopping 300 at once and then starting them W at a
		// time kept each one down for the whole start phase (p50 40 s at
		// N=300) where one restart is enough, and a release that trips
		// the policy has stopped only the lockers it launched. Nothing
		// shared runs mixed: each locker keeps the release folder it
		// started on (immutable, its own node_modules) until its stop.
		s.pol.MaxStarting = min(plan.Policy.startingAllDown(), max(len(plan.Items), 1))
		s.pol.MaxUnavailable = max(len(plan.Items), 1)
	}
	launch := s.indices("")
	if s.pol.Pacing == Adaptive {
		// W adapts up to K where serving capacity is at stake; offline
		// and start plans have none to protect, so only the pacer's
		// signals bound W there.
		limit := s.pol.MaxUnavailable
		if plan.Kind == KindStart {
			limit = max(len(plan.Items), 1)
		}
		s.pacer = NewPacer(plan.firstW(), limit, s.pol.Pace, s.pol.Deadline)
	}
	if plan.Switch && plan.Target != "" {
		if x.sync(ctx); s.cancelled {
			x.end(ctx)
			return
		}
		if err := x.env.Releases.Switch(context.WithoutCancel(ctx), plan.Target, x.reason(string(plan.Kind))); err != nil {
			x.res.Err = fmt.Errorf("switching current to %s: %w", plan.Target, err)
			x.observe(Event{Stage: "switch", Release: plan.Target, Error: err.Error()})
			// The switch may have half happened (renamed, then a failed
			// write): current goes back on the fallback (I2).
			x.res.Switched = true
			x.goBack(ctx, false, "the switch failed")
			return
		}
		x.res.Switched = true
		x.res.Current = plan.Target
		x.observe(Event{Stage: "switch", Release: plan.Target, Message: "current -> " + plan.Target})
	}
	// Lockers that are down already start first: they count against K
	// until they are up (I1), and bringing them up adds no downtime.
	slices.SortStableFunc(launch, func(a, b int) int { return s.downAlready(a) - s.downAlready(b) })
	for _, i := range launch {
		if op := plan.Items[i].Op; op == OpStart || op == OpWatch {
			s.pending++
		}
	}
	s.need = len(launch)
	if plan.Unproven {
		s.need = min(s.need, s.pol.starting())
		if !plan.allDown() {
			s.need = min(len(launch), plan.Policy.MaxUnavailable)
		}
	}
	canary := 0
	if plan.Kind == KindUpdate && plan.Strategy != Offline {
		canary = min(s.pol.Canary, len(launch))
	}
	if canary > 0 {
		s.need = canary
		s.canary = true
		x.stage("canary", fmt.Sprintf("moving %d canary lockers to %s", canary, plan.Target))
		x.drive(ctx, mRun, launch[:canary], 0)
		if x.sync(ctx); !s.stoppedLaunching() && s.pol.Soak > 0 {
			x.stage("soak", fmt.Sprintf("holding %v with %d canaries on %s, checked every %v", s.pol.Soak, canary, plan.Target, s.pol.interval()))
			s.busy++
			x.spawn(ctx, action{kind: aRun, verb: vSoak, item: -1})
			x.drive(ctx, mRun, nil, 0)
		}
		s.canary = false
		if x.sync(ctx); !s.stoppedLaunching() && s.moved >= s.need {
			x.do(ctx, s.prove(nil))
		}
		launch = launch[canary:]
	}
	x.drive(ctx, mRun, launch, 0)
	x.end(ctx)
}

// downAlready is -1 for a locker a dead agent left starting (checked
// first), 0 for one that is down before the run touches it (a start), 1
// for one it takes down (a replace).
func (s *state) downAlready(i int) int {
	if s.plan.Items[i].Op == OpWatch {
		return -1
	}
	if s.plan.Items[i].Op == OpStart {
		return 0
	}
	return 1
}

// indices returns the items with op ("" for all).
func (s *state) indices(op Op) []int {
	var out []int
	for i, it := range s.plan.Items {
		if op == "" || it.Op == op {
			out = append(out, i)
		}
	}
	return out
}

func reversed(xs []int) []int {
	slices.Reverse(xs)
	return xs
}

// end decides how the run ends once every worker returned.
func (x *loop) end(ctx context.Context) {
	s := x.s
	x.sync(ctx)
	cause := context.Cause(ctx)
	if s.tripped == "" && !s.cancelled && x.unprovenOnTarget() && s.plan.Watched() {
		// The run is over and its release is still unproven: fewer lockers
		// passed the monitor window than prove it. With failures, that is
		// a failed release; without, every locker it ran passed.
		switch failed := s.count(OutFailed); {
		case failed > 0:
			s.tripped = fmt.Sprintf("%s was not proven: %d of %d lockers failed", s.plan.Target, failed, len(s.plan.Items))
		case s.moved > 0:
			x.do(ctx, s.prove(nil))
		}
	}
	switch {
	case s.tripped != "":
		x.res.Tripped = s.tripped
		x.endCancel(ctx)
		x.stage("trip", "failure policy tripped: "+s.tripped)
		x.goBack(ctx, true, s.tripped)
	case errors.Is(cause, Shutdown):
		x.res.Interrupted = true
		x.stage("interrupted", "the agent is stopping: launching stopped; the next agent recovers")
		if x.unprovenOnTarget() && s.plan.Fallback != "" {
			x.switchBack()
		}
	case s.cancelled:
		x.endCancel(ctx)
		if s.plan.Kind != KindStop {
			x.undo(ctx)
		}
	}
	if s.halted != "" {
		// Launching stopped with the window full of failed lockers: each
		// gets one more start before the run gives up on it.
		x.res.Halted = s.halted
		var back []int
		for i, o := range s.out {
			if o.Outcome == OutFailed {
				back = append(back, i)
			}
		}
		x.runBack(ctx, back, nil)
	}
}

// unprovenOnTarget reports whether current points at the plan's target
// (switched by the run, or the plan runs on current) and the target is
// still unproven.
func (x *loop) unprovenOnTarget() bool {
	p := x.s.plan
	onTarget := x.res.Switched || (!p.Switch && p.Target != "")
	return onTarget && p.Unproven && !x.s.proven && p.Target != "" && x.s.releases
}

// count counts the outcomes equal to out.
func (s *state) count(out string) int {
	n := 0
	for _, o := range s.out {
		if o.Outcome == out {
			n++
		}
	}
	return n
}

func (x *loop) endCancel(ctx context.Context) {
	if errors.Is(context.Cause(ctx), Shutdown) {
		x.res.Interrupted = true
	} else if ctx.Err() != nil {
		x.res.Cancelled = true
		if x.s.tripped == "" {
			x.stage("cancel", "cancelled: launching stopped")
		}
	}
}

// undo handles an operator's cancel: an unproven move is undone (current
// back, every locker touched back on the fallback); otherwise lockers the
// job stopped and did not start again are started.
func (x *loop) undo(ctx context.Context) {
	if x.unprovenOnTarget() && x.s.plan.Fallback != "" {
		x.res.Undone = true
		x.goBack(ctx, false, "cancelled")
		return
	}
	// Nothing to undo: the lockers that failed get one start on current
	// (a replace's start follows its stop whatever ctx does, so no other
	// locker the job stopped is down).
	var back []int
	for i, o := range x.s.out {
		if o.Outcome == OutFailed {
			back = append(back, i)
		}
	}
	x.runBack(ctx, back, nil)
}

// switchBack points current at the fallback (I2).
func (x *loop) switchBack() bool {
	p := x.s.plan
	fb := p.Fallback
	if err := x.env.Releases.Switch(context.Background(), fb, x.reason("back from "+p.Target)); err != nil {
		x.observe(Event{Stage: "switch", Release: fb, Error: err.Error(), Back: true})
		x.res.Err = errors.Join(x.res.Err, fmt.Errorf("switching current back to %s: %w", fb, err))
		// A switch can fail after its rename (a full disk writing the
		// BUILD file): what counts is where current points.
		if cur, cerr := x.env.Releases.CurrentRelease(); cerr != nil || cur != fb {
			return false
		}
	}
	x.res.Current = fb
	x.observe(Event{Stage: "switch", Release: fb, Message: "current -> " + fb, Back: true})
	return true
}

// goBack is the failure policy's action (tripped) or the undo of a cancel
// or a failed switch: mark the target bad (tripped only), current back on
// the fallback, then bring lockers back.
func (x *loop) goBack(ctx context.Context, tripped bool, why string) {
	s, p := x.s, x.s.plan
	if tripped && p.Target != "" {
		if err := x.env.Releases.MarkBad(p.Target, x.reason(why)); err != nil {
			x.observe(Event{Stage: "mark-bad", Release: p.Target, Error: err.Error()})
		} else {
			x.res.MarkedBad = true
			x.observe(Event{Stage: "mark-bad", Release: p.Target, Message: p.Target + " marked bad: " + why})
		}
	}
	fb := p.Fallback
	if fb == "" || fb == p.Target {
		x.res.Paused = true
		x.stage("pause", "no good release to go back to: lockers stay where they are")
		return
	}
	if !x.switchBack() {
		x.res.Paused = true
		return
	}
	action := s.pol.FailureAction
	if !tripped {
		action = Rollback // an undo always moves everything back
	}
	var back []int
	for i := range p.Items {
		o, it := s.out[i], s.it[i]
		touched := it.launched
		switch {
		case !touched && tripped && (p.Items[i].Op == OpStart || p.Items[i].Op == OpWatch):
			// A stopped locker the job was to start (or one a dead agent
			// left starting): it starts on the fallback (I4).
			back = append(back, i)
		case !touched:
		case o.Outcome == OutFailed:
			back = append(back, i)
		case action == Rollback && (o.Outcome == OutMoved || o.Outcome == OutStarted || o.Outcome == OutUnverified):
			back = append(back, i)
		}
	}
	if action == Pause && tripped {
		x.res.Paused = true
		x.stage("pause", fmt.Sprintf("paused: current back on %s; %d lockers that moved healthy stay on %s until you act", fb, s.moved, p.Target))
	} else {
		x.res.RolledBack = tripped
		x.stage("rollback", fmt.Sprintf("moving %d lockers back to %s", len(back), fb))
	}
	x.runBack(ctx, back, &fb)
}

// runBack brings lockers back: a running one is replaced, a stopped one
// started, at most K down and W (fixed) starting at once; no policy (the
// fallback is good) and no monitor window. It runs to its end whatever ctx does.
func (x *loop) runBack(ctx context.Context, idx []int, release *string) {
	if len(idx) == 0 {
		return
	}
	s := x.s
	for _, i := range idx {
		s.it[i].release = release
	}
	// Lockers that are down come back first (that adds no downtime); then
	// running ones are replaced with the places left of K (I1).
	var down, up []int
	for _, i := range idx {
		if o := s.out[i]; o.Outcome == OutFailed || o.Outcome == OutSkipped {
			down = append(down, i)
		} else {
			up = append(up, i)
		}
	}
	// s.pol, not the plan's: an offline plan's K is all its lockers (its
	// W may be above the configured K), as in the run.
	x.drive(ctx, mBack, down, max(s.pol.starting(), 1))
	stillDown := 0
	for _, i := range down {
		if s.out[i].Back == BackFailed {
			stillDown++
		}
	}
	k := s.pol.MaxUnavailable - stillDown
	if k <= 0 && len(up) > 0 {
		// Replacing even one would put more than K down (I1): they stay
		// where they are, and the run says so.
		x.res.Paused = true
		x.stage("pause", fmt.Sprintf("%d lockers could not be moved back: %d failed lockers still hold every place of the window", len(up), stillDown))
		return
	}
	// Each replace takes its start place before its stop, as in the run:
	// at most W (fixed: the way back runs without the pacer) at once.
	x.drive(ctx, mBack, up, max(min(k, s.pol.starting()), 1))
}
