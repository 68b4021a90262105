package rollout_test

// The monitor rule (MonitorHolds): the lockers of an unproven release
// hold their places through their whole monitor window until it is
// proven; after that a locker gives its place back at its first healthy
// check and its window goes on in the background, its failure still
// counted. Each test runs on testing/synctest's virtual clock, its
// events checked by the property test's checker (I1 with late failures,
// W, I5 at the end).

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"lxcfleet/internal/fakehost"
	"lxcfleet/rollout"
)

// monitorRun is one run of a rolling update A → B with the defaults
// (K=4, monitor 10 s checked every 500 ms, ratio 0.1, rollback) and
// adaptive pacing, what it saw, and the checker's verdict.
type monitorRun struct {
	res        rollout.Result
	took       time.Duration // virtual time from the run's start to its end
	startsOnB  int           // starts launched on B (not the way back)
	early      []string      // lockers taken down before B was proven
	monitoring []string      // lockers whose window ran in the background, in order
	bgBefore   bool          // a window ran in the background before B was proven
	h          *fakehost.Host
	bad        []string
}

// runMonitored runs a rolling update of n lockers, each starting in
// startTakes, scripted on B by script(i) (nil: healthy), under the
// default policy changed by tune.
func runMonitored(t *testing.T, n int, startTakes time.Duration, script func(i int) fakehost.Script, tune func(*rollout.Policy)) monitorRun {
	t.Helper()
	return runStrategy(t, rollout.Rolling, n, startTakes, script, tune)
}

// runStrategy is runMonitored with the update's strategy.
func runStrategy(t *testing.T, strategy rollout.Strategy, n int, startTakes time.Duration, script func(i int) fakehost.Script, tune func(*rollout.Policy)) monitorRun {
	t.Helper()
	var r monitorRun
	synctest.Test(t, func(t *testing.T) {
		names := fakehost.Names(n)
		h := fakehost.New("A", names...)
		h.UseTime()
		for i, name := range names {
			sc := fakehost.Script{}
			if script != nil {
				sc = script(i)
			}
			if sc.StartTakes == 0 {
				sc.StartTakes = startTakes
			}
			h.Script(name, "B", sc)
		}
		pl := rollout.DefaultPolicy()
		if tune != nil {
			tune(&pl)
		}
		p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, strategy, pl)
		h.Watch()
		k := pl.MaxUnavailable
		if strategy == rollout.Offline {
			k = n // K = all
		}
		h.WatchHeld(k)
		c := newChecker(p, h)
		var mu sync.Mutex
		proven := false
		begin := time.Now()
		r.res = rollout.Run(context.Background(), p, rollout.Env{Host: h, Releases: h, Clock: h, Reason: "test", Observe: func(e rollout.Event) {
			c.observe(e)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case e.Stage == "proven":
				proven = true
			case e.Phase == rollout.PhaseStarting && !e.Back:
				r.startsOnB++
			case e.Phase == rollout.PhaseStopping && !e.Back && !proven:
				r.early = append(r.early, e.Container)
			case e.Phase == rollout.PhaseMonitoring:
				r.monitoring = append(r.monitoring, e.Container)
				r.bgBefore = r.bgBefore || !proven
			}
		}})
		r.took = time.Since(begin)
		c.end(r.res, "A")
		r.h, r.bad = h, c.bad
	})
	for _, b := range r.bad {
		t.Error(b)
	}
	return r
}

// TestLateFailuresCaughtByTheProvingWave: with the defaults, a release
// that crashes 5 or 9 s after its start, or turns 503 2 s after its first
// healthy check, is caught by its first K lockers, which hold their
// places through the whole window: nothing else starts on it, no window
// runs in the background, and the fleet ends on A with B marked bad.
func TestLateFailuresCaughtByTheProvingWave(t *testing.T) {
	cases := []struct {
		name string
		sc   fakehost.Script
	}{
		// Starts take 1 s; checks every 500 ms from the first healthy one.
		{"crashes 5 s after its start", fakehost.Script{Behavior: fakehost.Behavior{DiesAfter: 8}}},
		{"crashes 9 s after its start", fakehost.Script{Behavior: fakehost.Behavior{DiesAfter: 16}}},
		{"turns 503 2 s after its first healthy check", fakehost.Script{Behavior: fakehost.Behavior{UnhealthyAfter: 4}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runMonitored(t, 20, time.Second, func(int) fakehost.Script { return tc.sc }, nil)
			if r.res.Tripped == "" || !r.res.RolledBack || !r.h.Bad("B") {
				t.Fatalf("got %+v, want a trip, B marked bad and a rollback", r.res)
			}
			if r.startsOnB > 4 {
				t.Errorf("%d lockers started on B, want only the proving wave (K=4)", r.startsOnB)
			}
			if len(r.monitoring) > 0 {
				t.Errorf("windows ran in the background on an unproven release: %v", r.monitoring)
			}
			allOn(t, r.h, "A")
		})
	}
}

