package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// The per-locker outcomes of a run (I5).
const (
	OutMoved          = "moved"      // replaced, then healthy through the monitor window
	OutStarted        = "started"    // started, then healthy through the monitor window
	OutUnverified     = "unverified" // healthy once; the agent stopped before the window ended
	OutStopped        = "stopped"    // stopped cleanly
	OutKilled         = "killed"     // the stop timed out: killed
	OutAlreadyStopped = "already-stopped"
	OutAlreadyRunning = "already-running"
	OutFailed         = "failed"
	OutSkipped        = "skipped" // not touched: left where it was
)

// The outcomes of a locker's way back (Outcome.Back).
const (
	BackRolledBack = "rolled-back"
	BackFailed     = "failed"
)

// Outcome is one locker's result in a run.
type Outcome struct {
	Name    string `json:"name"`
	Op      Op     `json:"op"`
	Outcome string `json:"outcome"`
	// Release is the release it ended on, when known.
	Release string `json:"release,omitempty"`
	// Stop is how its stop went (replace and stop); Start how its start
	// went (healthy, unhealthy: running but never healthy, or failed).
	Stop  StopOutcome  `json:"stop,omitempty"`
	Start StartOutcome `json:"start,omitempty"`
	Error string       `json:"error,omitempty"`
	// Duration is the whole operation; Downtime from its stop (or start)
	// to its first healthy check.
	Duration time.Duration `json:"duration,omitempty"`
	Downtime time.Duration `json:"downtime,omitempty"`
	// Back is the result of its way back (rollback or undo), if any.
	Back      string `json:"back,omitempty"`
	BackError string `json:"back_error,omitempty"`
}

// Failed reports whether the locker failed in the run or on its way back.
func (o Outcome) Failed() bool { return o.Outcome == OutFailed || o.Back == BackFailed }

// Result is what a run did, and no more (I5).
type Result struct {
	Outcomes []Outcome `json:"outcomes"`
	// Switched is true when current was pointed at the target (or may
	// have been: a switch that failed after its rename).
	Switched bool `json:"switched,omitempty"`
	// Current is where current points at the end, as far as the run knows.
	Current string `json:"current,omitempty"`
	// Proven is true when this run proved the target.
	Proven bool `json:"proven,omitempty"`
	// Tripped is the failure policy's reason, when it tripped.
	Tripped    string `json:"tripped,omitempty"`
	MarkedBad  bool   `json:"marked_bad,omitempty"`
	RolledBack bool   `json:"rolled_back,omitempty"`
	Paused     bool   `json:"paused,omitempty"`
	// Halted says why launching stopped early without a tripped policy.
	Halted string `json:"halted,omitempty"`
	// Cancelled: an operator's cancel; Undone: it moved lockers back.
	Cancelled bool `json:"cancelled,omitempty"`
	Undone    bool `json:"undone,omitempty"`
	// Interrupted: the agent stopped (Shutdown); the next agent recovers.
	Interrupted bool `json:"interrupted,omitempty"`
	// Err is a failure of the run itself (a switch that failed).
	Err error `json:"-"`
}

// Counts counts outcomes, and way-back outcomes under "back-" keys.
func (r Result) Counts() map[string]int {
	c := map[string]int{}
	for _, o := range r.Outcomes {
		c[o.Outcome]++
		if o.Back != "" {
			c["back-"+o.Back]++
		}
	}
	return c
}

// Failed returns the lockers that failed in the run or on the way back.
func (r Result) Failed() []string {
	var out []string
	for _, o := range r.Outcomes {
		if o.Failed() {
			out = append(out, o.Name)
		}
	}
	return out
}

// OK reports whether the run did all it planned: nothing failed, tripped,
// halted, cancelled or interrupted.
func (r Result) OK() bool {
	return r.Err == nil && r.Tripped == "" && r.Halted == "" && !r.Cancelled && !r.Interrupted && len(r.Failed()) == 0
}

