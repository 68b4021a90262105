package rollout_test

// Breaker 2: inputs chosen to break adaptive pacing (pace.go and its use
// in run.go). Tests named TestBreak2* showed a break (see the report on
// branch breaker2); TestCover2* pass and cover corners.
//
//   - TestBreak2PacerGrowsInCutWindow: fixed (pace.go, launchedBefore).
//   - TestBreak2PacingStagesOutOfOrder: fixed (W changes in the loop).
//   - TestBreak2WayBackIgnoresW: fixed (loop.go, runBack's up wave).
//   - TestBreak2StartEventOverItsW: fixed (each event carries Starting,
//     taken in the loop); the property test checks it on every event.

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"lxcfleet/internal/fakehost"
	"lxcfleet/rollout"
)

// within runs f and fails the test (with every goroutine's stack) when it
// does not return in d: a run that never ends.
func within(t *testing.T, d time.Duration, what string, f func() rollout.Result) rollout.Result {
	t.Helper()
	done := make(chan rollout.Result, 1)
	go func() { done <- f() }()
	select {
	case res := <-done:
		return res
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%s: the run did not end within %v (hang):\n%s", what, d, buf)
		return rollout.Result{}
	}
}

var pacingRe = regexp.MustCompile(`^W (\d+) -> (\d+) \(cap (\d+)\)`)

// watch2 records what the pacing claims are about: every W a launch was
// made under, every change of W, starts in flight (run and way back).
type watch2 struct {
	mu          sync.Mutex
	ws          []int // MaxStarting of the run's starting/stopping events
	changes     [][3]int
	bad         []string
	inFlight    int
	overW       []string
	back, most  int // way-back starts in flight, and the most at once
	startEvents int
	extra       func(rollout.Event)
	// h, when set, is told of monitor windows in the background: their
	// lockers are not counted down until the run sees them fail.
	h  *fakehost.Host
	bg map[string]bool
}

func (w *watch2) observe(e rollout.Event) {
	w.mu.Lock()
	switch {
	case e.Stage == "pacing" && e.Error != "":
		// A gauge that cannot be read, said once (TestGaugeErrorSaidOnce).
	case e.Stage == "pacing":
		m := pacingRe.FindStringSubmatch(e.Message)
		if m == nil {
			w.bad = append(w.bad, "unparsable pacing stage: "+e.Message)
			break
		}
		a, _ := strconv.Atoi(m[1])
		b, _ := strconv.Atoi(m[2])
		c, _ := strconv.Atoi(m[3])
		w.changes = append(w.changes, [3]int{a, b, c})
	case e.Phase == rollout.PhaseStarting && e.Back:
		w.back++
		w.most = max(w.most, w.back)
	case (e.Phase == rollout.PhaseHealthy || e.Phase == rollout.PhaseFailed) && e.Op == "start" && e.Back:
		w.back--
	case e.Phase == rollout.PhaseStarting:
		w.startEvents++
		w.ws = append(w.ws, e.MaxStarting)
		w.inFlight++
		if e.MaxStarting > 0 && (e.Starting <= 0 || e.Starting > e.MaxStarting) {
			w.overW = append(w.overW, fmt.Sprintf("%s: %d starting, launched under W=%d", e.Container, e.Starting, e.MaxStarting))
		}
	case e.Phase == rollout.PhaseStopping && !e.Back && e.MaxStarting > 0:
		w.ws = append(w.ws, e.MaxStarting)
	case (e.Phase == rollout.PhaseHealthy || e.Phase == rollout.PhaseFailed || e.Phase == rollout.PhaseSkipped) && e.Op == "start":
		w.inFlight--
	}
	if w.h != nil {
		switch {
		case e.Phase == rollout.PhaseMonitoring:
			w.bg[e.Container] = true
			w.h.Passed(e.Container)
		case e.Phase == rollout.PhaseFailed && w.bg[e.Container]:
			delete(w.bg, e.Container)
			w.h.Late(e.Container)
		}
	}
	extra := w.extra
	w.mu.Unlock()
	if extra != nil {
		extra(e)
	}
}

