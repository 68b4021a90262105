package agent

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"lxcfleet/codeupdate"
	"lxcfleet/internal/fakecode"
	"lxcfleet/internal/fakehost"
	"lxcfleet/rollout"
)

// TestTallyAfterAnAutomaticRollback: a start-all on an unproven release
// whose lockers fail trips the failure policy and brings every locker up
// on the last good release. The job's tally (what the console, the CLI's
// tail and the history render) says all of them serve on it, counts as
// failed exactly the result's failed lockers, and gives every locker that
// was not moved its reason (I5). Fake host: this is the reducer's logic.
func TestTallyAfterAnAutomaticRollback(t *testing.T) {
	names := fakehost.Names(6)
	h := fakehost.New("r1", names...)
	code := fakecode.New("r1")
	_ = code.MarkProven("r1")
	code.Add(codeupdate.Release{Name: "r2", Build: 2, SHA: "sha-r2", State: codeupdate.StateGood})
	code.SetCurrent("r2")
	_ = h.Switch(t.Context(), "r2", "test")
	h.SetStopped(names...)
	h.Behave("r2", fakehost.Behavior{StartFails: true})
	fc := fakeContainers{h: h, code: code}
	a := fakeAgent(t, fc, Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()}, discardLogger())
	j, err := a.Submit(Request{Kind: KindStartAll, Names: names, Policy: rollout.Patch{"max_starting": 2, "pacing": "fixed", "monitor": "0s", "health": "none"}})
	if err != nil {
		t.Fatal(err)
	}
	if j, err = a.Wait(t.Context(), j.ID); err != nil {
		t.Fatal(err)
	}
	res := jobResultOf(t, j)
	if !res.RolledBack {
		t.Fatalf("start-all on a failing unproven release: %s %q, want a rollback", j.State, j.Error)
	}
	tl := j.Tally
	if tl == nil || !tl.Ended {
		t.Fatalf("finished job's tally: %+v, want one settled", tl)
	}
	if got, want := tl.Serving, "6 of 6 lockers serving: 6 on r1 (after the rollback)"; got != want {
		t.Errorf("serving: got %q, want %q", got, want)
	}
	if tl.States[TallyUp] != 6 || tl.Total != 6 || tl.Done != 6 {
		t.Errorf("tally: %d up, %d done of %d, want 6 up and done of 6 (%v)", tl.States[TallyUp], tl.Done, tl.Total, tl.States)
	}
	if tl.Failed != len(res.Failed) || tl.Failed == 0 {
		t.Errorf("tally counts %d failed, the result %d (%v): want the same, more than 0", tl.Failed, len(res.Failed), res.Failed)
	}
	for _, l := range tl.Lockers {
		t.Logf("%s: %s %s step %s: %s", l.Name, l.State, l.Outcome, l.Step, l.Reason)
	}
	undone := tl.Undone()
	if len(undone) != 6 {
		t.Errorf("lockers not moved as planned: %d, want all 6", len(undone))
	}
	skipped := 0
	for _, l := range undone {
		if l.Reason == "" || !strings.HasSuffix(l.Reason, "up on r1 after the rollback") {
			t.Errorf("%s: reason %q, want one ending up on r1 after the rollback", l.Name, l.Reason)
		}
		if l.Outcome == rollout.OutSkipped {
			skipped++
			if !strings.Contains(l.Reason, "not moved to r2: the failure policy tripped") {
				t.Errorf("skipped %s: reason %q, want the tripped policy", l.Name, l.Reason)
			}
		}
	}
	if skipped == 0 {
		t.Error("no locker was skipped: the test no longer covers skipped lockers' reasons")
	}
	// The steps: the start (its failures those of the result), the
	// rollback (all 6 up), and the lockers the start never reached; no
	// canary without canaries.
	var steps []string
	for _, s := range tl.Steps {
		steps = append(steps, s.Name)
		switch s.Name {
		case "start":
			if s.Failed != len(res.Failed) || s.States[TallyFailed] != len(res.Failed) {
				t.Errorf("start step: %d failed (%v), want the result's %d", s.Failed, s.States, len(res.Failed))
			}
		case "rollback":
			if s.States[TallyUp] != 6 {
				t.Errorf("rollback step: %v, want 6 up", s.States)
			}
		case "not moved":
			if s.States[TallySkipped] != skipped {
				t.Errorf("not moved step: %v, want %d skipped", s.States, skipped)
			}
		}
	}
	if got := strings.Join(steps, ","); got != "start,rollback,not moved" {
		t.Errorf("steps: got %s, want start,rollback,not moved", got)
	}
	// The record read back from the journal carries the same tally.
	back, err := a.jr.Job(j.ID)
	if err != nil || back.Tally == nil || back.Tally.Serving != tl.Serving {
		t.Errorf("journaled record's tally: %+v %v, want the job's", back.Tally, err)
	}
}