// Run carries plan out on env and returns what happened. A locker it
// stopped is started again before it returns: one whose start failed gets
// one more start when the run halts, is cancelled, or has nowhere to go
// back, and is reported failed if that fails too (I5). Only on Shutdown
// does it leave lockers for the next agent's recovery (I4). See the
// package doc for the invariants.
func Run(ctx context.Context, plan Plan, env Env) Result {
	if env.Clock == nil {
		env.Clock = RealClock{}
	}
	if env.Observe == nil {
		env.Observe = func(Event) {}
	}
	x := &runner{plan: plan, env: env, pol: plan.Policy, out: make([]Outcome, len(plan.Items))}
	x.cond = sync.NewCond(&x.mu)
	for i, it := range plan.Items {
		x.out[i] = Outcome{Name: it.Name, Op: it.Op, Outcome: OutSkipped}
	}
	if err := plan.Policy.Validate(); err != nil {
		x.res.Err = fmt.Errorf("running %s plan: %w", plan.Kind, err)
		return x.result()
	}
	if (plan.Switch || plan.Watched()) && plan.Target != "" && env.Releases == nil {
		x.res.Err = fmt.Errorf("running %s plan to %s: no release store", plan.Kind, plan.Target)
		return x.result()
	}
	x.run(ctx)
	return x.result()
}

type runner struct {
	plan Plan
	env  Env
	pol  Policy

	mu       sync.Mutex
	cond     *sync.Cond
	out      []Outcome
	down     int  // lockers down because of the job (K)
	starting int  // lockers starting (W)
	canary   bool // in the canary phase: any failure trips
	pending  int  // stopped lockers (OpStart) not yet up: they hold K places
	active   int  // workers running
	finished []int
	moved    int
	need     int // moved lockers that prove the target
	tripped  string
	halted   string
	proven   bool
	pacer    *Pacer // adaptive pacing; nil: W is fixed
	// gaugeFailed: a Gauge error was reported (under pmu).
	gaugeFailed bool
	pmu         sync.Mutex   // held by paced from W's change to its stage (before mu)
	prestop     map[int]bool // offline: stopped in the stop phase
	launched    map[int]bool
	wg          sync.WaitGroup
	res         Result
}

func (x *runner) result() Result {
	x.res.Outcomes = x.out
	return x.res
}

func (x *runner) observe(e Event) {
	e.Time = x.env.Clock.Now()
	x.env.Observe(e)
}

func (x *runner) stage(stage, msg string) { x.observe(Event{Stage: stage, Message: msg}) }

func (x *runner) reason(what string) string {
	if x.env.Reason == "" {
		return what
	}
	return what + ", " + x.env.Reason
}

// watch wakes waiters when ctx ends.
func (x *runner) watch(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, func() {
		x.mu.Lock()
		x.cond.Broadcast()
		x.mu.Unlock()
	})
}

func (x *runner) run(ctx context.Context) {
	defer x.watch(ctx)()
	x.launched = map[int]bool{}
	if x.plan.Kind == KindStop {
		x.stopPhase(ctx, x.indices(OpStop), false)
		x.endCancel(ctx)
		return
	}
	launch := x.indices("")
	if x.plan.Strategy == Offline {
		// No serving capacity to protect: stop everything, then start
		// with K = all and at most W starting.
		x.prestop = map[int]bool{}
		x.stopPhase(ctx, x.indices(OpReplace), true)
		x.pol.MaxStarting = x.plan.Policy.starting()
		x.pol.MaxUnavailable = max(len(x.plan.Items), 1)
		launch = launch[:0]
		for i, it := range x.plan.Items {
			if it.Op == OpStart || x.prestop[i] {
				launch = append(launch, i)
			}
		}
		if ctx.Err() != nil {
			x.end(ctx)
			return
		}
	}
	if x.pol.Pacing == Adaptive {
		// W adapts up to K where serving capacity is at stake; offline
		// and start plans have none to protect, so only the pacer's
		// signals bound W there.
		limit := x.pol.MaxUnavailable
		if x.plan.Kind == KindStart {
			limit = max(len(x.plan.Items), 1)
		}
		x.pacer = NewPacer(x.plan.Policy.starting(), limit, x.pol.Pace)
	}
	if x.plan.Switch && x.plan.Target != "" {
		if err := ctx.Err(); err != nil {
			x.end(ctx)
			return
		}
		if err := x.env.Releases.Switch(context.WithoutCancel(ctx), x.plan.Target, x.reason(string(x.plan.Kind))); err != nil {
			x.res.Err = fmt.Errorf("switching current to %s: %w", x.plan.Target, err)
			x.observe(Event{Stage: "switch", Release: x.plan.Target, Error: err.Error()})
			// The switch may have half happened (renamed, then a failed
			// write): current goes back on the fallback (I2).
			x.res.Switched = true
			x.goBack(ctx, false, "the switch failed")
			return
		}
		x.res.Switched = true
		x.res.Current = x.plan.Target
		x.observe(Event{Stage: "switch", Release: x.plan.Target, Message: "current -> " + x.plan.Target})
	}
	// Lockers that are down already start first: they count against K
	// until they are up (I1), and bringing them up adds no downtime.
	slices.SortStableFunc(launch, func(a, b int) int {
		return x.downAlready(a) - x.downAlready(b)
	})
	for _, i := range launch {
		if x.plan.Items[i].Op == OpStart {
			x.pending++
		}
	}
	x.need = len(launch)
	if x.plan.Unproven {
		x.need = min(x.need, x.plan.Policy.starting())
		if x.plan.Strategy != Offline && x.plan.Kind != KindStart {
			x.need = min(len(launch), x.plan.Policy.MaxUnavailable)
		}
	}
	canary := 0
	if x.plan.Kind == KindUpdate && x.plan.Strategy != Offline {
		canary = min(x.pol.Canary, len(launch))
	}
	if canary > 0 {
		x.need = canary
		x.mu.Lock()
		x.canary = true
		x.mu.Unlock()
		x.stage("canary", fmt.Sprintf("moving %d canary lockers to %s", canary, x.plan.Target))
		x.launch(ctx, launch[:canary])
		x.wg.Wait()
		x.soak(ctx, launch[:canary])
		x.mu.Lock()
		x.canary = false
		ready := x.tripped == "" && ctx.Err() == nil && x.moved >= x.need
		x.mu.Unlock()
		if ready {
			x.prove()
		}
		launch = launch[canary:]
	}
	x.launch(ctx, launch)
	x.wg.Wait()
	x.end(ctx)
}

