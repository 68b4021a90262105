package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"lxcfleet/internal/fakehost"
	"lxcfleet/rollout"
)

const ms = time.Millisecond

// t0 is the pacer tests' virtual clock's origin.
var t0 = time.Unix(1_700_000_000, 0)

// window launches W starts at at, all healthy after took (with pressure
// pr), fed to p at at+took in launch order; it returns at+took.
func window(p *rollout.Pacer, at time.Time, took time.Duration, pr *rollout.Pressure) time.Time {
	var seqs []int
	for range p.W() {
		seqs = append(seqs, p.Launch(at))
	}
	end := at.Add(took)
	for _, s := range seqs {
		p.Done(s, true, took, pr, end)
	}
	return end
}

// runWindows runs n windows through p from t0, each start of a window
// taking took(W), and returns W after each.
func runWindows(p *rollout.Pacer, n int, took func(w int) time.Duration) []int {
	at := t0
	var ws []int
	for range n {
		at = window(p, at, took(p.W()), nil)
		ws = append(ws, p.W())
	}
	return ws
}

// TestPacerSlowStart: on a box with capacity (a start takes 1 s whatever
// W is, so healthy starts per second double with W), W doubles once per
// window of healthy starts: from 1 it reaches 32 in log2(32) = 5
// windows, from 4 in 3, and stops at its cap.
func TestPacerSlowStart(t *testing.T) {
	for _, tc := range []struct{ initial, windows int }{{1, 5}, {4, 3}} {
		p := rollout.NewPacer(tc.initial, 64, rollout.DefaultPaceTargets(), time.Minute)
		at := t0
		var ws []int
		for range tc.windows {
			at = window(p, at, time.Second, &rollout.Pressure{})
			ws = append(ws, p.W())
		}
		if p.W() != 32 {
			t.Errorf("from W=%d, W after each window %v; want 32 after %d windows", tc.initial, ws, tc.windows)
		}
		if !strings.Contains(p.Last, "slow start") {
			t.Errorf("reason %q, want slow start", p.Last)
		}
	}
	p := rollout.NewPacer(4, 6, rollout.DefaultPaceTargets(), time.Minute)
	at := t0
	for range 5 {
		at = window(p, at, time.Second, nil)
	}
	if p.W() != 6 || p.Cap() != 6 {
		t.Errorf("W %d (cap %d), want the cap 6", p.W(), p.Cap())
	}
	if q := rollout.NewPacer(9, 3, rollout.PaceTargets{}, 0); q.W() != 3 {
		t.Errorf("initial W above the cap: got %d, want 3", q.W())
	}
	if q := rollout.NewPacer(0, 3, rollout.PaceTargets{}, 0); q.W() != 1 {
		t.Errorf("initial W 0: got %d, want 1", q.W())
	}
	// Ack-clocked: one more per healthy start, so the launches a doubling
	// allows follow the starts that ended and a pressure signal cuts
	// before a whole doubling is in flight.
	q := rollout.NewPacer(8, 64, rollout.DefaultPaceTargets(), time.Minute)
	var seqs []int
	for range 8 {
		seqs = append(seqs, q.Launch(t0))
	}
	if !q.Done(seqs[0], true, time.Second, nil, t0.Add(time.Second)) || q.W() != 9 {
		t.Errorf("after one healthy start in slow start: W %d, want 9", q.W())
	}
	q.Done(seqs[1], true, time.Second, &rollout.Pressure{Memory: 0.5}, t0.Add(time.Second))
	if q.W() != 4 {
		t.Errorf("memory pressure after 2 of the window's 8 starts: W %d, want 4 (9 halved)", q.W())
	}
}

// TestPacerHoldsAtTheKnee: a box that runs 8 starts a second at most (a
// start takes 1 s up to W=8, W/8 s above): W doubles to 8 and 16; 16
// brings no more healthy starts per second than 8, so W goes back to 8
// and holds there, probing 9 every few windows and coming back. When the
// box gets room for 16 a second, the probes find it and W climbs to 16.
func TestPacerHoldsAtTheKnee(t *testing.T) {
	p := rollout.NewPacer(1, 300, rollout.DefaultPaceTargets(), time.Minute)
	box := 8
	took := func(w int) time.Duration { return max(time.Second, time.Duration(w)*time.Second/time.Duration(box)) }
	at := t0
	var ws []int
	for range 21 {
		at = window(p, at, took(p.W()), nil)
		ws = append(ws, p.W())
	}
	if want := []int{2, 4, 8, 16, 8}; !slices.Equal(ws[:5], want) {
		t.Errorf("W after each window %v, want %v first", ws, want)
	}
	held := 0
	for i, w := range ws[4:] {
		switch {
		case w == 8:
			held++
		case w == 9 && ws[4+i-1] == 8 && ws[4+i+1] == 8:
		default:
			t.Errorf("W after each window %v: want it held at the knee, 8, with probes of 9", ws)
		}
	}
	if held < len(ws[4:])*3/4 {
		t.Errorf("W after each window %v: held at 8 only %d times", ws, held)
	}
	box = 16
	for range 40 {
		at = window(p, at, took(p.W()), nil)
	}
	if p.W() != 16 {
		t.Errorf("room for 16 starts a second: W %d (%s), want 16", p.W(), p.Last)
	}
}

