package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"lxcfleet/internal/fakehost"
	"lxcfleet/rollout"
)

// TestSoakFailsEveryFailingCanary: two canaries turn bad in the soak's
// first round, one unhealthy (its first failed check), one exits: the
// soak ends on the exit, and the unhealthy one is failed too, not moved
// (I5: neither was healthy through the soak).
func TestSoakFailsEveryFailingCanary(t *testing.T) {
	names := fakehost.Names(6)
	h := fakehost.New("A", names...)
	h.Script("l00", "B", fakehost.Script{FailAtCheck: 1})
	h.Script("l01", "B", fakehost.Script{FailAtCheck: 1, Dies: true})
	pl := pol()
	pl.Monitor = 0
	pl.Canary = 2
	pl.Soak = 3 * time.Second
	pl.MaxFailureRatio = 1
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pl)
	res := rollout.Run(context.Background(), p, env(h, nil))
	consistent(t, p, res)
	if res.Tripped == "" || !h.Bad("B") {
		t.Fatalf("a soak with failing canaries did not trip: %+v", res)
	}
	for _, o := range res.Outcomes[:2] {
		if o.Outcome != rollout.OutFailed {
			t.Errorf("%s: %s, want failed: it failed its soak checks", o.Name, o.Outcome)
		}
	}
	allOn(t, h, "A")
}

// TestWindowEndsOnAPassedCheck: a locker whose last check of its monitor
// window fails (unhealthy, not stopped) is not moved: its window goes on
// until a check passes or 3 fail in a row (here: failed).
func TestWindowEndsOnAPassedCheck(t *testing.T) {
	names := fakehost.Names(4)
	h := fakehost.New("A", names...)
	h.Script("l01", "B", fakehost.Script{FailAtCheck: 2})
	pl := pol()
	pl.Monitor = 2 * time.Second // two checks, the second fails
	pl.MaxFailureRatio = 1
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", true, rollout.Rolling, pl)
	res := rollout.Run(context.Background(), p, env(h, nil))
	consistent(t, p, res)
	if o := res.Outcomes[1]; o.Outcome != rollout.OutFailed {
		t.Errorf("%s: %s, want failed: the last check of its window failed, and the next two", o.Name, o.Outcome)
	}
	for _, o := range []rollout.Outcome{res.Outcomes[0], res.Outcomes[2], res.Outcomes[3]} {
		if o.Outcome != rollout.OutMoved {
			t.Errorf("%s: %s, want moved", o.Name, o.Outcome)
		}
	}
}

// TestStartPlanTripStartsTheRest: start-all on an unproven release that
// dies in its monitor window trips while lockers are still waiting for
// a start place (timed on testing/synctest's virtual clock: starts take
// 1 s, the window 5 s); those never touched start on the fallback too
// (I4), none stays down.
func TestStartPlanTripStartsTheRest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		names := fakehost.Names(12)
		h := fakehost.New("A", names...)
		h.UseTime()
		h.SetStopped(names...)
		if err := h.Switch(context.Background(), "B", "update-code with nothing running"); err != nil {
			t.Fatal(err)
		}
		h.Behave("B", fakehost.Behavior{DiesAfter: 1, StartTakes: time.Second})
		pl := pol()
		// W = 2 (a start plan's W is max starting, K is all): with 12
		// lockers the trip comes while some never launched.
		pl.MaxStarting = 2
		pl.Pacing = rollout.Fixed
		p := rollout.PlanStart(h.Lockers(nil), h.Facts("A"), pl)
		res := rollout.Run(context.Background(), p, env(h, nil))
		consistent(t, p, res)
		skipped := res.Counts()[rollout.OutSkipped]
		if res.Tripped == "" || skipped == 0 {
			t.Fatalf("tripped %q with %d lockers never launched: want a trip before all launched", res.Tripped, skipped)
		}
		allOn(t, h, "A")
	})
}

