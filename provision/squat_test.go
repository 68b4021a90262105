package provision

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
)

// squatApp listens on its PORT; when the port is taken it logs the error
// and, with STAY set, keeps running without a listener (an app that retries
// or just carries on), else exits 1 as Node does.
const squatApp = `const s = require('http').createServer((q, r) => r.end('app'));
s.on('error', (e) => { console.error('listen failed: ' + e.code); if (!process.env.STAY) process.exit(1); });
s.listen(+process.env.PORT, '127.0.0.1');
if (process.env.STAY) setInterval(() => {}, 1 << 30);
`

// squatter is a process of the host (a node one-liner the test starts)
// that answers HTTP 200 on 127.0.0.1:port; it is killed by its pid when the
// test ends.
func squatter(t *testing.T, node string, port int) int {
	t.Helper()
	cmd := exec.Command(node, "-e", `require('http').createServer((q, r) => r.end('squatter')).listen(+process.argv[1], '127.0.0.1', () => console.log('listening'));`, strconv.Itoa(port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the squatter: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "listening" {
		t.Fatalf("the squatter on port %d did not listen: %q %v", port, line, err)
	}
	return cmd.Process.Pid
}

// TestSquattedPortNeverHealthy: a host process holding a locker's port
// answers its HTTP and TCP health checks, but the locker never counts as
// healthy: neither when its app dies of EADDRINUSE (the container stops)
// nor when the app carries on without a listener (the container stays
// RUNNING with the same init, which the state-before-and-after check
// cannot see), over HTTP, TCP or an exec: wget inside (the container
// shares the host's network). The errors name the squatter's pid; Check reports the port
// held by it; a locker whose own app holds its port passes the same checks.
func TestSquattedPortNeverHealthy(t *testing.T) {
	tini := requireTini(t)
	e := newAppEnv(t, squatApp)
	ctx := context.Background()
	base := testfleet.PortRange(t, 3)
	crash, stay, own := e.prefix+"sq-crash", e.prefix+"sq-stay", e.prefix+"sq-own"
	e.cleanup(t, crash, stay, own)
	opts := Options{Template: "busybox", Init: "/usr/bin/node /opt/app/s.js", Node: e.node, Tini: tini, PortBase: base}
	res, err := e.prov.Provision(ctx, []string{crash}, opts)
	if err != nil || res[0].Outcome != OutcomeProvisioned {
		t.Fatalf("Provision %s: %+v %v", crash, res, err)
	}
	opts.ExtraConfig = []string{"lxc.environment = STAY=1"}
	res2, err := e.prov.Provision(ctx, []string{stay, own}, opts)
	if err != nil || res2[0].Outcome != OutcomeProvisioned || res2[1].Outcome != OutcomeProvisioned {
		t.Fatalf("Provision %s %s: %+v %v", stay, own, res2, err)
	}
	ports := map[string]int{crash: res[0].Port, stay: res2[0].Port, own: res2[1].Port}
	pids := map[string]int{}
	for _, n := range []string{crash, stay} {
		pids[n] = squatter(t, e.node, ports[n])
	}
	httpCheck := rootHTTP()
	tcpCheck := lxcctl.HealthCheck{Kind: lxcctl.HealthTCP, Target: "127.0.0.1:{port}", Interval: 20 * time.Millisecond}
	execCheck := lxcctl.HealthCheck{Kind: lxcctl.HealthExec, Target: "wget -q -O /dev/null http://127.0.0.1:{port}/", Interval: 20 * time.Millisecond}
	squatted := func(name string) string {
		return "port " + strconv.Itoa(ports[name]) + " (127.0.0.1) is held by pid " + strconv.Itoa(pids[name]) + " (node)"
	}

	t.Run("app dies of EADDRINUSE", func(t *testing.T) {
		r := e.host.StartHealthy(ctx, crash, httpCheck, 10*time.Second)
		if r.OK() {
			t.Fatalf("StartHealthy of %s, whose port pid %d squats: got %s, want a failure", crash, pids[crash], r.Outcome)
		}
		msg := r.Err.Error()
		for _, want := range []string{"stopped while starting", squatted(crash), "EADDRINUSE", "app exited with status 1"} {
			if !strings.Contains(msg, want) {
				t.Errorf("StartHealthy error %q: want %q in it", msg, want)
			}
		}
		if err := e.host.CheckRunning(ctx, crash, httpCheck); !errors.Is(err, lxcctl.ErrNotRunning) {
			t.Errorf("CheckRunning of the stopped %s: got %v, want ErrNotRunning", crash, err)
		}
	})

	t.Run("app carries on without its port", func(t *testing.T) {
		r := e.host.StartHealthy(ctx, stay, httpCheck, 3*time.Second)
		if r.OK() || r.Outcome != lxcctl.StartUnhealthy {
			t.Fatalf("StartHealthy of %s: got %s %v, want unhealthy at its deadline", stay, r.Outcome, r.Err)
		}
		if !strings.Contains(r.Err.Error(), squatted(stay)) {
			t.Errorf("StartHealthy error %q: want %q in it", r.Err, squatted(stay))
		}
		if st, _ := e.host.State(ctx, stay); st != lxcctl.StateRunning {
			t.Fatalf("%s is %s; the case needs it RUNNING", stay, st)
		}
		for _, hc := range []lxcctl.HealthCheck{httpCheck, tcpCheck} {
			err := e.host.CheckRunning(ctx, stay, hc)
			if !errors.Is(err, lxcctl.ErrForeignListener) || !strings.Contains(err.Error(), squatted(stay)) {
				t.Errorf("CheckRunning (%s) of %s: got %v, want ErrForeignListener naming %q", hc, stay, err, squatted(stay))
			}
		}
		// wget inside a container on the host's network reaches the
		// squatter too.
		err := e.host.CheckRunning(ctx, stay, execCheck)
		if want := "its PORT " + strconv.Itoa(ports[stay]) + " (host network) is held by pid " + strconv.Itoa(pids[stay]) + " (node)"; !errors.Is(err, lxcctl.ErrForeignListener) || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckRunning (%s) of %s: got %v, want ErrForeignListener with %q", execCheck, stay, err, want)
		}
		checks, err := e.prov.Check(ctx, []string{stay})
		if err != nil {
			t.Fatal(err)
		}
		want := "port " + strconv.Itoa(ports[stay]) + " is held by pid " + strconv.Itoa(pids[stay]) + " (node), not by its app"
		if got := strings.Join(checks[0].Deviations, "; "); !strings.Contains(got, want) {
			t.Errorf("Check of %s: got %q, want %q", stay, got, want)
		}
	})

	t.Run("own app holds its port", func(t *testing.T) {
		if r := e.host.StartHealthy(ctx, own, httpCheck, 15*time.Second); !r.OK() {
			t.Fatalf("StartHealthy of %s: %s %v", own, r.Outcome, r.Err)
		}
		for _, hc := range []lxcctl.HealthCheck{httpCheck, tcpCheck, execCheck} {
			if err := e.host.CheckRunning(ctx, own, hc); err != nil {
				t.Errorf("CheckRunning (%s) of %s: %v", hc, own, err)
			}
		}
		// What the owner match costs (measured, not asserted): a CheckRunning
		// is two Infos, the probe and the match.
		begin := time.Now()
		for range 20 {
			if err := e.host.CheckRunning(ctx, own, httpCheck); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("CheckRunning with the owner match: %v each, %d processes on the host", time.Since(begin)/20, len(procPIDs(t)))
		if checks, err := e.prov.Check(ctx, []string{own}); err != nil || !checks[0].OK() {
			t.Errorf("Check of %s: got %+v %v, want no deviation", own, checks, err)
		}
	})
}

// procPIDs lists the host's processes.
func procPIDs(t *testing.T) []string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}
