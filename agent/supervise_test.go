package agent

import (
	"bytes"
	"context"
	"fmt"
	"lxcfleet/rollout"
	"slices"
	"strings"
	"testing"
	"time"

	"lxcfleet/codeupdate"
	"lxcfleet/internal/fakecode"
	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
)

// supervisionJobs returns the jobs supervision started, newest first.
func supervisionJobs(t *testing.T, a *Agent, kind JobKind) []Job {
	t.Helper()
	var out []Job
	for _, j := range jobsTriggered(t, a, "supervision") {
		if j.Kind == kind {
			out = append(out, j)
		}
	}
	return out
}

// TestSupervision: a locker killed from outside comes back within its
// backoff, through a journaled start-all job; a locker that keeps
// crashing is restarted up to its start limit, then left alone.
func TestSupervision(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	good := testfleet.Names(f.Add(2, testfleet.Normal))
	crash := f.Add(1, testfleet.Crash)[0].Name
	s := serveAgent(t, Config{LXCPath: f.Path, InventoryInterval: 200 * time.Millisecond,
		Supervision: SupervisionConfig{Burst: 2, Interval: time.Minute, Backoff: 300 * time.Millisecond}}, Deps{Containers: f.Host})
	all := append(slices.Clone(good), crash)
	j, err := s.a.Submit(Request{Kind: KindStartAll, Names: all, Policy: rollout.Patch{"health": "http://127.0.0.1:{port}/healthz", "deadline": Duration(5 * time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, s.a, j.ID)

	// Killed from outside (not a job): its desired state is running.
	if _, err := f.Host.Stop(context.Background(), good[0], 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() (bool, string) {
		if st, _ := f.Host.State(context.Background(), good[0]); st == lxcctl.StateRunning {
			return true, ""
		}
		return false, fmt.Sprintf("%s killed from outside is not running again after 20s", good[0])
	})
	// The crashing locker: 2 restarts (the start limit), then given up.
	eventually(t, 20*time.Second, func() (bool, string) {
		return slices.Contains(s.a.sup.GaveUp(), crash), fmt.Sprintf("supervision did not give up on %s (restarts: %d jobs)", crash, len(supervisionJobs(t, s.a, KindStartAll)))
	})
	n := len(supervisionJobs(t, s.a, KindStartAll))
	// A negative check: 1.5 s in which no restart may come (the backoff
	// is 100 ms here). This sleep measures a quiet period; nothing waits
	// on it for an event.
	time.Sleep(1500 * time.Millisecond)
	jobs := supervisionJobs(t, s.a, KindStartAll)
	if len(jobs) != n {
		t.Errorf("supervision went on after giving up: %d jobs, then %d", n, len(jobs))
	}
	restarted := 0
	for _, j := range jobs {
		if slices.Contains(j.Request.Names, crash) {
			restarted++
		}
	}
	if restarted != 2 {
		t.Errorf("%s restarted %d times, want the start limit, 2", crash, restarted)
	}
	if st, _ := f.Host.State(context.Background(), good[1]); st != lxcctl.StateRunning {
		t.Errorf("%s (never touched) is %s", good[1], st)
	}
}

// TestSupervisionRollsBackACrashLoop: when lockers that ran healthy on
// the previous release crash-loop on the current one (a regression), past
// the failure ratio, supervision rolls the release back (marked bad)
// instead of restarting them in a loop.
func TestSupervisionRollsBackACrashLoop(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	names := testfleet.Names(f.Add(2, testfleet.Normal))
	code := fakecode.New("1-old")
	if err := code.MarkProven("1-old"); err != nil {
		t.Fatal(err)
	}
	d := testDefaults()
	d.Policy.Deadline, d.Policy.Monitor = 3*time.Second, 500*time.Millisecond
	d.Policy.Health = "http://127.0.0.1:{port}/healthz"
	s := serveAgent(t, Config{LXCPath: f.Path, InventoryInterval: 200 * time.Millisecond, HealthInterval: 200 * time.Millisecond, Defaults: d,
		Supervision: SupervisionConfig{Burst: 1, Interval: time.Minute, Backoff: 200 * time.Millisecond}}, Deps{Containers: f.Host, Code: code, ReleaseOf: code.ReleaseOf})
	j, err := s.a.Submit(Request{Kind: KindStartAll, Names: names})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, s.a, j.ID)
	// Seen healthy on 1-old (through the monitor window).
	eventually(t, 20*time.Second, func() (bool, string) {
		s.a.sup.mu.Lock()
		defer s.a.sup.mu.Unlock()
		for _, n := range names {
			if p, ok := s.a.sup.prior(n, "2-new"); !ok || p != (verdict{"1-old", true}) {
				return false, fmt.Sprintf("%s not seen healthy on 1-old after 20s: %+v", n, s.a.sup.verdicts[n])
			}
		}
		return true, ""
	})
	// 2-new, proven (it passed its window once: starting it applies no
	// policy, so only supervision can find out), crashes on both.
	rel, err := code.Build(context.Background(), "2-new", func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := code.Switch(context.Background(), rel, "test"); err != nil {
		t.Fatal(err)
	}
	if err := code.MarkProven("2-new"); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, err := f.Host.EditConfig(n, func(old []byte) ([]byte, error) {
			return bytes.Replace(old, []byte("MODE=normal"), []byte("MODE=crash"), 1), nil
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Host.Stop(context.Background(), n, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 40*time.Second, func() (bool, string) {
		if len(supervisionJobs(t, s.a, KindRollback)) > 0 {
			return true, ""
		}
		return false, fmt.Sprintf("no rollback after the lockers crash-looped on 2-new (supervision jobs: %d)", len(supervisionJobs(t, s.a, KindStartAll)))
	})
	rb := waitJob(t, s.a, supervisionJobs(t, s.a, KindRollback)[0].ID)
	if !strings.Contains(rb.Trigger, "2 of 2 lockers crash-loop on 2-new") {
		t.Errorf("rollback trigger %q, want 2 of 2 lockers named", rb.Trigger)
	}
	if code.State("2-new") != codeupdate.StateBad {
		t.Errorf("2-new is %s after supervision's rollback (job %s %q), want bad", code.State("2-new"), rb.State, rb.Error)
	}
	if cur, _ := code.Current(); cur.Name != "1-old" {
		t.Errorf("current %s, want 1-old", cur.Name)
	}
}

// TestSupervisionQuarantinesALonelyCrashLoop: one locker of four
// crash-looping on a proven release is quarantined (left stopped, shown
// with the reason) and the release stays: it is not marked bad and not
// rolled back.
func TestSupervisionQuarantinesALonelyCrashLoop(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	names := testfleet.Names(f.Add(3, testfleet.Normal))
	crash := f.Add(1, testfleet.Crash)[0].Name
	code := fakecode.New("1-old")
	rel, err := code.Build(context.Background(), "2-new", func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := code.Switch(context.Background(), rel, "test"); err != nil {
		t.Fatal(err)
	}
	if err := code.MarkProven("2-new"); err != nil {
		t.Fatal(err)
	}
	d := testDefaults()
	d.Policy.Deadline = 5 * time.Second
	d.Policy.Health = "http://127.0.0.1:{port}/healthz"
	s := serveAgent(t, Config{LXCPath: f.Path, InventoryInterval: 200 * time.Millisecond, Defaults: d,
		Supervision: SupervisionConfig{Burst: 1, Interval: time.Minute, Backoff: 200 * time.Millisecond}}, Deps{Containers: f.Host, Code: code, ReleaseOf: code.ReleaseOf})
	j, err := s.a.Submit(Request{Kind: KindStartAll, Names: append(slices.Clone(names), crash)})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, s.a, j.ID)
	// The inventory refresh that shows the quarantine comes after the
	// supervision tick that decided it (one goroutine runs both).
	eventually(t, 40*time.Second, func() (bool, string) {
		if l, ok := s.a.inv.get(crash); ok && l.Quarantined != "" {
			if !strings.Contains(l.Quarantined, "2-new") {
				t.Errorf("quarantine reason %q: want the release named", l.Quarantined)
			}
			return true, ""
		}
		return false, fmt.Sprintf("%s is not quarantined after 40s (supervision jobs: %d)", crash, len(supervisionJobs(t, s.a, KindStartAll)))
	})
	if rb := supervisionJobs(t, s.a, KindRollback); len(rb) != 0 {
		t.Errorf("supervision rolled back a good release for one crash-looping locker: %s %q", rb[0].ID, rb[0].Trigger)
	}
	if st := code.State("2-new"); st != codeupdate.StateProven {
		t.Errorf("2-new is %s, want still proven", st)
	}
	if cur, _ := code.Current(); cur.Name != "2-new" {
		t.Errorf("current %s, want 2-new", cur.Name)
	}
	if code, body := s.do(t, "GET", "/v1/containers", ""); code != 200 || !strings.Contains(string(body), `"quarantined": "quarantined: it kept stopping`) {
		t.Errorf("GET /v1/containers: %d, want the quarantine shown:\n%s", code, body)
	}
	for _, n := range names {
		if st, _ := f.Host.State(context.Background(), n); st != lxcctl.StateRunning {
			t.Errorf("%s is %s, want RUNNING", n, st)
		}
	}
}

// TestSupervisionRemembersAcrossAgentRestart: a crash-looping locker's
// restarts counted by one agent still count after an agent restart: the
// start limit is reached across both, not reset.
func TestSupervisionRemembersAcrossAgentRestart(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	crash := f.Add(1, testfleet.Crash)[0].Name
	cfg := Config{LXCPath: f.Path, StateDir: t.TempDir(), InventoryInterval: 200 * time.Millisecond,
		Supervision: SupervisionConfig{Burst: 3, Interval: time.Minute, Backoff: 300 * time.Millisecond}}
	restartsOf := func(a *Agent) int {
		n := 0
		for _, j := range supervisionJobs(t, a, KindStartAll) {
			if slices.Contains(j.Request.Names, crash) {
				n++
			}
		}
		return n
	}
	t.Run("first agent", func(t *testing.T) {
		s := serveAgent(t, cfg, Deps{Containers: f.Host})
		j, err := s.a.Submit(Request{Kind: KindStartAll, Names: []string{crash}, Policy: rollout.Patch{"deadline": Duration(3 * time.Second)}})
		if err != nil {
			t.Fatal(err)
		}
		waitJob(t, s.a, j.ID)
		eventually(t, 30*time.Second, func() (bool, string) {
			if restartsOf(s.a) >= 2 {
				return true, ""
			}
			return false, fmt.Sprintf("supervision restarted %s %d times in 30s, want 2", crash, restartsOf(s.a))
		})
		for _, j := range supervisionJobs(t, s.a, KindStartAll) {
			waitJob(t, s.a, j.ID) // no job cut short by the restart
		}
	}) // the first agent stops here
	s := serveAgent(t, cfg, Deps{Containers: f.Host})
	eventually(t, 40*time.Second, func() (bool, string) {
		if slices.Contains(s.a.sup.GaveUp(), crash) {
			return true, ""
		}
		return false, fmt.Sprintf("the second agent did not give up on %s (restarts: %d)", crash, restartsOf(s.a))
	})
	if n := restartsOf(s.a); n != 3 {
		t.Errorf("%s restarted %d times across an agent restart, want the start limit, 3", crash, n)
	}
}