// check: every W seen (launch labels and changes) is within [1, cap].
func (w *watch2) check(t *testing.T, cap int) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range w.bad {
		t.Error(b)
	}
	// w.overW is not checked here: see TestBreak2StartEventOverItsW.
	for _, x := range w.ws {
		if x < 1 || x > cap {
			t.Errorf("a launch under W=%d, want 1..%d", x, cap)
		}
	}
	for _, c := range w.changes {
		if c[1] < 1 || c[1] > c[2] || c[2] != cap {
			t.Errorf("pacing W %d -> %d (cap %d), want 1 <= W <= cap = %d", c[0], c[1], c[2], cap)
		}
	}
}

// TestBreak2PacerGrowsInCutWindow: W is halved on a failure, and then the
// healthy starts that were launched under the OLD W (before the cut) count
// as a window of healthy starts at the new W and raise it again at once.
// The package doc says "signals from starts launched before the last
// decrease are ignored" and "+1 per window of healthy starts": a cut from
// 8 to 4 with 8 in flight is undone to 5 by the 7 starts still in flight,
// without a single start launched under W=4 having finished.
func TestBreak2PacerGrowsInCutWindow(t *testing.T) {
	p := rollout.NewPacer(8, 8, rollout.DefaultPaceTargets(), time.Minute)
	var seqs []int
	for range 8 {
		seqs = append(seqs, p.Launch(t0))
	}
	p.Done(seqs[0], false, 100*ms, nil, t0)
	if p.W() != 4 {
		t.Fatalf("after a failure W = %d, want 4", p.W())
	}
	for _, s := range seqs[1:] {
		p.Done(s, true, 100*ms, nil, t0)
	}
	if p.W() != 4 {
		t.Errorf("W = %d after the 7 starts launched before the cut came back healthy, want 4: "+
			"they were launched under W=8, so they are no window of healthy starts at W=4 (%s)", p.W(), p.Last)
	}
	// After the cut, a true window at W=4 does raise it.
	for range 4 {
		p.Done(p.Launch(t0), true, 100*ms, nil, t0)
	}
	if p.W() < 5 {
		t.Errorf("W = %d after a window of 4 healthy starts launched under W=4, want 5", p.W())
	}
}

// TestCover2PacerEdges: a pacer with cap 0 or 1, negative initial, a start
// that took 0 (the fastest recent is then 0: the slow signal is off), NaN
// pressure.
func TestCover2PacerEdges(t *testing.T) {
	for _, tc := range []struct{ initial, cap, want int }{{0, 0, 1}, {-3, 1, 1}, {5, -1, 1}, {1, 1, 1}} {
		p := rollout.NewPacer(tc.initial, tc.cap, rollout.DefaultPaceTargets(), time.Minute)
		for range 10 {
			p.Done(p.Launch(t0), true, time.Second, nil, t0)
		}
		p.Done(p.Launch(t0), false, time.Second, nil, t0)
		if p.W() != tc.want || p.Cap() < 1 {
			t.Errorf("NewPacer(%d, %d): W %d cap %d, want W %d", tc.initial, tc.cap, p.W(), p.Cap(), tc.want)
		}
	}
	nan := rollout.Pressure{CPU: nanF(), Memory: nanF(), IO: nanF()}
	p := rollout.NewPacer(4, 4, rollout.DefaultPaceTargets(), time.Minute)
	p.Done(p.Launch(t0), true, 100*ms, &nan, t0)
	if p.W() != 4 {
		t.Errorf("NaN pressure changed W to %d", p.W())
	}
}

func nanF() float64 { z := 0.0; return z / z }

type errGauge struct{}

func (errGauge) Pressure() (rollout.Pressure, error) {
	return rollout.Pressure{Memory: 1, IO: 1, CPU: 1}, errors.New("no /proc/pressure")
}

// flapGauge alternates pressure over and under its targets.
type flapGauge struct {
	mu sync.Mutex
	n  int
}

func (g *flapGauge) Pressure() (rollout.Pressure, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n++
	if g.n%3 == 0 {
		return rollout.Pressure{Memory: 0.9}, nil
	}
	return rollout.Pressure{}, nil
}