// TestTallyCanaryOnlyForCanaries: the canary step appears only when the
// plan has canaries, and holds exactly them.
func TestTallyCanaryOnlyForCanaries(t *testing.T) {
	for _, canary := range []int{0, 1} {
		names := fakehost.Names(4)
		h := fakehost.New("r1", names...)
		code := fakecode.New("r1")
		_ = code.MarkProven("r1")
		fc := fakeContainers{h: h, code: code}
		a := fakeAgent(t, fc, Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()}, discardLogger())
		j, err := a.Submit(Request{Kind: KindUpdate, Target: "r2", Strategy: StrategyRolling,
			Policy: rollout.Patch{"canary": canary, "soak": "0s", "max_unavailable": 1, "monitor": "0s", "health": "none"}})
		if err != nil {
			t.Fatal(err)
		}
		if j, err = a.Wait(t.Context(), j.ID); err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		for _, s := range j.Tally.Steps {
			for _, n := range s.States {
				got[s.Name] += n
			}
		}
		want := map[string]int{"rollout": 4}
		if canary == 1 {
			want = map[string]int{"canary": 1, "rollout": 3}
		}
		if len(got) != len(want) || got["canary"] != want["canary"] || got["rollout"] != want["rollout"] {
			t.Errorf("canary %d: steps %v, want %v (job %s %q)", canary, got, want, j.State, j.Error)
		}
		if j.Tally.Serving != "4 of 4 lockers serving: 4 on r2" {
			t.Errorf("canary %d: serving %q", canary, j.Tally.Serving)
		}
	}
}

func jobResultOf(t *testing.T, j Job) Result {
	t.Helper()
	var r Result
	if err := json.Unmarshal(j.Result, &r); err != nil {
		t.Fatalf("job %s result: %v", j.ID, err)
	}
	return r
}

// TestPrebuiltReleaseRanNoNpm: an update to a release built before (ahead
// of time, with npm) says it is built already, and its result does not
// say npm ran in this job (issue 22 item 12).
func TestPrebuiltReleaseRanNoNpm(t *testing.T) {
	names := fakehost.Names(2)
	h := fakehost.New("r1", names...)
	code := fakecode.New("r1")
	_ = code.MarkProven("r1")
	code.Add(codeupdate.Release{Name: "r2", Build: 2, SHA: "sha-r2", State: codeupdate.StateGood, Npm: codeupdate.NpmRan})
	fc := fakeContainers{h: h, code: code}
	a := fakeAgent(t, fc, Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()}, discardLogger())
	for _, tc := range []struct {
		target, want string
		npmRan       bool
	}{
		{"r2", "built already: no npm in this job", false},
		{"r3", "npm reused", false}, // built by this job (the fake reuses node_modules)
	} {
		j, err := a.Submit(Request{Kind: KindUpdate, Target: tc.target, Strategy: StrategyRolling, Policy: rollout.Patch{"monitor": "0s", "health": "none"}})
		if err != nil {
			t.Fatal(err)
		}
		if j, err = a.Wait(t.Context(), j.ID); err != nil {
			t.Fatal(err)
		}
		res := jobResultOf(t, j)
		if !strings.Contains(res.Summary, tc.want) || res.NpmRan == nil || *res.NpmRan != tc.npmRan {
			t.Errorf("update to %s: summary %q, npm_ran %v; want %q and npm_ran %v", tc.target, res.Summary, res.NpmRan, tc.want, tc.npmRan)
		}
	}
}

