package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"lxcfleet/rollout"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
)

// agentProc is the real lxcfleet binary running as the agent.
type agentProc struct {
	cmd   *exec.Cmd
	logs  *syncBuffer
	done  chan struct{}
	ready chan struct{} // closed on READY=1
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// buildBinary returns the real lxcfleet binary (testfleet.Binary).
func buildBinary(t *testing.T) string { return testfleet.Binary(t) }

// startAgentProc starts the binary as the agent and waits for its socket.
func startAgentProc(t *testing.T, bin, config string, cl *http.Client) *agentProc {
	t.Helper()
	p := &agentProc{cmd: exec.Command(bin, "agent", "--config", config, "--log-level", "debug"), logs: &syncBuffer{}, done: make(chan struct{}), ready: make(chan struct{})}
	p.cmd.Stderr = p.logs
	nd, err := os.MkdirTemp("", "lxn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(nd) })
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(nd, "n.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { notify.Close() })
	p.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.LocalAddr().String())
	go func() {
		for buf := make([]byte, 4096); ; {
			n, err := notify.Read(buf)
			if err != nil {
				return
			}
			if strings.Contains(string(buf[:n]), "READY=1") {
				close(p.ready)
				return
			}
		}
	}()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		// Only the process this test started, by its pid.
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(15 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		if t.Failed() {
			t.Logf("agent (pid %d) log:\n%s", p.cmd.Process.Pid, p.logs)
		}
	})
	// The agent says READY=1 (sd_notify) once it listens and any recovery
	// is a job: the test waits for that message, not for a clock.
	select {
	case <-p.ready:
	case <-p.done:
		t.Fatalf("the agent exited before it was ready: %s", p.logs)
	case <-time.After(15 * time.Second):
		t.Fatalf("the agent did not say READY=1 within 15s:\n%s", p.logs)
	}
	return p
}

// settleJobs follows every job the agent runs to its end, by its event
// stream (no polling), until none runs; it returns the jobs, newest first.
func settleJobs(t *testing.T, cl *http.Client) []Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for {
		var list struct{ Jobs []Job }
		getJSONUnix(t, cl, "/v1/jobs", &list)
		running := ""
		for _, j := range list.Jobs {
			if !j.State.Done() {
				running = j.ID
			}
		}
		if running == "" {
			return list.Jobs
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://lxcfleet/v1/jobs/"+running+"/events", nil)
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatalf("following job %s: %v", running, err)
		}
		_, _ = readSSE(resp.Body, func(sseEvent) {}) // to the job's end
		resp.Body.Close()
		if ctx.Err() != nil {
			t.Fatalf("jobs still running after 3 minutes: %+v", list.Jobs)
		}
	}
}