// TestCover2StressAdaptive: many random plans under adaptive pacing, with
// failures, slow starts, pressure, gauge errors, delays, canaries, cancels
// and shutdowns at random events: every run ends (no hang, no leaked
// place), W stays within [1, cap], K is never exceeded, I5 holds, and a
// run with no faults ends OK with every locker on its target.
func TestCover2StressAdaptive(t *testing.T) {
	seed := time.Now().UnixNano()
	if s := strings.TrimSpace(getenv("BREAKER2_SEED")); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	rng := rand.New(rand.NewSource(seed))
	t.Logf("seed %d (BREAKER2_SEED)", seed)
	for n := range 300 {
		sc := randomScenario(rng)
		t.Run(fmt.Sprintf("%d:%s", n, sc), func(t *testing.T) { sc.run(t) })
	}
}

type scenario struct {
	kind       string // rolling, offline, start, restart, rollback
	n, k, w    int
	stopped    int // lockers stopped before the run (wanting to run)
	fault      string
	gauge      string
	delay      time.Duration
	canary     int
	soak       time.Duration
	ratio      float64
	action     rollout.Action
	cancelAt   int // cancel at this event (0: never)
	cause      error
	monitor    time.Duration
	startTakes time.Duration
	jitter     bool
}

func (s scenario) String() string {
	c := "none"
	if s.cancelAt > 0 {
		c = fmt.Sprintf("%v@%d", s.cause, s.cancelAt)
	}
	return fmt.Sprintf("%s/n%d/k%d/w%d/stopped%d/%s/%s/d%v/c%d/r%g/%s/cancel=%s/j%v", s.kind, s.n, s.k, s.w, s.stopped, s.fault, s.gauge, s.delay, s.canary, s.ratio, s.action, c, s.jitter)
}

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.Intn(len(xs))] }

func randomScenario(r *rand.Rand) scenario {
	s := scenario{
		kind:    pick(r, "rolling", "offline", "start", "restart", "rollback"),
		n:       pick(r, 0, 1, 2, 3, 7, 20),
		k:       pick(r, 1, 2, 3, 4, 50),
		w:       pick(r, 0, 1, 2, 5),
		fault:   pick(r, "none", "none", "failsome", "startfails", "dies", "neverhealthy", "stopkills", "slow"),
		gauge:   pick(r, "nil", "nil", "pressure", "error", "flap"),
		delay:   pick(r, time.Duration(0), 0, time.Second),
		ratio:   pick(r, 0.1, 0, 0.5, 1),
		action:  pick(r, rollout.Rollback, rollout.Pause),
		monitor: pick(r, time.Duration(0), 3*time.Second),
	}
	if s.n > 0 {
		s.stopped = pick(r, 0, 0, 1, s.n/2)
	}
	if s.kind == "rolling" {
		s.canary = pick(r, 0, 0, 1, 3)
		s.soak = pick(r, time.Duration(0), 2*time.Second)
	}
	if r.Intn(3) == 0 {
		s.cancelAt = 1 + r.Intn(60)
		s.cause = pick(r, errors.New("operator"), rollout.Shutdown)
	}
	s.jitter = r.Intn(2) == 0
	if s.fault == "slow" {
		s.startTakes = 5 * time.Second
	}
	return s
}

func getenv(k string) string { return os.Getenv(k) }