// TestPacerProbesBackOff: on a box whose rate stops at W 2 (a start
// takes 1 s up to W 2, W/2 s above), every probe of 3 goes back, and each
// one that did doubles the hold before the next: 4, 8, then 16 windows
// at the knee (maxHoldWindows), not a probe every 4 windows for the
// whole run (each probe's starts are the run's slowest).
func TestPacerProbesBackOff(t *testing.T) {
	p := rollout.NewPacer(2, 300, rollout.DefaultPaceTargets(), time.Minute)
	box := 2.0
	ws := runWindows(p, 70, boxTook(&box))
	var holds []int // windows at the knee between two probes
	n := 0
	for _, w := range ws[1:] { // ws[0] is slow start's 4
		switch w {
		case 2:
			n++
		case 3:
			holds = append(holds, n)
			n = 0
		default:
			t.Fatalf("W after each window %v: want 2, with probes of 3", ws)
		}
	}
	if want := []int{4, 8, 16, 16}; len(holds) < len(want) || !slices.Equal(holds[:len(want)], want) {
		t.Errorf("windows held between probes %v (W after each window %v), want %v first", holds, ws, want)
	}
}

// holdsAt: the windows W stayed at knee before each probe to knee+1
// (counting only runs of knee that a knee+1 follows and precedes).
func holdsAt(ws []int, knee int) []int {
	var holds []int
	n, started := 0, false
	for _, w := range ws {
		switch {
		case w == knee && started:
			n++
		case w == knee+1:
			if started && n > 0 {
				holds = append(holds, n)
			}
			n, started = 0, true
		}
	}
	return holds
}

// failOne runs one window of W starts whose first fails (a cut).
func failOne(p *rollout.Pacer, at time.Time) time.Time {
	var seqs []int
	for range p.W() {
		seqs = append(seqs, p.Launch(at))
	}
	end := at.Add(time.Second)
	for j, s := range seqs {
		p.Done(s, j != 0, time.Second, nil, end)
	}
	return end
}

// boxTook: a start takes max(1 s, W ÷ box s).
func boxTook(box *float64) func(int) time.Duration {
	return func(w int) time.Duration {
		return max(time.Second, time.Duration(float64(w)/(*box)*float64(time.Second)))
	}
}

// TestPacerBackoffResets: the probes' backoff starts again at 4 windows
// after a cut (in a hold of 16, or in a probe's window, and when the knee
// after the cut is a new one) and after a probe that earned its step (the
// box got room for 3 starts a second): the holds that follow are 4, then
// 8. (Found by a reviewer: without these the resets were untested.)
func TestPacerBackoffResets(t *testing.T) {
	for _, tc := range []struct {
		name string
		pre  int // windows before the event
		ev   string
	}{{"cut in a hold of 16", 40, "cut"}, {"cut in a probe", 15, "cut"}, {"probe earned", 16, "grow"}, {"cut in a probe, knee next", 15, "cutslow"}} {
		p := rollout.NewPacer(2, 300, rollout.DefaultPaceTargets(), time.Minute)
		box := 2.0
		took := boxTook(&box)
		at := t0
		var ws []int
		for range tc.pre {
			at = window(p, at, took(p.W()), nil)
			ws = append(ws, p.W())
		}
		knee := 2
		if tc.ev == "cut" {
			at = failOne(p, at)
		} else if tc.ev == "cutslow" {
			at = failOne(p, at)
			box, knee = 1.2, 1
		} else {
			box, knee = 3, 3
		}
		var after []int
		for range 45 {
			at = window(p, at, took(p.W()), nil)
			after = append(after, p.W())
		}
		if h := holdsAt(after, knee); len(h) < 2 || !slices.Equal(h[:2], []int{4, 8}) {
			t.Errorf("%s: before %v, after %v: holds at %d %v, want 4, 8 first", tc.name, ws, after, knee, h)
		}
	}
}

