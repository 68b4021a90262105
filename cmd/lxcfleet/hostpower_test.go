package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"lxcfleet/agent"
	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
)

// TestHostShutdownAndBoot is lxcfleet-lockers.service's path with the
// real binary as the agent and real lockers: `stop-all --host-shutdown`
// (its ExecStop) stops every locker and keeps their desired states, and
// supervision leaves them stopped; `start-all --boot` (its ExecStart)
// starts only the lockers whose desired state is running, through the
// start policy (W = max_starting, fixed pacing here), each counted once
// healthy.
func TestHostShutdownAndBoot(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	ls := testfleet.Names(f.Add(3, testfleet.Normal))
	run, off := ls[:2], ls[2]
	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("", "lxf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "s.sock")
	config := filepath.Join(dir, "c.toml")
	body := fmt.Sprintf(`lxcpath = %q
state_dir = %q
inventory_interval = "100ms"
[listen]
socket = %q
[defaults]
health = "http://127.0.0.1:{port}/healthz"
max_starting = 1
pacing = "fixed"
monitor = "300ms"
deadline = "20s"
stop_timeout = "5s"
[supervision]
backoff = "100ms"
`, f.Path, filepath.Join(dir, "state"), sock)
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(sockDir, "n.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	logPath := filepath.Join(dir, "agent.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	ag := exec.Command(lxcfleetBin(t), "agent", "--config", config)
	ag.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.LocalAddr().String())
	ag.Stderr = logf
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ag.Process.Signal(syscall.SIGTERM) // the pid this test started
		_ = ag.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("agent log:\n%s", b)
		}
	})
	notify.SetReadDeadline(time.Now().Add(10 * time.Second))
	for buf := make([]byte, 4096); ; {
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatalf("the agent did not say READY=1: %v", err)
		}
		if strings.Contains(string(buf[:n]), "READY=1") {
			break
		}
	}
	cli := func(wantCode int, args ...string) string {
		t.Helper()
		out, stderr, code := runCLI(t, append(args, "--config", config)...)
		if code != wantCode {
			t.Fatalf("lxcfleet %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, wantCode, out, stderr)
		}
		return out + stderr
	}
	state := func(n string) lxcctl.State {
		st, err := f.Host.State(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	cli(0, append([]string{"start-all"}, ls...)...)
	cli(0, "stop-all", off) // desired: stopped
	if st := state(run[0]); st != lxcctl.StateRunning {
		t.Fatalf("%s is %s after start-all", run[0], st)
	}

	// Wrong uses are refused before a job exists.
	cli(2, "stop-all", "--host-shutdown", run[0])
	cli(2, "stop-all", "--host-shutdown", "--group", "web")

	out := cli(0, "stop-all", "--host-shutdown")
	for _, n := range ls {
		if st := state(n); st != lxcctl.StateStopped {
			t.Errorf("%s is %s after the host shutdown, want STOPPED", n, st)
		}
	}
	if !strings.Contains(out, "stopped") {
		t.Errorf("stop-all --host-shutdown said:\n%s", out)
	}
	// Supervision holds still: the desired-running lockers the shutdown
	// stopped are not restarted. A negative check: 1.5 s, fifteen
	// inventory rounds and supervision ticks with a 100 ms backoff, in
	// which no restart may come; nothing waits on it for an event.
	time.Sleep(1500 * time.Millisecond)
	for _, n := range run {
		if st := state(n); st != lxcctl.StateStopped {
			t.Errorf("%s is %s 1.5s after the host shutdown: supervision restarted it", n, st)
		}
	}

	out = cli(0, "start-all", "--boot", "--json")
	for _, n := range run {
		if st := state(n); st != lxcctl.StateRunning {
			t.Errorf("%s (desired running) is %s after the boot start, want RUNNING", n, st)
		}
	}
	if st := state(off); st != lxcctl.StateStopped {
		t.Errorf("%s (desired stopped) is %s after the boot start, want STOPPED", off, st)
	}
	// The boot start's job: a start plan of the two, under the start
	// policy (W = 1, fixed), triggered by the boot.
	var list struct{ Jobs []agent.Job }
	if err := json.Unmarshal([]byte(cli(0, "jobs", "--json")), &list); err != nil {
		t.Fatalf("jobs --json: %v", err)
	}
	var boot *agent.Job
	for _, j := range list.Jobs {
		if j.Trigger == "boot" {
			boot = new(agent.Job)
			if err := json.Unmarshal([]byte(cli(0, "jobs", j.ID, "--json")), boot); err != nil {
				t.Fatalf("jobs %s --json: %v", j.ID, err)
			}
			break
		}
	}
	if boot == nil || boot.Plan == nil {
		t.Fatalf("no boot job with a plan in the history: %+v", list.Jobs)
	}
	if len(boot.Plan.Items) != 2 || boot.Plan.Policy.MaxStarting != 1 || boot.Plan.Policy.Pacing != "fixed" || boot.State != agent.JobSucceeded {
		t.Errorf("boot job: %d items, W %d %s, %s; want the 2 desired-running lockers, W 1 fixed, succeeded", len(boot.Plan.Items), boot.Plan.Policy.MaxStarting, boot.Plan.Policy.Pacing, boot.State)
	}
	for _, it := range boot.Plan.Items {
		if it.Name == off {
			t.Errorf("the boot start planned %s, whose desired state is stopped", off)
		}
	}
	if !strings.Contains(out, `"healthy":2`) {
		t.Errorf("start-all --boot --json: want 2 healthy:\n%s", out)
	}
	// After the boot start supervision acts again: a locker killed from
	// outside comes back.
	if _, err := f.Host.Stop(context.Background(), run[0], 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for state(run[0]) != lxcctl.StateRunning {
		if time.Now().After(deadline) {
			t.Fatalf("%s killed after the boot is not restarted by supervision within 20s", run[0])
		}
		time.Sleep(100 * time.Millisecond) // paces the poll of an LXC state, which sends no event
	}
}