// TestTallyServingCountsWhatRunsNow: the tally's serving line ("now:")
// counts each locker by the release it runs at the job's end, read from
// the lockers, not by what the job did to it: two lockers already running
// r1 that a start-all on a failing r2 never touched are on r1, as the four
// it brought back on r1 are (not "on the release it ran before").
func TestTallyServingCountsWhatRunsNow(t *testing.T) {
	names := fakehost.Names(6)
	h := fakehost.New("r1", names...)
	code := fakecode.New("r1")
	_ = code.MarkProven("r1")
	code.Add(codeupdate.Release{Name: "r2", Build: 2, SHA: "sha-r2", State: codeupdate.StateGood})
	code.SetCurrent("r2")
	_ = h.Switch(t.Context(), "r2", "test")
	h.SetStopped(names[2:]...)
	h.Behave("r2", fakehost.Behavior{StartFails: true})
	fc := fakeContainers{h: h, code: code}
	a := fakeAgent(t, fc, Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()}, discardLogger())
	j, err := a.Submit(Request{Kind: KindStartAll, Names: names, Policy: rollout.Patch{"max_starting": 2, "pacing": "fixed", "monitor": "0s", "health": "none"}})
	if err != nil {
		t.Fatal(err)
	}
	if j, err = a.Wait(t.Context(), j.ID); err != nil {
		t.Fatal(err)
	}
	for n, rel := range h.Where() {
		if rel != "r1" {
			t.Fatalf("%s runs %q after the rollback, want r1 (%v)", n, rel, h.Where())
		}
	}
	if got, want := j.Tally.Serving, "6 of 6 lockers serving: 6 on r1 (after the rollback)"; !strings.HasPrefix(got, want) {
		t.Errorf("serving: got %q, want it to begin %q", got, want)
	}
	res := jobResultOf(t, j)
	if res.Tripped != "" && j.Tally.Failed != len(res.Failed) {
		t.Errorf("tally counts %d failed, the result %d", j.Tally.Failed, len(res.Failed))
	}
	t.Logf("tripped %q; serving %q", res.Tripped, j.Tally.Serving)
}

// TestTallySaysWhoFailedAfterTheTrip: a locker in flight when the failure
// policy tripped that fails after it is counted apart, so that the trip's
// "1 of 5 lockers failed" and the job's 2 failed agree.
func TestTallySaysWhoFailedAfterTheTrip(t *testing.T) {
	plan := &rollout.Plan{Kind: rollout.KindStart}
	for _, n := range fakehost.Names(5) {
		plan.Items = append(plan.Items, rollout.Item{Name: n, Op: rollout.OpStart})
	}
	tl := newTally(plan)
	n := fakehost.Names(5)
	for _, x := range n[:2] {
		tl.apply(Event{Type: "container", Container: x, Phase: string(rollout.PhaseStarting)})
	}
	tl.apply(Event{Type: "container", Container: n[0], Phase: string(rollout.PhaseFailed), Error: "boom"})
	tl.apply(Event{Type: "stage", Stage: "trip", Message: "1 of 5 lockers failed (max failure ratio 0)"})
	tl.apply(Event{Type: "container", Container: n[1], Phase: string(rollout.PhaseFailed), Error: "boom"})
	tl.settle(&Result{Tripped: "1 of 5 lockers failed (max failure ratio 0)"}, JobFailed, "", map[string]string{n[2]: "r1"})
	if tl.Failed != 2 {
		t.Fatalf("failed %d, want 2", tl.Failed)
	}
	want := "1 of 5 lockers serving: 1 on r1; 2 failed: 1 when the failure policy tripped, 1 more that were already starting"
	if tl.Serving != want {
		t.Errorf("serving: got %q, want %q", tl.Serving, want)
	}
}

// TestJobListShowsARunningJobsTally: GET /v1/jobs shows a running job's
// live tally (its counts so far), as GET /v1/jobs/{id} and the console
// do, not the journal's record from the job's start.
func TestJobListShowsARunningJobsTally(t *testing.T) {
	names := fakehost.Names(3)
	h := fakehost.New("r1", names...)
	code := fakecode.New("r1")
	_ = code.MarkProven("r1")
	release := make(chan struct{})
	reached := make(chan struct{}, 1)
	h.BeforeStart = func(name string) {
		if name == names[1] {
			reached <- struct{}{}
			<-release
		}
	}
	fc := fakeContainers{h: h, code: code}
	a := fakeAgent(t, fc, Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()}, discardLogger())
	j, err := a.Submit(Request{Kind: KindRestart, Names: names, Policy: rollout.Patch{"max_unavailable": 1, "monitor": "0s", "health": "none"}})
	if err != nil {
		t.Fatal(err)
	}
	<-reached // the first locker is restarted, the second is starting
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/jobs", nil))
	close(release)
	var list struct{ Jobs []Job }
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || len(list.Jobs) == 0 {
		t.Fatalf("GET /v1/jobs: %v %s", err, rec.Body.String())
	}
	got := list.Jobs[0]
	if got.ID != j.ID || got.State.Done() || got.Tally == nil {
		t.Fatalf("GET /v1/jobs while the restart runs: %s %s tally %+v, want the running job with its tally", got.ID, got.State, got.Tally)
	}
	if got.Tally.Total != 3 || got.Tally.States[TallyPending] == 3 || len(got.Tally.Lockers) != 0 {
		t.Errorf("the running job's tally in the list: %+v, want its counts so far (not every locker pending) and no locker lines", got.Tally)
	}
	if _, err := a.Wait(t.Context(), j.ID); err != nil {
		t.Fatal(err)
	}
}