// TestPacerKneeHoldsTheHigherPower: a doubling that raised the rate by
// less than half its size ends slow start, and W holds at the W of the
// higher power, rate² ÷ W (throughput ÷ a start's time, by Little's law),
// with the threshold √(W'/W) exactly. A box whose healthy starts per
// second rise from 4 at W 4 to 5 at W 8 (+25 %, each start 1.6 s instead
// of 1 s) or 5.5 (+37.5 %) holds at 4; one that rises to 5.7 (+42.5 %,
// more than √2) or 5.8 holds at 8. A slow-start step to the cap (4 to 6)
// that raised the rate by 23.75 % (more than √1.5 = 22.5 %) holds 6, one
// of 21.25 % holds 4 (the last cases from a reviewer: +25 % and +45 %
// alone let a looser threshold pass).
func TestPacerKneeHoldsTheHigherPower(t *testing.T) {
	for _, tc := range []struct {
		cap  int
		box  float64 // healthy starts a second at most
		want int
	}{{300, 5, 4}, {300, 5.5, 4}, {300, 5.7, 8}, {300, 5.8, 8}, {6, 4.95, 6}, {6, 4.85, 4}} {
		p := rollout.NewPacer(4, tc.cap, rollout.DefaultPaceTargets(), time.Minute)
		ws := runWindows(p, 5, boxTook(&tc.box))
		if want := []int{min(8, tc.cap), tc.want, tc.want, tc.want, tc.want}; !slices.Equal(ws, want) {
			t.Errorf("cap %d, box of %g starts/s: W after each window %v, want %v (%s)", tc.cap, tc.box, ws, want, p.Last)
		}
	}
}

// TestPacerJudgesTheCap: slow start that reaches its cap is judged like
// any other doubling. A box that gets through 2 starts a second at most,
// under a cap of 4 (K, a rolling update): W 1 gives 1/s, W 2 2/s (the
// doubling earned its step), W 4 still 2/s: W goes back to 2, the knee,
// and does not stay at the cap it never earned. On a box with room for
// 4, W stays at the cap.
func TestPacerJudgesTheCap(t *testing.T) {
	for _, tc := range []struct {
		box  float64 // starts a second at most
		want int
	}{{2, 2}, {4, 4}} {
		p := rollout.NewPacer(1, 4, rollout.DefaultPaceTargets(), time.Minute)
		ws := runWindows(p, 4, boxTook(&tc.box))
		if p.W() != tc.want {
			t.Errorf("box of %g starts/s, cap 4: W after each window %v (%s), want %d at the end", tc.box, ws, p.Last, tc.want)
		}
	}
}

// TestPacerProbeBeatsTheHoldsBest: out of the hold at the knee, the probe
// of one more W must raise the rate by half its step over the best window
// of the hold, not over the hold's last one. A box whose rate at W 1 was
// 2/s once and 1/s after (noise: a real run's hold windows at W 1 ranged
// 0.96-2.38/s) does not earn W 2 with 1.6/s.
func TestPacerProbeBeatsTheHoldsBest(t *testing.T) {
	p := rollout.NewPacer(1, 4, rollout.DefaultPaceTargets(), time.Minute)
	at := window(p, t0, time.Second, nil)  // W 1: 1/s; slow start to 2
	at = window(p, at, 2*time.Second, nil) // W 2: 1/s, no gain: the knee is 1
	if p.W() != 1 || !strings.Contains(p.Last, "knee") {
		t.Fatalf("W %d (%s), want the knee at 1", p.W(), p.Last)
	}
	for _, took := range []time.Duration{500 * ms, time.Second, time.Second, time.Second} {
		at = window(p, at, took, nil) // held at 1: 2/s, then 1/s
	}
	if p.W() != 2 || !strings.Contains(p.Last, "probing") {
		t.Fatalf("after 4 held windows: W %d (%s), want a probe of 2", p.W(), p.Last)
	}
	window(p, at, 1250*ms, nil) // W 2: 1.6/s
	if p.W() != 1 {
		t.Errorf("a probe at 1.6/s against a hold that reached 2/s: W %d (%s), want back to 1", p.W(), p.Last)
	}
}

// simulate runs n starts through p on a box that gets through c starts a
// second at most (a start launched with k in flight, itself included,
// takes max(1 s, k ÷ c s)), each launched as soon as W has room, and
// returns W after each change. Unlike window, the starts of one W overlap
// the last ones of the W before, as in a run.
func simulate(p *rollout.Pacer, n int, c float64) []int {
	type start struct {
		seq  int
		took time.Duration
		end  time.Time
	}
	var flight []start
	var ws []int
	now := t0
	for launched := 0; launched < n || len(flight) > 0; {
		for launched < n && len(flight) < p.W() {
			took := max(time.Second, time.Duration(float64(len(flight)+1)/c*float64(time.Second)))
			flight = append(flight, start{p.Launch(now), took, now.Add(took)})
			launched++
		}
		slices.SortStableFunc(flight, func(a, b start) int { return a.end.Compare(b.end) })
		s := flight[0]
		flight, now = flight[1:], s.end
		if p.Done(s.seq, true, s.took, nil, now) {
			ws = append(ws, p.W())
		}
	}
	return ws
}

