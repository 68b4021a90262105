package rollout

import (
	"fmt"
	"slices"
	"time"
)

// next.go: the run's state and next, the pure function of state and event
// that decides what the loop does next. Nothing here does I/O: no Host,
// no Releases, no Clock, no Observe. The loop (loop.go) feeds next the
// events (a verb done, a cancel) and carries out the actions it returns.

// verb is one thing a worker does for the loop.
type verb uint8

// The verbs. Each worker runs exactly one.
const (
	vPhaseStop verb = iota + 1 // a stop of a stop phase (stop-all)
	vStop                      // the stop of a replace
	vStart                     // a start, to its first healthy check
	vMonitor                   // the monitor window after a first healthy check
	vWatch                     // OpWatch: checks until healthy (or the deadline)
	vDelay                     // the launch delay (lxc.start.delay)
	vSoak                      // the canaries' soak
	vBackStop                  // the way back's stop
	vBackStart                 // the way back's start
)

// done is what a worker reports: one verb's end.
type done struct {
	item  int // -1 for vDelay and vSoak
	verb  verb
	stop  StopOutcome
	start StartOutcome
	err   error
	took  time.Duration
	// cut: a monitor window or soak ended early by a cancel or shutdown.
	cut bool
	// who are the lockers that failed a monitor window or the soak (the
	// first one first), or were failing their checks when it was cut.
	who []string
	// pr is the pressure read after a start (nil: none); gaugeErr the
	// read's error.
	pr       *Pressure
	gaugeErr error
}

// evKind is the kind of an event fed to next.
type evKind uint8

const (
	evGo     evKind = iota // launch what the queue allows (a phase begins)
	evDone                 // a worker reported
	evCancel               // ctx ended (cancel or shutdown)
)

// event is one input of next: now is the loop's clock when it arrived.
type event struct {
	kind evKind
	d    done
	now  time.Time
}

// actKind is the kind of an action next returns.
type actKind uint8

const (
	aRun       actKind = iota + 1 // start a worker for verb on item
	aEmit                         // send ev to Observe
	aProve                        // mark the target proven
	aStopDelay                    // end the launch delay early (launching stopped)
)

// action is one thing the loop must do, in order.
type action struct {
	kind actKind
	verb verb
	item int
	d    time.Duration // vDelay: how long; vMonitor: the check interval (0: Policy.Interval)
	ev   Event
}

// mode is what the loop is driving.
type mode uint8

const (
	mStop mode = iota + 1 // a stop phase: slots at once, no policy
	mRun                  // the run's launches: K, W, the failure policy
	mBack                 // the way back: slots at once, no policy
)

// place is W and the start places held when a launch took its own.
type place struct{ w, held int }

// item is the loop's bookkeeping of one locker.
type item struct {
	o         Outcome // its outcome so far (written to out when final)
	launched  bool    // launched by the run (its stop or start)
	holdsDown bool    // holds a place in K taken at its launch (replace, watch)
	begin     time.Time
	startAt   time.Time
	pl        place
	seq       int
	release   *string // on the way back: the release it goes to (nil: current)
	restart   bool    // OpWatch found not running: it starts as OpStart
	// bg: its monitor window runs in the background, its place in K
	// given back (the release is proven, MonitorUntilProven).
	bg      bool
	counted bool // counted in state.opened
}

// state is the run's whole state, owned by the loop's goroutine.
type state struct {
	plan      Plan
	pol       Policy // in force: offline runs with K = all
	releases  bool   // a release store is there
	out       []Outcome
	it        []item
	mode      mode
	queue     []int // items still to launch in this mode, in order
	slots     int   // mStop, mBack: most at once
	busy      int   // workers running (verbs of items, delay, soak)
	inflight  int   // items with a verb in flight
	sleeping  bool  // a launch delay runs: no launch until it ends
	cancelled bool  // ctx ended
	down      int   // lockers down because of the job (K)
	starting  int   // lockers starting (W)
	pending   int   // stopped (OpStart) and watched (OpWatch) lockers not yet up: they hold K places
	// monitoring counts the lockers whose monitor window runs in the
	// background: not down, holding no place, not yet moved.
	monitoring int
	// opened counts the lockers launched so far (each once), open those
	// launched whose outcome is not final yet: the proving wave's gate.
	opened, open int
	finished     []int
	moved        int
	need         int // moved lockers that prove the target
	canary       bool
	tripped      string
	halted       string
	proven       bool
	// wave: the release passed its proving wave (need lockers moved),
	// or the plan has no proving to do; the places of monitor windows
	// are free from then (MonitorUntilProven).
	wave      bool
	pacer     *Pacer
	gaugeSaid bool // a gauge error was said (once per run)
}

