package rollout_test

// The property test of the executor: ≥ 10,000 random schedules per run of
// the package's tests (RAPID_CHECKS or -rapid.checks for more or fewer),
// each a random plan (update rolling or offline, start, restart,
// rollback, stop, recovery with OpWatch lockers), random per-locker
// outcomes and timings, and a cancel or shutdown at a random event or
// time, run on testing/synctest's virtual clock. The invariants are
// checked after every event (the loop sends events in the order of its
// state, so each is a consistent point) and at the end.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"pgregory.net/rapid"

	"lxcfleet/internal/fakehost"
	"lxcfleet/rollout"
)

// propertyChecks is how many random schedules TestPropertyRun runs by
// default (-rapid.checks or RAPID_CHECKS set another number).
const propertyChecks = 10000

func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "rapid.checks" })
	if !set && os.Getenv("RAPID_CHECKS") == "" {
		_ = flag.Set("rapid.checks", strconv.Itoa(propertyChecks))
	}
	os.Exit(m.Run())
}

// schedule is one random plan, its lockers' outcomes and timings.
type schedule struct {
	kind       string
	n, k, w    int
	stopped    int
	canary     int
	soak       time.Duration
	monitor    time.Duration
	delay      time.Duration
	ratio      float64
	action     rollout.Action
	pacing     rollout.Pacing
	holds      rollout.MonitorHolds
	gauge      string
	noFallback bool
	cancelAt   int           // cancel at this event (0: never)
	cancelTime time.Duration // or after this virtual time (0: never)
	shutdown   bool          // the cancel is a Shutdown
	scripts    []fakehost.Script
	// watch (recover plans): -1 for a locker that is not an OpWatch; else
	// the checks it fails before it turns healthy, left starting by a
	// dead agent (-2: it does not run at all).
	watch []int
}

func (s schedule) String() string {
	return fmt.Sprintf("%s n=%d k=%d w=%d stopped=%d canary=%d soak=%v monitor=%v holds=%s delay=%v ratio=%g %s %s gauge=%s nofb=%v cancel@%d/%v shutdown=%v",
		s.kind, s.n, s.k, s.w, s.stopped, s.canary, s.soak, s.monitor, s.holds, s.delay, s.ratio, s.action, s.pacing, s.gauge, s.noFallback, s.cancelAt, s.cancelTime, s.shutdown)
}