// TestPacerRateOverlapping: in a run, a window's first starts share the
// box with the last ones of the W before. On a box with room, W still
// doubles to its cap; on a box of 6 starts a second it holds near 6.
func TestPacerRateOverlapping(t *testing.T) {
	p := rollout.NewPacer(4, 64, rollout.DefaultPaceTargets(), time.Minute)
	if ws := simulate(p, 400, 1e6); p.W() != 64 {
		t.Errorf("a box with room: W %v, want it doubled to the cap 64", ws)
	}
	p = rollout.NewPacer(4, 64, rollout.DefaultPaceTargets(), time.Minute)
	if ws := simulate(p, 400, 6); p.W() < 4 || p.W() > 9 {
		t.Errorf("a box of 6 starts a second: W %v (%s), want it held near 6", ws, p.Last)
	}
}

// TestPacerCuts: a failed start, memory or IO pressure over target and a
// start past half its deadline each halve W, at most once per window
// (signals from starts launched before the cut are ignored), never below
// 1; after a cut W grows by one per window, not by doubling.
func TestPacerCuts(t *testing.T) {
	t.Run("failure, once per window", func(t *testing.T) {
		p := rollout.NewPacer(8, 8, rollout.DefaultPaceTargets(), time.Minute)
		var seqs []int
		for range 8 {
			seqs = append(seqs, p.Launch(t0))
		}
		if !p.Done(seqs[0], false, 100*ms, nil, t0) || p.W() != 4 {
			t.Fatalf("after a failure: W %d, want 4", p.W())
		}
		if p.Done(seqs[1], false, 100*ms, nil, t0) || p.W() != 4 {
			t.Errorf("a second failure launched before the cut: W %d, want 4 (once per window)", p.W())
		}
		if !p.Done(p.Launch(t0), false, 100*ms, nil, t0) || p.W() != 2 {
			t.Errorf("a failure launched after the cut: W %d, want 2", p.W())
		}
		p.Done(p.Launch(t0), false, 0, nil, t0)
		p.Done(p.Launch(t0), false, 0, nil, t0)
		if p.W() != 1 || !strings.Contains(p.Last, "a start failed") {
			t.Errorf("W after many failures: %d (%s), want 1", p.W(), p.Last)
		}
		at := window(p, t0, time.Second, nil)
		if p.W() != 2 {
			t.Errorf("a window after the cuts: W %d, want 2", p.W())
		}
		window(p, at, time.Second, nil)
		if p.W() != 3 {
			t.Errorf("two windows after the cuts: W %d, want 3 (+1, not doubling)", p.W())
		}
	})
	t.Run("slow start is no signal, deadline risk is", func(t *testing.T) {
		p := rollout.NewPacer(16, 16, rollout.DefaultPaceTargets(), time.Minute)
		p.Done(p.Launch(t0), true, 100*ms, nil, t0)
		if p.Done(p.Launch(t0), true, 20*time.Second, nil, t0); p.W() != 16 {
			t.Errorf("a start 200× slower than another, under half the deadline, halved W to %d (%s)", p.W(), p.Last)
		}
		if p.Done(p.Launch(t0), true, 31*time.Second, nil, t0); p.W() != 8 || !strings.Contains(p.Last, "of its deadline 1m0s") {
			t.Errorf("a start past half its 60 s deadline: W %d (%s), want 8", p.W(), p.Last)
		}
	})
	for _, tc := range []struct {
		name string
		pr   rollout.Pressure
		want int
	}{
		{"memory over target", rollout.Pressure{Memory: 0.2}, 4},
		{"io over target", rollout.Pressure{IO: 0.5}, 4},
		{"cpu over a set target", rollout.Pressure{CPU: 0.95}, 4},
		{"all under target", rollout.Pressure{CPU: 0.85, Memory: 0.05, IO: 0.3}, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			targets := rollout.DefaultPaceTargets()
			targets.CPU = 0.9
			p := rollout.NewPacer(8, 8, targets, time.Minute)
			p.Done(p.Launch(t0), true, 300*ms, &tc.pr, t0)
			if p.W() != tc.want {
				t.Errorf("W %d, want %d (%s)", p.W(), tc.want, p.Last)
			}
		})
	}
	t.Run("memory pressure stops slow start", func(t *testing.T) {
		p := rollout.NewPacer(4, 300, rollout.DefaultPaceTargets(), time.Minute)
		at := window(p, t0, time.Second, nil)
		at = window(p, at, time.Second, nil)
		if p.W() != 16 {
			t.Fatalf("W %d after two windows, want 16", p.W())
		}
		window(p, at, time.Second, &rollout.Pressure{Memory: 0.3})
		if p.W() != 8 || !strings.Contains(p.Last, "memory pressure 30% over 10%") {
			t.Errorf("W %d (%s) after memory pressure, want 8", p.W(), p.Last)
		}
	})
	t.Run("system-wide CPU pressure is no signal by default", func(t *testing.T) {
		p := rollout.NewPacer(8, 8, rollout.DefaultPaceTargets(), time.Minute)
		p.Done(p.Launch(t0), true, 300*ms, &rollout.Pressure{CPU: 0.96}, t0)
		if p.W() != 8 {
			t.Errorf("W %d after CPU pressure 96%% with the default targets, want 8 (%s)", p.W(), p.Last)
		}
	})
	t.Run("zero target disables", func(t *testing.T) {
		p := rollout.NewPacer(8, 8, rollout.PaceTargets{}, time.Minute)
		p.Done(p.Launch(t0), true, 300*ms, &rollout.Pressure{CPU: 1, Memory: 1, IO: 1}, t0)
		p.Done(p.Launch(t0), true, 59*time.Second, nil, t0)
		if p.W() != 8 {
			t.Errorf("W %d with every signal disabled, want 8", p.W())
		}
	})
}

