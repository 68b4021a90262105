package agent

import (
	"encoding/json"
	"fmt"
	"lxcfleet/rollout"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"lxcfleet/internal/fakecode"
	"lxcfleet/internal/testfleet"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
)

// TestJobsOverTheSocket: real lockers, a stop-all followed over SSE, a
// second mutating job refused with 409 naming the running one, and a
// start-all that brings them back.
func TestJobsOverTheSocket(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	normal := f.Add(2, testfleet.Normal)
	stubborn := f.Add(2, testfleet.Stubborn)
	all := testfleet.Names(append(normal, stubborn...))
	if _, err := lockerverbs.StartAll(t.Context(), f.Host, all, lxcctl.StartOptions{Window: 4, Deadline: 20 * time.Second, Health: testfleet.HealthCheck()}); err != nil {
		t.Fatal(err)
	}
	s := serveAgent(t, Config{LXCPath: f.Path, InventoryInterval: 200 * time.Millisecond}, Deps{Containers: f.Host})

	// The stubborn lockers take their whole grace period: the job runs ~1s.
	body, _ := json.Marshal(Request{Names: all, Policy: rollout.Patch{"stop_parallel": 1, "stop_timeout": Duration(500 * time.Millisecond)}})
	job := s.submit(t, "/v1/stop-all", string(body))

	code, b := s.do(t, "POST", "/v1/start-all", `{}`)
	var e errorBody
	if code != http.StatusConflict || json.Unmarshal(b, &e) != nil || e.JobID != job.ID || !strings.Contains(e.Error, job.ID) {
		t.Errorf("second mutating job: got %d %s, want 409 naming %s", code, b, job.ID)
	}
	// A check is not mutating: it may run beside (here it is refused only
	// because no code origin is configured).
	if code, _ := s.do(t, "POST", "/v1/check-update", `{}`); code == http.StatusConflict {
		t.Errorf("check-update during a stop-all: got 409")
	}

	var mu sync.Mutex
	phases := map[string][]string{}
	events := s.follow(t, job.ID, func(ev sseEvent) {
		var e Event
		if ev.Type == "container" && json.Unmarshal(ev.Data, &e) == nil {
			mu.Lock()
			phases[e.Container] = append(phases[e.Container], e.Phase)
			mu.Unlock()
		}
	})
	var final Job
	if err := json.Unmarshal(events[len(events)-1].Data, &final); err != nil {
		t.Fatal(err)
	}
	if final.State != JobSucceeded || final.Progress.Done != len(all) {
		t.Errorf("job at the end of the stream: %s, progress %+v; want succeeded, %d done", final.State, final.Progress, len(all))
	}
	for _, n := range all {
		if got := strings.Join(phases[n], ","); got != "stopping,stopped" {
			t.Errorf("events of %s: got %q, want stopping,stopped", n, got)
		}
	}
	res := result(t, final)
	if res.Counts["killed"] != 2 || res.Counts["stopped"] != 2 {
		t.Errorf("stop-all counts: got %v, want 2 stopped (cleanly), 2 killed", res.Counts)
	}
	for n, st := range states(t, f.Host, all) {
		if st != lxcctl.StateStopped {
			t.Errorf("%s is %s after stop-all", n, st)
		}
	}
	// Steps were journaled before and after each stop.
	steps, _ := s.a.Steps(job.ID)
	if len(steps) != 2*len(all) {
		t.Errorf("journaled steps: got %d, want %d (begin and end per locker)", len(steps), 2*len(all))
	}
	d, _ := s.a.Journal().Desired()
	for _, n := range all {
		if d[n].Running {
			t.Errorf("desired state of %s after stop-all: running", n)
		}
	}

	// A late follower of a finished job gets its end at once.
	if ev := s.follow(t, job.ID, nil); ev[len(ev)-1].Type != "end" {
		t.Errorf("late follower: got %v", ev)
	}

	body, _ = json.Marshal(Request{Names: all, Policy: rollout.Patch{"health": "http://127.0.0.1:{port}/healthz", "max_unavailable": 4}})
	job = s.submit(t, "/v1/start-all", string(body))
	if j := waitJob(t, s.a, job.ID); j.State != JobSucceeded {
		t.Fatalf("start-all: %s %s", j.State, j.Error)
	}
	if err := s.a.inv.refresh(t.Context()); err != nil { // the inventory sees the start now
		t.Fatal(err)
	}
	code, b = s.do(t, "GET", "/v1/containers/"+all[0], "")
	var l Locker
	if code != 200 || json.Unmarshal(b, &l) != nil || l.State != lxcctl.StateRunning || l.Desired == nil || !l.Desired.Running {
		t.Errorf("GET container after start-all: %d %s", code, b)
	}
}

// TestScheduleSkippedWhileBusy: a cron run ("@every 1s") that comes while
// another job runs is skipped and logged; once the agent is idle it runs.
func TestScheduleSkippedWhileBusy(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	stubborn := testfleet.Names(f.Add(2, testfleet.Stubborn))
	if _, err := lockerverbs.StartAll(t.Context(), f.Host, stubborn, lxcctl.StartOptions{Window: 2, Deadline: 20 * time.Second, Health: testfleet.HealthCheck()}); err != nil {
		t.Fatal(err)
	}
	code := fakecode.New("1-a")
	s := serveAgent(t, Config{LXCPath: f.Path, Schedules: []Schedule{{Name: "check", Cron: "@every 1s", Request: Request{Kind: KindCheckUpdate}}}},
		Deps{Containers: f.Host, Code: code})
	// Busy for ~2.4s: two stubborn lockers, one at a time, 1.2s each.
	body, _ := json.Marshal(Request{Names: stubborn, Policy: rollout.Patch{"stop_parallel": 1, "stop_timeout": Duration(1200 * time.Millisecond)}})
	job := s.submit(t, "/v1/stop-all", string(body))
	waitJob(t, s.a, job.ID)
	var info ScheduleInfo
	for _, in := range s.a.Schedules() {
		info = in
	}
	if info.Skipped < 1 {
		t.Errorf("schedule while a job ran: %+v, want at least one skipped run", info)
	}
	during := code.Checks()
	if during != 0 {
		t.Errorf("the schedule ran %d checks while the stop-all ran, want 0", during)
	}
	// The check counts when it starts; its answer is recorded when its job
	// ends, so wait for the answer itself (a CI run read it in between).
	eventually(t, 5*time.Second, func() (bool, string) {
		c, b := s.do(t, "GET", "/v1/update-available", "")
		if c == 200 && (strings.Contains(string(b), `"available": true`) || strings.Contains(string(b), `"available":true`)) {
			return true, ""
		}
		return false, fmt.Sprintf("the schedule's check did not answer within 5s of the agent being idle (checks %d): %d %s", code.Checks(), c, b)
	})
}
