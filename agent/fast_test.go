// Agent tests on the fake host (internal/fakehost) and the fake release
// manager: the planning, recovery, journal, fence, schedule and metrics
// glue in milliseconds, without root, LXC or npm, beside the real-LXC tests
// of the same paths.

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lxcfleet/codeupdate"
	"lxcfleet/internal/fakecode"
	"lxcfleet/internal/fakehost"
	"lxcfleet/rollout"
)

// TestRecoveryResumesTheJournaledPlan: after an agent exit mid rolling
// update, recovery resumes the interrupted plan with ITS policy (K 2, its
// monitor window and health check), not the defaults (K 4, 10 s), and a
// locker the dead agent left starting or inside its monitor window is
// watched (held against K, checked), not counted as done (I1 across agent
// exits). Fake host and fake release manager: no root, LXC or npm.
func TestRecoveryResumesTheJournaledPlan(t *testing.T) {
	names := fakehost.Names(6)
	h := fakehost.New("r1", names...)
	code := fakecode.New("r1")
	_ = code.MarkProven("r1")
	code.Add(codeupdate.Release{Name: "r2", Build: 2, SHA: "sha-r2", State: codeupdate.StateProven})
	fc := fakeContainers{h: h, code: code}
	// The dead agent switched to r2 and moved l00, l01; l02 it started
	// (healthy once, monitor window open); l03 it stopped.
	code.SetCurrent("r2")
	_ = h.Switch(t.Context(), "r2", "test")
	for _, n := range names[:3] {
		if _, err := h.Stop(t.Context(), n, time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Start(t.Context(), n, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.Stop(t.Context(), names[3], time.Second); err != nil {
		t.Fatal(err)
	}

	a := fakeAgent(t, fc, Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()}, discardLogger()) // K 4, monitor 10s

	pol := rollout.DefaultPolicy()
	pol.MaxUnavailable, pol.Monitor, pol.Interval, pol.Health = 2, 40*time.Millisecond, 10*time.Millisecond, "none"
	plan := rollout.PlanUpdate(h.Lockers(nil), rollout.ReleaseFacts{Current: "r1", CurrentProven: true}, "r2", false, rollout.Rolling, pol)
	steps := []Step{
		{Container: names[0], Action: StepReplaceStop, Phase: "begin"}, {Container: names[0], Action: StepReplaceStop, Phase: "end", Outcome: "clean"},
		{Container: names[0], Action: StepStart, Phase: "begin"}, {Container: names[0], Action: StepStart, Phase: "end", Outcome: "healthy"},
		{Container: names[0], Action: StepStart, Phase: "end", Outcome: rollout.OutMoved},
		{Container: names[1], Action: StepReplaceStop, Phase: "begin"}, {Container: names[1], Action: StepReplaceStop, Phase: "end", Outcome: "clean"},
		{Container: names[1], Action: StepStart, Phase: "begin"}, {Container: names[1], Action: StepStart, Phase: "end", Outcome: "healthy"},
		{Container: names[1], Action: StepStart, Phase: "end", Outcome: rollout.OutMoved},
		{Container: names[2], Action: StepReplaceStop, Phase: "begin"}, {Container: names[2], Action: StepReplaceStop, Phase: "end", Outcome: "clean"},
		{Container: names[2], Action: StepStart, Phase: "begin"}, {Container: names[2], Action: StepStart, Phase: "end", Outcome: "healthy"},
		{Container: names[3], Action: StepReplaceStop, Phase: "begin"}, {Container: names[3], Action: StepReplaceStop, Phase: "end", Outcome: "clean"},
	}
	h.Watch()
	j := recoverInterrupted(t, a, KindUpdate, plan, steps...)
	if got := j.Plan.Policy; got.MaxUnavailable != 2 || got.Monitor != 40*time.Millisecond || got.Health != "none" {
		t.Errorf("recovery policy: K %d monitor %v health %q, want the interrupted plan's K 2, 40ms, none", got.MaxUnavailable, got.Monitor, got.Health)
	}
	if w := j.Plan.Names(rollout.OpWatch); !slices.Equal(w, []string{names[2]}) {
		t.Errorf("watched lockers: %v, want [%s] (left inside its monitor window)", w, names[2])
	}
	if s := j.Plan.Names(rollout.OpStart); !slices.Equal(s, []string{names[3]}) {
		t.Errorf("started: %v, want [%s]", s, names[3])
	}
	if r := j.Plan.Names(rollout.OpReplace); !slices.Equal(r, names[4:]) {
		t.Errorf("replaced: %v, want %v", r, names[4:])
	}
	if m := h.MaxDown(); m > 2 {
		t.Errorf("most lockers down during recovery: %d, want at most K = 2", m)
	}
	for n, rel := range h.Where() {
		if rel != "r2" {
			t.Errorf("%s ends on %q, want r2", n, rel)
		}
	}
	// The finished update's release is watched, as after an update that
	// ended itself, with the update's lockers.
	if w := a.watch.watching(); w == nil || w.Release != "r2" || !slices.Equal(w.Lockers, plan.Names("")) || w.Policy.MaxUnavailable != 2 {
		t.Errorf("release watch after the recovery finished the update: %+v, want r2 watched with the update's lockers %v and policy", w, plan.Names(""))
	}
}

// TestRecoveryFinishesAnInterruptedRestart (the tester's finding 16): an
// agent killed during a restart of three lockers had restarted one and
// begun to stop the second; recovery restarts the second and the third,
// which the dead agent never reached, with the restart's own K, and
// leaves the first alone. Before, it restarted the second only and the
// operator's restart was left two thirds undone.
func TestRecoveryFinishesAnInterruptedRestart(t *testing.T) {
	names := fakehost.Names(3)
	h := fakehost.New("r1", names...)
	code := fakecode.New("r1")
	_ = code.MarkProven("r1")
	a := fakeAgent(t, fakeContainers{h: h, code: code}, Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()}, discardLogger())

	pol := rollout.DefaultPolicy()
	pol.MaxUnavailable, pol.Monitor, pol.Interval, pol.Health = 1, 20*time.Millisecond, 10*time.Millisecond, "none"
	plan := rollout.PlanRestart(h.Lockers(nil), rollout.ReleaseFacts{Current: "r1", CurrentProven: true}, pol)
	j := recoverInterrupted(t, a, KindRestart, plan,
		Step{Container: names[0], Action: StepReplaceStop, Phase: "begin"}, Step{Container: names[0], Action: StepReplaceStop, Phase: "end", Outcome: "clean"},
		Step{Container: names[0], Action: StepStart, Phase: "begin"}, Step{Container: names[0], Action: StepStart, Phase: "end", Outcome: "healthy"},
		Step{Container: names[0], Action: StepStart, Phase: "end", Outcome: rollout.OutMoved},
		Step{Container: names[1], Action: StepReplaceStop, Phase: "begin"})
	if r := j.Plan.Names(rollout.OpReplace); !slices.Equal(r, names[1:]) {
		t.Errorf("recovery restarted %v, want %v (the one stopping and the one never reached)", r, names[1:])
	}
	if got := j.Plan.Policy.MaxUnavailable; got != 1 {
		t.Errorf("recovery's K %d, want the restart's own 1", got)
	}
	if ops := h.History(names[0]); len(ops) != 0 {
		t.Errorf("%s, restarted before the kill, was touched again: %v", names[0], ops)
	}
	for _, n := range names[1:] {
		ops := h.History(n)
		if len(ops) < 2 || ops[0].Verb != "stop" || ops[1].Verb != "start" {
			t.Errorf("%s: host ran %v, want a stop then a start (its restart)", n, ops)
		}
	}
}

// TestPlanJournalWriteFailsTheJob: a plan that cannot be journaled moves
// nothing (no plan, no moves) and fails the job saying so.
func TestPlanJournalWriteFailsTheJob(t *testing.T) {
	names := fakehost.Names(3)
	h := fakehost.New("r1", names...)
	code := fakecode.New("r1")
	fc := fakeContainers{h: h, code: code}
	a := fakeAgent(t, fc, Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()}, discardLogger())
	r := &run{job: Job{ID: "x"}, subs: map[chan Event]struct{}{}, done: make(chan struct{}), jr: a.jr}
	a.jr.Close() // every write fails from here
	plan := rollout.PlanStop(h.Lockers(nil), rollout.DefaultPolicy())
	res := a.execute(t.Context(), r, Request{}, plan, nil)
	if res.Err == nil {
		t.Fatalf("a plan that could not be journaled ran: %+v", res)
	}
	if got := len(h.Running()); got != 3 {
		t.Errorf("%d lockers running after an unjournaled plan, want all 3 untouched", got)
	}
}