// kill SIGKILLs the agent by the pid this test started.
func (p *agentProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

func getJSONUnix(t *testing.T, cl *http.Client, path string, v any) {
	t.Helper()
	resp, err := cl.Get("http://lxcfleet" + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// TestCrashRecovery runs the real binary as the agent, SIGKILLs it in the
// middle of a stop-all, restarts it, and checks that the interrupted job
// is reported interrupted and every locker it stopped runs again.
func TestCrashRecovery(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	// Stubborn lockers use their whole grace period: a slow, steady stop.
	lockers := testfleet.Names(f.Add(6, testfleet.Stubborn))
	if _, err := lockerverbs.StartAll(context.Background(), f.Host, lockers, lxcctl.StartOptions{Window: 6, Deadline: 20 * time.Second, Health: testfleet.HealthCheck()}); err != nil {
		t.Fatal(err)
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("", "lxf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "s.sock")
	config := filepath.Join(dir, "lxcfleet.toml")
	toml := fmt.Sprintf(`lxcpath = %q
state_dir = %q
inventory_interval = "300ms"
health_interval = "0s"
[listen]
socket = %q
[defaults]
health = "http://127.0.0.1:{port}/healthz"
deadline = "20s"
monitor = "1s"
`, f.Path, filepath.Join(dir, "state"), sock)
	if err := os.WriteFile(config, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cl := unixClient(sock)
	p := startAgentProc(t, bin, config, cl)

	body, _ := json.Marshal(Request{Kind: KindStopAll, Names: lockers, Policy: rollout.Patch{"stop_parallel": 1, "stop_timeout": Duration(600 * time.Millisecond)}})
	resp, err := cl.Post("http://lxcfleet/v1/jobs", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var job Job
	_ = json.NewDecoder(resp.Body).Decode(&job)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("stop-all: %s", resp.Status)
	}
	// Follow the job; SIGKILL the agent once two lockers are down.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://lxcfleet/v1/jobs/"+job.ID+"/events", nil)
	resp, err = cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	stopped := 0
	_, _ = readSSE(resp.Body, func(ev sseEvent) {
		var e Event
		if ev.Type == "container" && json.Unmarshal(ev.Data, &e) == nil && e.Phase == "stopped" {
			stopped++
			if stopped == 2 {
				p.kill(t)
			}
		}
	})
	resp.Body.Close()
	if stopped < 2 {
		t.Fatalf("saw %d lockers stopped before the stream ended", stopped)
	}
	down := 0
	for _, st := range f.LXCLs(t) {
		if st == "STOPPED" {
			down++
		}
	}
	if down < 3 || down > 6 { // the base container, and the two (or three) stopped
		t.Fatalf("after the SIGKILL: %d containers stopped, want the base and 2-3 lockers: %v", down, f.LXCLs(t))
	}

	p = startAgentProc(t, bin, config, cl)
	var got Job
	getJSONUnix(t, cl, "/v1/jobs/"+job.ID, &got)
	if got.State != JobInterrupted || got.Error == "" {
		t.Errorf("the killed job after a restart: %s %q, want interrupted with a reason", got.State, got.Error)
	}
	// The restarted agent runs a recovery job on its own (submitted
	// before it said READY=1): follow it to its end.
	var rec Job
	for _, j := range settleJobs(t, cl) {
		if j.Kind == KindRecover && rec.ID == "" {
			rec = j
		}
	}
	if rec.State != JobSucceeded || !strings.Contains(rec.Trigger, job.ID) {
		t.Errorf("recovery job: %s %q trigger %q", rec.State, rec.Error, rec.Trigger)
	}
	var res Result
	_ = json.Unmarshal(rec.Result, &res)
	if res.Counts["started"] < 2 {
		t.Errorf("recovery result %+v: want the stopped lockers started healthy", res)
	}
	st := f.LXCLs(t)
	for _, n := range lockers {
		if st[n] != "RUNNING" {
			t.Errorf("%s is %s after recovery, want RUNNING", n, st[n])
		}
	}

	// Then a restart (K=1), the agent SIGKILLed when its first locker is
	// healthy: recovery finishes the restart. Every locker ends on a new
	// init, the ones the dead agent never reached included (the tester's
	// finding 16: recovery restarted only the one in flight).
	before := map[string]int{}
	for _, n := range lockers {
		in, err := f.Host.Info(context.Background(), n)
		if err != nil || in.InitPID <= 0 {
			t.Fatalf("reading %s before the restart: %v (init %d)", n, err, in.InitPID)
		}
		before[n] = in.InitPID
	}
	body, _ = json.Marshal(Request{Kind: KindRestart, Names: lockers, Policy: rollout.Patch{"max_unavailable": 1, "stop_timeout": Duration(600 * time.Millisecond)}})
	resp, err = cl.Post("http://lxcfleet/v1/jobs", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var restart Job
	_ = json.NewDecoder(resp.Body).Decode(&restart)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("restart: %s", resp.Status)
	}
	req, _ = http.NewRequestWithContext(ctx, "GET", "http://lxcfleet/v1/jobs/"+restart.ID+"/events", nil)
	if resp, err = cl.Do(req); err != nil {
		t.Fatal(err)
	}
	killed := false
	_, _ = readSSE(resp.Body, func(ev sseEvent) {
		var e Event
		if !killed && ev.Type == "container" && json.Unmarshal(ev.Data, &e) == nil && e.Phase == string(rollout.PhaseHealthy) {
			killed = true
			p.kill(t)
		}
	})
	resp.Body.Close()
	if !killed {
		t.Fatal("the restart's stream ended before a locker was healthy")
	}
	startAgentProc(t, bin, config, cl)
	rec = Job{}
	for _, j := range settleJobs(t, cl) {
		if j.Kind == KindRecover && strings.Contains(j.Trigger, restart.ID) && rec.ID == "" {
			rec = j
		}
	}
	if rec.State != JobSucceeded {
		t.Fatalf("recovery of the restart: %q %s %q", rec.ID, rec.State, rec.Error)
	}
	for _, n := range lockers {
		in, err := f.Host.Info(context.Background(), n)
		switch {
		case err != nil || in.State != "RUNNING":
			t.Errorf("%s after the restart's recovery: %v %s, want RUNNING", n, err, in.State)
		case in.InitPID == before[n]:
			t.Errorf("%s still runs its init from before the restart (pid %d): the restart was left undone", n, in.InitPID)
		}
	}
}
