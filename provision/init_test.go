package provision

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
)

// noHandlerApp is a Node app that installs no signal handler at all.
const noHandlerApp = `require('http').createServer((q, s) => s.end('ok')).listen(+process.env.PORT, '127.0.0.1');
`

// requireTini skips (fails under CI=true) when Debian's tini is missing.
func requireTini(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(DefaultTini); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %s is missing: run scripts/setup-host (apt-get install tini)", DefaultTini)
		}
		t.Skipf("%s not found: apt-get install tini", DefaultTini)
	}
	return DefaultTini
}

// newAppEnv is a layout whose only release (current) holds app as s.js,
// with no npm run, and a private lxcpath.
func newAppEnv(t *testing.T, app string) *layoutEnv {
	t.Helper()
	testfleet.RequireLXC(t)
	testfleet.RequireNode(t)
	dir := t.TempDir()
	e := &layoutEnv{dir: dir, prefix: "lxti" + layoutRandHex(3) + "-"}
	root := filepath.Join(dir, "root")
	lxcpath := filepath.Join(dir, "lxc")
	rel := filepath.Join(root, "releases", "r1")
	for _, d := range []string{rel, lxcpath} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rel, "s.js"), []byte(app), 0o644); err != nil {
		t.Fatal(err)
	}
	e.layout = mounts.LayoutAt(root)
	if err := os.Symlink("releases/r1", e.layout.Current); err != nil {
		t.Fatal(err)
	}
	h, err := lxcctl.NewHost(lxcctl.Options{LXCPath: lxcpath})
	if err != nil {
		t.Fatal(err)
	}
	e.host = h
	if e.prov, err = New(h, e.layout, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("New: %v", err)
	}
	node := testfleet.NodeBinary(t)
	e.node = node
	return e
}

// rootHTTP checks GET / on the locker's PORT.
func rootHTTP() lxcctl.HealthCheck {
	return lxcctl.HealthCheck{Kind: lxcctl.HealthHTTP, Target: "http://127.0.0.1:{port}/", Interval: 20 * time.Millisecond}
}

// startStop starts a locker healthy on its PORT and stops it with a 5 s
// timeout, returning how it stopped and how long the stop took.
func (e *layoutEnv) startStop(t *testing.T, name string) (lxcctl.StopOutcome, time.Duration) {
	t.Helper()
	ctx := context.Background()
	if r := e.host.StartHealthy(ctx, name, rootHTTP(), 15*time.Second); !r.OK() {
		t.Fatalf("starting %s: %s: %v (log: %s)", name, r.Outcome, r.Err, logTail(e.host.LogFile(name)))
	}
	begin := time.Now()
	out, err := e.host.Stop(ctx, name, 5*time.Second)
	if err != nil {
		t.Fatalf("stopping %s: %v", name, err)
	}
	return out, time.Since(begin)
}

