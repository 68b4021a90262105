package provision

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
)

// TestUnprivilegedLockersHealthyInBothNetworks: an unprivileged (idmapped)
// locker under tini passes its health check, holds its port as the
// container's root mapped to host uid 100000, and stops cleanly, both on
// the host's network (network none: checked over HTTP from the host, so
// through the owner match; provision drops sys from lxc.mount.auto, which
// LXC cannot mount there) and in a namespace of its own (network empty:
// checked inside with exec:). A locker on the host's network whose config
// mounts sys again is reported by Check and fixed by Adopt.
func TestUnprivilegedLockersHealthyInBothNetworks(t *testing.T) {
	tini := requireTini(t)
	if !rootHasSubIDs("/etc/subuid", 100000, 65536) || !rootHasSubIDs("/etc/subgid", 100000, 65536) {
		why := "root has no 100000:65536 range in /etc/subuid and /etc/subgid, which LXC's newuidmap requires (scripts/setup-host adds it)"
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %s", why)
		}
		t.Skip(why)
	}
	e := newAppEnv(t, noHandlerApp)
	// The container's root (host uid 100000) must pass through the folders
	// above the layout and the lxcpath: t.TempDir() makes them 0700.
	for _, d := range []string{filepath.Dir(e.dir), e.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	hostNS, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		network  string
		health   string
		sharesNS bool
	}{
		{NetworkNone, "http://127.0.0.1:{port}/", true},
		{NetworkEmpty, "exec:wget -q -O /dev/null http://127.0.0.1:{port}/", false},
	} {
		t.Run(tc.network, func(t *testing.T) {
			name := e.names("u"+tc.network, 1)[0]
			e.cleanup(t, name)
			opts := Options{
				Template: "busybox", Network: tc.network, Init: "/usr/bin/node /opt/app/s.js", Node: e.node, Tini: tini,
				PortBase: testfleet.PortRange(t, 1), Idmap: []string{"u 0 100000 65536", "g 0 100000 65536"},
			}
			res, err := e.prov.Provision(ctx, []string{name}, opts)
			if err != nil || res[0].Outcome != OutcomeProvisioned {
				t.Fatalf("Provision: %+v %v", res, err)
			}
			hc, err := lxcctl.ParseHealthCheck(tc.health)
			if err != nil {
				t.Fatal(err)
			}
			hc.Interval = 20 * time.Millisecond
			if r := e.host.StartHealthy(ctx, name, hc, 20*time.Second); !r.OK() {
				t.Fatalf("StartHealthy: %s: %v (log: %s)", r.Outcome, r.Err, logTail(e.host.LogFile(name)))
			}
			if err := e.host.CheckRunning(ctx, name, hc); err != nil {
				t.Errorf("CheckRunning: %v", err)
			}
			in, err := e.host.Info(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			uidMap, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", in.InitPID))
			if f := strings.Fields(string(uidMap)); len(f) != 3 || f[0] != "0" || f[1] != "100000" || f[2] != "65536" {
				t.Errorf("uid_map of its init: %q, want 0 100000 65536", uidMap)
			}
			ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", in.InitPID))
			if (ns == hostNS) != tc.sharesNS {
				t.Errorf("network namespace %s (host %s): want shared %v", ns, hostNS, tc.sharesNS)
			}
			if c, err := e.prov.Check(ctx, []string{name}); err != nil || len(c) != 1 || !c[0].OK() {
				t.Errorf("Check: got %+v %v, want no deviation", c, err)
			}
			out, err := e.host.Stop(ctx, name, 5*time.Second)
			if err != nil || out != lxcctl.StoppedClean {
				t.Errorf("Stop: got %s %v, want a clean stop (tini forwards SIGTERM)", out, err)
			}
			if tc.network != NetworkNone {
				return
			}
			// A hand-made config that mounts sys: Check reports it, Adopt
			// drops sys, and the locker starts again.
			if _, err := e.host.EditConfig(name, func(old []byte) ([]byte, error) {
				return append(old, "lxc.mount.auto = cgroup:mixed proc:mixed sys:ro\n"...), nil
			}); err != nil {
				t.Fatal(err)
			}
			if r := e.host.StartHealthy(ctx, name, hc, 20*time.Second); r.OK() {
				t.Fatalf("StartHealthy with sys in lxc.mount.auto: got %s, want LXC to refuse it (the case this guards)", r.Outcome)
			}
			c, err := e.prov.Check(ctx, []string{name})
			if err != nil || len(c) != 1 || !strings.Contains(strings.Join(c[0].Deviations, "; "), "sys in lxc.mount.auto") {
				t.Errorf("Check with sys in lxc.mount.auto: got %+v %v, want it reported", c, err)
			}
			ar, err := e.prov.Adopt(ctx, []string{name})
			if err != nil || len(ar) != 1 || !strings.Contains(strings.Join(ar[0].Changes, "; "), "set lxc.mount.auto = cgroup:mixed proc:mixed") {
				t.Errorf("Adopt: got %+v %v, want sys dropped from lxc.mount.auto", ar, err)
			}
			if c, err := e.prov.Check(ctx, []string{name}); err != nil || len(c) != 1 || !c[0].OK() {
				t.Errorf("Check after adopt: got %+v %v, want no deviation", c, err)
			}
			if r := e.host.StartHealthy(ctx, name, hc, 20*time.Second); !r.OK() {
				t.Errorf("StartHealthy after adopt: %s: %v", r.Outcome, r.Err)
			}
		})
	}
}