func drawSchedule(t *rapid.T) schedule {
	s := schedule{
		kind:    rapid.SampledFrom([]string{"rolling", "rolling", "offline", "start", "restart", "rollback", "stop", "recover"}).Draw(t, "kind"),
		n:       rapid.IntRange(0, 30).Draw(t, "n"),
		k:       rapid.IntRange(1, 6).Draw(t, "k"),
		monitor: time.Duration(rapid.IntRange(0, 3).Draw(t, "monitor")) * time.Second,
		delay:   time.Duration(rapid.SampledFrom([]int{0, 0, 0, 500, 2000}).Draw(t, "delay")) * time.Millisecond,
		ratio:   rapid.SampledFrom([]float64{0, 0.1, 0.3, 1}).Draw(t, "ratio"),
		action:  rapid.SampledFrom([]rollout.Action{rollout.Rollback, rollout.Pause}).Draw(t, "action"),
		pacing:  rapid.SampledFrom([]rollout.Pacing{rollout.Adaptive, rollout.Fixed}).Draw(t, "pacing"),
		holds:   rapid.SampledFrom([]rollout.MonitorHolds{rollout.MonitorUntilProven, rollout.MonitorUntilProven, rollout.MonitorAll}).Draw(t, "holds"),
		gauge:   rapid.SampledFrom([]string{"nil", "nil", "pressure", "error"}).Draw(t, "gauge"),
	}
	s.w = rapid.IntRange(0, s.k).Draw(t, "w")
	if s.n > 0 {
		s.stopped = rapid.IntRange(0, s.n/3).Draw(t, "stopped")
	}
	if s.kind == "rolling" {
		s.canary = rapid.IntRange(0, 3).Draw(t, "canary")
		s.soak = time.Duration(rapid.IntRange(0, 3).Draw(t, "soak")) * time.Second
		s.noFallback = rapid.IntRange(0, 5).Draw(t, "nofallback") == 0
	}
	switch rapid.IntRange(0, 5).Draw(t, "cancel") {
	case 0:
		s.cancelAt = rapid.IntRange(1, 80).Draw(t, "cancelAt")
	case 1:
		s.cancelTime = time.Duration(rapid.IntRange(1, 40).Draw(t, "cancelTime")) * 500 * time.Millisecond
	}
	s.shutdown = rapid.Bool().Draw(t, "shutdown")
	// Most lockers behave; the others fail in one of the ways a release
	// or a host can.
	bad := rapid.SampledFrom([]int{0, 0, 5, 20, 60}).Draw(t, "bad%")
	for range s.n {
		var sc fakehost.Script
		sc.StartTakes = time.Duration(rapid.IntRange(0, 12).Draw(t, "startTakes")) * 250 * time.Millisecond
		sc.StopTakes = time.Duration(rapid.IntRange(0, 8).Draw(t, "stopTakes")) * 250 * time.Millisecond
		if rapid.IntRange(0, 99).Draw(t, "bad") < bad {
			switch rapid.IntRange(0, 6).Draw(t, "how") {
			case 0:
				sc.StartFails = true
			case 1:
				sc.NeverHealthy = true
			case 2:
				sc.StopKills = true
			case 3:
				sc.StopFails = true
			default:
				sc.FailAtCheck = rapid.IntRange(1, 6).Draw(t, "failAt")
				sc.Dies = rapid.Bool().Draw(t, "dies")
			}
		}
		s.scripts = append(s.scripts, sc)
		w := -1
		if s.kind == "recover" && rapid.IntRange(0, 3).Draw(t, "watched") == 0 {
			w = rapid.SampledFrom([]int{-2, 0, 1, 3, 8, 40}).Draw(t, "warm")
		}
		s.watch = append(s.watch, w)
	}
	return s
}

// TestPropertyRun runs random schedules (plans, per-locker outcomes,
// timings on testing/synctest's virtual clock, cancels and shutdowns at
// random events or times) and checks the invariants after every event
// and at the end: I1 (down because of the job ≤ K, failed included), W
// (each launch's Starting is the places the events show held, never more
// than its MaxStarting, which is the W the pacing stages said; the way
// back at most W at once), I5 (each Outcome matches what the host saw),
// every locker the run stopped runs at the end unless the run was
// interrupted or says it failed, current ends on the target or the
// fallback, a tripped run marks the target bad, a rollback brings back
// every locker the run moved. With monitor windows in the background
// (MonitorUntilProven), a locker that gave its place back is not counted
// down until the run sees it fail; from then it counts again, and the
// run takes no locker down while the lockers down (it included) are K or
// more.
func TestPropertyRun(t *testing.T) {
	begin := time.Now()
	n := 0
	seen := map[string]int{} // how the runs ended, to show what was covered
	rapid.Check(t, func(rt *rapid.T) {
		s := drawSchedule(rt)
		n++
		var bad []string
		var res rollout.Result
		late := 0
		synctest.Test(t, func(t *testing.T) { res, bad, late = s.run() })
		if late > 0 {
			seen["failed in a background monitor"] += late
		}
		if len(bad) > 0 {
			rt.Fatalf("%s:\n%v", s, bad)
		}
		for k, v := range map[string]bool{"ok": res.OK(), "tripped": res.Tripped != "", "rolled back": res.RolledBack, "paused": res.Paused,
			"halted": res.Halted != "", "cancelled": res.Cancelled, "undone": res.Undone, "interrupted": res.Interrupted, "proven": res.Proven} {
			if v {
				seen[k]++
			}
		}
		for _, o := range res.Outcomes {
			seen[string(o.Op)+" "+o.Outcome]++
		}
	})
	if d := time.Since(begin); n > 0 {
		t.Logf("%d schedules in %v: %.0f schedules/s; runs and outcomes seen: %v", n, d.Round(time.Millisecond), float64(n)/d.Seconds(), seen)
	}
}

