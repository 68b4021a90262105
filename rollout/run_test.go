package rollout_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"lxcfleet/internal/fakehost"
	"lxcfleet/rollout"
)

// pol is a small policy: K=2, a monitor window of 5 checks.
func pol() rollout.Policy {
	p := rollout.DefaultPolicy()
	p.MaxUnavailable = 2
	p.Monitor = 5 * time.Second
	p.Interval = time.Second
	return p
}

func env(h *fakehost.Host, observe func(rollout.Event)) rollout.Env {
	return rollout.Env{Host: h, Releases: h, Clock: h, Observe: observe, Reason: "test"}
}

// allOn fails unless every locker serves on release.
func allOn(t *testing.T, h *fakehost.Host, release string) {
	t.Helper()
	for n, r := range h.Where() {
		if r != release {
			t.Errorf("%s serves on %q, want %q", n, r, release)
		}
	}
}

// consistent checks I5: counts add up to the plan, failed names are those
// with a failed outcome.
func consistent(t *testing.T, p rollout.Plan, res rollout.Result) {
	t.Helper()
	if len(res.Outcomes) != len(p.Items) {
		t.Fatalf("got %d outcomes, want one per item (%d)", len(res.Outcomes), len(p.Items))
	}
	total := 0
	for k, v := range res.Counts() {
		if !strings.HasPrefix(k, "back-") {
			total += v
		}
	}
	if total != len(p.Items) {
		t.Errorf("counts %v add up to %d, want %d", res.Counts(), total, len(p.Items))
	}
}

func TestRollingHealthy(t *testing.T) {
	names := fakehost.Names(10)
	h := fakehost.New("A", names...)
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pol())
	res := rollout.Run(context.Background(), p, env(h, nil))
	if !res.OK() {
		t.Fatalf("got %+v, want a clean run", res)
	}
	allOn(t, h, "B")
	if got := h.MaxDown(); got > 2 || got == 0 {
		t.Errorf("I1: got %d lockers down at once, want 1..K=2", got)
	}
	if !h.Proven("B") || !res.Proven {
		t.Errorf("B not proven after a clean run")
	}
	if h.Current() != "B" {
		t.Errorf("current %s, want B", h.Current())
	}
	if c := res.Counts(); c[rollout.OutMoved] != 10 {
		t.Errorf("counts %v, want 10 moved", c)
	}
	consistent(t, p, res)
}

// The table of bad releases: each must end with every locker serving on
// A, current on A, B marked bad, never more than K down.
func TestBadReleases(t *testing.T) {
	cases := []struct {
		name     string
		strategy rollout.Strategy
		b        fakehost.Behavior
		canary   int
		soak     time.Duration
		maxOnB   int // most lockers ever started on B (offline stops early)
	}{
		{name: "exits at start", strategy: rollout.Rolling, b: fakehost.Behavior{StartFails: true}},
		{name: "never healthy", strategy: rollout.Rolling, b: fakehost.Behavior{NeverHealthy: true}},
		{name: "dies seconds after its first check", strategy: rollout.Rolling, b: fakehost.Behavior{DiesAfter: 3}},
		{name: "turns 503 after its first checks", strategy: rollout.Rolling, b: fakehost.Behavior{UnhealthyAfter: 2}},
		{name: "canary turns 503 during the soak", strategy: rollout.Rolling, canary: 1, soak: 20 * time.Second, b: fakehost.Behavior{UnhealthyAfter: 7}},
		{name: "canary dies during the soak", strategy: rollout.Rolling, canary: 2, soak: 20 * time.Second, b: fakehost.Behavior{DiesAfter: 8}},
		{name: "offline, exits at start", strategy: rollout.Offline, b: fakehost.Behavior{StartFails: true}, maxOnB: 3},
		{name: "offline, dies after its first check", strategy: rollout.Offline, b: fakehost.Behavior{DiesAfter: 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			names := fakehost.Names(12)
			h := fakehost.New("A", names...)
			h.Behave("B", tc.b)
			pl := pol()
			pl.Canary, pl.Soak = tc.canary, tc.soak
			pl.MaxStarting = 2
			var mu sync.Mutex
			startsOnB := 0
			p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, tc.strategy, pl)
			res := rollout.Run(context.Background(), p, env(h, func(e rollout.Event) {
				if e.Phase == rollout.PhaseStarting && !e.Back {
					mu.Lock()
					startsOnB++
					mu.Unlock()
				}
			}))
			if res.Tripped == "" || !res.RolledBack {
				t.Fatalf("got tripped %q, rolled back %v, want the policy to trip and roll back (%+v)", res.Tripped, res.RolledBack, res)
			}
			if !h.Bad("B") || h.Proven("B") {
				t.Errorf("I2: B bad %v, proven %v; want bad, not proven", h.Bad("B"), h.Proven("B"))
			}
			if h.Current() != "A" {
				t.Errorf("I2: current %s, want A", h.Current())
			}
			allOn(t, h, "A")
			if tc.strategy == rollout.Rolling && h.MaxDown() > 2 {
				t.Errorf("I1: got %d lockers down at once, want at most K=2", h.MaxDown())
			}
			if tc.maxOnB > 0 && startsOnB > tc.maxOnB {
				t.Errorf("I3: %d lockers started on B after the ratio tripped, want at most %d", startsOnB, tc.maxOnB)
			}
			if len(res.Failed()) == 0 {
				t.Errorf("I5: no locker reported failed")
			}
			consistent(t, p, res)
		})
	}
}