// stopped reports whether launching stopped (I3: a tripped policy stops it).
func (s *state) stoppedLaunching() bool {
	return s.tripped != "" || s.halted != "" || s.cancelled
}

// maxStarting is W now.
func (s *state) maxStarting() int {
	if s.pacer != nil {
		return s.pacer.W()
	}
	return s.pol.starting()
}

// next is the executor's one decision: given the state and an event, it
// updates the bookkeeping and returns what to do, in order.
func (s *state) next(e event) []action {
	var acts []action
	switch e.kind {
	case evCancel:
		s.cancelled = true
	case evDone:
		s.busy--
		acts = s.verbDone(e.d, e.now, acts)
	}
	return s.launch(e.now, acts)
}

// launch takes what the mode's window allows off the queue.
func (s *state) launch(now time.Time, acts []action) []action {
	for len(s.queue) > 0 && !s.sleeping {
		i := s.queue[0]
		name := s.plan.Items[i].Name
		switch s.mode {
		case mStop:
			if s.cancelled {
				s.queue = nil
				continue
			}
			if s.inflight >= s.slots {
				return acts
			}
			s.queue = s.queue[1:]
			s.it[i].begin = now
			acts = s.run(acts, vPhaseStop, i, Event{Container: name, Phase: PhaseStopping, Op: "stop"})
			continue
		case mBack:
			if s.inflight >= s.slots {
				return acts
			}
			s.queue = s.queue[1:]
			acts = s.backLaunch(acts, i)
			continue
		}
		if s.stoppedLaunching() {
			s.queue = nil
			continue
		}
		it := &s.it[i]
		op := s.plan.Items[i].Op
		if op == OpWatch && !it.restart {
			s.queue = s.queue[1:]
			acts = s.launchWatch(acts, i, now)
			continue
		}
		needDown := op == OpReplace
		if needDown && s.down+s.pending >= s.pol.MaxUnavailable && s.inflight == 0 {
			s.stop(fmt.Sprintf("all %d places of the window are held by failed lockers", s.pol.MaxUnavailable))
			continue
		}
		if needDown && s.waveGate() {
			return acts
		}
		// A replace takes its start place before its stop, so that no
		// locker is down waiting for one.
		switch {
		case needDown && s.down+s.pending < s.pol.MaxUnavailable && s.starting < s.maxStarting():
			s.down++
			s.starting++
		case !needDown && s.starting < s.maxStarting():
			s.starting++
		default:
			return acts
		}
		s.queue = s.queue[1:]
		it.launched, it.holdsDown = true, needDown
		s.opens(i)
		it.pl = place{s.maxStarting(), s.starting}
		if s.pacer != nil {
			it.seq = s.pacer.Launch(now)
		}
		it.begin = now
		it.o = Outcome{Name: name, Op: op}
		if needDown {
			acts = s.run(acts, vStop, i, Event{Container: name, Phase: PhaseStopping, Op: "stop", MaxStarting: it.pl.w, Starting: it.pl.held})
		} else {
			acts = s.startItem(acts, i, now)
		}
		if wait := max(s.pol.Delay, s.plan.Items[i].Delay); wait > 0 && len(s.queue) > 0 {
			s.sleeping = true
			s.busy++
			acts = append(acts, action{kind: aRun, verb: vDelay, item: -1, d: wait})
		}
	}
	if s.sleeping && s.mode == mRun && s.stoppedLaunching() {
		acts = append(acts, action{kind: aStopDelay})
	}
	return acts
}

// run adds a worker for v on item i, after ev (when it has a phase).
func (s *state) run(acts []action, v verb, i int, ev Event) []action {
	s.busy++
	s.inflight++
	if ev.Phase != "" {
		acts = append(acts, action{kind: aEmit, ev: ev})
	}
	return append(acts, action{kind: aRun, verb: v, item: i})
}

// startItem launches item i's start (its start place is held).
func (s *state) startItem(acts []action, i int, now time.Time) []action {
	it := &s.it[i]
	it.startAt = now
	return s.run(acts, vStart, i, Event{Container: s.plan.Items[i].Name, Phase: PhaseStarting, Op: "start", Release: s.plan.Target, MaxStarting: it.pl.w, Starting: it.pl.held})
}

