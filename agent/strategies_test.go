package agent

import (
	"context"
	"lxcfleet/rollout"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"lxcfleet/codeupdate"
	"lxcfleet/internal/fakecode"
	"lxcfleet/internal/testfleet"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
)

// strategyFleet starts real lockers and an agent (no listener) whose Code
// is a fake on release "1-old".
func strategyFleet(t *testing.T, normal int, broken bool) (*Agent, *fakecode.Code, *testfleet.Fleet, []string, string) {
	t.Helper()
	f := testfleet.New(t, testfleet.Options{})
	names := testfleet.Names(f.Add(normal, testfleet.Normal))
	var bad string
	if broken {
		bad = f.Add(1, testfleet.Broken)[0].Name
		names = append(names, bad)
	}
	if _, err := lockerverbs.StartAll(context.Background(), f.Host, names, lxcctl.StartOptions{Window: 4, Deadline: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	code := fakecode.New("1-old")
	a, err := New(Config{LXCPath: f.Path, StateDir: t.TempDir(), Defaults: testDefaults()}, Deps{Containers: f.Host, Code: code, ReleaseOf: code.ReleaseOf, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, code, f, names, bad
}

func ptr[T any](v T) *T { return &v }

// stepIndex returns the index of the first step matching.
func stepIndex(steps []Step, match func(Step) bool) int {
	return slices.IndexFunc(steps, match)
}

func TestUpdateStrategies(t *testing.T) {
	a, code, f, names, _ := strategyFleet(t, 4, false)
	health := "http://127.0.0.1:{port}/healthz"

	t.Run("rolling with a canary", func(t *testing.T) {
		before := pids(t, f.Host, names)
		j, err := a.Submit(Request{Kind: KindUpdate, Target: "2-new", Strategy: StrategyRolling, Policy: rollout.Patch{"max_unavailable": 2, "canary": ptr(1), "soak": Duration(200 * time.Millisecond), "health": health}})
		if err != nil {
			t.Fatal(err)
		}
		j = waitJob(t, a, j.ID)
		res := result(t, j)
		if j.State != JobSucceeded || res.To != "2-new" || res.From != "1-old" || len(res.Failed) != 0 {
			t.Fatalf("rolling update: %s %q, result %+v", j.State, j.Error, res)
		}
		after := pids(t, f.Host, names)
		for _, n := range names {
			if after[n] == 0 || after[n] == before[n] {
				t.Errorf("%s: pid %d -> %d, want restarted", n, before[n], after[n])
			}
			if rel, _, _ := code.ReleaseOf(after[n]); rel != "2-new" {
				t.Errorf("%s runs %s, want 2-new", n, rel)
			}
		}
		steps, _ := a.Steps(j.ID)
		built := stepIndex(steps, func(s Step) bool { return s.Action == "build" && s.Phase == "end" })
		switched := stepIndex(steps, func(s Step) bool { return s.Action == "switch" && s.Phase == "end" })
		firstStop := stepIndex(steps, func(s Step) bool { return s.Action == "replace-stop" })
		if !(built >= 0 && built < switched && switched < firstStop) {
			t.Errorf("steps: build end %d, switch %d, first stop %d: want build, then switch, then stops", built, switched, firstStop)
		}
		// The canary (first in start order) was replaced alone, before the rest.
		canaryEnd := stepIndex(steps, func(s Step) bool { return s.Container == names[0] && s.Action == "start" && s.Phase == "end" })
		for _, n := range names[1:] {
			if i := stepIndex(steps, func(s Step) bool { return s.Container == n && s.Action == "replace-stop" }); i < canaryEnd {
				t.Errorf("%s stopped (step %d) before the canary was healthy (step %d)", n, i, canaryEnd)
			}
		}
		if res.Downtime == nil || res.Downtime.Max <= 0 {
			t.Errorf("downtime stats: %+v", res.Downtime)
		}
	})

	t.Run("offline", func(t *testing.T) {
		j, err := a.Submit(Request{Kind: KindUpdate, Target: "3-next", Strategy: StrategyOffline, Policy: rollout.Patch{"stop_parallel": 4, "max_unavailable": 4, "health": health}})
		if err != nil {
			t.Fatal(err)
		}
		j = waitJob(t, a, j.ID)
		if j.State != JobSucceeded {
			t.Fatalf("offline update: %s %s", j.State, j.Error)
		}
		// The switch first, then each locker stopped just before its own
		// start (not every locker first).
		steps, _ := a.Steps(j.ID)
		switched := stepIndex(steps, func(s Step) bool { return s.Action == "switch" && s.Phase == "end" })
		for i, s := range steps {
			if (s.Action == "replace-stop" || s.Action == "start") && i < switched {
				t.Errorf("step %d: %s %s before the switch (%d)", i, s.Container, s.Action, switched)
			}
		}
		for _, n := range names {
			stopEnd := stepIndex(steps, func(s Step) bool { return s.Container == n && s.Action == "replace-stop" && s.Phase == "end" })
			startBegin := stepIndex(steps, func(s Step) bool { return s.Container == n && s.Action == "start" && s.Phase == "begin" })
			if stopEnd < 0 || startBegin < stopEnd {
				t.Errorf("%s: stop ended at step %d, start began at %d: want its stop, then its start", n, stopEnd, startBegin)
			}
		}
		for n, st := range states(t, f.Host, names) {
			if st != lxcctl.StateRunning {
				t.Errorf("%s is %s after the offline update", n, st)
			}
		}
	})

	t.Run("build failure touches nothing", func(t *testing.T) {
		before := pids(t, f.Host, names)
		code.SetBuildErr(context.DeadlineExceeded)
		defer code.SetBuildErr(nil)
		j, _ := a.Submit(Request{Kind: KindUpdate, Target: "4-broken-build"})
		j = waitJob(t, a, j.ID)
		if j.State != JobFailed || !strings.Contains(j.Error, "nothing was stopped") {
			t.Errorf("update with a failing build: %s %q", j.State, j.Error)
		}
		if cur, _ := code.Current(); cur.Name != "3-next" {
			t.Errorf("current after a failed build: %s, want 3-next", cur.Name)
		}
		if after := pids(t, f.Host, names); !mapsEqual(before, after) {
			t.Errorf("pids changed after a failed build: %v -> %v", before, after)
		}
	})

	t.Run("build failure with lockers stopped says so", func(t *testing.T) {
		j, _ := a.Submit(Request{Kind: KindStopAll, Names: names[:1]})
		waitJob(t, a, j.ID)
		code.SetBuildErr(context.DeadlineExceeded)
		defer code.SetBuildErr(nil)
		j, _ = a.Submit(Request{Kind: KindUpdate, Target: "4-broken-build"})
		j = waitJob(t, a, j.ID)
		for _, want := range []string{"nothing was stopped by this update", "1 locker of", names[0], "run lxc-start-all"} {
			if j.State != JobFailed || !strings.Contains(j.Error, want) {
				t.Errorf("update with a failing build and %s stopped: %s %q, want %q", names[0], j.State, j.Error, want)
			}
		}
		j, _ = a.Submit(Request{Kind: KindStartAll, Names: names[:1], Policy: rollout.Patch{"health": health}})
		if j = waitJob(t, a, j.ID); j.State != JobSucceeded {
			t.Fatalf("start-all after: %s %q", j.State, j.Error)
		}
	})

	t.Run("rollback job", func(t *testing.T) {
		j, _ := a.Submit(Request{Kind: KindRollback, Policy: rollout.Patch{"max_unavailable": 2, "health": health}})
		j = waitJob(t, a, j.ID)
		res := result(t, j)
		if j.State != JobSucceeded || res.To != "2-new" || res.From != "3-next" {
			t.Fatalf("rollback: %s %q %+v", j.State, j.Error, res)
		}
		if code.State("3-next") != codeupdate.StateBad {
			t.Errorf("the release rolled back from is not marked bad")
		}
		j, _ = a.Submit(Request{Kind: KindUpdate, Target: "3-next"})
		if j = waitJob(t, a, j.ID); j.State != JobFailed || !strings.Contains(j.Error, "marked bad") {
			t.Errorf("update to a bad release without --force: %s %q", j.State, j.Error)
		}
	})
}

// TestUpdateFailurePolicy: a locker that never gets healthy trips the
// failure ratio: rollback moves every touched locker back; pause leaves
// the rest untouched; a failing canary stops the rollout at once.
func TestUpdateFailurePolicy(t *testing.T) {
	a, code, f, names, bad := strategyFleet(t, 3, true)
	// The broken locker first in start order.
	if err := f.Host.SetConfigItem(bad, "lxc.start.order", "-1"); err != nil {
		t.Fatal(err)
	}
	order := append([]string{bad}, names[:len(names)-1]...)
	health := "http://127.0.0.1:{port}/healthz"
	base := Request{Kind: KindUpdate, Strategy: StrategyRolling, Policy: rollout.Patch{"max_unavailable": 1, "deadline": Duration(1500 * time.Millisecond), "health": health, "max_failure_ratio": ptr(0.1)}}

	t.Run("canary fails: pause", func(t *testing.T) {
		before := pids(t, f.Host, order)
		req := base
		req.Policy = maps.Clone(base.Policy)
		req.Target, req.Policy["canary"], req.Policy["failure_action"] = "2-canary", 1, ActionPause
		j, _ := a.Submit(req)
		j = waitJob(t, a, j.ID)
		res := result(t, j)
		if j.State != JobFailed || !res.Paused || res.RolledBack || !slices.Contains(res.Failed, bad) {
			t.Fatalf("failing canary: %s %q %+v", j.State, j.Error, res)
		}
		if cur, _ := code.Current(); cur.Name != "1-old" {
			t.Errorf("current after a paused update: %s, want 1-old again", cur.Name)
		}
		if code.State("2-canary") != codeupdate.StateBad {
			t.Errorf("2-canary not marked bad")
		}
		after := pids(t, f.Host, order)
		for _, n := range order[1:] {
			if after[n] != before[n] {
				t.Errorf("%s was restarted after the canary failed", n)
			}
		}
	})

	t.Run("ratio tripped: rollback", func(t *testing.T) {
		req := base
		req.Policy = maps.Clone(base.Policy)
		req.Target, req.Policy["canary"], req.Policy["failure_action"] = "3-roll", 0, ActionRollback
		j, _ := a.Submit(req)
		j = waitJob(t, a, j.ID)
		res := result(t, j)
		if j.State != JobFailed || !res.RolledBack || !strings.Contains(j.Error, "rolled back") {
			t.Fatalf("update with a broken locker: %s %q %+v", j.State, j.Error, res)
		}
		// The first (broken) locker failed: the rest were never moved.
		for _, o := range res.Outcomes {
			if o.Name != bad && o.Op == rollout.OpReplace && o.Outcome != "skipped" {
				t.Errorf("%s was moved (%s) after the ratio tripped", o.Name, o.Outcome)
			}
		}
		if cur, _ := code.Current(); cur.Name != "1-old" {
			t.Errorf("current after a rollback: %s, want 1-old", cur.Name)
		}
		for n, pid := range pids(t, f.Host, order) {
			if rel, _, _ := code.ReleaseOf(pid); pid == 0 || rel != "1-old" {
				t.Errorf("%s after the rollback: pid %d on %q, want running 1-old", n, pid, rel)
			}
		}
	})
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