func TestPauseLeavesHealthyLockers(t *testing.T) {
	names := fakehost.Names(10)
	h := fakehost.New("A", names...)
	pl := pol()
	pl.MaxUnavailable = 3
	pl.FailureAction = rollout.Pause
	pl.MaxFailureRatio = 0.2
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pl)
	// The 4th locker fails at start: 1 of the last 3 > 0.2*3 trips the
	// per-window check (1 of 10 overall would not).
	h.FailNextStart(names[3])
	res := rollout.Run(context.Background(), p, env(h, nil))
	if res.Tripped == "" || !res.Paused || res.RolledBack {
		t.Fatalf("got %+v, want a tripped, paused run", res)
	}
	if h.Current() != "A" || !h.Bad("B") {
		t.Errorf("I2: current %s, B bad %v", h.Current(), h.Bad("B"))
	}
	where := h.Where()
	for _, n := range names {
		if where[n] == "" {
			t.Errorf("I4: %s is down after a pause, want it back on A", n)
		}
	}
	if where[names[3]] != "A" || where[names[0]] != "B" {
		t.Errorf("got %v: want failed lockers back on A, moved ones left on B", where)
	}
	consistent(t, p, res)
}

// TestRollbackAfterSomeMoved: lockers that moved healthy go back with at
// most K down at once, after the failed ones came back (I1 on the way
// back).
func TestRollbackAfterSomeMoved(t *testing.T) {
	names := fakehost.Names(10)
	h := fakehost.New("A", names...)
	pl := pol()
	pl.MaxFailureRatio = 0.3
	h.FailNextStart(names[5])
	h.FailNextStart(names[6])
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pl)
	res := rollout.Run(context.Background(), p, env(h, nil))
	if res.Tripped == "" || !res.RolledBack {
		t.Fatalf("got %+v, want a tripped, rolled back run", res)
	}
	if c := res.Counts(); c["back-"+rollout.BackRolledBack] != c[rollout.OutMoved]+c[rollout.OutFailed] || c[rollout.OutMoved] < 3 {
		t.Errorf("counts %v: want the moved and the failed lockers rolled back", c)
	}
	if h.MaxDown() > 2 {
		t.Errorf("I1: %d lockers down at once with K=2", h.MaxDown())
	}
	allOn(t, h, "A")
	consistent(t, p, res)
}

// TestCancelAfterProven: a cancel once the target is proven stops
// launching and leaves the fleet on two good releases, but never a locker
// down: those in flight finish their start.
func TestCancelAfterProven(t *testing.T) {
	names := fakehost.Names(12)
	h := fakehost.New("A", names...)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pol())
	var once sync.Once
	res := rollout.Run(ctx, p, env(h, func(e rollout.Event) {
		if e.Phase == rollout.PhaseStopped && h.Proven("B") {
			once.Do(func() { cancel(errors.New("operator")) })
		}
	}))
	if !res.Cancelled || res.Undone {
		t.Fatalf("got %+v, want cancelled, not undone (B is proven)", res)
	}
	for n, r := range h.Where() {
		if r == "" {
			t.Errorf("%s is down after a cancel", n)
		}
	}
	if h.Current() != "B" || h.Serving("B") == 0 || h.Serving("B") == 12 {
		t.Errorf("current %s, %d on B: want B, part of the fleet moved", h.Current(), h.Serving("B"))
	}
	consistent(t, p, res)
}

