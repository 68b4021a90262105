package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"lxcfleet/heldsock"
	"lxcfleet/internal/fakecode"
	"lxcfleet/internal/fakehost"
	"lxcfleet/rollout"
)

// fakeHeld is a host's held sockets for the sleeper's rule: a spec per
// locker (its folder in dir, port 20000+i), no watch.
type fakeHeld struct{ specs map[string]heldsock.Spec }

func (f fakeHeld) Specs() (map[string]heldsock.Spec, error) { return f.specs, nil }
func (f fakeHeld) Watch(ctx context.Context, names []string) (<-chan string, error) {
	return make(chan string), nil
}

// TestSleeperIdleRule is the sleeper's idle rule on the fake host, one
// tick at a time: of three running lockers all last seen active more
// than idle_stop ago, the one with a connection open now (or closed just
// now: TIME_WAIT) stays awake, and the two without go to sleep through
// one stop-all job ("idle"), each with its record; a tick while a job runs
// puts nobody to sleep.
// sleeperEnv is an agent over three running lockers with held sockets on
// the fake host (idle_stop an hour), after an operator's start-all and a
// refresh of the inventory; it returns the start-all's policy too.
func sleeperEnv(t *testing.T) (*Agent, *fakehost.Host, fakeHeld, string, []string, rollout.Policy) {
	t.Helper()
	names := fakehost.Names(3)
	h := fakehost.New("r1", names...)
	code := fakecode.New("r1")
	_ = code.MarkProven("r1")
	fc := fakeContainers{h: h, code: code}
	dir := t.TempDir()
	held := fakeHeld{specs: map[string]heldsock.Spec{}}
	for i, n := range names {
		held.specs[n] = heldsock.Spec{Name: n, Dir: filepath.Join(dir, n, "held"), Address: "127.0.0.1", Port: 20000 + i}
		if err := os.MkdirAll(held.specs[n].Dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	defaults := DefaultDefaults()
	defaults.Policy.Monitor = 0
	a, err := New(Config{StateDir: t.TempDir(), Defaults: defaults, Sleep: SleepConfig{IdleStop: time.Hour}},
		Deps{Containers: fc, Code: code, ReleaseOf: fc.releaseOf, Held: held, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ctx := t.Context()
	// Desired running (a start-all), then the snapshot the sleeper reads.
	j, err := a.Submit(Request{Kind: KindStartAll, Names: names, Trigger: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if j, err = a.Wait(ctx, j.ID); err != nil || j.State != JobSucceeded {
		t.Fatalf("start-all: %v %s %s", err, j.State, j.Error)
	}
	if err := a.inv.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	return a, h, held, dir, names, j.Plan.Policy
}

// seenLongAgo makes every locker's last connection two hours old.
func seenLongAgo(s *sleeper, names []string) {
	s.mu.Lock()
	for _, n := range names {
		s.lastActive[n] = time.Now().Add(-2 * time.Hour)
	}
	s.mu.Unlock()
}

// idleAfterFreshReading ticks the sleeper on the inventory's last reading,
// which a job ran after (what): it must put nobody to sleep; then on a
// reading taken now. It returns the sleeper's idle jobs.
func idleAfterFreshReading(t *testing.T, a *Agent, what string) []Job {
	t.Helper()
	a.sleep.tick(t.Context())
	if idle := jobsTriggered(t, a, "idle"); len(idle) != 0 {
		t.Fatalf("the sleeper acted on a reading taken before %s: %s %s", what, idle[0].ID, idle[0].Trigger)
	}
	if err := a.inv.refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	a.sleep.tick(t.Context())
	return jobsTriggered(t, a, "idle")
}

func TestSleeperIdleRule(t *testing.T) {
	a, h, held, dir, names, startAll := sleeperEnv(t)
	ctx := t.Context()
	s := a.sleep
	// l00 has a connection open now; l01, l02 none.
	s.activity = func(string) (map[int]time.Duration, error) {
		return map[int]time.Duration{held.specs[names[0]].Port: 0}, nil
	}
	// A job runs: nobody goes to sleep.
	seenLongAgo(s, names)
	release := make(chan struct{})
	h.BeforeStart = func(string) { <-release }
	busy, err := a.Submit(Request{Kind: KindRestart, Names: names[:1], Trigger: "test", Policy: rollout.Patch{"monitor": "0s"}})
	if err != nil {
		t.Fatal(err)
	}
	s.tick(ctx)
	close(release)
	if busy, err = a.Wait(ctx, busy.ID); err != nil || busy.State != JobSucceeded {
		t.Fatalf("restart: %v %s %s", err, busy.State, busy.Error)
	}
	h.BeforeStart = nil
	for _, n := range names {
		if s.isSleeping(n) {
			t.Errorf("%s went to sleep while job %s ran", n, busy.ID)
		}
	}

	// The reading before that job is not judged; the one after it is.
	seenLongAgo(s, names)
	idle := idleAfterFreshReading(t, a, "job "+busy.ID)
	if len(idle) != 1 {
		t.Fatalf("%d idle jobs, want 1", len(idle))
	}
	if j, err := a.Wait(ctx, idle[0].ID); err != nil || j.State != JobSucceeded {
		t.Fatalf("idle job: %v %s %s", err, j.State, j.Error)
	}
	running := h.Running()
	for i, n := range names {
		want := i != 0 // asleep
		if got := s.isSleeping(n); got != want {
			t.Errorf("%s sleeping: got %v, want %v", n, got, want)
		}
		if _, rec := heldsock.AsleepIn(filepath.Join(dir, n)); rec != want {
			t.Errorf("%s has a %s: got %v, want %v", n, heldsock.AsleepFile, rec, want)
		}
		if got := slices.Contains(running, n); got == want {
			t.Errorf("%s running: got %v, want %v", n, got, !want)
		}
	}

	// A connection pending at both sleepers: one wake job starts them
	// through the default policy's start pacing (W), like any start.
	s.mu.Lock()
	s.wake[names[1]], s.wake[names[2]] = true, true
	s.mu.Unlock()
	s.wakeDue(ctx)
	jobs, err := a.Jobs(0)
	if err != nil {
		t.Fatal(err)
	}
	var wake *Job
	for _, j := range jobs {
		if strings.HasPrefix(j.Trigger, "wake") {
			if wake != nil {
				t.Fatalf("more than one wake job")
			}
			j := j
			wake = &j
		}
	}
	if wake == nil {
		t.Fatal("no wake job")
	}
	j, err := a.Wait(ctx, wake.ID)
	if err != nil || j.State != JobSucceeded {
		t.Fatalf("wake job: %v %s %s", err, j.State, j.Error)
	}
	if j.Plan == nil || j.Plan.Policy.MaxStarting != startAll.MaxStarting || j.Plan.Policy.Pacing != startAll.Pacing {
		t.Errorf("wake job's plan %+v, want an operator's start-all's start pacing (W %d, %s)", j.Plan, startAll.MaxStarting, startAll.Pacing)
	}
	for _, n := range names {
		if s.isSleeping(n) || !h.Up(n) {
			t.Errorf("%s after the wake: sleeping %v, up %v; want awake and up", n, s.isSleeping(n), h.Up(n))
		}
	}
}

// TestSleeperLeavesAStopAllAlone: an operator's stop-all of an idle awake
// locker that ended after the inventory's last reading (which shows it
// running, desired running) does not make the sleeper put it to sleep (a
// sleep the next connection would end, undoing the operator's stop); the
// reading after the job puts only the others to sleep.
func TestSleeperLeavesAStopAllAlone(t *testing.T) {
	a, h, _, _, names, _ := sleeperEnv(t)
	s := a.sleep
	s.activity = func(string) (map[int]time.Duration, error) { return map[int]time.Duration{}, nil }
	j := waitJob(t, a, submit(t, a, Request{Kind: KindStopAll, Names: names[2:], Trigger: "test"}))
	if j.State != JobSucceeded {
		t.Fatalf("stop-all: %s %s", j.State, j.Error)
	}
	seenLongAgo(s, names)
	idle := idleAfterFreshReading(t, a, "the operator's stop-all")
	if len(idle) != 1 {
		t.Fatalf("%d idle jobs after a fresh reading, want 1", len(idle))
	}
	waitJob(t, a, idle[0].ID)
	for i, n := range names {
		if want := i < 2; s.isSleeping(n) != want {
			t.Errorf("%s sleeping: %v, want %v (the operator stopped %s)", n, s.isSleeping(n), want, names[2])
		}
	}
	if slices.Contains(h.Running(), names[2]) {
		t.Errorf("%s runs after the operator's stop-all", names[2])
	}
}