// run runs the schedule on a fake host (inside a synctest bubble) and
// returns the invariants it broke, and how many lockers failed in a
// monitor window in the background.
func (s schedule) run() (rollout.Result, []string, int) {
	names := fakehost.Names(s.n)
	from, target := "A", "B"
	switch s.kind {
	case "restart":
		target = "A"
	case "rollback":
		from, target = "B", "A"
	}
	h := fakehost.New(from, names...)
	h.UseTime()
	if s.kind == "rollback" {
		h.Switch(context.Background(), "A", "history")
		h.Switch(context.Background(), "B", "history")
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	h.SetStopped(names[:s.stopped]...)
	for i, n := range names {
		sc := s.scripts[i]
		if from == target {
			h.Script(n, target, sc)
			continue
		}
		// Stops act on the release a locker runs; starts on the target.
		h.Script(n, from, fakehost.Script{StopTakes: sc.StopTakes, StopFails: sc.StopFails, Behavior: fakehost.Behavior{StopKills: sc.StopKills}})
		sc.StopFails, sc.StopKills = false, false
		h.Script(n, target, sc)
	}
	pl := rollout.DefaultPolicy()
	pl.MaxUnavailable, pl.MaxStarting = s.k, s.w
	pl.Monitor, pl.Interval, pl.Delay = s.monitor, time.Second, s.delay
	pl.MonitorHolds = s.holds
	pl.Canary, pl.Soak = s.canary, s.soak
	pl.MaxFailureRatio, pl.FailureAction, pl.Pacing = s.ratio, s.action, s.pacing
	pl.Deadline = 30 * time.Second
	var p rollout.Plan
	switch s.kind {
	case "rolling":
		p = rollout.PlanUpdate(h.Lockers(want), h.Facts(""), target, false, rollout.Rolling, pl)
		if s.noFallback {
			p.Fallback = ""
		}
	case "offline":
		p = rollout.PlanUpdate(h.Lockers(want), h.Facts(""), target, false, rollout.Offline, pl)
	case "start":
		h.Switch(context.Background(), target, "test")
		h.SetStopped(names...)
		p = rollout.PlanStart(h.Lockers(want), h.Facts("A"), pl)
	case "restart":
		p = rollout.PlanRestart(h.Lockers(want), h.Facts(""), pl)
	case "rollback":
		p = rollout.PlanRollback(h.Lockers(want), target, pl)
	case "stop":
		p = rollout.PlanStop(h.Lockers(want), pl)
	case "recover":
		// Lockers a dead agent left starting on the target: OpWatch.
		watched := map[string]bool{}
		for i, n := range names {
			switch w := s.watch[i]; {
			case w == -2:
				h.SetStopped(n)
			case w >= 0:
				h.Starting(n, target, w)
			default:
				continue
			}
			watched[n] = true
		}
		p = rollout.PlanRecovery(h.Lockers(want), nil, target, true, h.Facts("A"), pl)
		p.Items = slices.DeleteFunc(p.Items, func(it rollout.Item) bool { return watched[it.Name] })
		for _, n := range names {
			if watched[n] {
				p.Items = append(p.Items, rollout.Item{Name: n, Op: rollout.OpWatch})
			}
		}
	}
	h.Watch()
	var held []string
	for _, it := range p.Items {
		if it.Op == rollout.OpStart || it.Op == rollout.OpWatch {
			held = append(held, it.Name)
		}
	}
	h.WatchHeld(newChecker(p, h).k, held...)
	initial := h.Current()

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	cause := errors.New("operator")
	if s.shutdown {
		cause = rollout.Shutdown
	}
	c := newChecker(p, h)
	events := 0
	e := rollout.Env{Host: h, Releases: h, Clock: h, Reason: "property", Observe: func(ev rollout.Event) {
		c.observe(ev)
		if events++; events == s.cancelAt {
			cancel(cause)
		}
	}}
	switch s.gauge {
	case "pressure":
		e.Gauge = gauge{rollout.Pressure{Memory: 0.5}}
	case "error":
		e.Gauge = errGauge{}
	}
	if s.cancelTime > 0 {
		tm := time.AfterFunc(s.cancelTime, func() { cancel(cause) })
		defer tm.Stop()
	}
	res := rollout.Run(ctx, p, e)
	c.end(res, initial)
	return res, c.bad, c.late
}

// checker follows a run's events and the host.
type checker struct {
	p       rollout.Plan
	h       *fakehost.Host
	k, capW int
	w       int             // W as the pacing stages say
	held    int             // start places the events show held
	placed  map[string]bool // lockers holding a start place
	bg      map[string]bool // lockers whose monitor window runs in the background
	everBg  map[string]bool // lockers whose window ran in the background at some point
	late    int             // lockers seen failing in the background
	back    map[string]bool // lockers on their way back
	stops   int             // stop phase: stops in flight
	bad     []string
}

func newChecker(p rollout.Plan, h *fakehost.Host) *checker {
	c := &checker{p: p, h: h, k: p.Policy.MaxUnavailable, capW: p.Policy.MaxUnavailable, placed: map[string]bool{}, back: map[string]bool{}, bg: map[string]bool{}, everBg: map[string]bool{}}
	if p.Strategy == rollout.Offline {
		c.k = max(len(p.Items), 1)
		c.capW = c.k
	}
	if p.Kind == rollout.KindStart {
		c.capW = max(len(p.Items), 1)
	}
	c.w = max(1, min(startingOf(p.Policy), c.capW))
	allDown := p.Kind == rollout.KindStart || p.Kind == rollout.KindUpdate && p.Strategy == rollout.Offline
	if p.Policy.Pacing == rollout.Adaptive && p.Policy.MaxStarting <= 0 && !allDown {
		c.w = 1 // the pacer's slow start where serving capacity is at stake
	}
	return c
}

func startingOf(p rollout.Policy) int {
	if p.MaxStarting <= 0 || p.MaxStarting > p.MaxUnavailable {
		return p.MaxUnavailable
	}
	return p.MaxStarting
}

func (c *checker) fail(format string, args ...any) {
	if len(c.bad) < 10 {
		c.bad = append(c.bad, fmt.Sprintf(format, args...))
	}
}

func (c *checker) observe(e rollout.Event) {
	switch {
	case e.Phase == rollout.PhaseMoved:
		c.h.Passed(e.Container)
		delete(c.bg, e.Container)
	case e.Phase == rollout.PhaseMonitoring:
		// Its place in K is free: its window runs in the background.
		if c.p.Policy.MonitorHolds != rollout.MonitorUntilProven {
			c.fail("%s gave its place back with monitor_holds %q", e.Container, c.p.Policy.MonitorHolds)
		}
		c.h.Passed(e.Container)
		c.bg[e.Container] = true
		c.everBg[e.Container] = true
	case e.Phase == rollout.PhaseFailed && c.bg[e.Container]:
		// Seen failing in the background: down again, in K again.
		c.h.Late(e.Container)
		delete(c.bg, e.Container)
		c.late++
	case e.Phase == rollout.PhaseStopping && e.MaxStarting > 0 && !e.Back:
		// The run takes a locker down: under K before it, late
		// failures it has seen included.
		if d := c.h.DownNow(); d >= c.k {
			c.fail("I1: %s taken down with %d lockers down already, K=%d", e.Container, d, c.k)
		}
	}
	if c.p.Kind != rollout.KindStop {
		if d := c.h.MaxOver(); d > 0 {
			c.fail("I1: %d lockers down because of the job at once over K=%d (or the stopped lockers still down) (at %s %s %s)", d, c.k, e.Container, e.Phase, e.Stage)
		}
	}
	launch := func() {
		c.held++
		c.placed[e.Container] = true
		if e.Starting != c.held || e.Starting > e.MaxStarting || e.MaxStarting != c.w || e.MaxStarting > c.capW || e.MaxStarting < 1 {
			c.fail("W: %s launched with Starting %d, MaxStarting %d; the events show %d held, W=%d, cap %d", e.Container, e.Starting, e.MaxStarting, c.held, c.w, c.capW)
		}
	}
	free := func() {
		if c.placed[e.Container] {
			c.held--
			delete(c.placed, e.Container)
		}
	}
	switch {
	case e.Stage == "pacing" && e.Error == "":
		var a, b, cp int
		if _, err := fmt.Sscanf(e.Message, "W %d -> %d (cap %d)", &a, &b, &cp); err != nil || a != c.w || b < 1 || b > cp || cp != c.capW {
			c.fail("pacing stage %q: W was %d, cap %d", e.Message, c.w, c.capW)
		}
		c.w = b
	case e.Back:
		switch e.Phase {
		case rollout.PhaseStopping, rollout.PhaseStarting:
			c.back[e.Container] = true
			if w := max(startingOf(c.p.Policy), 1); len(c.back) > w {
				c.fail("the way back: %d lockers at once, W=%d", len(c.back), w)
			}
		case rollout.PhaseHealthy, rollout.PhaseFailed:
			if e.Op == "start" || e.Phase == rollout.PhaseFailed {
				delete(c.back, e.Container)
			}
		}
	case e.Phase == rollout.PhaseStopping && e.MaxStarting > 0:
		launch()
	case e.Phase == rollout.PhaseStopping:
		if c.stops++; c.stops > stopParallel(c.p.Policy) {
			c.fail("stop phase: %d stops at once, want at most %d", c.stops, stopParallel(c.p.Policy))
		}
	case e.Phase == rollout.PhaseStopped && !c.placed[e.Container]:
		c.stops--
	case e.Phase == rollout.PhaseFailed && e.Op == "stop" && !c.placed[e.Container]:
		c.stops--
	case e.Phase == rollout.PhaseStarting && !c.placed[e.Container]:
		launch()
	case (e.Phase == rollout.PhaseHealthy || e.Phase == rollout.PhaseSkipped) && e.Op == "start",
		e.Phase == rollout.PhaseFailed && (e.Op == "start" || e.Op == "stop"):
		free()
	}
}

func stopParallel(p rollout.Policy) int {
	if p.StopParallel <= 0 {
		return p.MaxUnavailable
	}
	return p.StopParallel
}

// end checks the Result against what the host saw.
func (c *checker) end(res rollout.Result, initial string) {
	p, h := c.p, c.h
	if len(res.Outcomes) != len(p.Items) {
		c.fail("I5: %d outcomes for %d items", len(res.Outcomes), len(p.Items))
		return
	}
	if c.held != 0 || len(c.back) != 0 {
		c.fail("places still held at the end: %d starting, %d on the way back", c.held, len(c.back))
	}
	cur := h.Current()
	switch {
	case p.Target == "" && cur != initial:
		c.fail("current %s, was %s, and the plan has no target", cur, initial)
	case p.Target != "" && cur != p.Target && cur != p.Fallback:
		c.fail("current ends on %s, neither the target %s nor the fallback %s", cur, p.Target, p.Fallback)
	}
	if len(c.bg) > 0 && !res.Interrupted && !res.Cancelled {
		c.fail("monitor windows in the background never ended: %v", c.bg)
	}
	if res.RolledBack && !res.Paused && p.Policy.FailureAction == rollout.Rollback {
		for _, o := range res.Outcomes {
			if (o.Outcome == rollout.OutMoved || o.Outcome == rollout.OutStarted || o.Outcome == rollout.OutUnverified) && o.Back == "" {
				c.fail("rolled back, but %s (%s) was not brought back", o.Name, o.Outcome)
			}
		}
	}
	if res.Tripped != "" && p.Target != "" && !h.Bad(p.Target) {
		c.fail("I2: tripped (%s) but %s is not marked bad", res.Tripped, p.Target)
	}
	if res.Proven && !h.Proven(p.Target) && !h.Bad(p.Target) {
		c.fail("I5: the result says proven, %s is not", p.Target)
	}
	iv := p.Policy.Interval
	if iv <= 0 {
		iv = 500 * time.Millisecond
	}
	for i, o := range res.Outcomes {
		it := p.Items[i]
		hist := h.History(it.Name)
		if o.Name != it.Name {
			c.fail("I5: outcome %d names %s, item %s", i, o.Name, it.Name)
		}
		// A window checks every Interval, or every BackgroundInterval once
		// it runs in the background.
		every := iv
		if c.everBg[it.Name] {
			every = p.Policy.BackgroundInterval()
		}
		monitorChecks := int((p.Policy.Monitor + every - 1) / every)
		if !saw(o, hist, p.Target, monitorChecks) {
			c.fail("I5: %s reported %s (back %q) but the host saw %v", it.Name, o.Outcome, o.Back, hist)
		}
		stoppedByRun := false
		for _, op := range hist {
			stoppedByRun = stoppedByRun || op.Verb == "stop" && op.Outcome != string(rollout.StopFailed)
		}
		// I4: a trip that went back starts the stopped lockers the plan
		// was to start (and those a dead agent left) on the fallback.
		wentBack := res.Tripped != "" && !res.Interrupted && p.Fallback != "" && p.Fallback != p.Target && cur == p.Fallback
		if wentBack && (it.Op == rollout.OpStart || it.Op == rollout.OpWatch) && !h.Up(it.Name) && !o.Failed() {
			c.fail("I4: the run tripped and went back, and %s (%s) is down, reported %s (back %q): %v", it.Name, it.Op, o.Outcome, o.Back, hist)
		}
		if p.Kind != rollout.KindStop && stoppedByRun && !h.Up(it.Name) && !res.Interrupted && !o.Failed() {
			c.fail("%s was stopped by the run and is down at the end, reported %s (back %q): %v", it.Name, o.Outcome, o.Back, hist)
		}
	}
}

// saw reports whether an Outcome says no more than hist shows.
func saw(o rollout.Outcome, hist []fakehost.Op, target string, monitorChecks int) bool {
	healthyOn := func(rel string, checks int) bool {
		for j, op := range hist {
			if op.Verb != "start" || op.Release != rel || (op.Outcome != string(rollout.Started) && op.Outcome != string(rollout.AlreadyRunning)) {
				continue
			}
			// Its window: at least checks checks, ending on one that
			// passed, with fewer than 3 failed in a row before it.
			if checks <= 0 {
				return true
			}
			n, streak := 0, 0
			for _, c := range hist[j+1:] {
				if c.Verb != "check" || streak >= 3 {
					break
				}
				n++
				if c.Outcome != "ok" {
					streak++
					continue
				}
				if streak = 0; n >= checks {
					return true
				}
			}
		}
		return false
	}
	anyFailure := func() bool {
		for _, op := range hist {
			switch {
			case op.Verb == "check" && op.Outcome == "failed",
				op.Verb == "stop" && op.Outcome == string(rollout.StopFailed),
				op.Verb == "start" && op.Outcome != string(rollout.Started) && op.Outcome != string(rollout.AlreadyRunning):
				return true
			}
		}
		return false
	}
	stopped := func(out rollout.StopOutcome) bool {
		for _, op := range hist {
			if op.Verb == "stop" && op.Outcome == string(out) {
				return true
			}
		}
		return false
	}
	ok := true
	switch o.Outcome {
	case rollout.OutMoved, rollout.OutStarted:
		ok = healthyOn(target, monitorChecks)
	case rollout.OutUnverified:
		ok = healthyOn(target, -1) // healthy once: its window was cut
	case rollout.OutAlreadyRunning:
		ok = len(hist) > 0 && hist[0].Verb == "start" && hist[0].Outcome == string(rollout.AlreadyRunning)
	case rollout.OutFailed:
		ok = anyFailure()
	case rollout.OutStopped:
		ok = stopped(rollout.StoppedClean)
	case rollout.OutKilled:
		ok = stopped(rollout.StoppedKilled)
	case rollout.OutAlreadyStopped:
		ok = stopped(rollout.AlreadyStopped)
	}
	if o.Back == rollout.BackRolledBack {
		// Its last verb was a start that ran.
		last := -1
		for j, op := range hist {
			if op.Verb != "check" {
				last = j
			}
		}
		ok = ok && last >= 0 && hist[last].Verb == "start" && (hist[last].Outcome == string(rollout.Started) || hist[last].Outcome == string(rollout.AlreadyRunning)) &&
			(o.Release == "" || hist[last].Release == o.Release)
	}
	return ok
}