// TestStartAllOnUnprovenRelease is the operators' sequence: lxc-stop-all,
// update-code (switch with nothing running), lxc-start-all to a broken
// release: start-all applies the policy (I3).
func TestStartAllOnUnprovenRelease(t *testing.T) {
	names := fakehost.Names(12)
	h := fakehost.New("A", names...)
	h.SetStopped(names...)
	if err := h.Switch(context.Background(), "B", "update-code with nothing running"); err != nil {
		t.Fatal(err)
	}
	h.Behave("B", fakehost.Behavior{DiesAfter: 1})
	pl := pol()
	pl.MaxStarting = 3
	p := rollout.PlanStart(h.Lockers(nil), h.Facts("A"), pl)
	if !p.Unproven || !p.Watched() || p.Fallback != "A" {
		t.Fatalf("plan %+v: want an unproven, watched start with fallback A", p)
	}
	res := rollout.Run(context.Background(), p, env(h, nil))
	if res.Tripped == "" || h.Current() != "A" || !h.Bad("B") {
		t.Fatalf("got tripped %q, current %s, B bad %v: want the policy to put current back on A", res.Tripped, h.Current(), h.Bad("B"))
	}
	allOn(t, h, "A")
	consistent(t, p, res)
}

func TestStartAllOnProvenRelease(t *testing.T) {
	names := fakehost.Names(8)
	h := fakehost.New("A", names...)
	h.SetStopped(names[:5]...)
	h.FailNextStart(names[1])
	p := rollout.PlanStart(h.Lockers(nil), h.Facts(""), pol())
	res := rollout.Run(context.Background(), p, env(h, nil))
	if res.Tripped != "" || p.Watched() {
		t.Errorf("a start on a proven release tripped the policy: %q", res.Tripped)
	}
	c := res.Counts()
	if c[rollout.OutStarted] != 4 || c[rollout.OutAlreadyRunning] != 3 || c[rollout.OutFailed] != 1 {
		t.Errorf("I5: counts %v, want 4 started, 3 already running, 1 failed", c)
	}
	if got := res.Failed(); !slices.Equal(got, []string{names[1]}) {
		t.Errorf("failed %v, want [%s]", got, names[1])
	}
}

// TestCancel: an operator's cancel mid-update undoes an unproven move, and
// does not mark the release bad.
func TestCancel(t *testing.T) {
	for _, strategy := range []rollout.Strategy{rollout.Rolling, rollout.Offline} {
		t.Run(string(strategy), func(t *testing.T) {
			names := fakehost.Names(12)
			h := fakehost.New("A", names...)
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			var once sync.Once
			pl := pol()
			pl.MaxUnavailable = 4
			pl.MaxStarting = 1 // proven only after 4 moved: cancel comes first
			p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, strategy, pl)
			res := rollout.Run(ctx, p, env(h, func(e rollout.Event) {
				if e.Phase == rollout.PhaseHealthy && !e.Back {
					once.Do(func() { cancel(errors.New("operator")) })
				}
			}))
			if !res.Cancelled || !res.Undone {
				t.Fatalf("got %+v, want cancelled and undone", res)
			}
			if h.Current() != "A" || h.Bad("B") {
				t.Errorf("current %s, B bad %v: want A, and B not bad (a cancel is no failure)", h.Current(), h.Bad("B"))
			}
			allOn(t, h, "A")
			if strategy == rollout.Rolling && h.MaxDown() > 4 {
				t.Errorf("I1: %d down at once", h.MaxDown())
			}
			consistent(t, p, res)
		})
	}
}