// TestBackgroundFailureTrips: B passes its proving wave, then lockers
// fail in their windows in the background (they die 4 s after their
// first healthy check, after two background checks 2 s apart, and the
// third sees it): the failures count toward the failure ratio, the
// policy trips, the run waits for the windows in flight and rolls back
// every locker it moved, those whose windows ran in the background too;
// each failed locker's outcome says it failed in its monitor window.
func TestBackgroundFailureTrips(t *testing.T) {
	r := runMonitored(t, 30, time.Second, func(i int) fakehost.Script {
		if i >= 10 {
			return fakehost.Script{Behavior: fakehost.Behavior{DiesAfter: 2}}
		}
		return fakehost.Script{}
	}, nil)
	if !r.res.Proven {
		t.Errorf("B was not proven by its first K lockers: %+v", r.res)
	}
	if len(r.monitoring) == 0 || r.bgBefore {
		t.Fatalf("windows in the background %v (before proven: %v), want some, all after B was proven", r.monitoring, r.bgBefore)
	}
	if r.res.Tripped == "" || !r.res.RolledBack || !r.h.Bad("B") {
		t.Fatalf("got %+v, want a trip, B marked bad and a rollback", r.res)
	}
	failedInWindow := 0
	for _, o := range r.res.Outcomes {
		switch {
		case o.Outcome == rollout.OutFailed:
			if !strings.Contains(o.Error, "in its monitor window") {
				t.Errorf("%s failed with %q, want it to say its monitor window", o.Name, o.Error)
			}
			failedInWindow++
		case o.Outcome == rollout.OutMoved && o.Back != rollout.BackRolledBack:
			t.Errorf("%s moved and was not rolled back (back %q)", o.Name, o.Back)
		}
	}
	if failedInWindow == 0 {
		t.Errorf("no locker reported failed in its monitor window: %v", r.res.Counts())
	}
	allOn(t, r.h, "A")
}

// TestMonitorFreesPlacesOnceProven: a healthy release at N=40, K=4,
// starts of 1 s and a 10 s window: holding every window (MonitorAll) takes
// about N/K × 11 s; with MonitorUntilProven only the proving wave holds
// theirs (nothing else is taken down until the wave ended), so the run
// takes less than half that, and every other locker ran its window in
// the background and still ended moved.
func TestMonitorFreesPlacesOnceProven(t *testing.T) {
	all := runMonitored(t, 40, time.Second, nil, func(p *rollout.Policy) { p.MonitorHolds = rollout.MonitorAll })
	proven := runMonitored(t, 40, time.Second, nil, nil)
	for _, r := range []monitorRun{all, proven} {
		if !r.res.OK() || r.res.Counts()[rollout.OutMoved] != 40 {
			t.Fatalf("got %+v (%v), want 40 moved", r.res, r.res.Counts())
		}
	}
	if len(all.monitoring) > 0 {
		t.Errorf("monitor_holds all: windows ran in the background: %v", all.monitoring)
	}
	if proven.bgBefore {
		t.Errorf("a window ran in the background before B was proven")
	}
	if got := len(proven.monitoring); got != 40-4 {
		t.Errorf("%d windows ran in the background, want all but the proving wave's (36)", got)
	}
	// A held window checks every Interval (500 ms: 20 checks in 10 s), one
	// in the background every BackgroundInterval (2 s: 5 checks).
	bg := map[string]bool{}
	for _, n := range proven.monitoring {
		bg[n] = true
	}
	for _, n := range fakehost.Names(40) {
		want := 20
		if bg[n] {
			want = 5
		}
		if got := checksAfterStart(proven.h.History(n)); got != want {
			t.Errorf("%s (background %v): %d checks in its window, want %d", n, bg[n], got, want)
		}
	}
	if all.took < 100*time.Second || proven.took > all.took/2 {
		t.Errorf("run took %v holding every window, %v once proven; want ≥ 100 s and under half of it", all.took, proven.took)
	}
	t.Logf("N=40, K=4, start 1 s, monitor 10 s: %v holding every window, %v with windows in the background once proven", all.took, proven.took)
}