func TestParsePacing(t *testing.T) {
	for in, want := range map[string]rollout.Pacing{"": rollout.Adaptive, "adaptive": rollout.Adaptive, "fixed": rollout.Fixed} {
		if got, err := rollout.ParsePacing(in); err != nil || got != want {
			t.Errorf("ParsePacing(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := rollout.ParsePacing("aimd"); err == nil || !strings.Contains(err.Error(), "want adaptive or fixed") {
		t.Errorf("ParsePacing(aimd): %v, want an error naming the choices", err)
	}
}

type gauge struct{ p rollout.Pressure }

func (g gauge) Pressure() (rollout.Pressure, error) { return g.p, nil }

// starts watches a run's events: the most lockers starting at once (as
// the events show it), and whether any launch took its place with more
// places held than the W it was launched under (Event.Starting).
type starts struct {
	mu             sync.Mutex
	inFlight, most int
	back, mostBack int // the way back's starts in flight, and their most at once
	overW          []string
	pacing         []string
	decreased      bool
	atW            map[int]int // starts launched under each W
}

func (s *starts) observe(e rollout.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case e.Stage == "pacing":
		s.pacing = append(s.pacing, e.Message)
	case e.Phase == rollout.PhaseStarting && !e.Back:
		s.atW[e.MaxStarting]++
		s.inFlight++
		s.most = max(s.most, s.inFlight)
		if e.MaxStarting <= 0 || e.Starting <= 0 || e.Starting > e.MaxStarting {
			s.overW = append(s.overW, fmt.Sprintf("%s: %d of W=%d", e.Container, e.Starting, e.MaxStarting))
		}
	case (e.Phase == rollout.PhaseHealthy || e.Phase == rollout.PhaseFailed) && e.Op == "start" && !e.Back:
		s.inFlight--
	case e.Back && e.Container != "" && e.Phase == rollout.PhaseStarting:
		s.back++
		s.mostBack = max(s.mostBack, s.back)
	case e.Back && e.Container != "" && (e.Phase == rollout.PhaseHealthy || e.Phase == rollout.PhaseFailed):
		s.back--
	}
}

// TestAdaptiveOffline: offline with adaptive pacing and no congestion: W
// grows in slow start from K (an offline update's lockers are all down
// anyway) towards all lockers, and no launch ever has more starting than
// its W.
func TestAdaptiveOffline(t *testing.T) {
	names := fakehost.Names(60)
	h := fakehost.New("A", names...)
	pl := pol()
	pl.MaxUnavailable = 2
	// The fake host's one virtual clock makes start times meaningless
	// (every locker's monitor sleeps move it): no slow-start signal.
	pl.Pace = rollout.PaceTargets{}
	s := starts{atW: map[int]int{}}
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Offline, pl)
	res := rollout.Run(context.Background(), p, env(h, s.observe))
	if !res.OK() {
		t.Fatalf("offline: %+v", res)
	}
	allOn(t, h, "B")
	if len(s.overW) > 0 {
		t.Errorf("started above W: %v", s.overW)
	}
	if len(s.pacing) == 0 || !strings.Contains(s.pacing[0], "W 2 -> 3 (cap 60): slow start") {
		t.Errorf("pacing stages %q: want W to grow in slow start from K=2 with cap 60", s.pacing)
	}
	if most := slices.Max(slices.Collect(maps.Keys(s.atW))); most <= 2 {
		t.Errorf("W reached %d, want past K=2", most)
	}
}

// TestAdaptivePressure: with memory pressure over its target W falls to 1
// and stays there: after the first decrease, never two starting at once.
func TestAdaptivePressure(t *testing.T) {
	names := fakehost.Names(20)
	h := fakehost.New("A", names...)
	h.SetStopped(names...)
	pl := pol()
	pl.MaxUnavailable = 4
	pl.Pace = rollout.PaceTargets{Memory: 0.1} // pressure alone (see TestAdaptiveOffline)
	s := starts{atW: map[int]int{}}
	p := rollout.PlanStart(h.Lockers(nil), h.Facts(""), pl)
	e := env(h, s.observe)
	e.Gauge = gauge{rollout.Pressure{Memory: 0.5}}
	res := rollout.Run(context.Background(), p, e)
	if c := res.Counts(); c[rollout.OutStarted] != 20 {
		t.Fatalf("counts %v, want 20 started", c)
	}
	// Launched under W 4 first, then at most a window at W 2, the rest at 1.
	if s.atW[1] < 20-4-2 || len(s.overW) > 0 {
		t.Errorf("starts launched under each W %v, over W %v: want W down to 1 after one window each", s.atW, s.overW)
	}
	if !strings.Contains(strings.Join(s.pacing, "\n"), "W 2 -> 1 (cap 20): memory pressure 50% over 10%") {
		t.Errorf("pacing %q: want W 4 -> 2 -> 1 on memory pressure", s.pacing)
	}
}