// TestCutWindowWhileFailing: an operator's cancel cuts l01's monitor
// window while its last check failed: it is failed (it holds its place),
// not "unverified", so the way back brings it back before it replaces
// l00, and never more than K=1 is down (found by the property test).
func TestCutWindowWhileFailing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		names := fakehost.Names(2)
		h := fakehost.New("A", names...)
		h.UseTime()
		h.Script("l01", "B", fakehost.Script{FailAtCheck: 1})
		pl := pol()
		pl.MaxUnavailable, pl.Monitor, pl.Canary = 1, 2*time.Second, 2
		p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pl)
		h.WatchHeld(1)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		time.AfterFunc(3500*time.Millisecond, cancel) // l01's first check (at 3 s) failed
		res := rollout.Run(ctx, p, env(h, nil))
		consistent(t, p, res)
		if o := res.Outcomes[1]; o.Outcome != rollout.OutFailed {
			t.Errorf("l01: %s (%s), want failed: its last check failed when the cancel cut its window", o.Outcome, o.Error)
		}
		if !res.Cancelled {
			t.Errorf("not cancelled: %+v", res)
		}
		if over := h.MaxOver(); over > 0 {
			t.Errorf("I1: %d down over K=1 on the way back", over)
		}
		allOn(t, h, "A")
	})
}

// TestFenceStopsLaunching: a fence that fails (a fleet host that lost its
// slot) ends launching at once, as a Shutdown does: the locker in flight
// finishes, nothing else moves (no way back either), an unproven current
// goes back on the fallback, and the run is interrupted with the fence's
// error as the cause.
func TestFenceStopsLaunching(t *testing.T) {
	names := fakehost.Names(6)
	h := fakehost.New("A", names...)
	pl := pol()
	pl.MaxUnavailable = 1
	pl.Monitor = 0
	p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pl)
	lost := errors.New("lease expired")
	calls := 0
	e := env(h, nil)
	var stages []string
	e.Observe = func(ev rollout.Event) {
		if ev.Stage != "" {
			stages = append(stages, ev.Stage+": "+ev.Message)
		}
	}
	e.Fence = func() error {
		if calls++; calls > 3 {
			return lost
		}
		return nil
	}
	res := rollout.Run(context.Background(), p, e)
	consistent(t, p, res)
	if !res.Interrupted || res.Tripped != "" || res.RolledBack {
		t.Errorf("fenced run: interrupted %v tripped %q rolled back %v, want interrupted only", res.Interrupted, res.Tripped, res.RolledBack)
	}
	moved := res.Counts()[rollout.OutMoved]
	if moved == 0 || moved >= len(names) {
		t.Errorf("%d lockers moved, want some but not all: launching stops at the fence", moved)
	}
	if got := len(h.Running()); got != len(names) {
		t.Errorf("%d lockers running after the fence, want all %d (the one in flight finishes)", got, len(names))
	}
	if h.Current() != "B" && res.Proven {
		t.Errorf("current %s after a fence with B proven", h.Current())
	}
	if !res.Proven && h.Current() != "A" {
		t.Errorf("current %s after a fence with B unproven, want back on A (I2)", h.Current())
	}
	if !slices.ContainsFunc(stages, func(s string) bool { return strings.HasPrefix(s, "fence: ") && strings.Contains(s, "lease expired") }) {
		t.Errorf("no fence stage naming the cause: %v", stages)
	}
}

// TestCutWindowAfterAFrozenCheck: a fence cuts l01's monitor window right
// after one check failed only because the checker was frozen through it
// (a fleet host SIGSTOPped past its TTL: on SIGCONT the check's timeout
// has passed, and the fence fires): l01 is checked once more at the cut,
// passes, and is not failed, so the failure policy does not trip, the
// target is not marked bad and nothing is rolled back.
func TestCutWindowAfterAFrozenCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		names := fakehost.Names(2)
		h := fakehost.New("A", names...)
		h.UseTime()
		h.Script("l01", "B", fakehost.Script{FailAtCheck: 1, FailsOnce: true})
		pl := pol()
		pl.MaxUnavailable, pl.Monitor, pl.Canary = 1, 2*time.Second, 2
		p := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", false, rollout.Rolling, pl)
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		time.AfterFunc(3500*time.Millisecond, func() { cancel(fmt.Errorf("fenced: lease lost (%w)", rollout.Shutdown)) })
		res := rollout.Run(ctx, p, env(h, nil))
		consistent(t, p, res)
		if o := res.Outcomes[1]; o.Outcome == rollout.OutFailed {
			t.Errorf("l01: failed (%s), want it not failed: it passed its check at the cut", o.Error)
		}
		if res.Tripped != "" || res.RolledBack || res.MarkedBad {
			t.Errorf("tripped %q rolled back %v marked bad %v, want none: no locker failed", res.Tripped, res.RolledBack, res.MarkedBad)
		}
	})
}
