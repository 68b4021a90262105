package agent

// The helpers and names of provisioning that the agent's end-to-end update
// test (update_e2e_test.go) uses: provisioning moved to package provision;
// these aliases keep that test as it is until it moves too.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
	"lxcfleet/provision"
)

// Provisioner, NewProvisioner, ProvisionOptions and OutcomeProvisioned
// are package provision's.
type (
	Provisioner      = provision.Provisioner
	ProvisionOptions = provision.Options
)

var NewProvisioner = provision.New

const OutcomeProvisioned = provision.OutcomeProvisioned

// layoutEnv is a real layout (root, two releases of the fixture app,
// current -> r1, a config template folder) and a private lxcpath.
type layoutEnv struct {
	dir    string
	host   *lxcctl.Host
	layout mounts.Layout
	prov   *Provisioner
	prefix string
	node   string
}

// names returns n container names with the env's prefix.
func (e *layoutEnv) names(tag string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%s%02d", e.prefix, tag, i)
	}
	return out
}

// cleanup registers the stop and destroy of each container (one
// t.Cleanup per container).
func (e *layoutEnv) cleanup(t *testing.T, names ...string) {
	for _, name := range names {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := e.host.Stop(ctx, name, 2*time.Second); err != nil && !errors.Is(err, lxcctl.ErrNotFound) {
				t.Logf("cleanup: stopping %s: %v", name, err)
			}
			if err := e.host.Destroy(ctx, name); err != nil {
				t.Errorf("cleanup: destroying %s: %v", name, err)
			}
		})
	}
}

// nodeOptions provisions lockers that run the fixture app from /opt/app,
// under tini and the init wrapper (as provision does by default), so that
// a crash leaves its exit status and output in the app log.
func (e *layoutEnv) nodeOptions(t *testing.T, n int) ProvisionOptions {
	return ProvisionOptions{
		Template: "busybox",
		Init:     "/usr/bin/node /opt/app/server.js",
		Node:     e.node,
		Tini:     provision.DefaultTini,
		PortBase: testfleet.PortRange(t, n),
	}
}

func (e *layoutEnv) startAll(t *testing.T, names []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := lockerverbs.StartAll(ctx, e.host, names, lxcctl.StartOptions{Window: 10, Deadline: 20 * time.Second, Health: testfleet.HealthCheck()})
	if err != nil {
		t.Fatalf("StartAll: %v", err)
	}
	for _, r := range res {
		if !r.OK() {
			t.Fatalf("starting %s: %s: %v (log: %s)", r.Name, r.Outcome, r.Err, logTail(e.host.LogFile(r.Name)))
		}
	}
}

func (e *layoutEnv) release(t *testing.T, name string) string {
	t.Helper()
	in, err := e.host.Info(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	rel, deleted, err := mounts.ReleaseOfPID(in.InitPID, e.layout)
	if err != nil || deleted {
		t.Fatalf("release of %s (pid %d): %q deleted=%v err=%v", name, in.InitPID, rel, deleted, err)
	}
	return rel
}

// logTail returns the end of a log file, for failure messages.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return string(b)
}

func layoutRandHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