// verbDone takes one worker's report.
func (s *state) verbDone(d done, now time.Time, acts []action) []action {
	if d.verb == vDelay {
		s.sleeping = false
		return acts
	}
	if d.verb == vSoak {
		return s.soakDone(d, acts)
	}
	s.inflight--
	i := d.item
	it := &s.it[i]
	name := s.plan.Items[i].Name
	switch d.verb {
	case vPhaseStop:
		o := &s.out[i]
		o.Stop, o.Duration = d.stop, d.took
		switch {
		case d.err != nil:
			o.Outcome, o.Error = OutFailed, fmt.Errorf("stopping %s: %w", name, d.err).Error()
			return append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseFailed, Op: "stop", Outcome: string(StopFailed), Error: d.err.Error(), Duration: d.took}})
		case d.stop == StoppedKilled:
			o.Outcome = OutKilled
		case d.stop == AlreadyStopped:
			o.Outcome = OutAlreadyStopped
		default:
			o.Outcome = OutStopped
		}
		return append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseStopped, Op: "stop", Outcome: string(d.stop), Duration: d.took}})
	case vStop:
		it.o.Stop = d.stop
		if d.err != nil {
			it.o.Outcome, it.o.Error = OutFailed, fmt.Errorf("stopping %s: %w", name, d.err).Error()
			acts = append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseFailed, Op: "stop", Outcome: string(StopFailed), Error: d.err.Error(), Duration: d.took}})
			s.starting--
			return s.record(acts, i, true)
		}
		acts = append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseStopped, Op: "stop", Outcome: string(d.stop), Duration: d.took}})
		return s.startItem(acts, i, now)
	case vStart:
		return s.startDone(d, now, acts)
	case vWatch:
		return s.watchDone(d, now, acts)
	case vMonitor:
		it.o.Duration = now.Sub(it.begin)
		switch {
		case d.cut && len(d.who) == 0:
			it.o.Outcome, it.o.Release = OutUnverified, s.plan.Target
			return s.record(acts, i, false)
		case d.err != nil:
			it.o.Outcome, it.o.Error = OutFailed, d.err.Error()
			acts = append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseFailed, Op: "monitor", Outcome: OutFailed, Error: d.err.Error(), Duration: it.o.Duration}})
			return s.record(acts, i, true)
		}
		it.o.Release = s.plan.Target
		acts = append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseMoved, Outcome: it.o.Outcome, Release: s.plan.Target, Duration: it.o.Duration}})
		return s.record(acts, i, false)
	case vBackStop, vBackStart:
		return s.backDone(d, acts)
	}
	return acts
}

// startDone takes a start's end: failed, already running, or healthy (its
// monitor window begins).
func (s *state) startDone(d done, now time.Time, acts []action) []action {
	i := d.item
	it := &s.it[i]
	name := s.plan.Items[i].Name
	it.o.Start = d.start
	err := d.err
	switch {
	case err != nil || (d.start != Started && d.start != AlreadyRunning):
		if err == nil {
			err = fmt.Errorf("start ended %s", d.start)
		}
		it.o.Outcome, it.o.Error, it.o.Duration = OutFailed, err.Error(), now.Sub(it.begin)
		acts = append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseFailed, Op: "start", Outcome: string(d.start), Error: err.Error(), Duration: it.o.Duration}})
		// Its start place is freed with its failure recorded (and W
		// halved): the next launch sees the policy's verdict (I3).
		acts = s.paced(acts, d, false, now)
		s.starting--
		return s.record(acts, i, true)
	case d.start == AlreadyRunning && s.plan.Items[i].Op == OpStart:
		it.o.Outcome, it.o.Duration = OutAlreadyRunning, now.Sub(it.begin)
		acts = append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseSkipped, Op: "start", Outcome: OutAlreadyRunning}})
		s.starting--
		return s.record(acts, i, false)
	}
	downFrom := it.begin
	if !it.holdsDown {
		downFrom = it.startAt
	}
	it.o.Downtime = now.Sub(downFrom)
	acts = append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseHealthy, Op: "start", Outcome: string(Started), Release: s.plan.Target, Duration: it.o.Downtime}})
	acts = s.paced(acts, d, true, now)
	s.starting--
	it.o.Outcome = OutMoved
	if op := s.plan.Items[i].Op; op == OpStart || op == OpWatch {
		it.o.Outcome = OutStarted
	}
	return s.monitor(acts, i)
}

// monitor begins item i's monitor window (it passed its first healthy
// check): in the background, its place in K free, once the release is
// proven (MonitorUntilProven); else holding its place to the end.
func (s *state) monitor(acts []action, i int) []action {
	acts = s.run(acts, vMonitor, i, Event{})
	if s.frees() {
		// Its window checks at the background interval (the aRun
		// action's d; 0 is the policy's Interval).
		acts[len(acts)-1].d = s.pol.BackgroundInterval()
		acts = s.background(acts, i)
	}
	return acts
}