// TestTiniStopsNodeAppWithoutHandler: a Node app with no SIGTERM handler,
// provisioned (or adopted with Tini) under tini, stops cleanly at once
// instead of waiting out the timeout; Check reports the halt signals such
// an app cannot handle and Adopt always fixes SIGUSR1.
func TestTiniStopsNodeAppWithoutHandler(t *testing.T) {
	tini := requireTini(t)
	e := newAppEnv(t, noHandlerApp)
	ctx := context.Background()

	t.Run("provision", func(t *testing.T) {
		name := e.names("p", 1)[0]
		e.cleanup(t, name)
		opts := Options{Template: "busybox", Init: "/usr/bin/node /opt/app/s.js", Node: e.node, Tini: tini, PortBase: testfleet.PortRange(t, 1)}
		res, err := e.prov.Provision(ctx, []string{name}, opts)
		if err != nil || res[0].Outcome != OutcomeProvisioned {
			t.Fatalf("Provision: %+v %v", res, err)
		}
		if v, _ := e.host.ConfigItem(name, "lxc.init.cmd"); len(v) != 1 || v[0] != "/sbin/tini -s -g -- /sbin/lxcfleet-init /usr/bin/node /opt/app/s.js" {
			t.Errorf("lxc.init.cmd: got %q, want /sbin/tini -s -g -- /sbin/lxcfleet-init /usr/bin/node /opt/app/s.js", v)
		}
		if c, _ := e.prov.Check(ctx, []string{name}); len(c) != 1 || !c[0].OK() {
			t.Errorf("Check: got %+v, want no deviation", c)
		}
		out, took := e.startStop(t, name)
		if out != lxcctl.StoppedClean || took > time.Second {
			t.Errorf("stop: got %s in %v, want %s well inside the 5s timeout", out, took, lxcctl.StoppedClean)
		}
	})

	t.Run("adopt", func(t *testing.T) {
		name := e.names("a", 1)[0]
		e.cleanup(t, name)
		if err := e.host.Create(ctx, name, "busybox"); err != nil {
			t.Fatal(err)
		}
		// An operator's locker: node as PID 1, the template's SIGUSR1.
		port := testfleet.PortRange(t, 1)
		if _, err := e.host.EditConfig(name, func(old []byte) ([]byte, error) {
			var b strings.Builder
			b.Write(mounts.DropConfig(old, func(k, _ string) bool {
				return strings.HasPrefix(k, "lxc.net.") || strings.HasPrefix(k, "lxc.signal.")
			}))
			b.WriteString("lxc.net.0.type = none\nlxc.signal.halt = SIGUSR1\nlxc.init.cmd = /usr/bin/node /opt/app/s.js\n")
			b.WriteString("lxc.environment = PORT=" + strconv.Itoa(port) + "\n")
			b.WriteString("lxc.mount.entry = " + e.node + " usr/bin/node none bind,ro,create=file 0 0\n")
			return []byte(b.String()), nil
		}); err != nil {
			t.Fatal(err)
		}
		wantDev := func(label string, want ...string) {
			t.Helper()
			c, err := e.prov.Check(ctx, []string{name})
			if err != nil || len(c) != 1 {
				t.Fatalf("Check %s: %+v %v", label, c, err)
			}
			got := strings.Join(c[0].Deviations, "; ")
			for _, w := range want {
				if !strings.Contains(got, w) {
					t.Errorf("Check %s: got %q, want %q", label, got, w)
				}
			}
			if len(want) == 0 && !c[0].OK() {
				t.Errorf("Check %s: got %q, want no deviation", label, got)
			}
		}
		wantDev("before adopt", "halt signal SIGUSR1", "inspector", "node is PID 1")

		res, err := e.prov.Adopt(ctx, []string{name})
		if err != nil || res[0].Outcome != OutcomeAdopted {
			t.Fatalf("Adopt: %+v %v", res, err)
		}
		if b, _ := os.ReadFile(e.host.ConfigPath(name)); initFactsOf(b).halt != "SIGTERM" {
			t.Errorf("lxc.signal.halt after adopt: got %q, want SIGTERM", initFactsOf(b).halt)
		}
		if !strings.Contains(strings.Join(res[0].Changes, "; "), "lxc.signal.halt = SIGTERM (was SIGUSR1)") {
			t.Errorf("adopt changes: got %q, want the halt signal fixed", res[0].Changes)
		}
		wantDev("after adopt", "node is PID 1")

		res, err = e.prov.AdoptWith(ctx, []string{name}, AdoptOptions{Tini: tini})
		if err != nil || res[0].Outcome != OutcomeAdopted || res[0].Backup == "" {
			t.Fatalf("Adopt with tini: %+v %v", res, err)
		}
		wantDev("after adopt --tini")
		res, err = e.prov.AdoptWith(ctx, []string{name}, AdoptOptions{Tini: tini})
		if err != nil || res[0].Outcome != OutcomeUnchanged {
			t.Errorf("second adopt --tini: got %+v %v, want unchanged", res, err)
		}
		out, took := e.startStop(t, name)
		if out != lxcctl.StoppedClean || took > time.Second {
			t.Errorf("stop: got %s in %v, want %s well inside the 5s timeout", out, took, lxcctl.StoppedClean)
		}
	})
}

// brokenApp is a release that fails at start, as a broken build does.
const brokenApp = `console.log('starting');
console.error('broken build');
process.exit(4);
`

// TestStartErrorCarriesAppExitAndOutput: a locker whose app exits at start
// fails StartHealthy with the app's exit status and its last stderr line,
// read from its app log on the host (outside /Me), which is rotated at a
// size.
func TestStartErrorCarriesAppExitAndOutput(t *testing.T) {
	tini := requireTini(t)
	e := newAppEnv(t, brokenApp)
	ctx := context.Background()
	name := e.names("c", 1)[0]
	e.cleanup(t, name)
	opts := Options{Template: "busybox", Init: "/usr/bin/node /opt/app/s.js", Node: e.node, Tini: tini, PortBase: testfleet.PortRange(t, 1)}
	if res, err := e.prov.Provision(ctx, []string{name}, opts); err != nil || res[0].Outcome != OutcomeProvisioned {
		t.Fatalf("Provision: %+v %v", res, err)
	}
	appLog := e.host.AppLogFile(name)
	if strings.HasPrefix(appLog, e.layout.Lockers) {
		t.Errorf("app log %s is in the lockers' folders, want it outside /Me", appLog)
	}
	hc := rootHTTP()
	for i, big := range []bool{false, true} {
		if big {
			// A log past its cap is rotated before the next start.
			if err := os.WriteFile(appLog, []byte(strings.Repeat("old line\n", 150000)), 0o640); err != nil {
				t.Fatal(err)
			}
		}
		begin := time.Now()
		r := e.host.StartHealthy(ctx, name, hc, 10*time.Second)
		if r.OK() || r.Err == nil {
			t.Fatalf("start %d: got %s, want a failure", i, r.Outcome)
		}
		msg := r.Err.Error()
		t.Logf("start %d: %s", i, msg)
		for _, want := range []string{"stopped while starting", "app exited with status 4", "broken build", "starting"} {
			if !strings.Contains(msg, want) {
				t.Errorf("start %d: error %q, want %q in it", i, msg, want)
			}
		}
		if strings.Contains(msg, "old line") {
			t.Errorf("start %d: error %q carries lines of an earlier run", i, msg)
		}
		if took := time.Since(begin); took > 5*time.Second {
			t.Errorf("start %d: failed after %v, want well before the 10s deadline", i, took)
		}
	}
	if fi, err := os.Stat(appLog + ".1"); err != nil || fi.Size() < 1<<20 {
		t.Errorf("%s.1: got %v, want the rotated big log", appLog, err)
	}
	if b, err := os.ReadFile(appLog); err != nil || !strings.Contains(string(b), "broken build") || len(b) > 1<<20 {
		t.Errorf("%s: got %d bytes %v, want a small log with the app's output", appLog, len(b), err)
	}
}