// TestRollbackRefusedBeforeAJob: a rollback that cannot go anywhere is bad
// input (an InvalidError: HTTP 400, exit 2) before a job exists, with every
// reason at once.
func TestRollbackRefusedBeforeAJob(t *testing.T) {
	h := fakehost.New("r1", fakehost.Names(2)...)
	code := fakecode.New("r1")
	code.Add(codeupdate.Release{Name: "r2", Build: 2, SHA: "sha-r2", State: codeupdate.StateBad})
	fc := fakeContainers{h: h, code: code}
	a := fakeAgent(t, fc, Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()}, discardLogger())
	for _, tc := range []struct{ to, want string }{
		{"notabuild", "notabuild"},
		{"r1", "already current"},
		{"r2", "never current on this host (use update-code); it is marked bad"},
		{"", "no good release"},
	} {
		_, err := a.Submit(Request{Kind: KindRollback, To: tc.to})
		var inv InvalidError
		if !errors.As(err, &inv) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("rollback --to %q: %v, want an InvalidError saying %q", tc.to, err, tc.want)
		}
	}
	if jobs, _ := a.jr.Jobs(0); len(jobs) != 0 {
		t.Errorf("refused rollbacks left %d jobs in the journal, want none", len(jobs))
	}
}

// TestScheduleLastRunSurvivesAndQuietChecks: a schedule's last run and its
// result are kept across an agent restart, and a scheduled check-update
// with no news leaves no row in the job history (issue 22 item 13).
func TestScheduleLastRunSurvivesAndQuietChecks(t *testing.T) {
	h := fakehost.New("r1", fakehost.Names(1)...)
	code := fakecode.New("r1")
	fc := fakeContainers{h: h, code: code}
	dir := t.TempDir()
	newAgent := func() *Agent {
		a, err := New(Config{StateDir: dir, Defaults: DefaultDefaults()}, Deps{Containers: fc, Code: code, ReleaseOf: fc.releaseOf, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := newAgent()
	sc := Schedule{Name: "nightly-check", Cron: "@daily", Request: Request{Kind: KindCheckUpdate}}
	s, err := newScheduler(a, []Schedule{sc})
	if err != nil {
		t.Fatal(err)
	}
	ran := func() ScheduleInfo {
		t.Helper()
		s.fire(sc)
		id := s.infos()[0].LastJob
		if _, err := a.Wait(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		for { // follow records the end right after the job's end
			in := s.infos()[0]
			if in.Last != "running" {
				return in
			}
			runtime.Gosched()
		}
	}
	first := ran()
	if first.Last != string(JobSucceeded) {
		t.Errorf("first check: last %q, want succeeded (it says something new)", first.Last)
	}
	second := ran()
	if second.Last != "no news" {
		t.Errorf("second check with the same answer: last %q, want no news", second.Last)
	}
	jobs, _ := a.jr.Jobs(0)
	if len(jobs) != 1 || jobs[0].ID != first.LastJob {
		t.Errorf("job history after two checks, the second with no news: %d rows, want only the first", len(jobs))
	}
	a.Close()
	a2 := newAgent()
	t.Cleanup(func() { a2.Close() })
	s2, err := newScheduler(a2, []Schedule{sc})
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.infos()[0]; got.Last != "no news" || got.LastJob != second.LastJob || got.LastAt.IsZero() {
		t.Errorf("after a restart: last %q job %q at %v, want the run before the restart", got.Last, got.LastJob, got.LastAt)
	}
}

// TestAlertMetrics: the agent's version, failure counters from the start,
// last-success timestamps and lockers down that should run are on
// /metrics (issue 22 item 16).
func TestAlertMetrics(t *testing.T) {
	names := fakehost.Names(3)
	h := fakehost.New("r1", names...)
	code := fakecode.New("r1")
	fc := fakeContainers{h: h, code: code}
	a := fakeAgent(t, fc, Config{StateDir: t.TempDir(), Version: "9.9.9-test", Defaults: DefaultDefaults()}, discardLogger())
	scrape := func() string {
		rec := httptest.NewRecorder()
		a.metrics.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	before := scrape()
	for _, want := range []string{`lxcfleet_agent_info{version="9.9.9-test"} 1`, `lxcfleet_jobs_total{kind="update-code",state="failed"} 0`,
		`lxcfleet_last_success_timestamp_seconds{kind="update-code"} 0`} {
		if !strings.Contains(before, want) {
			t.Errorf("metrics before any job lack %q", want)
		}
	}
	j, err := a.Submit(Request{Kind: KindStopAll, Names: names[:1]})
	if err != nil {
		t.Fatal(err)
	}
	if j = waitJob(t, a, j.ID); j.State != JobSucceeded {
		t.Fatalf("stop-all: %s %s", j.State, j.Error)
	}
	// A locker stopped from outside while it should run.
	if _, err := h.Stop(t.Context(), names[1], time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.jr.SetDesired(names[1:2], Desired{Running: true}); err != nil {
		t.Fatal(err)
	}
	if err := a.inv.refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	after := scrape()
	if !strings.Contains(after, "lxcfleet_lockers_down_wanted 1\n") {
		t.Errorf("one locker stopped on purpose and one that should run: want lxcfleet_lockers_down_wanted 1:\n%s", grepLines(after, "down_wanted"))
	}
	if strings.Contains(after, `lxcfleet_last_success_timestamp_seconds{kind="stop-all"} 0`) {
		t.Errorf("no last success after a succeeded stop-all:\n%s", grepLines(after, "last_success"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestJournalFailureStopsTheJob: a journal that cannot be written mid-job
// stops the job (nothing new launches without its record), fails it
// saying why, and logs it (issue 18; issue 22 item 9).
func TestJournalFailureStopsTheJob(t *testing.T) {
	names := fakehost.Names(6)
	h := fakehost.New("r1", names...)
	code := fakecode.New("r1")
	_ = code.MarkProven("r1")
	fc := fakeContainers{h: h, code: code}
	logs := &syncBuffer{}
	a := fakeAgent(t, fc, Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()}, slogTo(logs))
	var starts atomic.Int32
	h.BeforeStart = func(string) {
		if starts.Add(1) == 2 {
			a.jr.Close() // the disk went read-only, say
		}
	}
	j, err := a.Submit(Request{Kind: KindRestart, Names: names, Policy: rollout.Patch{"max_unavailable": 1, "monitor": "0s"}})
	if err != nil {
		t.Fatal(err)
	}
	j, err = a.Wait(t.Context(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != JobFailed || !strings.Contains(j.Error, "journal") {
		t.Errorf("job with an unwritable journal: %s %q, want failed naming the journal", j.State, j.Error)
	}
	if n := starts.Load(); n >= int32(len(names)) {
		t.Errorf("%d lockers started after the journal failed at the 2nd: want launching stopped", n)
	}
	if len(h.Running()) != len(names) {
		t.Errorf("running after the job: %v, want all %d (the locker in flight finishes)", h.Running(), len(names))
	}
	if !strings.Contains(logs.String(), "journal write failed") {
		t.Errorf("the journal failure is not logged:\n%s", logs)
	}
}

// TestFencedJobStopsMoving: a job whose fence fails (a fleet host whose
// slot is gone) begins no new locker move: it ends cancelled, lockers in
// flight finished, the rest untouched, nothing undone (issue 21 item 1).
func TestFencedJobStopsMoving(t *testing.T) {
	names := fakehost.Names(6)
	h := fakehost.New("r1", names...)
	code := fakecode.New("r1")
	_ = code.MarkProven("r1")
	fc := fakeContainers{h: h, code: code}
	a := fakeAgent(t, fc, Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()}, discardLogger())
	var starts atomic.Int32
	h.BeforeStart = func(string) { starts.Add(1) }
	fence := func() error {
		if starts.Load() >= 2 {
			return errors.New("lease expired")
		}
		return nil
	}
	j, err := a.Submit(Request{Kind: KindRestart, Names: names, Fence: fence, Policy: rollout.Patch{"max_unavailable": 1, "monitor": "0s"}})
	if err != nil {
		t.Fatal(err)
	}
	if j, err = a.Wait(t.Context(), j.ID); err != nil {
		t.Fatal(err)
	}
	if j.State != JobCancelled {
		t.Errorf("fenced job: %s %q, want cancelled", j.State, j.Error)
	}
	if n := starts.Load(); n > 2 {
		t.Errorf("%d starts, want none begun after the fence failed (at the 2nd)", n)
	}
	if got := len(h.Running()); got != len(names) {
		t.Errorf("running after the fence: %d, want all %d", got, len(names))
	}
}

// fakeAgent is an agent over the fake host and release manager of fc, with
// cfg and log, closed when the test ends.
func fakeAgent(t *testing.T, fc fakeContainers, cfg Config, log *slog.Logger) *Agent {
	t.Helper()
	a, err := New(cfg, Deps{Containers: fc, Code: fc.code, ReleaseOf: fc.releaseOf, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// TestJobRecordShowsEachKnobOnce: GET /v1/jobs/{id} holds the resolved
// policy once (plan.policy; the request's patch is not repeated), under
// the one set of names, with every duration a string.
func TestJobRecordShowsEachKnobOnce(t *testing.T) {
	names := fakehost.Names(2)
	h := fakehost.New("r1", names...)
	code := fakecode.New("r1")
	fc := fakeContainers{h: h, code: code}
	a := fakeAgent(t, fc, Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()}, discardLogger())
	j, err := a.Submit(Request{Kind: KindRestart, Names: names, Policy: rollout.Patch{"max_unavailable": 1, "monitor": "0s", "window": nil}})
	if err == nil {
		t.Fatalf("a knob under both names was accepted")
	}
	j, err = a.Submit(Request{Kind: KindRestart, Names: names, Policy: rollout.Patch{"max_unavailable": 1, "monitor": "0s", "soak": "2s"}})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, a, j.ID)
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/jobs/"+j.ID, nil))
	body := rec.Body.String()
	var doc map[string]any
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("GET /v1/jobs/%s: %v\n%s", j.ID, err, body)
	}
	if req, _ := doc["request"].(map[string]any); req["policy"] != nil {
		t.Errorf("the record's request repeats the policy: %v", req["policy"])
	}
	pol, _ := doc["plan"].(map[string]any)["policy"].(map[string]any)
	for _, k := range rollout.Knobs() {
		if strings.Count(body, `"`+k+`"`) > 1 {
			t.Errorf("knob %s appears %d times in the job record", k, strings.Count(body, `"`+k+`"`))
		}
	}
	for _, k := range []string{"stop_timeout", "deadline", "monitor", "soak"} {
		if _, ok := pol[k].(string); !ok {
			t.Errorf("plan.policy.%s is %T (%v), want a duration string", k, pol[k], pol[k])
		}
	}
	if pol["max_unavailable"] != float64(1) || pol["soak"] != "2s" {
		t.Errorf("plan.policy: %v, want the request's knobs over the defaults", pol)
	}
	for _, old := range []string{`"window"`, `"parallel"`, `"MaxUnavailable"`} {
		if strings.Contains(body, old) {
			t.Errorf("the job record names a knob %s", old)
		}
	}
}

// aheadClock is the wall clock moved ahead by a fixed offset; it sleeps
// for real.
type aheadClock struct{ by time.Duration }

func (c aheadClock) Now() time.Time { return time.Now().Add(c.by) }
func (c aheadClock) Sleep(ctx context.Context, d time.Duration) error {
	return rollout.RealClock{}.Sleep(ctx, d)
}

// TestAgentTimesComeFromItsClock: the job's record, its steps and its
// events read the agent's one clock (Deps.Clock, which the executor gets
// too), not the wall clock.
func TestAgentTimesComeFromItsClock(t *testing.T) {
	names := fakehost.Names(2)
	h := fakehost.New("r1", names...)
	fc := fakeContainers{h: h, code: fakecode.New("r1")}
	ahead := 1000 * time.Hour
	a, err := New(Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()},
		Deps{Containers: fc, Code: fc.code, ReleaseOf: fc.releaseOf, Logger: discardLogger(), Clock: aheadClock{ahead}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	j, err := a.Submit(Request{Kind: KindRestart, Names: names, Policy: rollout.Patch{"max_unavailable": 1, "monitor": "0s", "health": "none"}})
	if err != nil {
		t.Fatal(err)
	}
	j = waitJob(t, a, j.ID)
	late := time.Now().Add(ahead / 2)
	if j.State != JobSucceeded || j.Created.Before(late) || j.Finished.Before(late) {
		t.Errorf("job %s %q: created %v, finished %v; want both from the agent's clock (after %v)", j.State, j.Error, j.Created, j.Finished, late)
	}
	events, _, stop, err := a.Follow(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if len(events) == 0 {
		t.Fatal("no events")
	}
	for _, e := range events {
		if e.Time.Before(late) {
			t.Errorf("event %s %s at %v: not from the agent's clock", e.Stage, e.Container, e.Time)
		}
	}
	steps, err := a.Steps(j.ID)
	if err != nil || len(steps) == 0 {
		t.Fatalf("steps: %v (%d)", err, len(steps))
	}
	for _, s := range steps {
		if s.Time.Before(late) {
			t.Errorf("step %+v: not from the agent's clock", s)
		}
	}
}

// recoverInterrupted journals a job of kind, interrupted, with plan and
// the steps it took, then runs a recovery to its end and returns it; the
// test fails unless the recovery succeeded.
func recoverInterrupted(t *testing.T, a *Agent, kind JobKind, plan rollout.Plan, steps ...Step) Job {
	t.Helper()
	dead := Job{ID: newJobID(time.Now().Add(-time.Minute)), Kind: kind, State: JobInterrupted, Created: time.Now().Add(-time.Minute), Plan: &plan}
	if err := a.jr.PutJob(dead); err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if err := a.jr.AddStep(dead.ID, s); err != nil {
			t.Fatal(err)
		}
	}
	j, err := a.Submit(Request{Kind: KindRecover, Trigger: "test"})
	if err != nil {
		t.Fatal(err)
	}
	j = waitJob(t, a, j.ID)
	if j.State != JobSucceeded || j.Plan == nil {
		t.Fatalf("recovery: %s %q, plan %v", j.State, j.Error, j.Plan)
	}
	return j
}
