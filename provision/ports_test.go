package provision

import (
	"context"
	"errors"
	"lxcfleet/internal/testfleet"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPortsSkipSquattedAndEphemeral: a port a listener of the test holds on
// 127.0.0.1 is never handed out, a base in the kernel's ephemeral range is
// refused, and Check reports a locker whose port another process holds but
// not one whose own app holds it.
func TestPortsSkipSquattedAndEphemeral(t *testing.T) {
	tini := requireTini(t)
	e := newAppEnv(t, noHandlerApp)
	ctx := context.Background()
	lo, _, err := ephemeralRange()
	if err != nil {
		t.Fatal(err)
	}
	base := testfleet.PortRange(t, 4)
	squat, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base))
	if err != nil {
		t.Fatal(err)
	}
	defer squat.Close()

	names := e.names("q", 2)
	e.cleanup(t, names...)
	opts := Options{Template: "busybox", Init: "/usr/bin/node /opt/app/s.js", Node: e.node, Tini: tini, PortBase: base}
	res, err := e.prov.Provision(ctx, names, opts)
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	for _, r := range res {
		if r.Outcome != OutcomeProvisioned || r.Port == base || r.Port < base || r.Port >= lo {
			t.Errorf("%s: got %s port %d (%s), want a port above the squatted %d, below %d", r.Name, r.Outcome, r.Port, r.Error, base, lo)
		}
	}

	_, err = e.prov.Provision(ctx, e.names("r", 1), Options{Template: "busybox", PortBase: lo + 100})
	var ie InvalidError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "ephemeral") {
		t.Errorf("Provision with a base in the ephemeral range: got %v, want an InvalidError naming it", err)
	}

	// names[1] runs and holds its own port; names[0]'s port is squatted.
	if r := e.host.StartHealthy(ctx, names[1], rootHTTP(), 15*time.Second); !r.OK() {
		t.Fatalf("starting %s: %v", names[1], r.Err)
	}
	squat2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(res[0].Port))
	if err != nil {
		t.Fatal(err)
	}
	defer squat2.Close()
	checks, err := e.prov.Check(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(checks[0].Deviations, "; ")
	if want := "port " + strconv.Itoa(res[0].Port) + " is held by pid " + strconv.Itoa(os.Getpid()); !strings.Contains(got, want) {
		t.Errorf("Check of the squatted %s: got %q, want %q", names[0], got, want)
	}
	if !checks[1].OK() {
		t.Errorf("Check of %s, whose app holds its port: got %q, want no deviation", names[1], checks[1].Deviations)
	}
}