// downAlready is 0 for a locker that is down before the run touches it
// (a start), 1 for one it takes down (a replace).
func (x *runner) downAlready(i int) int {
	if x.plan.Items[i].Op == OpStart || x.prestop[i] {
		return 0
	}
	return 1
}

// indices returns the items with op ("" for all).
func (x *runner) indices(op Op) []int {
	var out []int
	for i, it := range x.plan.Items {
		if op == "" || it.Op == op {
			out = append(out, i)
		}
	}
	return out
}

// stopPhase stops the given items, StopParallel at once, in reverse order
// (the reverse of start order). keepDown records them as stopped for a
// later start (offline); otherwise each is done once stopped (stop-all).
func (x *runner) stopPhase(ctx context.Context, idx []int, keepDown bool) {
	sem := make(chan struct{}, x.pol.stopping())
	var wg sync.WaitGroup
	for n := len(idx) - 1; n >= 0; n-- {
		i := idx[n]
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			begin := x.env.Clock.Now()
			so, err := x.stopOne(ctx, i, place{})
			x.mu.Lock()
			defer x.mu.Unlock()
			o := &x.out[i]
			o.Stop, o.Duration = so, x.env.Clock.Now().Sub(begin)
			switch {
			case err != nil:
				o.Outcome, o.Error = OutFailed, err.Error()
			case keepDown:
				x.prestop[i] = true
				o.Outcome = OutSkipped // until it is started
			case so == StoppedKilled:
				o.Outcome = OutKilled
			case so == AlreadyStopped:
				o.Outcome = OutAlreadyStopped
			default:
				o.Outcome = OutStopped
			}
		}()
	}
	wg.Wait()
}

// stopOne stops one locker; a stop once begun runs to its end.
// pl is W and the places held when a replace's start place was taken
// (zero in a stop phase).
func (x *runner) stopOne(ctx context.Context, i int, pl place) (StopOutcome, error) {
	name := x.plan.Items[i].Name
	begin := x.env.Clock.Now()
	x.observe(Event{Container: name, Phase: PhaseStopping, Op: "stop", Back: false, MaxStarting: pl.w, Starting: pl.held})
	so, err := x.env.Host.Stop(context.WithoutCancel(ctx), name, x.pol.StopTimeout)
	d := x.env.Clock.Now().Sub(begin)
	if err == nil && so == StopFailed {
		err = errors.New("stop failed")
	}
	if err != nil {
		x.observe(Event{Container: name, Phase: PhaseFailed, Op: "stop", Outcome: string(StopFailed), Error: err.Error(), Duration: d})
		return StopFailed, fmt.Errorf("stopping %s: %w", name, err)
	}
	x.observe(Event{Container: name, Phase: PhaseStopped, Op: "stop", Outcome: string(so), Duration: d})
	return so, nil
}