// TestMonitorFreesFromTheStartOnAProvenRelease: a restart on a proven
// release has nothing to prove: its first lockers' windows run in the
// background too.
func TestMonitorFreesFromTheStartOnAProvenRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		names := fakehost.Names(8)
		h := fakehost.New("A", names...)
		h.UseTime()
		pl := rollout.DefaultPolicy()
		p := rollout.PlanRestart(h.Lockers(nil), h.Facts(""), pl)
		h.WatchHeld(pl.MaxUnavailable)
		c := newChecker(p, h)
		var first string
		res := rollout.Run(context.Background(), p, env(h, func(e rollout.Event) {
			c.observe(e)
			if first == "" && (e.Phase == rollout.PhaseMonitoring || e.Phase == rollout.PhaseMoved) {
				first = string(e.Phase) + " " + e.Container
			}
		}))
		c.end(res, "A")
		for _, b := range c.bad {
			t.Error(b)
		}
		if !res.OK() || !strings.HasPrefix(first, string(rollout.PhaseMonitoring)) {
			t.Errorf("got %+v, first window event %q; want an OK run whose first window ran in the background", res, first)
		}
	})
}

// TestProvingWaveGate: the proving wave's lockers start in 0.5, 1, 2 and
// 4 s, so their windows end 3.5 s apart. Nothing else is taken down
// before the last of them ended and proved B: a locker launched when the
// first one's window ended would be healthy before the proof and hold
// its place through its whole window.
func TestProvingWaveGate(t *testing.T) {
	takes := []time.Duration{500 * ms, time.Second, 2 * time.Second, 4 * time.Second}
	r := runMonitored(t, 12, 500*ms, func(i int) fakehost.Script {
		if i < len(takes) {
			return fakehost.Script{Behavior: fakehost.Behavior{StartTakes: takes[i]}}
		}
		return fakehost.Script{}
	}, nil)
	if !r.res.OK() || !r.res.Proven {
		t.Fatalf("got %+v, want a clean, proven run", r.res)
	}
	if len(r.early) != 4 || len(r.monitoring) != 8 {
		t.Errorf("taken down before the proof %v, windows in the background %v: want the wave's 4, and the other 8", r.early, r.monitoring)
	}
}

// TestOfflineIsNotHeldByTheProvingWave: an offline update (K = all) has
// no places to keep for its proving wave: lockers beyond its first W go
// on launching while the wave's windows run (the failure policy judges
// every one of them), so 24 lockers with 1 s starts and a 10 s window
// take about one window plus their starts, not two windows.
func TestOfflineIsNotHeldByTheProvingWave(t *testing.T) {
	r := runStrategy(t, rollout.Offline, 24, time.Second, nil, nil)
	if !r.res.OK() || !r.res.Proven || r.res.Counts()[rollout.OutMoved] != 24 {
		t.Fatalf("got %+v (%v), want 24 moved and B proven", r.res, r.res.Counts())
	}
	if len(r.early) <= 4 {
		t.Errorf("%d lockers taken down before B was proven, want more than the proving wave (4): offline waited for its windows", len(r.early))
	}
	if r.took > 15*time.Second {
		t.Errorf("offline took %v, want about one 10 s window plus the starts", r.took)
	}
	t.Logf("offline, N=24, start 1 s, monitor 10 s: %v, %d lockers taken down before B was proven", r.took, len(r.early))
}

// checksAfterStart counts the checks in hist after its last start.
func checksAfterStart(hist []fakehost.Op) int {
	n := 0
	for _, op := range hist {
		switch op.Verb {
		case "start":
			n = 0
		case "check":
			n++
		}
	}
	return n
}

// TestBackgroundInterval: a background window checks every monitor ÷ 5,
// never more often than the interval and never less often than every
// 10 s (Kubernetes' default probe period).
func TestBackgroundInterval(t *testing.T) {
	for _, tc := range []struct {
		monitor, interval, want time.Duration
	}{
		{10 * time.Second, 500 * ms, 2 * time.Second},         // the defaults
		{10 * time.Second, 0, 2 * time.Second},                // interval's default, 500 ms
		{time.Second, 500 * ms, 500 * ms},                     // never more often than the interval
		{5 * time.Minute, 500 * ms, 10 * time.Second},         // a long window: every 10 s
		{5 * time.Minute, 30 * time.Second, 30 * time.Second}, // an interval over 10 s wins
		{0, 500 * ms, 500 * ms},
	} {
		p := rollout.DefaultPolicy()
		p.Monitor, p.Interval = tc.monitor, tc.interval
		if got := p.BackgroundInterval(); got != tc.want {
			t.Errorf("monitor %v, interval %v: background checks every %v, want %v", tc.monitor, tc.interval, got, tc.want)
		}
	}
}