// TestShutdownThenRecovery: the agent stops mid-update (SIGTERM), then the
// next agent recovers the journaled plan (I2, I4).
func TestShutdownThenRecovery(t *testing.T) {
	for _, b := range []struct {
		name string
		bh   fakehost.Behavior
	}{{"healthy release", fakehost.Behavior{}}, {"release that dies", fakehost.Behavior{DiesAfter: 2}}} {
		t.Run(b.name, func(t *testing.T) {
			names := fakehost.Names(12)
			h := fakehost.New("A", names...)
			h.Behave("B", b.bh)
			ctx, cancel := context.WithCancelCause(context.Background())
			var once sync.Once
			p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pol())
			res := rollout.Run(ctx, p, env(h, func(e rollout.Event) {
				if e.Phase == rollout.PhaseStarting {
					once.Do(func() { cancel(rollout.Shutdown) })
				}
			}))
			if !res.Interrupted {
				t.Fatalf("got %+v, want interrupted", res)
			}
			if h.Current() != "A" {
				t.Errorf("I2: current %s after a shutdown with B unproven, want A", h.Current())
			}
			// The next agent.
			target, unproven := rollout.RecoveryTarget(&p, h.Facts(""), h.Proven)
			if target != "A" || unproven {
				t.Fatalf("recovery target %s (unproven %v), want A", target, unproven)
			}
			rp := rollout.PlanRecovery(h.Lockers(nil), nil, target, unproven, h.Facts(""), pol())
			rr := rollout.Run(context.Background(), rp, env(h, nil))
			if !rr.OK() {
				t.Fatalf("recovery: %+v", rr)
			}
			allOn(t, h, "A")
		})
	}
}

// TestCrashRightAfterSwitch is situation 1: SIGKILL right after the switch
// to a release that exits at start; the next agent must not move the fleet
// onto it.
func TestCrashRightAfterSwitch(t *testing.T) {
	names := fakehost.Names(10)
	h := fakehost.New("A", names...)
	h.Behave("B", fakehost.Behavior{StartFails: true})
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pol())
	_ = h.Switch(context.Background(), "B", "the dead agent's switch")
	// Two lockers were mid-replace: stopped.
	h.SetStopped(names[0], names[1])
	target, unproven := rollout.RecoveryTarget(&p, rollout.ReleaseFacts{Current: "B", LastGood: "A"}, h.Proven)
	rp := rollout.PlanRecovery(h.Lockers(nil), map[string]bool{names[0]: true, names[1]: true}, target, unproven, rollout.ReleaseFacts{Current: "B", LastGood: "A"}, pol())
	if rp.Target != "A" || !rp.Switch {
		t.Fatalf("recovery plan %+v: want a switch back to A", rp)
	}
	res := rollout.Run(context.Background(), rp, env(h, nil))
	if !res.OK() || h.Current() != "A" {
		t.Fatalf("got %+v, current %s", res, h.Current())
	}
	allOn(t, h, "A")
}

// TestResumeProven: after a crash past the proving window, recovery
// finishes the move to the target.
func TestResumeProven(t *testing.T) {
	names := fakehost.Names(10)
	h := fakehost.New("A", names...)
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pol())
	ctx, cancel := context.WithCancelCause(context.Background())
	res := rollout.Run(ctx, p, env(h, func(e rollout.Event) {
		if e.Stage == "proven" {
			cancel(rollout.Shutdown)
		}
	}))
	if !res.Interrupted || !h.Proven("B") || h.Current() != "B" {
		t.Fatalf("got %+v, B proven %v, current %s", res, h.Proven("B"), h.Current())
	}
	target, unproven := rollout.RecoveryTarget(&p, h.Facts("A"), h.Proven)
	rp := rollout.PlanRecovery(h.Lockers(nil), nil, target, unproven, h.Facts("A"), pol())
	rr := rollout.Run(context.Background(), rp, env(h, nil))
	if !rr.OK() {
		t.Fatalf("recovery: %+v", rr)
	}
	allOn(t, h, "B")
}

// TestFailedSwitch is situation 7: the switch renames current, then fails
// (disk full writing BUILD): current must go back, nothing moves.
func TestFailedSwitch(t *testing.T) {
	names := fakehost.Names(6)
	h := fakehost.New("A", names...)
	h.SwitchErr["B"] = errors.New("write BUILD: no space left on device")
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pol())
	res := rollout.Run(context.Background(), p, env(h, nil))
	if res.Err == nil || res.OK() {
		t.Fatalf("got %+v, want the switch error", res)
	}
	if h.Current() != "A" {
		t.Errorf("I2: current %s after a failed switch, want A", h.Current())
	}
	if c := res.Counts(); c[rollout.OutSkipped] != 6 {
		t.Errorf("I5: counts %v, want 6 skipped", c)
	}
	allOn(t, h, "A")

	// The switch back fails after its rename too: current is back, and
	// that is what counts.
	h.SwitchErr["B"] = errors.New("write BUILD: no space left on device")
	h.SwitchErr["A"] = errors.New("write BUILD: no space left on device")
	res = rollout.Run(context.Background(), p, env(h, nil))
	if h.Current() != "A" || res.Paused || res.Current != "A" {
		t.Errorf("I2: current %s, paused %v, result current %q: want A, not paused", h.Current(), res.Paused, res.Current)
	}
	allOn(t, h, "A")
}