// launch starts workers for idx in order within the window: a replace
// needs a place among K, a start a place among W; before each launch the
// failure policy and ctx are checked, and lockers not launched stay
// skipped.
func (x *runner) launch(ctx context.Context, idx []int) {
	var last time.Time
	var wait time.Duration // after the last launch
	for _, i := range idx {
		op := x.plan.Items[i].Op
		needDown := op == OpReplace && !x.prestop[i]
		x.mu.Lock()
		for {
			if x.tripped != "" || x.halted != "" || ctx.Err() != nil {
				x.mu.Unlock()
				return
			}
			if needDown && x.down+x.pending >= x.pol.MaxUnavailable && x.active == 0 {
				x.stop(fmt.Sprintf("all %d places of the window are held by failed lockers", x.pol.MaxUnavailable))
				continue
			}
			// A replace takes its start place before its stop, so that
			// no locker is down waiting for one.
			if needDown && x.down+x.pending < x.pol.MaxUnavailable && x.starting < x.maxStarting() {
				x.down++
				x.starting++
				break
			}
			if !needDown && x.starting < x.maxStarting() {
				x.starting++
				break
			}
			x.cond.Wait()
		}
		seq, w, held := 0, x.maxStarting(), x.starting
		if x.pacer != nil {
			seq = x.pacer.Launch()
		}
		x.launched[i] = true
		x.active++
		x.mu.Unlock()
		if wait > 0 && !last.IsZero() {
			if err := x.env.Clock.Sleep(ctx, wait-x.env.Clock.Now().Sub(last)); err != nil {
				// Cancelled during the delay: this one is not launched.
				x.mu.Lock()
				x.launched[i] = false
				x.active--
				if needDown {
					x.down--
				}
				x.starting--
				x.cond.Broadcast()
				x.mu.Unlock()
				return
			}
		}
		last = x.env.Clock.Now()
		wait = max(x.pol.Delay, x.plan.Items[i].Delay)
		x.wg.Add(1)
		go func() {
			defer x.wg.Done()
			x.work(ctx, i, needDown, seq, place{w, held})
		}()
	}
}

// stop ends launching: a tripped policy on watched plans, a halt on others.
// Called with mu held.
func (x *runner) stop(why string) {
	if x.plan.Watched() {
		if x.tripped == "" {
			x.tripped = why
		}
	} else if x.halted == "" {
		x.halted = why
	}
	x.cond.Broadcast()
}

// maxStarting is W now. Called with mu held.
func (x *runner) maxStarting() int {
	if x.pacer != nil {
		return x.pacer.W()
	}
	return x.pol.starting()
}

// paced feeds the pacer one finished start (seq from its launch) and
// reports a change of W as a "pacing" stage.
func (x *runner) paced(seq int, ok bool, took time.Duration) {
	if x.pacer == nil {
		return
	}
	var pr *Pressure
	var gaugeErr error
	if x.env.Gauge != nil {
		p, err := x.env.Gauge.Pressure()
		if err == nil {
			pr = &p
		}
		gaugeErr = err
	}
	// pmu keeps the stages in the order of W's changes: two starts
	// ending together must not report "W 3 -> 4" before "W 2 -> 3".
	x.pmu.Lock()
	defer x.pmu.Unlock()
	if gaugeErr != nil && !x.gaugeFailed {
		// Said once per run: the pressure signal is off until it reads.
		x.gaugeFailed = true
		x.observe(Event{Stage: "pacing", Message: "pressure unreadable: W follows starts and failures alone", Error: gaugeErr.Error()})
	}
	x.mu.Lock()
	before := x.pacer.W()
	changed := x.pacer.Done(seq, ok, took, pr)
	after, why := x.pacer.W(), x.pacer.Last
	x.cond.Broadcast()
	x.mu.Unlock()
	if changed {
		x.stage("pacing", fmt.Sprintf("W %d -> %d (cap %d): %s", before, after, x.pacer.Cap(), why))
	}
}

// place is W and the start places held when a launch took its own.
type place struct{ w, held int }