// opens counts item i's launch for the proving wave's gate.
func (s *state) opens(i int) {
	s.open++
	if !s.it[i].counted {
		s.it[i].counted = true
		s.opened++
	}
}

// waveGate holds back replaces beyond the proving wave while it runs
// (MonitorUntilProven): a locker launched then would hold its place
// through its whole window, though the release is proven a moment later
// (the wave's lockers end their windows within their starts' spread).
// Once every locker of the wave ended, the release is proven and the rest
// run their windows in the background, or, if it is not (a failure the
// policy let pass), they hold their places as before.
func (s *state) waveGate() bool {
	return s.pol.MonitorHolds == MonitorUntilProven && !s.offline() && !s.wave && s.opened >= s.need && s.open > 0
}

// offline reports whether the run is an offline update: K = all, so a
// place held through a monitor window holds nothing back, and the proving
// wave gates no launch (the failure policy still judges every locker).
func (s *state) offline() bool { return s.plan.Strategy == Offline }

// frees reports whether a monitor window frees its place now: the
// release passed its proving wave (or needed none: it was proven when
// the run began), under MonitorUntilProven. Canaries of an unproven
// release are its proving wave.
func (s *state) frees() bool {
	return s.pol.MonitorHolds == MonitorUntilProven && s.mode == mRun && s.wave
}

// background gives item i's place in K back while its monitor window
// goes on: it is up and healthy, so it is not down; a failure in its
// window takes a place again (record) and counts for the policy.
func (s *state) background(acts []action, i int) []action {
	it := &s.it[i]
	it.bg = true
	s.monitoring++
	if it.holdsDown {
		it.holdsDown = false
		s.down--
	}
	if op := s.plan.Items[i].Op; op == OpStart || op == OpWatch {
		s.pending-- // it is up: its place is free
	}
	return append(acts, action{kind: aEmit, ev: Event{Container: s.plan.Items[i].Name, Phase: PhaseMonitoring, Op: "monitor", Release: s.plan.Target,
		Message: "healthy: its place in K is free, its monitor window goes on in the background"}})
}

// paced feeds the pacer one finished start and reports a change of W.
func (s *state) paced(acts []action, d done, ok bool, now time.Time) []action {
	if s.pacer == nil {
		return acts
	}
	if d.gaugeErr != nil && !s.gaugeSaid {
		// Said once per run: the pressure signal is off until it reads.
		s.gaugeSaid = true
		acts = append(acts, action{kind: aEmit, ev: Event{Stage: "pacing", Message: "pressure unreadable: W follows starts and failures alone", Error: d.gaugeErr.Error()}})
	}
	before := s.pacer.W()
	if s.pacer.Done(s.it[d.item].seq, ok, d.took, d.pr, now) {
		acts = append(acts, action{kind: aEmit, ev: Event{Stage: "pacing", Message: fmt.Sprintf("W %d -> %d (cap %d): %s", before, s.pacer.W(), s.pacer.Cap(), s.pacer.Last)}})
	}
	return acts
}

// record makes a locker's outcome final, frees its place unless it failed
// (a failed locker is down: it keeps its place, I1), and applies the
// failure policy.
func (s *state) record(acts []action, i int, failed bool) []action {
	it := &s.it[i]
	s.out[i] = it.o
	s.finished = append(s.finished, i)
	s.open--
	switch op := s.plan.Items[i].Op; {
	case it.bg:
		// Its window ran in the background, its place free: one that
		// failed in it is down again, and takes a place in K (I1).
		it.bg = false
		s.monitoring--
		if failed {
			it.holdsDown = true
			s.down++
		}
	case failed:
		// A failed locker is down: it keeps its place in K (I1).
	case op == OpStart || op == OpWatch:
		s.pending-- // it is up: its place is free
		if it.holdsDown {
			s.down--
		}
	case it.holdsDown:
		s.down--
	}
	if !failed && (it.o.Outcome == OutMoved || it.o.Outcome == OutStarted) {
		s.moved++
	}
	if failed && s.plan.Watched() {
		s.checkPolicy()
	}
	// Canaries prove the release only once they passed the soak too.
	if s.tripped == "" && !s.canary && s.need > 0 && s.moved >= s.need {
		acts = s.prove(acts)
	}
	return acts
}

// prove asks for the target to be marked proven, once. The release has
// passed its proving wave: monitor windows that begin from now on run in
// the background (MonitorUntilProven). Those already running hold their
// places to their end: the loop does not know whether their last check
// passed, and a locker failing its checks is down.
func (s *state) prove(acts []action) []action {
	s.wave = true
	if !s.plan.Unproven || s.proven || s.plan.Target == "" || !s.releases {
		return acts
	}
	s.proven = true
	return append(acts, action{kind: aProve})
}

