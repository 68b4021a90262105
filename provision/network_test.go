package provision

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"lxcfleet/lxcctl"
)

// fixedPortApp listens on 3000 whatever its PORT, as many framework
// examples do.
const fixedPortApp = `require('http').createServer((q, s) => s.end(process.env.LOCKER)).listen(3000, '127.0.0.1');
`

// TestFixedPortLockersInOwnNamespaces: two lockers whose app listens on the
// same fixed port, provisioned with network empty, both start healthy
// (checked inside with busybox wget), each answering with its own name;
// Check reports an empty-network locker whose loopback is down.
func TestFixedPortLockersInOwnNamespaces(t *testing.T) {
	tini := requireTini(t)
	e := newAppEnv(t, fixedPortApp)
	ctx := context.Background()
	names := e.names("n", 2)
	e.cleanup(t, names...)
	opts := Options{Template: "busybox", Network: NetworkEmpty, Init: "/usr/bin/node /opt/app/s.js", Node: e.node, Tini: tini}
	res, err := e.prov.Provision(ctx, names, opts)
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	for _, r := range res {
		if r.Outcome != OutcomeProvisioned {
			t.Fatalf("Provision %s: %s %s", r.Name, r.Outcome, r.Error)
		}
	}
	if c, _ := e.prov.Check(ctx, names); len(c) != 2 || !c[0].OK() || !c[1].OK() {
		t.Errorf("Check: got %+v, want no deviation", c)
	}
	hc, err := lxcctl.ParseHealthCheck("exec:wget -q -O - http://127.0.0.1:3000/")
	if err != nil {
		t.Fatal(err)
	}
	hc.Interval = 20 * time.Millisecond
	for _, name := range names {
		if r := e.host.StartHealthy(ctx, name, hc, 15*time.Second); !r.OK() {
			t.Fatalf("starting %s: %s: %v (log: %s)", name, r.Outcome, r.Err, logTail(e.host.LogFile(name)))
		}
	}
	for _, name := range names {
		r, err := e.host.Exec(ctx, name, "wget", "-q", "-O", "-", "http://127.0.0.1:3000/")
		if err != nil || r.ExitCode != 0 || string(r.Stdout) != name {
			t.Errorf("%s: GET :3000 inside: got %q exit %d %v, want its own name", name, r.Stdout, r.ExitCode, err)
		}
	}

	// The hand-edited locker of the issue: empty network, loopback down.
	if _, err := e.host.EditConfig(names[1], func(old []byte) ([]byte, error) {
		return []byte(strings.Replace(string(old), "lxc.net.0.flags = up\n", "", 1)), nil
	}); err != nil {
		t.Fatal(err)
	}
	c, err := e.prov.Check(ctx, names[1:])
	if err != nil || len(c) != 1 || !strings.Contains(strings.Join(c[0].Deviations, "; "), "loopback is down") {
		t.Errorf("Check of a locker without lxc.net.0.flags = up: got %+v %v, want its loopback reported", c, err)
	}
	// Adopt brings it up again.
	ar, err := e.prov.Adopt(ctx, names[1:])
	if err != nil || len(ar) != 1 || !strings.Contains(strings.Join(ar[0].Changes, "; "), "lxc.net.0.flags = up") {
		t.Errorf("Adopt of a locker without lxc.net.0.flags = up: got %+v %v, want the flag set", ar, err)
	}
	if c, _ := e.prov.Check(ctx, names[1:]); len(c) != 1 || !c[0].OK() {
		t.Errorf("Check after adopt: got %+v, want no deviation", c)
	}
	if b, _ := os.ReadFile(e.host.ConfigPath(names[0])); !strings.Contains(string(b), "lxc.net.0.type = empty\nlxc.net.0.flags = up\n") {
		t.Errorf("config of %s:\n%s\nwant lxc.net.0.type = empty and lxc.net.0.flags = up", names[0], b)
	}
}