// work moves one locker: stop (replace), start, monitor. It holds a start
// place (taken at launch) until its start is over.
func (x *runner) work(ctx context.Context, i int, holdsDown bool, seq int, pl place) {
	it := x.plan.Items[i]
	o := Outcome{Name: it.Name, Op: it.Op}
	begin := x.env.Clock.Now()
	// started frees the start place once the start's event is out (so
	// that the events never show more than W starting).
	started := func() {
		x.mu.Lock()
		x.starting--
		x.cond.Broadcast()
		x.mu.Unlock()
	}
	if holdsDown {
		so, err := x.stopOne(ctx, i, pl)
		o.Stop = so
		if err != nil {
			o.Outcome, o.Error = OutFailed, err.Error()
			started()
			x.finish(i, o, true)
			return
		}
	} else if x.prestop[i] {
		o.Stop = x.out[i].Stop
	}
	startAt := x.env.Clock.Now()
	x.observe(Event{Container: it.Name, Phase: PhaseStarting, Op: "start", Release: x.plan.Target, MaxStarting: pl.w, Starting: pl.held})
	st, err := x.env.Host.Start(context.WithoutCancel(ctx), it.Name, x.pol.Deadline)
	downFrom := begin
	if !holdsDown && !x.prestop[i] {
		downFrom = startAt
	}
	o.Start = st
	switch {
	case err != nil || (st != Started && st != AlreadyRunning):
		if err == nil {
			err = fmt.Errorf("start ended %s", st)
		}
		o.Outcome, o.Error, o.Duration = OutFailed, err.Error(), x.env.Clock.Now().Sub(begin)
		x.observe(Event{Container: it.Name, Phase: PhaseFailed, Op: "start", Outcome: string(st), Error: err.Error(), Duration: o.Duration})
		// Its start place is freed only with its failure recorded (and
		// W halved): the next launch sees the policy's verdict (I3).
		x.paced(seq, false, x.env.Clock.Now().Sub(startAt))
		x.finishStart(i, o)
		return
	case st == AlreadyRunning && it.Op == OpStart:
		o.Outcome, o.Duration = OutAlreadyRunning, x.env.Clock.Now().Sub(begin)
		x.observe(Event{Container: it.Name, Phase: PhaseSkipped, Op: "start", Outcome: OutAlreadyRunning})
		started()
		x.finish(i, o, false)
		return
	}
	o.Downtime = x.env.Clock.Now().Sub(downFrom)
	x.observe(Event{Container: it.Name, Phase: PhaseHealthy, Op: "start", Outcome: string(Started), Release: x.plan.Target, Duration: o.Downtime})
	x.paced(seq, true, x.env.Clock.Now().Sub(startAt))
	started()
	o.Outcome = OutMoved
	if it.Op == OpStart {
		o.Outcome = OutStarted
	}
	if err := x.monitor(ctx, it.Name); err != nil {
		o.Duration = x.env.Clock.Now().Sub(begin)
		if errors.Is(err, errCut) {
			o.Outcome, o.Release = OutUnverified, x.plan.Target
			x.finish(i, o, false)
			return
		}
		o.Outcome, o.Error = OutFailed, err.Error()
		x.observe(Event{Container: it.Name, Phase: PhaseFailed, Op: "monitor", Outcome: OutFailed, Error: err.Error(), Duration: o.Duration})
		x.finish(i, o, true)
		return
	}
	o.Release, o.Duration = x.plan.Target, x.env.Clock.Now().Sub(begin)
	x.observe(Event{Container: it.Name, Phase: PhaseMoved, Outcome: o.Outcome, Release: x.plan.Target, Duration: o.Duration})
	x.finish(i, o, false)
}

// errCut ends a monitor window early (cancel or shutdown).
var errCut = errors.New("monitor window cut short")

// unhealthyChecks is how many failed checks in a row fail a running
// locker in its monitor window (Kubernetes' failureThreshold default);
// a locker that stopped fails at once.
const unhealthyChecks = 3

// monitor checks a locker every interval for the monitor window. It
// returns errCut when ctx ends meanwhile.
func (x *runner) monitor(ctx context.Context, name string) error {
	_, err := x.holdHealthy(ctx, []string{name}, x.pol.Monitor, "in its monitor window")
	return err
}

// holdHealthy checks names every interval for d; the first to fail ends
// it with an error naming it.
func (x *runner) holdHealthy(ctx context.Context, names []string, d time.Duration, where string) (string, error) {
	iv := x.pol.interval()
	bad := map[string]int{}
	for waited := time.Duration(0); waited < d; waited += iv {
		step := min(iv, d-waited)
		if err := x.env.Clock.Sleep(ctx, step); err != nil {
			// The agent stops or the operator cancelled: the window is
			// cut, and the locker is not counted as moved.
			return "", errCut
		}
		for _, n := range names {
			err := x.env.Host.Check(ctx, n)
			if err == nil {
				bad[n] = 0
				continue
			}
			bad[n]++
			if errors.Is(err, ErrNotRunning) || bad[n] >= unhealthyChecks {
				return n, fmt.Errorf("%s failed %v after its first healthy check, %s: %w", n, (waited + step).Round(time.Millisecond), where, err)
			}
		}
	}
	return "", nil
}