func (s scenario) run(t *testing.T) {
	names := fakehost.Names(s.n)
	// from is where the fleet runs, target where the plan moves it.
	from, target := "A", "B"
	switch s.kind {
	case "restart":
		from, target = "A", "A"
	case "rollback":
		from, target = "B", "A"
	}
	h := fakehost.New(from, names...)
	if s.kind == "rollback" {
		h.Switch(context.Background(), "A", "history")
		h.Switch(context.Background(), "B", "history")
	}
	if s.stopped > 0 {
		h.SetStopped(names[:s.stopped]...)
	}
	h.Watch()
	if s.jitter {
		jitter(h, int64(s.n*131+s.k))
	}
	switch s.fault {
	case "failsome":
		for i, n := range names {
			if i%3 == 1 {
				h.FailNextStart(n)
			}
		}
	case "startfails":
		h.Behave(target, fakehost.Behavior{StartFails: true})
	case "dies":
		h.Behave(target, fakehost.Behavior{DiesAfter: 1})
	case "neverhealthy":
		h.Behave(target, fakehost.Behavior{NeverHealthy: true})
	case "stopkills":
		h.Behave(from, fakehost.Behavior{StopKills: true})
	case "slow":
		h.Behave(target, fakehost.Behavior{StartTakes: s.startTakes})
	}
	pl := rollout.DefaultPolicy()
	pl.MaxUnavailable = s.k
	pl.MaxStarting = s.w
	pl.Monitor = s.monitor
	pl.Interval = time.Second
	pl.Delay = s.delay
	pl.Canary = s.canary
	pl.Soak = s.soak
	pl.MaxFailureRatio = s.ratio
	pl.FailureAction = s.action
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var p rollout.Plan
	switch s.kind {
	case "rolling":
		p = rollout.PlanUpdate(h.Lockers(want), h.Facts(""), target, false, rollout.Rolling, pl)
	case "offline":
		p = rollout.PlanUpdate(h.Lockers(want), h.Facts(""), target, false, rollout.Offline, pl)
	case "start":
		// start-all on an unproven current B (after update-code).
		h.Switch(context.Background(), target, "test")
		h.SetStopped(names...)
		h.Watch()
		p = rollout.PlanStart(h.Lockers(want), h.Facts("A"), pl)
	case "restart":
		p = rollout.PlanRestart(h.Lockers(want), h.Facts(""), pl)
	case "rollback":
		p = rollout.PlanRollback(h.Lockers(want), target, pl)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	w := &watch2{h: h, bg: map[string]bool{}}
	var events int
	var emu sync.Mutex
	if s.cancelAt > 0 {
		w.extra = func(rollout.Event) {
			emu.Lock()
			events++
			hit := events == s.cancelAt
			emu.Unlock()
			if hit {
				cancel(s.cause)
			}
		}
	}
	e := env(h, w.observe)
	switch s.gauge {
	case "pressure":
		e.Gauge = gauge{rollout.Pressure{Memory: 0.5}}
	case "error":
		e.Gauge = errGauge{}
	case "flap":
		e.Gauge = &flapGauge{}
	}
	res := within(t, 10*time.Second, s.String(), func() rollout.Result { return rollout.Run(ctx, p, e) })
	consistent(t, p, res)
	wantCap := p.Policy.MaxUnavailable
	if s.kind == "offline" || s.kind == "start" {
		wantCap = max(len(p.Items), 1)
	}
	w.check(t, wantCap)
	// K: lockers serving before the run that are down at once (lockers
	// stopped before the run hold places too; TestStoppedLockersHoldK).
	if s.kind != "offline" && s.kind != "start" {
		if got := h.MaxDown(); got > p.Policy.MaxUnavailable {
			t.Errorf("K: %d serving lockers down at once, want at most K=%d", got, p.Policy.MaxUnavailable)
		}
	}
	if (s.fault == "none" || s.fault == "slow") && s.cancelAt == 0 && len(p.Items) > 0 {
		if !res.OK() {
			t.Errorf("no fault, no cancel: result not OK: %+v", res)
		}
		allOn(t, h, target)
	}
}

// jitter makes every start and stop on h yield the processor a random
// few times, to shake the interleavings (no sleep: the order of events
// is the loop's, and timing is the property test's virtual clock).
func jitter(h *fakehost.Host, seed int64) {
	var mu sync.Mutex
	r := rand.New(rand.NewSource(seed))
	yield := func(string) {
		mu.Lock()
		n := r.Intn(20)
		mu.Unlock()
		for range n {
			runtime.Gosched()
		}
	}
	h.BeforeStart, h.BeforeStop = yield, yield
}

// TestBreak2PacingStagesOutOfOrder: the "pacing" stages were observed
// after the old runner's lock was released, so two starts finishing
// together reported their changes of W in the wrong order ("W 3 -> 4"
// before "W 2 -> 3"): the event stream (API, SSE, the job log) then ended
// on a W that is not the pacer's. Each stage's "before" must be the
// previous stage's "after". W now changes in the loop, which sends every
// event itself.
func TestBreak2PacingStagesOutOfOrder(t *testing.T) {
	for round := range 3 {
		names := fakehost.Names(40)
		h := fakehost.New("A", names...)
		jitter(h, int64(round))
		pl := pol()
		pl.MaxUnavailable = 2
		w := &watch2{}
		p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Offline, pl)
		e := env(h, w.observe)
		res := within(t, 10*time.Second, "offline", func() rollout.Result { return rollout.Run(context.Background(), p, e) })
		if !res.OK() {
			t.Fatalf("offline: %+v", res)
		}
		prev := 2 // the pacer's first W: K for an offline update
		for _, c := range w.changes {
			if c[0] != prev {
				t.Fatalf("round %d: pacing stages out of order: %v (a stage from W %d follows one that left W at %d)", round, w.changes, c[0], prev)
			}
			prev = c[1]
		}
	}
}

