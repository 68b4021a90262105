package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"lxcfleet/heldsock"
	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
	"lxcfleet/provision"
	"lxcfleet/rollout"
)

// testHeld is the agent's view of the env's held sockets (config.Wire's
// heldSockets, which this package cannot import).
type testHeld struct{ e *heldEnv }

func (h testHeld) Specs() (map[string]heldsock.Spec, error) {
	out := map[string]heldsock.Spec{}
	for _, n := range h.e.names {
		s, ok, err := provision.ReadHeldSpec(filepath.Dir(h.e.host.ConfigPath(n)))
		if err != nil {
			return nil, err
		}
		if ok {
			out[n] = s
		}
	}
	return out, nil
}

func (h testHeld) Watch(ctx context.Context, names []string) (<-chan string, error) {
	return h.e.holder.Watch(ctx, names)
}

// sleepingNames returns the lockers the inventory shows sleeping and
// stopped.
func sleepingNames(a *Agent) []string {
	var out []string
	for _, l := range a.inv.snapshot() {
		if l.Sleeping && l.State == lxcctl.StateStopped {
			out = append(out, l.Name)
		}
	}
	sort.Strings(out)
	return out
}

// TestSleepingLockersWakeOnConnection is issue 20's part 2 on real
// lockers with held sockets: four lockers without traffic go to sleep
// after idle_stop (stopped by an "idle" job, shown sleeping); a rolling
// update moves none of them (no running locker to move) and they stay
// asleep; a request to one wakes it alone through a start-all job and is
// answered (by the new build); then a request to every other one at once
// (a wake-up storm) is answered, and the wake jobs' journaled steps never
// have more than W=2 starts at once.
func TestSleepingLockersWakeOnConnection(t *testing.T) {
	e := newHeldEnv(t, 4, provision.NetworkNone, provision.SocketHeld)
	cfg := Config{StateDir: t.TempDir(), KeepReleases: 10, Defaults: testDefaults(), InventoryInterval: 100 * time.Millisecond,
		Sleep: SleepConfig{IdleStop: 2 * time.Second, Sample: 200 * time.Millisecond}}
	cfg.Defaults.Policy.MaxUnavailable = 2
	cfg.Defaults.Policy.MaxStarting = 2
	cfg.Defaults.Policy.Pacing = rollout.Fixed
	cfg.Defaults.Policy.StopTimeout = 5 * time.Second
	cfg.Defaults.Policy.Deadline = 20 * time.Second
	cfg.Defaults.Policy.Monitor = 0
	cfg.Defaults.Policy.Health = e.health()
	layout := e.layout
	srv := serveAgent(t, cfg, Deps{Containers: e.host, Code: e.code, Held: testHeld{e},
		ReleaseOf: func(pid int) (string, bool, error) { return mounts.ReleaseOfPID(pid, layout) }})
	a := srv.a
	if j := waitJob(t, a, submit(t, a, Request{Kind: KindStartAll, Names: e.names, Trigger: "test"})); j.State != JobSucceeded {
		t.Fatalf("start-all: %s %s", j.State, j.Error)
	}

	// No traffic: every locker goes to sleep.
	eventually(t, 60*time.Second, func() (bool, string) {
		got := sleepingNames(a)
		return len(got) == len(e.names), fmt.Sprintf("sleeping %v, want all of %v", got, e.names)
	})

	// Their one record, which lxcfleet status reads.
	for _, n := range e.names {
		if _, ok := heldsock.AsleepIn(filepath.Dir(e.host.ConfigPath(n))); !ok {
			t.Errorf("%s sleeps but has no %s", n, heldsock.AsleepFile)
		}
	}

	// An update does not wake them.
	e.origin.Write("build B", map[string]string{"B.txt": "b\n"})
	j := waitJob(t, a, submit(t, a, Request{Kind: KindUpdate, Strategy: StrategyRolling, Trigger: "test"}))
	if j.State != JobSucceeded {
		t.Fatalf("update while asleep: %s %s", j.State, j.Error)
	}
	st := states(t, e.host, e.names)
	for _, n := range e.names {
		if st[n] != lxcctl.StateStopped {
			t.Errorf("%s is %s after an update while asleep, want STOPPED", n, st[n])
		}
	}

	// One request wakes one locker and is answered, by build B.
	get := func(n string) (string, error) {
		c := http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get("http://" + e.addrs[n] + "/healthz")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	began := time.Now()
	body, err := get(e.names[0])
	if err != nil {
		t.Fatalf("a request to sleeping %s: %v", e.names[0], err)
	}
	t.Logf("first request to a sleeping locker answered in %v", time.Since(began).Round(time.Millisecond))
	if !strings.Contains(body, `"build":2`) {
		t.Errorf("woken %s answered %s, want build 2 (B)", e.names[0], body)
	}
	if _, ok := heldsock.AsleepIn(filepath.Dir(e.host.ConfigPath(e.names[0]))); ok {
		t.Errorf("woken %s still has its %s", e.names[0], heldsock.AsleepFile)
	}
	st = states(t, e.host, e.names)
	for _, n := range e.names[1:] {
		if st[n] != lxcctl.StateStopped {
			t.Errorf("%s is %s after a request to %s alone, want STOPPED (asleep)", n, st[n], e.names[0])
		}
	}

	// A storm: every other locker at once.
	var wg sync.WaitGroup
	errs := make([]error, len(e.names))
	began = time.Now()
	for i, n := range e.names[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = get(n)
		}()
	}
	wg.Wait()
	t.Logf("wake-up storm of %d lockers answered in %v", len(e.names)-1, time.Since(began).Round(time.Millisecond))
	for i, err := range errs[:len(e.names)-1] {
		if err != nil {
			t.Errorf("storm request to %s: %v", e.names[i+1], err)
		}
	}
	// The wake jobs' starts, from the journal: never more than W at once.
	jobs, err := a.Jobs(0)
	if err != nil {
		t.Fatal(err)
	}
	most, wakes := 0, 0
	for _, j := range jobs {
		if !strings.HasPrefix(j.Trigger, "wake") {
			continue
		}
		wakes++
		steps, err := a.Steps(j.ID)
		if err != nil {
			t.Fatal(err)
		}
		in := 0
		for _, s := range steps {
			if s.Action != "start" {
				continue
			}
			switch s.Phase {
			case "begin":
				in++
				most = max(most, in)
			case "end":
				in--
			}
		}
	}
	t.Logf("%d wake jobs, at most %d starts at once", wakes, most)
	if wakes == 0 || most > 2 {
		t.Errorf("%d wake jobs with at most %d starts at once; want some, never more than W=2", wakes, most)
	}
}