// TestAdaptiveRollingCap: rolling, W never passes K however well starts go.
func TestAdaptiveRollingCap(t *testing.T) {
	names := fakehost.Names(30)
	h := fakehost.New("A", names...)
	pl := pol()
	pl.MaxUnavailable = 3
	pl.MaxStarting = 1
	pl.Pace = rollout.PaceTargets{} // see TestAdaptiveOffline
	s := starts{atW: map[int]int{}}
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pl)
	res := rollout.Run(context.Background(), p, env(h, s.observe))
	if !res.OK() {
		t.Fatalf("rolling: %+v", res)
	}
	if s.most > 3 || h.MaxDown() > 3 || len(s.overW) > 0 {
		t.Errorf("most starting %d, most down %d, over W %v: want at most K=3", s.most, h.MaxDown(), s.overW)
	}
	// W reaches K; where it holds after that is the knee's judgement of
	// rates on the fake host's one virtual clock, which the lockers'
	// monitors move in whatever order they run (the last stage was 3 -> 2
	// in about 1 run of 20), so only the reach is asserted.
	if !strings.Contains(strings.Join(s.pacing, "\n"), "-> 3 (cap 3)") {
		t.Errorf("pacing %q: want W to grow from 1 to K=3", s.pacing)
	}
}

// TestReplaceTakesStartPlace: rolling with K=4 and a fixed W=1: a replace
// takes its start place before its stop, so at most one locker is between
// its stop and its first healthy check at any time (none waits down for a
// start place).
func TestReplaceTakesStartPlace(t *testing.T) {
	names := fakehost.Names(12)
	h := fakehost.New("A", names...)
	pl := pol()
	pl.MaxUnavailable = 4
	pl.MaxStarting = 1
	pl.Pacing = rollout.Fixed
	var mu sync.Mutex
	busy, most := 0, 0
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pl)
	res := rollout.Run(context.Background(), p, env(h, func(e rollout.Event) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case e.Phase == rollout.PhaseStopping && !e.Back:
			busy++
			most = max(most, busy)
		case (e.Phase == rollout.PhaseHealthy || e.Phase == rollout.PhaseFailed) && !e.Back:
			busy--
		}
	}))
	if !res.OK() {
		t.Fatalf("rolling: %+v", res)
	}
	if most > 1 {
		t.Errorf("%d lockers between stop and healthy at once, want at most W=1", most)
	}
}

// TestStoppedLockersHoldK: stopped lockers an update starts hold their
// places in K until they are up (I1): two whose starts fail hold two of
// K=3, so at most one running locker is down at a time; with K=2 they
// hold both, so none is taken down at all, and the run says why.
func TestStoppedLockersHoldK(t *testing.T) {
	for _, k := range []int{3, 2} {
		t.Run(fmt.Sprint("K=", k), func(t *testing.T) { stoppedLockersHoldK(t, k) })
	}
}

func stoppedLockersHoldK(t *testing.T, k int) {
	names := fakehost.Names(8)
	h := fakehost.New("A", names...)
	h.SetStopped(names[0], names[1])
	h.FailNextStart(names[0])
	h.FailNextStart(names[1])
	pl := pol()
	pl.MaxUnavailable = k
	pl.Pacing = rollout.Fixed
	pl.MaxFailureRatio = 1
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	p := rollout.PlanUpdate(h.Lockers(want), h.Facts(""), "B", false, rollout.Rolling, pl)
	res := rollout.Run(context.Background(), p, env(h, nil))
	if h.MaxDown() > k-2 {
		t.Errorf("%d running lockers down at once while 2 of K=%d places were held by failed stopped ones", h.MaxDown(), k)
	}
	if k == 2 && !strings.Contains(res.Tripped+res.Halted, "held by failed lockers") {
		t.Errorf("tripped %q, halted %q: want the window full of failed lockers", res.Tripped, res.Halted)
	}
}