// TestWindowFullOfFailures is situation 6: failed lockers keep their place.
func TestWindowFullOfFailures(t *testing.T) {
	names := fakehost.Names(12)
	h := fakehost.New("A", names...)
	h.Behave("B", fakehost.Behavior{StartFails: true})
	pl := pol()
	pl.MaxUnavailable = 4
	pl.MaxFailureRatio = 1 // only the full window stops it
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pl)
	res := rollout.Run(context.Background(), p, env(h, nil))
	if h.MaxDown() > 4 {
		t.Errorf("I1: %d down at once with K=4", h.MaxDown())
	}
	if !strings.Contains(res.Tripped, "held by failed lockers") {
		t.Errorf("tripped %q, want the full window", res.Tripped)
	}
	allOn(t, h, "A")
}

func TestStopPlan(t *testing.T) {
	names := fakehost.Names(6)
	h := fakehost.New("A", names...)
	h.SetStopped(names[0])
	res := rollout.Run(context.Background(), rollout.PlanStop(h.Lockers(nil), pol()), env(h, nil))
	if c := res.Counts(); c[rollout.OutStopped] != 5 || c[rollout.OutAlreadyStopped] != 1 {
		t.Errorf("counts %v, want 5 stopped, 1 already stopped", c)
	}
	if len(h.Running()) != 0 {
		t.Errorf("still running: %v", h.Running())
	}
}

func TestRollbackMovesStoppedLockers(t *testing.T) {
	names := fakehost.Names(6)
	h := fakehost.New("A", names...)
	if res := rollout.Run(context.Background(), rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pol()), env(h, nil)); !res.OK() {
		t.Fatal(res)
	}
	h.SetStopped(names[2], names[3]) // died on B
	p := rollout.PlanRollback(h.Lockers(nil), "A", pol())
	res := rollout.Run(context.Background(), p, env(h, nil))
	if !res.OK() {
		t.Fatalf("rollback: %+v", res)
	}
	allOn(t, h, "A")
	want := map[string]rollout.Op{}
	for _, n := range names {
		want[n] = rollout.OpReplace
	}
	want[names[2]], want[names[3]] = rollout.OpStart, rollout.OpStart
	got := map[string]rollout.Op{}
	for _, it := range p.Items {
		got[it.Name] = it.Op
	}
	if !maps.Equal(got, want) {
		t.Errorf("I6: plan %v, want %v", got, want)
	}
}

