package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"lxcfleet/codeupdate"
	"lxcfleet/internal/fakecode"
	"lxcfleet/internal/fakehost"
	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
	"lxcfleet/rollout"
)

// lateRelease commits a release of the test app whose server.js begins
// with prelude (JavaScript run before the app's own code).
func lateRelease(t *testing.T, o *testfleet.Origin, msg, prelude string) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(testfleet.AppSource(), "server.js"))
	if err != nil {
		t.Fatal(err)
	}
	o.Write(msg, map[string]string{"server.js": "'use strict';\n// " + msg + "\n" + prelude + "\n" + string(src)})
}

// The releases of the watch tests: each passes its start and its monitor
// window, and fails later.
const (
	// turns503 answers 503 from 4 s after its start on (the update's
	// monitor window is 2 s).
	turns503 = `const lateHTTP = require('http');
const lateWriteHead = lateHTTP.ServerResponse.prototype.writeHead;
const lateStart = Date.now();
lateHTTP.ServerResponse.prototype.writeHead = function (code, ...rest) {
  if (code === 200 && Date.now() - lateStart > 4000) code = 503;
  return lateWriteHead.call(this, code, ...rest);
};`
	// crashesLate exits 7 s after its start.
	crashesLate = `setTimeout(() => { console.error('late crash'); process.exit(5); }, 7000);`
	// crashesOnItsMe exits when its own /Me holds a file named crash.
	crashesOnItsMe = `setInterval(() => {
  if (require('fs').existsSync((process.env.ME || '/Me') + '/crash')) { console.error('my own /Me/crash'); process.exit(6); }
}, 200);`
)

// watchEnv is updateEnv with its agent running (Run: supervision, the
// inventory and the release watch).
func watchEnv(t *testing.T, n int, sup SupervisionConfig) (*updateEnv, *served) {
	t.Helper()
	e := newUpdateEnv(t, n)
	_ = e.agent.Close() // the env's agent never ran: this one runs
	d := e.agent.cfg.Defaults
	layout := e.layout
	s := serveAgent(t, Config{StateDir: t.TempDir(), KeepReleases: 10, Defaults: d, InventoryInterval: 200 * time.Millisecond, Supervision: sup},
		Deps{Containers: e.host, Code: e.code, ReleaseOf: func(pid int) (string, bool, error) { return mounts.ReleaseOfPID(pid, layout) }})
	e.agent = s.a
	return e, s
}

// watchPolicy is the updates' policy: a 2 s monitor window, checks every
// 250 ms, and a release watch of a minute.
var watchPolicy = rollout.Patch{"monitor": "2s", "interval": "250ms", "release_watch": "1m", "deadline": "10s"}

// watchRollback waits for the rollback job the release watch starts, to
// its end, and returns it: the first one begun after after.
func watchRollback(t *testing.T, a *Agent, after time.Time, within time.Duration) Job {
	t.Helper()
	var id string
	eventually(t, within, func() (bool, string) {
		jobs, err := a.Jobs(0)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			if j.Kind == KindRollback && strings.HasPrefix(j.Trigger, "release watch") && j.Created.After(after) {
				id = j.ID
				return true, ""
			}
		}
		return false, fmt.Sprintf("no rollback by the release watch within %v (supervision rollbacks: %d)", within, len(supervisionJobs(t, a, KindRollback)))
	})
	return waitJob(t, a, id)
}