// TestRecoveryReplacesLockerMidStop: a locker whose stop the dead agent
// began (and recorded no end of) is replaced by the recovery even when it
// still runs on the target: the halt signal may land a moment later.
func TestRecoveryReplacesLockerMidStop(t *testing.T) {
	names := fakehost.Names(3)
	h := fakehost.New("A", names...)
	ls := h.Lockers(nil)
	ls[0].Stopping = true
	p := rollout.PlanRecovery(ls, map[string]bool{names[0]: true}, "A", false, h.Facts(""), pol())
	if len(p.Items) != 1 || p.Items[0] != (rollout.Item{Name: names[0], Op: rollout.OpReplace}) {
		t.Fatalf("recovery items %+v, want one replace of %s", p.Items, names[0])
	}
	res := rollout.Run(context.Background(), p, env(h, nil))
	if !res.OK() || len(h.Running()) != 3 {
		t.Errorf("recovery %+v, running %v", res, h.Running())
	}
}

type badGauge struct{}

func (badGauge) Pressure() (rollout.Pressure, error) {
	return rollout.Pressure{}, errors.New("no /proc/pressure")
}

// TestGaugeErrorSaidOnce: a gauge that cannot be read is reported once as
// a pacing stage, and the run goes on with starts and failures alone.
func TestGaugeErrorSaidOnce(t *testing.T) {
	names := fakehost.Names(10)
	h := fakehost.New("A", names...)
	h.SetStopped(names...)
	var mu sync.Mutex
	var said []string
	e := env(h, func(ev rollout.Event) {
		if ev.Stage == "pacing" && ev.Error != "" {
			mu.Lock()
			said = append(said, ev.Message+": "+ev.Error)
			mu.Unlock()
		}
	})
	e.Gauge = badGauge{}
	res := rollout.Run(context.Background(), rollout.PlanStart(h.Lockers(nil), h.Facts(""), pol()), e)
	if c := res.Counts(); c[rollout.OutStarted] != 10 {
		t.Fatalf("counts %v, want 10 started", c)
	}
	if len(said) != 1 || !strings.Contains(said[0], "no /proc/pressure") {
		t.Errorf("gauge errors reported %q, want once", said)
	}
}

// TestWAboveKWhereAllAreDown: K=1 with W=4 (the held-socket default,
// config's HeldMaxUnavailable) keeps a rolling update to one locker down
// at a time, while an offline update and a start plan, whose lockers are
// all down anyway, start at W 4 and not at 1.
func TestWAboveKWhereAllAreDown(t *testing.T) {
	pl := pol()
	pl.MaxUnavailable = 1
	pl.MaxStarting = 4
	pl.Pace = rollout.PaceTargets{} // see TestAdaptiveOffline

	h := fakehost.New("A", fakehost.Names(12)...)
	s := starts{atW: map[int]int{}}
	res := rollout.Run(context.Background(), rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pl), env(h, s.observe))
	if !res.OK() {
		t.Fatalf("rolling: %+v", res)
	}
	if s.most > 1 || h.MaxDown() > 1 {
		t.Errorf("rolling at K=1, W=4: most starting %d, most down %d; want 1", s.most, h.MaxDown())
	}

	for _, kind := range []string{"offline", "start"} {
		h := fakehost.New("A", fakehost.Names(40)...)
		s := starts{atW: map[int]int{}}
		p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Offline, pl)
		if kind == "start" {
			h.SetStopped(fakehost.Names(40)...)
			p = rollout.PlanStart(h.Lockers(nil), h.Facts(""), pl)
		}
		if res := rollout.Run(context.Background(), p, env(h, s.observe)); !res.OK() {
			t.Fatalf("%s: %+v", kind, res)
		}
		if len(s.pacing) == 0 || !strings.Contains(s.pacing[0], "W 4 -> ") {
			t.Errorf("%s at K=1, W=4: pacing %q, want W to begin at 4", kind, s.pacing)
		}
		if s.atW[1] > 0 {
			t.Errorf("%s at K=1, W=4: starts launched under each W %v, want none at W 1", kind, s.atW)
		}
	}
}

// TestOfflineWayBackAtKOne: an offline update at K=1 (the held-socket
// default) whose release fails on two lockers that cannot come back on
// the old one either still moves every other locker back: an offline
// plan's K is all its lockers on the way back too, so two lockers left
// down do not hold every place of a window of 1 and pause the rest on the
// bad release. With fixed pacing its starts run W=4 at once, not K=1.
func TestOfflineWayBackAtKOne(t *testing.T) {
	names := fakehost.Names(12)
	h := fakehost.New("A", names...)
	for _, n := range names[:2] {
		h.Script(n, "B", fakehost.Script{Behavior: fakehost.Behavior{StartFails: true}})
		h.Script(n, "A", fakehost.Script{Behavior: fakehost.Behavior{StartFails: true}})
	}
	pl := pol()
	pl.MaxUnavailable, pl.MaxStarting, pl.Pacing = 1, 4, rollout.Fixed
	pl.MaxFailureRatio = 0.1
	s := starts{atW: map[int]int{}}
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Offline, pl)
	res := rollout.Run(context.Background(), p, env(h, s.observe))
	if res.Tripped == "" || !res.RolledBack || res.Paused {
		t.Fatalf("tripped %q, rolled back %v, paused %v; want tripped and rolled back, not paused", res.Tripped, res.RolledBack, res.Paused)
	}
	for n, r := range h.Where() {
		if n != names[0] && n != names[1] && r != "A" {
			t.Errorf("%s serves on %q after the way back, want A", n, r)
		}
	}
	if s.most < 2 || s.mostBack < 2 {
		t.Errorf("offline at K=1, W=4, fixed: most starting at once %d, on the way back %d; want W's 4 (K is all lockers offline)", s.most, s.mostBack)
	}
}