// TestBreak2StartEventOverItsW: in the old runner a launch took its place
// under W, but its starting event was emitted later by its worker;
// meanwhile W could grow and later launches emit their starting events
// first, so counting events in flight showed more starting than an
// event's MaxStarting (the break found). Each event carries Starting, the
// places held when its own was taken, which never exceeds its
// MaxStarting: checked here in jittered offline runs and on every event
// of the property test (TestPropertyRun). The test that forced the old
// interleaving with wall-clock fallbacks is gone: the loop takes places
// and sends events in one order.
func TestBreak2StartEventOverItsW(t *testing.T) {
	t.Run("random", func(t *testing.T) {
		for round := range 100 {
			names := fakehost.Names(40)
			h := fakehost.New("A", names...)
			jitter(h, int64(round))
			pl := pol()
			pl.MaxUnavailable = 2
			w := &watch2{}
			p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Offline, pl)
			res := within(t, 10*time.Second, "offline", func() rollout.Result { return rollout.Run(context.Background(), p, env(h, w.observe)) })
			if !res.OK() {
				t.Fatalf("offline: %+v", res)
			}
			if len(w.overW) > 0 {
				t.Fatalf("round %d: starting events with more in flight than their MaxStarting: %v", round, w.overW)
			}
		}
	})
}

// TestBreak2WayBackIgnoresW: the way back "always runs fixed", but fixed
// W (MaxStarting) bounds only the lockers that are down; running lockers
// are replaced K (minus failed ones) at once, so with K=4 and W=1 four
// lockers start at once on the way back, right after the host failed a
// start (when the pacer, had it run, would have W at its lowest).
func TestBreak2WayBackIgnoresW(t *testing.T) {
	for _, pacing := range []rollout.Pacing{rollout.Fixed, rollout.Adaptive} {
		t.Run(string(pacing), func(t *testing.T) {
			names := fakehost.Names(10)
			h := fakehost.New("A", names...)
			h.FailNextStart(names[6])
			pl := pol()
			pl.MaxUnavailable = 4
			pl.MaxStarting = 1
			pl.Pacing = pacing
			pl.MaxFailureRatio = 0
			w := &watch2{}
			p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pl)
			res := within(t, 10*time.Second, "rolling", func() rollout.Result { return rollout.Run(context.Background(), p, env(h, w.observe)) })
			if !res.RolledBack {
				t.Fatalf("want a rollback: %+v", res)
			}
			allOn(t, h, "A")
			if w.most > 1 {
				t.Errorf("%d lockers starting at once on the way back, want at most W = MaxStarting = 1", w.most)
			}
		})
	}
}

// TestCover2StoppedLockersHoldKAdaptive: TestStoppedLockersHoldK under
// adaptive pacing (W halved by the failed starts): two stopped lockers
// whose starts fail hold two of K's places; with K=2 nothing is taken
// down and the run says the window is full, without hanging.
func TestCover2StoppedLockersHoldKAdaptive(t *testing.T) {
	for _, k := range []int{3, 2} {
		t.Run(fmt.Sprint("K=", k), func(t *testing.T) {
			names := fakehost.Names(8)
			h := fakehost.New("A", names...)
			h.SetStopped(names[0], names[1])
			h.FailNextStart(names[0])
			h.FailNextStart(names[1])
			pl := pol()
			pl.MaxUnavailable = k
			pl.MaxFailureRatio = 1
			want := map[string]bool{}
			for _, n := range names {
				want[n] = true
			}
			p := rollout.PlanUpdate(h.Lockers(want), h.Facts(""), "B", false, rollout.Rolling, pl)
			res := within(t, 10*time.Second, "rolling", func() rollout.Result { return rollout.Run(context.Background(), p, env(h, nil)) })
			consistent(t, p, res)
			if h.MaxDown() > k-2 {
				t.Errorf("%d running lockers down at once while 2 of K=%d places were held by failed stopped ones", h.MaxDown(), k)
			}
			if k == 2 && !strings.Contains(res.Tripped+res.Halted, "held by failed lockers") {
				t.Errorf("tripped %q, halted %q: want the window full of failed lockers", res.Tripped, res.Halted)
			}
		})
	}
}