// stop ends launching: a tripped policy on watched plans, a halt on others.
func (s *state) stop(why string) {
	if s.plan.Watched() {
		if s.tripped == "" {
			s.tripped = why
		}
	} else if s.halted == "" {
		s.halted = why
	}
}

// checkPolicy trips the failure policy (Swarm's max_failure_ratio over the
// whole plan, and over the last K finished lockers; any canary failure).
func (s *state) checkPolicy() {
	ratio := s.pol.MaxFailureRatio
	total := len(s.plan.Items)
	failed := 0
	for _, i := range s.finished {
		if s.out[i].Outcome == OutFailed {
			failed++
		}
	}
	// The last K finished (or all so far, when fewer): a failure among
	// the first lockers weighs as much as one later. Where max starting
	// is above K (the held-socket default: K 1, W 4), the last W: one
	// locker that failed must not weigh as the whole window.
	k := max(s.plan.Policy.MaxUnavailable, s.plan.Policy.MaxStarting)
	lastFailed := 0
	for _, i := range s.finished[max(0, len(s.finished)-k):] {
		if s.out[i].Outcome == OutFailed {
			lastFailed++
		}
	}
	switch {
	case s.canary:
		s.stop(fmt.Sprintf("%d canary lockers failed", failed))
	case float64(failed) > ratio*float64(total):
		s.stop(fmt.Sprintf("%d of %d lockers failed (max failure ratio %g)", failed, total, ratio))
	case lastFailed > 0 && float64(lastFailed) > ratio*float64(k):
		s.stop(fmt.Sprintf("%d of the last %d lockers failed (max failure ratio %g)", lastFailed, k, ratio))
	}
}

// soakDone takes the soak's end: a canary that failed it, or was failing
// its checks when a cancel cut it, is failed (and down again: it gave its
// place back when it passed its window).
func (s *state) soakDone(d done, acts []action) []action {
	if d.err == nil || len(d.who) == 0 {
		return acts
	}
	for i := range s.plan.Items {
		if s.it[i].launched && s.out[i].Outcome != OutFailed && slices.Contains(d.who, s.plan.Items[i].Name) {
			s.out[i].Outcome, s.out[i].Error = OutFailed, d.err.Error()
			s.down++
		}
	}
	s.stop("a canary failed during the soak: " + d.err.Error())
	return acts
}

// backLaunch starts item i's way back: a locker that may run is stopped
// first, then started.
func (s *state) backLaunch(acts []action, i int) []action {
	o := s.out[i]
	name := s.plan.Items[i].Name
	running := o.Outcome == OutMoved || o.Outcome == OutStarted || o.Outcome == OutUnverified || (o.Outcome == OutFailed && o.Stop == "" && s.plan.Items[i].Op == OpReplace) ||
		s.plan.Items[i].Op == OpWatch // it may run on the target, whatever the run saw
	if running || o.Outcome == OutFailed {
		// A failed locker may still run (unhealthy): stop it first.
		return s.run(acts, vBackStop, i, Event{Container: name, Phase: PhaseStopping, Op: "stop", Back: true})
	}
	return s.run(acts, vBackStart, i, Event{Container: name, Phase: PhaseStarting, Op: "start", Back: true})
}

// backDone takes a verb of the way back.
func (s *state) backDone(d done, acts []action) []action {
	i := d.item
	name := s.plan.Items[i].Name
	o := &s.out[i]
	if d.verb == vBackStop {
		if d.err != nil {
			o.Back, o.BackError = BackFailed, fmt.Sprintf("stopping %s: %v", name, d.err)
			return append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseFailed, Op: "stop", Outcome: string(StopFailed), Error: d.err.Error(), Back: true}})
		}
		acts = append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseStopped, Op: "stop", Outcome: string(d.stop), Back: true}})
		return s.run(acts, vBackStart, i, Event{Container: name, Phase: PhaseStarting, Op: "start", Back: true})
	}
	if err := d.err; err != nil || (d.start != Started && d.start != AlreadyRunning) {
		if err == nil {
			err = fmt.Errorf("start ended %s", d.start)
		}
		o.Back, o.BackError = BackFailed, err.Error()
		return append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseFailed, Op: "start", Error: err.Error(), Back: true}})
	}
	o.Back, o.BackError = BackRolledBack, ""
	if r := s.it[i].release; r != nil {
		o.Release = *r
	}
	return append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseHealthy, Op: "start", Outcome: string(d.start), Back: true}})
}