// finish records a locker's outcome, frees its place unless it failed
// (a failed locker is down: it keeps its place, I1), and applies the
// failure policy.
func (x *runner) finish(i int, o Outcome, failed bool) {
	x.mu.Lock()
	x.record(i, o, failed)
}

// finishStart is finish for a failed start: its start place is freed in
// the same critical section.
func (x *runner) finishStart(i int, o Outcome) {
	x.mu.Lock()
	x.starting--
	x.record(i, o, true)
}

// record is finish's body; called with mu held, it unlocks.
func (x *runner) record(i int, o Outcome, failed bool) {
	x.out[i] = o
	x.finished = append(x.finished, i)
	x.active--
	if !failed && x.plan.Items[i].Op == OpStart {
		x.pending-- // it is up: its place is free
	}
	holdsDown := x.plan.Items[i].Op == OpReplace && !x.prestop[i]
	switch {
	case failed:
		// A failed locker is down: it keeps its place in K (I1).
	case holdsDown:
		x.down--
	}
	if !failed && (o.Outcome == OutMoved || o.Outcome == OutStarted) {
		x.moved++
	}
	if failed && x.plan.Watched() {
		x.checkPolicy()
	}
	// Canaries prove the release only once they passed the soak too.
	ready := x.tripped == "" && !x.canary && x.need > 0 && x.moved >= x.need
	x.cond.Broadcast()
	x.mu.Unlock()
	if ready {
		x.prove()
	}
}

// prove marks the target proven, once.
func (x *runner) prove() {
	x.mu.Lock()
	do := x.plan.Unproven && !x.proven && x.plan.Target != "" && x.env.Releases != nil
	x.proven = x.proven || do
	moved := x.moved
	x.mu.Unlock()
	if !do {
		return
	}
	if err := x.env.Releases.MarkProven(x.plan.Target); err != nil {
		x.observe(Event{Stage: "proven", Release: x.plan.Target, Error: err.Error()})
		return
	}
	x.res.Proven = true
	x.observe(Event{Stage: "proven", Release: x.plan.Target, Message: fmt.Sprintf("%s is proven: %d lockers passed the monitor window", x.plan.Target, moved)})
}

// checkPolicy trips the failure policy (Swarm's max_failure_ratio over the
// whole plan, and over the last K finished lockers; any canary failure).
// Called with mu held.
func (x *runner) checkPolicy() {
	ratio := x.pol.MaxFailureRatio
	total := len(x.plan.Items)
	failed := 0
	for _, i := range x.finished {
		if x.out[i].Outcome == OutFailed {
			failed++
		}
	}
	k := x.plan.Policy.MaxUnavailable
	// The last K finished (or all so far, when fewer): a failure among
	// the first lockers weighs as much as one later.
	lastFailed := 0
	for _, i := range x.finished[max(0, len(x.finished)-k):] {
		if x.out[i].Outcome == OutFailed {
			lastFailed++
		}
	}
	switch {
	case x.canary:
		x.stop(fmt.Sprintf("%d canary lockers failed", failed))
	case float64(failed) > ratio*float64(total):
		x.stop(fmt.Sprintf("%d of %d lockers failed (max failure ratio %g)", failed, total, ratio))
	case lastFailed > 0 && float64(lastFailed) > ratio*float64(k):
		x.stop(fmt.Sprintf("%d of the last %d lockers failed (max failure ratio %g)", lastFailed, k, ratio))
	}
}