// TestRecoveryOfStoppedLockersAtKOne: a recovery with only stopped
// lockers to start (a boot) at K=1, W=4 (the held-socket default) runs as
// a start plan: K is all of them and 4 start at once, not one at a time.
// A recovery that replaces a running locker keeps K=1.
func TestRecoveryOfStoppedLockersAtKOne(t *testing.T) {
	names := fakehost.Names(12)
	pl := pol()
	pl.MaxUnavailable, pl.MaxStarting, pl.Pacing = 1, 4, rollout.Fixed
	h := fakehost.New("A", names...)
	h.SetStopped(names...)
	ls := h.Lockers(nil)
	for i := range ls {
		ls[i].WantRunning = true
	}
	p := rollout.PlanRecovery(ls, nil, "A", false, h.Facts(""), pl)
	if p.Policy.MaxUnavailable != 12 || p.Policy.MaxStarting != 4 {
		t.Errorf("recovery of 12 stopped lockers at K 1, W 4: plan K %d, W %d; want K 12, W 4", p.Policy.MaxUnavailable, p.Policy.MaxStarting)
	}
	s := starts{atW: map[int]int{}}
	if res := rollout.Run(context.Background(), p, env(h, s.observe)); !res.OK() {
		t.Fatalf("recovery: %+v", res)
	}
	if s.most != 4 || len(s.overW) > 0 {
		t.Errorf("recovery of stopped lockers at K 1, W 4: most starting at once %d (over W: %v), want 4", s.most, s.overW)
	}

	h = fakehost.New("A", names...)
	h.SetStopped(names[1:]...)
	ls = h.Lockers(nil)
	for i := range ls {
		ls[i].WantRunning = true
		ls[i].Restart = i == 0
	}
	if p := rollout.PlanRecovery(ls, nil, "A", false, h.Facts(""), pl); p.Policy.MaxUnavailable != 1 {
		t.Errorf("recovery that restarts a running locker: plan K %d, want the configured 1", p.Policy.MaxUnavailable)
	}
}

// TestOfflineProvingWaveIsW: an offline update of an unproven release at
// K=1, W=4 proves it once W lockers moved, not one.
func TestOfflineProvingWaveIsW(t *testing.T) {
	names := fakehost.Names(12)
	h := fakehost.New("A", names...)
	pl := pol()
	pl.MaxUnavailable, pl.MaxStarting, pl.Pacing = 1, 4, rollout.Fixed
	var proven []string
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Offline, pl)
	res := rollout.Run(context.Background(), p, env(h, func(e rollout.Event) {
		if e.Stage == "proven" {
			proven = append(proven, e.Message)
		}
	}))
	if !res.OK() || len(proven) != 1 {
		t.Fatalf("offline: %+v, proven stages %q", res, proven)
	}
	var n int
	if _, err := fmt.Sscanf(proven[0][strings.Index(proven[0], ": ")+2:], "%d lockers passed", &n); err != nil || n < 4 {
		t.Errorf("proven %q: want it after W=4 lockers passed, not fewer", proven[0])
	}
}

// TestFailureWindowAtKOne: the failure ratio over the last lockers counts
// the last W where W is above K (K 1, W 4: the held-socket default), so
// one failed locker in an offline update at max_failure_ratio 0.5 does
// not trip the policy as a whole window of one would. (A rolling update
// at K 1 stops at its first failed locker whatever the ratio: the failed
// locker holds the one place, I1.)
func TestFailureWindowAtKOne(t *testing.T) {
	names := fakehost.Names(12)
	h := fakehost.New("A", names...)
	h.Script(names[5], "B", fakehost.Script{Behavior: fakehost.Behavior{StartFails: true}})
	pl := pol()
	pl.MaxUnavailable, pl.MaxStarting = 1, 4
	pl.MaxFailureRatio = 0.5
	pl.Pacing = rollout.Fixed
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", true, rollout.Offline, pl)
	res := rollout.Run(context.Background(), p, env(h, func(rollout.Event) {}))
	if res.Tripped != "" {
		t.Errorf("offline, one failed locker of 12 at K 1, W 4, ratio 0.5: tripped %q, want it let pass", res.Tripped)
	}
	if c := res.Counts(); c[rollout.OutFailed] != 1 {
		t.Errorf("counts %v, want one failed", c)
	}
}
