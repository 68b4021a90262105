package rollout_test

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"lxcfleet/internal/fakehost"
	"lxcfleet/rollout"
)

// TestWatch: lockers a dead agent left starting on the target (OpWatch)
// hold their places in K from the run's beginning, are checked before
// any replace is launched beyond K, and count like starts.
func TestWatch(t *testing.T) {
	type want struct {
		ok, tripped bool
		watch       []string // the watched lockers' outcomes
		on          string   // where every locker serves at the end
	}
	for _, tc := range []struct {
		name  string
		k     int
		setup func(h *fakehost.Host) // l00 and l01 are the watched lockers
		ratio float64
		want  want
	}{
		{"both healthy after a while", 2, func(h *fakehost.Host) {
			h.Starting("l00", "B", 4)
			h.Starting("l01", "B", 2)
		}, 0.1, want{ok: true, watch: []string{rollout.OutMoved, rollout.OutMoved}, on: "B"}},
		{"already healthy", 2, func(h *fakehost.Host) {
			h.Starting("l00", "B", 0)
			h.Starting("l01", "B", 0)
		}, 0.1, want{ok: true, watch: []string{rollout.OutMoved, rollout.OutMoved}, on: "B"}},
		{"one not running is started once", 2, func(h *fakehost.Host) {
			h.Starting("l00", "B", 1)
			h.SetStopped("l01")
		}, 0.1, want{ok: true, watch: []string{rollout.OutMoved, rollout.OutStarted}, on: "B"}},
		{"one never healthy trips and goes back", 2, func(h *fakehost.Host) {
			h.Starting("l00", "B", 1000)
			h.Starting("l01", "B", 0)
		}, 0, want{tripped: true, watch: []string{rollout.OutFailed, rollout.OutMoved}, on: "A"}},
		{"one dies in its monitor window", 3, func(h *fakehost.Host) {
			h.Starting("l00", "B", 1)
			h.Script("l00", "B", fakehost.Script{FailAtCheck: 2, Dies: true})
			h.Starting("l01", "B", 0)
		}, 0, want{tripped: true, watch: []string{rollout.OutFailed, rollout.OutMoved}, on: "A"}},
		{"a failed one keeps its place: K full", 1, func(h *fakehost.Host) {
			h.Starting("l00", "B", 1000)
			h.Starting("l01", "B", 0)
		}, 1, want{tripped: true, watch: []string{rollout.OutFailed, rollout.OutMoved}, on: "A"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names := fakehost.Names(8)
			h := fakehost.New("A", names...)
			tc.setup(h)
			pl := pol()
			pl.MaxUnavailable = tc.k
			pl.MaxFailureRatio = tc.ratio
			pl.Deadline = 20 * time.Second
			items := []rollout.Item{{Name: "l00", Op: rollout.OpWatch}, {Name: "l01", Op: rollout.OpWatch}}
			for _, n := range names[2:] {
				items = append(items, rollout.Item{Name: n, Op: rollout.OpReplace})
			}
			p := rollout.Plan{Kind: rollout.KindRecover, Target: "B", Fallback: "A", Switch: true, Unproven: true, Policy: pl, Items: items}
			h.Watch()
			h.WatchHeld(tc.k, "l00", "l01")
			var evs []rollout.Event
			res := rollout.Run(context.Background(), p, env(h, func(e rollout.Event) { evs = append(evs, e) }))
			consistent(t, p, res)
			if res.OK() != tc.want.ok || (res.Tripped != "") != tc.want.tripped {
				t.Errorf("ok %v, tripped %q; want ok %v, tripped %v: %+v", res.OK(), res.Tripped, tc.want.ok, tc.want.tripped, res)
			}
			for i, w := range tc.want.watch {
				if o := res.Outcomes[i]; o.Outcome != w {
					t.Errorf("%s: %s (%s), want %s", o.Name, o.Outcome, o.Error, w)
				}
			}
			if tc.want.tripped && !h.Bad("B") {
				t.Errorf("tripped, B not marked bad")
			}
			allOn(t, h, tc.want.on)
			// I1: the watched lockers held their places from the start.
			if over := h.MaxOver(); over > 0 {
				t.Errorf("I1: %d lockers down over K=%d: the watched ones were not held against K", over, tc.k)
			}
			// They were checked before any replace beyond K: with K=2
			// and both watched, the first stop comes after one of them
			// is through.
			if tc.k == 2 {
				firstStop := slices.IndexFunc(evs, func(e rollout.Event) bool { return e.Phase == rollout.PhaseStopping && !e.Back })
				through := len(evs)
				for _, n := range []string{"l00", "l01"} {
					if end := slices.IndexFunc(evs, func(e rollout.Event) bool {
						return e.Container == n && (e.Phase == rollout.PhaseMoved || e.Phase == rollout.PhaseFailed)
					}); end >= 0 {
						through = min(through, end)
					}
				}
				if firstStop >= 0 && firstStop < through {
					t.Errorf("a replace was stopped (event %d) while both watched lockers held K's places (first through at event %d)", firstStop, through)
				}
			}
		})
	}
}

// TestWatchNotRunningWhenTripped: a watched locker found not running
// waits for a start place (held by a slow replace) when the policy
// trips: it was never started, and starts on the fallback like a
// stopped locker of the plan (I4), not left down.
func TestWatchNotRunningWhenTripped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		names := fakehost.Names(4)
		h := fakehost.New("A", names...)
		h.UseTime()
		h.Starting("l00", "B", 1000) // never healthy: fails at the deadline
		h.SetStopped("l01")          // not running: to be started
		h.Script("l02", "B", fakehost.Script{Behavior: fakehost.Behavior{StartTakes: 30 * time.Second}})
		pl := pol()
		pl.MaxUnavailable, pl.MaxStarting, pl.Pacing = 3, 1, rollout.Fixed
		pl.MaxFailureRatio = 0
		pl.Deadline = 20 * time.Second
		items := []rollout.Item{{Name: "l00", Op: rollout.OpWatch}, {Name: "l01", Op: rollout.OpWatch}, {Name: "l02", Op: rollout.OpReplace}, {Name: "l03", Op: rollout.OpReplace}}
		p := rollout.Plan{Kind: rollout.KindRecover, Target: "B", Fallback: "A", Switch: true, Unproven: true, Policy: pl, Items: items}
		res := rollout.Run(context.Background(), p, env(h, nil))
		consistent(t, p, res)
		if res.Tripped == "" {
			t.Fatalf("not tripped: %+v", res)
		}
		if o := res.Outcomes[1]; o.Outcome != rollout.OutSkipped || o.Back != rollout.BackRolledBack {
			t.Errorf("l01: %s, back %q; want skipped (never started), then started on the fallback", o.Outcome, o.Back)
		}
		allOn(t, h, "A")
	})
}