// soak holds the canaries healthy for the soak time, checked throughout.
func (x *runner) soak(ctx context.Context, canaries []int) {
	x.mu.Lock()
	skip := x.tripped != "" || ctx.Err() != nil || x.pol.Soak <= 0
	x.mu.Unlock()
	if skip {
		return
	}
	var names []string
	for _, i := range canaries {
		names = append(names, x.plan.Items[i].Name)
	}
	x.stage("soak", fmt.Sprintf("holding %v with %d canaries on %s, checked every %v", x.pol.Soak, len(names), x.plan.Target, x.pol.interval()))
	who, err := x.holdHealthy(ctx, names, x.pol.Soak, "during the soak")
	if err == nil || errors.Is(err, errCut) {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, i := range canaries {
		if x.out[i].Outcome != OutFailed && x.plan.Items[i].Name == who {
			x.out[i].Outcome, x.out[i].Error = OutFailed, err.Error()
			x.down++ // it was given back when it passed its window
		}
	}
	x.stop("a canary failed during the soak: " + err.Error())
}

// end decides how the run ends once every worker returned.
func (x *runner) end(ctx context.Context) {
	cause := context.Cause(ctx)
	if x.tripped == "" && ctx.Err() == nil && x.unprovenOnTarget() && x.plan.Watched() {
		// The run is over and its release is still unproven: fewer lockers
		// passed the monitor window than prove it. With failures, that is
		// a failed release; without, every locker it ran passed.
		switch failed := x.count(OutFailed); {
		case failed > 0:
			x.tripped = fmt.Sprintf("%s was not proven: %d of %d lockers failed", x.plan.Target, failed, len(x.plan.Items))
		case x.moved > 0:
			x.prove()
		}
	}
	switch {
	case x.tripped != "":
		x.res.Tripped = x.tripped
		x.endCancel(ctx)
		x.stage("trip", "failure policy tripped: "+x.tripped)
		x.goBack(ctx, true, x.tripped)
	case errors.Is(cause, Shutdown):
		x.res.Interrupted = true
		x.stage("interrupted", "the agent is stopping: launching stopped; the next agent recovers")
		if x.unprovenOnTarget() && x.plan.Fallback != "" {
			x.switchBack()
		}
	case ctx.Err() != nil:
		x.endCancel(ctx)
		if x.plan.Kind != KindStop {
			x.undo(ctx)
		}
	}
	if x.halted != "" {
		// Launching stopped with the window full of failed lockers: each
		// gets one more start before the run gives up on it.
		x.res.Halted = x.halted
		var back []int
		for i, o := range x.out {
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
func (x *runner) unprovenOnTarget() bool {
	onTarget := x.res.Switched || (!x.plan.Switch && x.plan.Target != "")
	return onTarget && x.plan.Unproven && !x.proven && x.plan.Target != "" && x.env.Releases != nil
}

// count counts the outcomes equal to out.
func (x *runner) count(out string) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for _, o := range x.out {
		if o.Outcome == out {
			n++
		}
	}
	return n
}

func (x *runner) endCancel(ctx context.Context) {
	cause := context.Cause(ctx)
	if errors.Is(cause, Shutdown) {
		x.res.Interrupted = true
	} else if ctx.Err() != nil {
		x.res.Cancelled = true
		if x.tripped == "" {
			x.stage("cancel", "cancelled: launching stopped")
		}
	}
}

// undo handles an operator's cancel: an unproven move is undone (current
// back, every locker touched back on the fallback); otherwise lockers the
// job stopped and did not start again are started.
func (x *runner) undo(ctx context.Context) {
	if x.unprovenOnTarget() && x.plan.Fallback != "" {
		x.res.Undone = true
		x.goBack(ctx, false, "cancelled")
		return
	}
	// Nothing to undo: the lockers the job stopped and did not start, and
	// those that failed, get one start on current.
	var back []int
	for i, o := range x.out {
		if x.prestop[i] && !x.launched[i] || o.Outcome == OutFailed {
			back = append(back, i)
		}
	}
	x.runBack(ctx, back, nil)
}

// switchBack points current at the fallback (I2).
func (x *runner) switchBack() bool {
	fb := x.plan.Fallback
	if err := x.env.Releases.Switch(context.Background(), fb, x.reason("back from "+x.plan.Target)); err != nil {
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
func (x *runner) goBack(ctx context.Context, tripped bool, why string) {
	if tripped && x.plan.Target != "" {
		if err := x.env.Releases.MarkBad(x.plan.Target, x.reason(why)); err != nil {
			x.observe(Event{Stage: "mark-bad", Release: x.plan.Target, Error: err.Error()})
		} else {
			x.res.MarkedBad = true
			x.observe(Event{Stage: "mark-bad", Release: x.plan.Target, Message: x.plan.Target + " marked bad: " + why})
		}
	}
	fb := x.plan.Fallback
	if fb == "" || fb == x.plan.Target {
		x.res.Paused = true
		x.stage("pause", "no good release to go back to: lockers stay where they are")
		// Lockers the job stopped and never started are not left down.
		var back []int
		for i := range x.plan.Items {
			if x.prestop[i] && !x.launched[i] {
				back = append(back, i)
			}
		}
		x.runBack(ctx, back, nil)
		return
	}
	if !x.switchBack() {
		x.res.Paused = true
		return
	}
	action := x.pol.FailureAction
	if !tripped {
		action = Rollback // an undo always moves everything back
	}
	var back []int
	for i := range x.plan.Items {
		o := x.out[i]
		touched := x.launched[i] || x.prestop[i]
		switch {
		case !touched && tripped && x.plan.Items[i].Op == OpStart:
			// A stopped locker the job was to start: it starts on the
			// fallback (I4).
			back = append(back, i)
		case !touched:
		case o.Outcome == OutFailed || x.prestop[i] && !x.launched[i]:
			back = append(back, i)
		case action == Rollback && (o.Outcome == OutMoved || o.Outcome == OutStarted || o.Outcome == OutUnverified):
			back = append(back, i)
		}
	}
	if action == Pause && tripped {
		x.res.Paused = true
		x.stage("pause", fmt.Sprintf("paused: current back on %s; %d lockers that moved healthy stay on %s until you act", fb, x.moved, x.plan.Target))
	} else {
		x.res.RolledBack = tripped
		x.stage("rollback", fmt.Sprintf("moving %d lockers back to %s", len(back), fb))
	}
	x.runBack(ctx, back, &fb)
}

// runBack brings lockers back: a running one is replaced, a stopped one
// started, at most K down and W (fixed) starting at once; no policy (the
// fallback is good) and no monitor window. It runs to its end whatever ctx does.
func (x *runner) runBack(ctx context.Context, idx []int, release *string) {
	if len(idx) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	// Lockers that are down come back first (that adds no downtime); then
	// running ones are replaced with the places left of K (I1).
	var down, up []int
	for _, i := range idx {
		if o := x.out[i]; o.Outcome == OutFailed || o.Outcome == OutSkipped {
			down = append(down, i)
		} else {
			up = append(up, i)
		}
	}
	x.backWave(ctx, down, release, x.plan.Policy.starting())
	stillDown := 0
	for _, i := range down {
		if x.out[i].Back == BackFailed {
			stillDown++
		}
	}
	k := x.plan.Policy.MaxUnavailable - stillDown
	if k <= 0 && len(up) > 0 {
		// Replacing even one would put more than K down (I1): they stay
		// where they are, and the run says so.
		x.res.Paused = true
		x.stage("pause", fmt.Sprintf("%d lockers could not be moved back: %d failed lockers still hold every place of the window", len(up), stillDown))
		return
	}
	// Each replace takes its start place before its stop, as in the run:
	// at most W (fixed: the way back runs without the pacer) at once.
	x.backWave(ctx, up, release, min(k, x.plan.Policy.starting()))
}

// backWave brings idx back with at most k at once.
func (x *runner) backWave(ctx context.Context, idx []int, release *string, k int) {
	if len(idx) == 0 {
		return
	}
	k = max(k, 1)
	sem := make(chan struct{}, k)
	var wg sync.WaitGroup
	for _, i := range idx {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			name := x.plan.Items[i].Name
			x.mu.Lock()
			o := x.out[i]
			x.mu.Unlock()
			running := o.Outcome == OutMoved || o.Outcome == OutStarted || o.Outcome == OutUnverified || (o.Outcome == OutFailed && o.Stop == "" && x.plan.Items[i].Op == OpReplace)
			back, errMsg := BackRolledBack, ""
			if running || o.Outcome == OutFailed {
				// A failed locker may still run (unhealthy): stop it first.
				x.observe(Event{Container: name, Phase: PhaseStopping, Op: "stop", Back: true})
				if so, err := x.env.Host.Stop(ctx, name, x.pol.StopTimeout); err != nil || so == StopFailed {
					back, errMsg = BackFailed, fmt.Sprintf("stopping %s: %v", name, err)
				} else {
					x.observe(Event{Container: name, Phase: PhaseStopped, Op: "stop", Outcome: string(so), Back: true})
				}
			}
			if back != BackFailed {
				x.observe(Event{Container: name, Phase: PhaseStarting, Op: "start", Back: true})
				st, err := x.env.Host.Start(ctx, name, x.pol.Deadline)
				if err != nil || (st != Started && st != AlreadyRunning) {
					if err == nil {
						err = fmt.Errorf("start ended %s", st)
					}
					back, errMsg = BackFailed, err.Error()
					x.observe(Event{Container: name, Phase: PhaseFailed, Op: "start", Error: errMsg, Back: true})
				} else {
					x.observe(Event{Container: name, Phase: PhaseHealthy, Op: "start", Outcome: string(st), Back: true})
				}
			}
			x.mu.Lock()
			defer x.mu.Unlock()
			x.out[i].Back, x.out[i].BackError = back, errMsg
			if back == BackRolledBack && release != nil {
				x.out[i].Release = *release
			}
		}()
	}
	wg.Wait()
}