func TestRollbackTarget(t *testing.T) {
	hist := []rollout.Switched{{To: "A"}, {From: "A", To: "B"}, {From: "B", To: "C"}}
	exists := func(string) bool { return true }
	none := func(string) bool { return false }
	cases := []struct {
		name    string
		hist    []rollout.Switched
		cur, to string
		bad     func(string) bool
		want    string
		wantErr string
	}{
		{name: "one back", hist: hist, cur: "C", bad: none, want: "B"},
		{name: "skips bad", hist: hist, cur: "C", bad: func(r string) bool { return r == "B" }, want: "A"},
		{name: "to an older one", hist: hist, cur: "C", to: "A", bad: none, want: "A"},
		{name: "after --to A, never forward", hist: append(slices.Clone(hist), rollout.Switched{From: "C", To: "A"}), cur: "A", bad: none, wantErr: "no good release"},
		{name: "--to forward refused", hist: append(slices.Clone(hist), rollout.Switched{From: "C", To: "A"}), cur: "A", to: "B", bad: none, wantErr: "never moves forward"},
		{name: "second rollback goes further back", hist: append(slices.Clone(hist), rollout.Switched{From: "C", To: "B"}), cur: "B", bad: func(r string) bool { return r == "C" }, want: "A"},
		{name: "to a bad one", hist: hist, cur: "C", to: "A", bad: func(r string) bool { return r == "A" }, wantErr: "marked bad"},
		{name: "nothing before the first", hist: hist[:1], cur: "A", bad: none, wantErr: "no good release"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rollout.RollbackTarget(tc.hist, tc.cur, tc.to, exists, tc.bad)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %q, %v; want an error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestPlanners(t *testing.T) {
	ls := []rollout.Locker{
		{Name: "a", Running: true, Release: "A", WantRunning: true},
		{Name: "b", Running: true, Release: "B", WantRunning: true},
		{Name: "c", WantRunning: true},
		{Name: "d"}, // desired stopped
		{Name: "e", Running: true, Release: "B", Stale: true, WantRunning: true},
	}
	f := rollout.ReleaseFacts{Current: "A", CurrentProven: true}
	p := rollout.PlanUpdate(ls, f, "B", false, rollout.Rolling, pol())
	got := map[string]rollout.Op{}
	for _, it := range p.Items {
		got[it.Name] = it.Op
	}
	want := map[string]rollout.Op{"a": rollout.OpReplace, "c": rollout.OpStart, "e": rollout.OpReplace}
	if !maps.Equal(got, want) || p.Fallback != "A" || !p.Unproven || !p.Switch {
		t.Errorf("update plan %v (fallback %q, unproven %v), want %v, fallback A", got, p.Fallback, p.Unproven, want)
	}
	r := rollout.PlanRecovery(ls, map[string]bool{"d": true}, "A", false, f, pol())
	got = map[string]rollout.Op{}
	for _, it := range r.Items {
		got[it.Name] = it.Op
	}
	want = map[string]rollout.Op{"b": rollout.OpReplace, "c": rollout.OpStart, "d": rollout.OpStart, "e": rollout.OpReplace}
	if !maps.Equal(got, want) {
		t.Errorf("recovery plan %v, want %v", got, want)
	}
	if err := (rollout.Policy{}).Validate(); err == nil {
		t.Error("a zero policy validated")
	}
}

// TestOfflineWindow: offline starts at most W at once (no storm), stops
// each locker just before its own start, so that at most W are down at
// once, each for one restart and not for the whole start phase, and the
// first window proves the release.
func TestOfflineWindow(t *testing.T) {
	names := fakehost.Names(24)
	h := fakehost.New("A", names...)
	pl := pol()
	pl.MaxUnavailable = 3
	pl.Pacing = rollout.Fixed
	var mu sync.Mutex
	inFlight, most := 0, 0
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Offline, pl)
	res := rollout.Run(context.Background(), p, env(h, func(e rollout.Event) {
		mu.Lock()
		defer mu.Unlock()
		switch e.Phase {
		case rollout.PhaseStarting:
			inFlight++
			most = max(most, inFlight)
		case rollout.PhaseHealthy, rollout.PhaseFailed:
			if e.Op == "start" {
				inFlight--
			}
		}
	}))
	if !res.OK() {
		t.Fatalf("offline: %+v", res)
	}
	allOn(t, h, "B")
	if most > 3 {
		t.Errorf("%d lockers starting at once, want at most W=3", most)
	}
	if d := h.MaxDown(); d > 3 {
		t.Errorf("%d lockers down at once, want at most W=3: offline stops each locker just before its own start, not all of them first", d)
	}
	if !h.Proven("B") {
		t.Errorf("B not proven")
	}
}

// TestStartDelay: a locker's lxc.start.delay is waited after its launch,
// before the next one, as lxc-autostart does (and the policy's Delay
// between any two).
func TestStartDelay(t *testing.T) {
	names := fakehost.Names(4)
	h := fakehost.New("A", names...)
	h.SetStopped(names...)
	ls := h.Lockers(nil)
	ls[1].StartDelay = 7 * time.Second
	pl := pol()
	pl.Monitor = 0 // only the delays move the virtual clock
	p := rollout.PlanStart(ls, h.Facts(""), pl)
	var mu sync.Mutex
	at := map[string]time.Time{}
	res := rollout.Run(context.Background(), p, env(h, func(e rollout.Event) {
		if e.Phase == rollout.PhaseStarting {
			mu.Lock()
			at[e.Container] = e.Time
			mu.Unlock()
		}
	}))
	if !res.OK() {
		t.Fatalf("start: %+v", res)
	}
	if d := at[names[2]].Sub(at[names[1]]); d < 7*time.Second {
		t.Errorf("%s launched %v after %s, want at least its 7s start delay", names[2], d, names[1])
	}
	if d := at[names[1]].Sub(at[names[0]]); d >= 7*time.Second {
		t.Errorf("%s waited %v after %s, which has no start delay", names[1], d, names[0])
	}
}