// TestReleaseWatch is issue 22 item 7 on real lockers: releases that pass
// their 2 s monitor window and fail after it. One that turns 503 is
// rolled back by the release watch and marked bad; one that crashes 7 s
// after its start is rolled back at the first crashes, not after
// supervision's start limit; one locker crashing alone on its own /Me
// data is quarantined and the release stays.
func TestReleaseWatch(t *testing.T) {
	e, _ := watchEnv(t, 8, SupervisionConfig{Burst: 2, Interval: time.Minute, Backoff: 200 * time.Millisecond})
	relA, err := e.code.Current()
	if err != nil {
		t.Fatal(err)
	}
	update := func(t *testing.T) (Job, codeupdate.Release) {
		t.Helper()
		j := e.run(t, Request{Kind: KindUpdate, Strategy: StrategyRolling, Trigger: "test", Policy: watchPolicy})
		if j.State != JobSucceeded {
			t.Fatalf("update: %s %q, want succeeded (the release fails only after its monitor window)", j.State, j.Error)
		}
		rel, err := e.code.Current()
		if err != nil {
			t.Fatal(err)
		}
		if rel.State != codeupdate.StateProven {
			t.Fatalf("%s after the update is %s, want proven", rel.Name, rel.State)
		}
		// The job says that the release stays watched (its last stage).
		steps, _ := e.agent.Steps(j.ID)
		if stepIndex(steps, func(s Step) bool {
			return s.Action == "release-watch" && strings.Contains(s.Outcome, "watched for 1m0s")
		}) < 0 {
			t.Errorf("update %s does not say that %s stays watched", j.ID, rel.Name)
		}
		return j, rel
	}
	rolledBack := func(t *testing.T, rb Job, bad codeupdate.Release) {
		t.Helper()
		if rb.State != JobSucceeded {
			t.Errorf("the watch's rollback %s: %s %q", rb.ID, rb.State, rb.Error)
		}
		if r, _ := e.code.Release(bad.Name); r.State != codeupdate.StateBad {
			t.Errorf("%s after the watch's rollback is %s, want bad", bad.Name, r.State)
		}
		if cur, _ := e.code.Current(); cur.Name != relA.Name {
			t.Errorf("current after the watch's rollback: %s, want %s", cur.Name, relA.Name)
		}
		e.wantBuild(t, relA)
	}

	t.Run("a release that turns 503 after its monitor window is rolled back", func(t *testing.T) {
		lateRelease(t, e.origin, "build B: 503 after 4s", turns503)
		j, relB := update(t)
		rb := watchRollback(t, e.agent, j.Created, 30*time.Second)
		t.Logf("update %s ended %s; the watch's rollback %s began %s after it: %q", j.ID, j.Finished.Format(time.TimeOnly),
			rb.ID, rb.Created.Sub(j.Finished).Round(time.Millisecond), rb.Trigger)
		if !strings.Contains(rb.Trigger, "unhealthy") || !strings.Contains(rb.Trigger, relB.Name) {
			t.Errorf("the watch's rollback trigger %q: want the release and the unhealthy lockers named", rb.Trigger)
		}
		rolledBack(t, rb, relB)
	})

	t.Run("a release that crashes 7s after its start is rolled back at the first crashes", func(t *testing.T) {
		lateRelease(t, e.origin, "build C: crashes after 7s", crashesLate)
		p := e.startProber()
		j, relC := update(t)
		rb := watchRollback(t, e.agent, j.Created, 30*time.Second)
		most, rounds, who := p.finish()
		t.Logf("update %s ended %s; the watch's rollback %s began %s after it: %q; most lockers down at once: %d of %d (%v) over %d prober rounds",
			j.ID, j.Finished.Format(time.TimeOnly), rb.ID, rb.Created.Sub(j.Finished).Round(time.Millisecond), rb.Trigger, most, len(e.names), who, rounds)
		// The first wave (W = K lockers started together) crashes at once;
		// the rollback must begin before many more do: at most K and the
		// rule's two.
		if most > e2eWindow+2 {
			t.Errorf("the prober saw %d lockers down at once (%v), want at most K+2 = %d", most, who, e2eWindow+2)
		}
		// Without the watch, supervision rolls back only once two lockers
		// hit their start limit: 2 restarts, 7 s each, after their crash.
		if d := rb.Created.Sub(j.Finished); d > 12*time.Second {
			t.Errorf("the watch rolled back %v after the update: want it at the first crashes (7 s after the first starts)", d)
		}
		rolledBack(t, rb, relC)
	})

	t.Run("one locker crashing on its own /Me is quarantined, the release stays", func(t *testing.T) {
		lateRelease(t, e.origin, "build D: crashes on its own /Me/crash", crashesOnItsMe)
		since := time.Now()
		_, relD := update(t)
		lonely := e.names[2]
		if err := os.WriteFile(filepath.Join(e.layout.MeDir(lonely), "crash"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		eventually(t, 40*time.Second, func() (bool, string) {
			if slices.Contains(e.agent.sup.GaveUp(), lonely) {
				return true, ""
			}
			return false, fmt.Sprintf("%s crashing on its own /Me is not quarantined (supervision restarts: %d)", lonely, len(supervisionJobs(t, e.agent, KindStartAll)))
		})
		if rw := e.agent.watch.watching(); rw == nil || rw.Release != relD.Name {
			t.Errorf("the watch of %s ended with one locker crashing alone: %+v", relD.Name, rw)
		}
		for _, j := range append(supervisionJobs(t, e.agent, KindRollback), watchJobs(t, e.agent)...) {
			if j.Created.After(since) {
				t.Errorf("one locker crashing alone rolled the release back: job %s %q", j.ID, j.Trigger)
			}
		}
		if r, _ := e.code.Release(relD.Name); r.State != codeupdate.StateProven {
			t.Errorf("%s is %s with one locker crashing alone, want still proven", relD.Name, r.State)
		}
		for _, n := range e.names {
			if n == lonely {
				continue
			}
			if _, err := e.settledHealth(n); err != nil {
				t.Errorf("%s: %v, want healthy on %s", n, err, relD.Name)
			}
		}
	})
}

// watchJobs returns the rollbacks the release watch started.
func watchJobs(t *testing.T, a *Agent) []Job { return jobsTriggered(t, a, "release watch") }

// jobsTriggered returns the agent's jobs whose trigger starts with prefix,
// newest first.
func jobsTriggered(t *testing.T, a *Agent, prefix string) []Job {
	t.Helper()
	jobs, err := a.Jobs(0)
	if err != nil {
		t.Fatal(err)
	}
	var out []Job
	for _, j := range jobs {
		if strings.HasPrefix(j.Trigger, prefix) {
			out = append(out, j)
		}
	}
	return out
}

// TestWatchTrips is the release watch's rule.
func TestWatchTrips(t *testing.T) {
	for _, tc := range []struct {
		failed, watched int
		ratio           float64
		want            bool
	}{
		{1, 16, 0.1, false}, // one locker alone: quarantine, not rollback
		{1, 2, 0, false},
		{2, 16, 0.1, true},
		{2, 20, 0.1, false}, // not more than the ratio
		{3, 20, 0.1, true},
		{4, 4, 1, false}, // ratio 1 never trips
		{2, 2, 0.5, true},
	} {
		if got := watchTrips(tc.failed, tc.watched, tc.ratio); got != tc.want {
			t.Errorf("watchTrips(%d, %d, %v): got %v, want %v", tc.failed, tc.watched, tc.ratio, got, tc.want)
		}
	}
}

// TestReleaseWatchGlue drives the release watch's rounds by hand on the
// fake host and the fake release manager (no root, LXC or npm): two of
// five lockers found stopped trip a rollback job that marks the release
// bad, or with failure_action pause only a log; the watch is kept in the
// journal across an agent restart, holds still during a host shutdown,
// and ends when current moves.
func TestReleaseWatchGlue(t *testing.T) {
	setupWith := func(t *testing.T, state string, wrap func(*agentRef, fakeContainers) Containers) (*Agent, *fakehost.Host, *fakecode.Code, []string) {
		names := fakehost.Names(5)
		h := fakehost.New("r1", names...)
		code := fakecode.New("r1")
		if err := code.MarkProven("r1"); err != nil {
			t.Fatal(err)
		}
		code.Add(codeupdate.Release{Name: "r2", Build: 2, SHA: "sha-r2", State: codeupdate.StateProven})
		if _, err := code.Switch(t.Context(), code.Nth(1), "test"); err != nil {
			t.Fatal(err)
		}
		_ = h.Switch(t.Context(), "r2", "test")
		fc := fakeContainers{h: h, code: code}
		var cs Containers = fc
		ref := &agentRef{}
		if wrap != nil {
			cs = wrap(ref, fc)
		}
		d := DefaultDefaults()
		d.Policy.Health, d.Policy.Monitor = "none", 0
		a, err := New(Config{StateDir: state, Defaults: d}, Deps{Containers: cs, Code: code, ReleaseOf: fc.releaseOf, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ref.a = a
		t.Cleanup(func() { a.Close() })
		if err := a.jr.SetDesired(names, Desired{Running: true}); err != nil {
			t.Fatal(err)
		}
		return a, h, code, names
	}
	setup := func(t *testing.T, state string) (*Agent, *fakehost.Host, *fakecode.Code, []string) {
		return setupWith(t, state, nil)
	}
	pol := rollout.DefaultPolicy()
	pol.Health, pol.ReleaseWatch = "none", time.Minute
	crash := func(t *testing.T, h *fakehost.Host, names ...string) {
		for _, n := range names {
			if _, err := h.Stop(t.Context(), n, time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("two crashed of five roll back", func(t *testing.T) {
		a, h, code, names := setup(t, t.TempDir())
		a.watch.begin("r2", "job-u", names, pol)
		crash(t, h, names[0])
		a.watch.round(t.Context())
		if jobs := watchJobs(t, a); len(jobs) != 0 {
			t.Fatalf("one crashed locker of five rolled back: %+v", jobs[0])
		}
		// The host overview shows the watch and the locker failing it.
		if wi := a.hostInfo().ReleaseWatch; wi == nil || wi.Release != "r2" || wi.Lockers != 5 || len(wi.Failed) != 1 || !strings.HasPrefix(wi.Failed[0], names[0]+" (") {
			t.Errorf("GET /v1/host's release_watch: %+v, want r2, 5 lockers, %s failing", wi, names[0])
		}
		crash(t, h, names[1])
		a.watch.round(t.Context())
		jobs := watchJobs(t, a)
		if len(jobs) != 1 || jobs[0].Kind != KindRollback || !strings.Contains(jobs[0].Trigger, "2 of 5 lockers on r2 failed (2 crashed, 0 unhealthy)") {
			t.Fatalf("after two crashed of five: %+v, want one rollback job naming them", jobs)
		}
		j := waitJob(t, a, jobs[0].ID)
		if j.State != JobSucceeded || code.State("r2") != codeupdate.StateBad || currentName(code) != "r1" {
			t.Errorf("the watch's rollback: %s %q; r2 %s, current %s; want succeeded, r2 bad, current r1", j.State, j.Error, code.State("r2"), currentName(code))
		}
		if rw := a.watch.watching(); rw != nil || a.hostInfo().ReleaseWatch != nil {
			t.Errorf("the watch goes on after its rollback: %+v", rw)
		}
	})

	t.Run("an operator's stop-all inside a round is no crash", func(t *testing.T) {
		var once sync.Once
		a, _, code, names := setupWith(t, t.TempDir(), func(ref *agentRef, fc fakeContainers) Containers {
			// The operator's stop-all, before the round's first check and
			// every other one.
			return hookedContainers{fakeContainers: fc, beforeCheck: func() {
				once.Do(func() {
					j := waitJob(t, ref.a, submit(t, ref.a, Request{Kind: KindStopAll, Names: fc.names()[:3], Trigger: "test"}))
					if j.State != JobSucceeded {
						t.Errorf("stop-all inside a round: %s %s", j.State, j.Error)
					}
				})
			}}
		})
		a.watch.begin("r2", "job-u", names, pol)
		a.watch.round(t.Context()) // its desired states read before the stop-all
		a.watch.round(t.Context())
		if jobs := watchJobs(t, a); len(jobs) != 0 || code.State("r2") != codeupdate.StateProven {
			t.Errorf("three lockers of five stopped by an operator inside a round: jobs %+v, r2 %s; want none, r2 proven", jobs, code.State("r2"))
		}
		if a.watch.watching() == nil {
			t.Errorf("the watch ended after an operator's stop-all")
		}
	})

	t.Run("a snapshot read inside an operator's start-all is not judged", func(t *testing.T) {
		var once sync.Once
		a, h, code, names := setupWith(t, t.TempDir(), func(ref *agentRef, fc fakeContainers) Containers {
			// The 5 s refresh, falling inside the start-all before its
			// first start: it reads three lockers stopped.
			return hookedContainers{fakeContainers: fc, beforeStart: func() {
				once.Do(func() {
					if err := ref.a.inv.refresh(t.Context()); err != nil {
						t.Errorf("refreshing the inventory inside a start: %v", err)
					}
				})
			}}
		})
		a.watch.begin("r2", "job-u", names, pol)
		crash(t, h, names[:3]...)
		j := waitJob(t, a, submit(t, a, Request{Kind: KindStartAll, Names: names[:3], Trigger: "test"}))
		if j.State != JobSucceeded {
			t.Fatalf("start-all: %s %s", j.State, j.Error)
		}
		a.watch.round(t.Context()) // the snapshot says stopped; they run
		if jobs := watchJobs(t, a); len(jobs) != 0 || code.State("r2") != codeupdate.StateProven {
			t.Errorf("a round judged a snapshot read inside a start-all: jobs %+v, r2 %s; want none, r2 proven", jobs, code.State("r2"))
		}
	})

	t.Run("failure_action pause: no rollback", func(t *testing.T) {
		a, h, code, names := setup(t, t.TempDir())
		p := pol
		p.FailureAction = rollout.Pause
		a.watch.begin("r2", "job-u", names, p)
		crash(t, h, names[:3]...)
		a.watch.round(t.Context())
		if jobs := watchJobs(t, a); len(jobs) != 0 || code.State("r2") != codeupdate.StateProven {
			t.Errorf("pause: jobs %+v, r2 %s; want none, still proven", jobs, code.State("r2"))
		}
		if a.watch.watching() != nil {
			t.Errorf("pause: the watch goes on after it tripped")
		}
	})

	t.Run("kept across an agent restart; holds during a host shutdown; ends when current moves", func(t *testing.T) {
		state := t.TempDir()
		a, _, _, names := setup(t, state)
		a.watch.begin("r2", "job-u", names, pol)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		a, h, code, _ := setup(t, state)
		rw := a.watch.watching()
		if rw == nil || rw.Release != "r2" || rw.Job != "job-u" || len(rw.Lockers) != 5 || rw.Policy.ReleaseWatch != time.Minute {
			t.Fatalf("after an agent restart the watch is %+v, want r2's from job-u", rw)
		}
		if err := a.beginHostShutdown(); err != nil {
			t.Fatal(err)
		}
		crash(t, h, names...)
		a.watch.round(t.Context())
		if jobs := watchJobs(t, a); len(jobs) != 0 {
			t.Errorf("the watch acted during a host shutdown: %+v", jobs)
		}
		if err := a.endHostShutdown(); err != nil {
			t.Fatal(err)
		}
		code.SetCurrent("r1")
		a.watch.round(t.Context())
		if a.watch.watching() != nil || len(watchJobs(t, a)) != 0 {
			t.Errorf("current moved: the watch goes on (%+v) or acted (%d jobs)", a.watch.watching(), len(watchJobs(t, a)))
		}
	})
}

// currentName is the name of code's current release ("" when none).
func currentName(code *fakecode.Code) string {
	r, _ := code.Current()
	return r.Name
}

// countingContainers counts CheckRunning calls by locker.
type countingContainers struct {
	fakeContainers
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingContainers) CheckRunning(ctx context.Context, name string, hc lxcctl.HealthCheck) error {
	c.mu.Lock()
	c.calls[name]++
	c.mu.Unlock()
	return c.fakeContainers.CheckRunning(ctx, name, hc)
}

// TestWatchChecksInTurn: at N=50 a round of the watch (interval 1 s)
// health-checks 20 lockers, the next 20 in turn, so three rounds check
// each locker once or twice and none three times; at N=20 a round checks
// every locker.
func TestWatchChecksInTurn(t *testing.T) {
	for _, tc := range []struct{ n, rounds, perRound int }{{50, 3, 20}, {20, 2, 20}} {
		names := fakehost.Names(tc.n)
		h := fakehost.New("r1", names...)
		code := fakecode.New("r1")
		if err := code.MarkProven("r1"); err != nil {
			t.Fatal(err)
		}
		cc := &countingContainers{fakeContainers: fakeContainers{h: h, code: code}, calls: map[string]int{}}
		d := DefaultDefaults()
		d.Policy.Health, d.Policy.Monitor = "none", 0
		a, err := New(Config{StateDir: t.TempDir(), Defaults: d}, Deps{Containers: cc, Code: code, ReleaseOf: cc.releaseOf, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.jr.SetDesired(names, Desired{Running: true}); err != nil {
			t.Fatal(err)
		}
		pol := rollout.DefaultPolicy()
		pol.Health, pol.ReleaseWatch, pol.Interval = "none", time.Minute, 500*time.Millisecond
		a.watch.begin("r1", "job-u", names, pol)
		total := 0
		for r := range tc.rounds {
			a.watch.round(t.Context())
			cc.mu.Lock()
			sum := 0
			for _, c := range cc.calls {
				sum += c
			}
			cc.mu.Unlock()
			if got := sum - total; got != min(tc.perRound, tc.n) {
				t.Errorf("N=%d, round %d: %d lockers checked, want %d", tc.n, r+1, got, min(tc.perRound, tc.n))
			}
			total = sum
		}
		for _, n := range names {
			if c := cc.calls[n]; c < 1 || c > (tc.rounds*tc.perRound+tc.n-1)/tc.n {
				t.Errorf("N=%d: %s checked %d times in %d rounds, want 1 to %d", tc.n, n, c, tc.rounds, (tc.rounds*tc.perRound+tc.n-1)/tc.n)
			}
		}
		a.Close()
	}
}

// TestProcStartTimeMatchesProcfs: the start time from the boot time read
// once is procfs' own StartTime (which reads /proc/stat at every call).
func TestProcStartTimeMatchesProcfs(t *testing.T) {
	p, err := procfs.NewProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Stat()
	if err != nil {
		t.Fatal(err)
	}
	secs, err := st.StartTime()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := procStartTime(os.Getpid()), time.Unix(int64(secs), 0); !got.Equal(want) {
		t.Fatalf("procStartTime = %v, procfs says %v", got, want)
	}
}