// TestCover2CancelInLaunchDelay: an operator's cancel while the launcher
// waits the delay between launches (holding a start place, and a place
// in K for a replace) gives both back: the run ends, nothing is left
// down, the unproven move is undone, with adaptive and fixed pacing,
// rolling and offline, and for a start plan.
func TestCover2CancelInLaunchDelay(t *testing.T) {
	for _, pacing := range []rollout.Pacing{rollout.Adaptive, rollout.Fixed} {
		for _, kind := range []string{"rolling", "offline", "start"} {
			for _, at := range []int{0, 1, 2, 5} {
				t.Run(fmt.Sprintf("%s/%s/after-%d", pacing, kind, at), func(t *testing.T) {
					names := fakehost.Names(8)
					h := fakehost.New("A", names...)
					pl := pol()
					pl.MaxUnavailable = 3
					pl.Pacing = pacing
					pl.Delay = 2 * time.Second
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					var mu sync.Mutex
					seen := 0
					obs := func(e rollout.Event) {
						if e.Phase != rollout.PhaseStarting || e.Back {
							return
						}
						mu.Lock()
						defer mu.Unlock()
						if seen++; seen == at+1 {
							cancel() // the launcher is in (or about to be in) the delay
						}
					}
					var p rollout.Plan
					switch kind {
					case "rolling":
						p = rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pl)
					case "offline":
						p = rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Offline, pl)
					case "start":
						h.SetStopped(names...)
						p = rollout.PlanStart(h.Lockers(nil), h.Facts(""), pl)
					}
					res := within(t, 10*time.Second, kind, func() rollout.Result { return rollout.Run(ctx, p, env(h, obs)) })
					consistent(t, p, res)
					if !res.Cancelled {
						t.Errorf("not cancelled: %+v", res)
					}
					switch {
					case kind == "start":
						// current A is proven: what started stays up.
					case h.Proven("B"):
						// proven before the cancel: kept, none left down.
						if got := running(h); got != len(names) {
							t.Errorf("%d of %d lockers running after a cancel of a proven move: %v", got, len(names), h.Where())
						}
					default:
						allOn(t, h, "A")
					}
				})
			}
		}
	}
}

// TestCover2CanaryAdaptive: canaries under adaptive pacing: a failing
// canary trips and rolls back; a healthy canary phase goes on with the W
// the canaries earned, and W never passes K.
func TestCover2CanaryAdaptive(t *testing.T) {
	for _, bad := range []bool{false, true} {
		t.Run(fmt.Sprint("bad=", bad), func(t *testing.T) {
			names := fakehost.Names(12)
			h := fakehost.New("A", names...)
			if bad {
				h.Behave("B", fakehost.Behavior{DiesAfter: 2})
			}
			pl := pol()
			pl.MaxUnavailable = 3
			pl.MaxStarting = 1
			pl.Canary = 2
			pl.Soak = 4 * time.Second
			w := &watch2{}
			p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pl)
			res := within(t, 10*time.Second, "canary", func() rollout.Result { return rollout.Run(context.Background(), p, env(h, w.observe)) })
			consistent(t, p, res)
			w.check(t, 3)
			if h.MaxDown() > 3 {
				t.Errorf("%d down at once, K=3", h.MaxDown())
			}
			if bad {
				if !res.RolledBack || !h.Bad("B") {
					t.Errorf("a dying canary: %+v", res)
				}
				allOn(t, h, "A")
			} else {
				if !res.OK() || !h.Proven("B") {
					t.Errorf("healthy canaries: %+v", res)
				}
				allOn(t, h, "B")
			}
		})
	}
}
