package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"lxcfleet/heldsock"
	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
	"lxcfleet/provision"
)

// TestHeldSocketsOutliveAgentKill runs the real binary as the agent with
// [provision] socket = "held": its start-all starts two held-socket
// lockers, and the agent starts the socket holder (the real
// lxcfleet-listenfd) in a session of its own. Under a client per locker (a
// new connection every 10 ms), the agent is killed (SIGKILL): the holder
// lives on and the lockers answer. With the agent dead, one locker is
// stopped: connections to it are not refused, they wait in its held
// socket's queue. The agent started again restarts it (supervision), and
// the new instance serves them. Then a restart of both, with K left to
// the held-socket default (config.HeldMaxUnavailable: 1), runs one
// locker at a time. No connection fails throughout.
func TestHeldSocketsOutliveAgentKill(t *testing.T) {
	e := newHeldEnv(t, 2, provision.NetworkNone, provision.SocketHeld)
	bin := buildBinary(t)
	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("", "lxf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "s.sock")
	holder := &heldsock.Client{Dir: filepath.Join(dir, "holder")}
	t.Cleanup(func() { testfleet.StopHolder(t, holder) })
	config := filepath.Join(dir, "lxcfleet.toml")
	toml := fmt.Sprintf(`lxcpath = %q
state_dir = %q
inventory_interval = "200ms"
health_interval = "0s"
[listen]
socket = %q
[layout]
root = %q
[provision]
socket = "held"
listenfd = %q
holder_dir = %q
[supervision]
backoff = "100ms"
[defaults]
health = "http://127.0.0.1:{port}/healthz"
deadline = "20s"
monitor = "1s"
`, e.host.LXCPath(), filepath.Join(dir, "state"), sock, e.layout.Root, testfleet.ListenFD(t), holder.Dir)
	if err := os.WriteFile(config, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cl := unixClient(sock)
	p := startAgentProc(t, bin, config, cl)
	body, _ := json.Marshal(Request{Kind: KindStartAll, Names: e.names, Trigger: "test"})
	resp, err := cl.Post("http://lxcfleet/v1/jobs", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, j := range settleJobs(t, cl) {
		if j.Kind == KindStartAll && j.State != JobSucceeded {
			t.Fatalf("start-all: %s %s", j.State, j.Error)
		}
	}
	holderPID := testfleet.HolderPID(holder)
	if holderPID <= 0 {
		t.Fatal("no socket holder answers after the agent started held-socket lockers")
	}

	finish := e.probes(t)
	p.kill(t)
	if pid := testfleet.HolderPID(holder); pid != holderPID {
		finish()
		t.Fatalf("after the agent's SIGKILL the holder is pid %d, want %d still serving", pid, holderPID)
	}
	// The agent is dead: stop a locker. Its connections queue.
	victim := e.names[0]
	if _, err := e.host.Stop(context.Background(), victim, 5*time.Second); err != nil {
		finish()
		t.Fatal(err)
	}
	before := bootOf(t, e.addrs[victim], 2*time.Second)
	if before != "" {
		finish()
		t.Fatalf("%s answered while stopped (%s): want the connection queued", victim, before)
	}
	// Started again, the agent's supervision restarts it; a request made
	// now waits in the queue until the new instance answers it.
	startAgentProc(t, bin, config, cl)
	after := bootOf(t, e.addrs[victim], 60*time.Second)
	if after != "" {
		// The config leaves K out: with held sockets it is 1 (the config
		// package's HeldMaxUnavailable; agent tests cannot import it).
		// The supervision's start of the victim ends first (one job at a
		// time).
		settleJobs(t, cl)
		body, _ := json.Marshal(Request{Kind: KindRestart, Names: e.names, Trigger: "test"})
		resp, err := cl.Post("http://lxcfleet/v1/jobs", "application/json", bytes.NewReader(body))
		if err != nil {
			finish()
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Errorf("restart: %s %s", resp.Status, msg)
		}
		restarts := 0
		for _, j := range settleJobs(t, cl) {
			if j.Kind != KindRestart {
				continue
			}
			restarts++
			if j.State != JobSucceeded || j.Plan == nil || j.Plan.Policy.MaxUnavailable != 1 {
				t.Errorf("restart with held sockets and no K of the config's own: %s %s, plan %+v; want it succeeded at K 1", j.State, j.Error, j.Plan)
			}
		}
		if restarts != 1 {
			t.Errorf("%d restart jobs, want the one submitted", restarts)
		}
	}
	got := finish()
	t.Logf("held sockets, agent SIGKILLed, %s stopped while it was dead and restarted by the next agent: %s; errors %v", victim, got, got.Errors)
	if after == "" {
		t.Fatalf("%s did not answer within 60 s of the agent's restart", victim)
	}
	if got.Failed() != 0 || got.OK == 0 {
		t.Errorf("held sockets across the agent's SIGKILL: %s; want every connection answered", got)
	}
}

// bootOf GETs /healthz on addr, waiting up to wait for the answer, and
// returns the answering instance's bootedAt ("" when none answered in
// time: the connection stayed queued).
func bootOf(t *testing.T, addr string, wait time.Duration) string {
	t.Helper()
	c := http.Client{Timeout: wait, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/healthz")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var h struct {
		BootedAt int64 `json:"bootedAt"`
	}
	_ = json.Unmarshal(b, &h)
	return fmt.Sprint(h.BootedAt)
}

// TestHeldStopWithDeadHolderRefusesNothing is finding 5 of the break test
// of 2026-12-06: with the socket holder dead (no systemd to restart it), a
// held locker's app has the last copy of its socket. Its stop first has
// the holder (started again) take the socket back, so a connection while
// it is stopped waits in the queue instead of being refused, and the
// next start answers it.
func TestHeldStopWithDeadHolderRefusesNothing(t *testing.T) {
	e := newHeldEnv(t, 1, provision.NetworkNone, provision.SocketHeld)
	n := e.names[0]
	hc, err := lxcctl.ParseHealthCheck(e.health())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if r := e.host.StartHealthy(ctx, n, hc, 20*time.Second); !r.OK() {
		t.Fatalf("starting %s: %s %v", n, r.Outcome, r.Err)
	}
	testfleet.StopHolder(t, e.holder)
	if out, err := e.host.Stop(ctx, n, 5*time.Second); err != nil {
		t.Fatalf("stopping %s with its holder dead: %s %v", n, out, err)
	}
	conn, err := net.Dial("tcp", e.addrs[n])
	if err != nil {
		t.Fatalf("a connection to stopped %s after a stop with its holder dead: %v (want it queued on the held socket)", n, err)
	}
	defer conn.Close()
	if r := e.host.StartHealthy(ctx, n, hc, 20*time.Second); !r.OK() {
		t.Fatalf("starting %s again: %s %v", n, r.Outcome, r.Err)
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(conn)
	if err != nil || !bytes.HasPrefix(b, []byte("HTTP/1.1 200")) {
		t.Fatalf("the queued connection to %s got %q, %v; want 200 from the restarted app", n, b, err)
	}
}
