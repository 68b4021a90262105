package agent

import (
	"testing"
	"time"

	"lxcfleet/codeupdate"
	"lxcfleet/internal/fakecode"
	"lxcfleet/internal/fakehost"
	"lxcfleet/rollout"
)

// TestImpliedMaxStarting: with the held-socket defaults (K 1, W 4 not the
// operator's: Defaults.ImpliedMaxStarting), a request that sets K and not
// W has W follow its K, as without held sockets; one that sets W keeps
// it; one that sets neither keeps the defaults' W 4; and an operator's
// own W in the defaults stays whatever K the request sets.
func TestImpliedMaxStarting(t *testing.T) {
	held := DefaultDefaults()
	held.Policy.MaxUnavailable, held.Policy.MaxStarting, held.ImpliedMaxStarting = 1, 4, true
	own := held
	own.ImpliedMaxStarting = false
	for _, tc := range []struct {
		name  string
		d     Defaults
		patch rollout.Patch
		k, w  int
	}{
		{"held, nothing set", held, nil, 1, 4},
		{"held, K set", held, rollout.Patch{"max_unavailable": 10.0}, 10, 0},
		{"held, K by its old name", held, rollout.Patch{"window": 10.0}, 10, 0},
		{"held, K and W set", held, rollout.Patch{"max_unavailable": 10.0, "max_starting": 3.0}, 10, 3},
		{"held, W set", held, rollout.Patch{"max_starting": 2.0}, 1, 2},
		{"the operator's own W", own, rollout.Patch{"max_unavailable": 10.0}, 10, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol, err := ResolvePolicy(Request{Kind: KindUpdate, Policy: tc.patch}, tc.d)
			if err != nil {
				t.Fatal(err)
			}
			if pol.MaxUnavailable != tc.k || pol.MaxStarting != tc.w {
				t.Errorf("K %d, W %d; want K %d, W %d", pol.MaxUnavailable, pol.MaxStarting, tc.k, tc.w)
			}
		})
	}
}

// TestRecoveryOfAnOfflineUpdate: an interrupted offline update resumes as
// it ran (rollout: K all its lockers, W its own even above its K), so an
// offline update at K 1, W 4 is not finished one locker at a time.
func TestRecoveryOfAnOfflineUpdate(t *testing.T) {
	names := fakehost.Names(8)
	h := fakehost.New("r1", names...)
	code := fakecode.New("r1")
	_ = code.MarkProven("r1")
	code.Add(codeupdate.Release{Name: "r2", Build: 2, SHA: "sha-r2", State: codeupdate.StateProven})
	fc := fakeContainers{h: h, code: code}
	code.SetCurrent("r2")
	_ = h.Switch(t.Context(), "r2", "test")
	a := fakeAgent(t, fc, Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()}, discardLogger())
	pol := rollout.DefaultPolicy()
	pol.MaxUnavailable, pol.MaxStarting, pol.Pacing = 1, 4, rollout.Fixed
	pol.Monitor, pol.Interval, pol.Health = 40*time.Millisecond, 10*time.Millisecond, "none"
	plan := rollout.PlanUpdate(h.Lockers(nil), rollout.ReleaseFacts{Current: "r1", CurrentProven: true}, "r2", true, rollout.Offline, pol)
	h.Watch()
	j := recoverInterrupted(t, a, KindUpdate, plan)
	if j.Plan.Strategy != rollout.Offline {
		t.Errorf("recovery of an offline update: strategy %q, want offline", j.Plan.Strategy)
	}
	if m := h.MaxDown(); m < 2 {
		t.Errorf("recovery of an offline update at K 1, W 4: most down at once %d, want more than K (W 4)", m)
	}
	for n, rel := range h.Where() {
		if rel != "r2" {
			t.Errorf("%s ends on %q, want r2", n, rel)
		}
	}
}

// TestPlanLimit: the plan stage names K where lockers serve while others
// restart and the first W where all are down anyway (the tester's finding
// of 2026-12-07: an offline recovery at K 1, W 4 said "K 1" and started 4).
func TestPlanLimit(t *testing.T) {
	pol := rollout.DefaultPolicy()
	pol.MaxUnavailable, pol.MaxStarting = 1, 4
	names := fakehost.Names(8)
	h := fakehost.New("A", names...)
	rolling := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", true, rollout.Rolling, pol)
	offline := rollout.PlanUpdate(h.Lockers(nil), h.Facts(""), "B", true, rollout.Offline, pol)
	h.SetStopped(names...)
	ls := h.Lockers(nil)
	for i := range ls {
		ls[i].WantRunning = true
	}
	boot := rollout.PlanRecovery(ls, nil, "A", false, h.Facts(""), pol)
	for _, tc := range []struct {
		name string
		plan rollout.Plan
		want string
	}{
		{"rolling", rolling, "at most 1 down at once"},
		{"offline", offline, "each stopped just before its own start, first W 4"},
		{"a boot's recovery", boot, "all stopped already, first W 4"},
	} {
		if got := planLimit(tc.plan); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
