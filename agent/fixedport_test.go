package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"lxcfleet/codeupdate"
	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
	"lxcfleet/provision"
)

// fixedPort is the port every locker of the fixed-port test listens on.
const fixedPort = 8080

// TestFixedPortAppStartedAndUpdated is issue 11's fixed-port acceptance,
// the way an operator runs it: an app that always listens on 127.0.0.1:8080
// (the fixture app with its port hard-coded, from a real origin), three
// lockers provisioned with network "empty" (a namespace each, loopback up,
// under tini), started by a start-all job and moved by a rolling
// update-code job to a new release, health checked inside each locker
// (exec: busybox wget). Every locker answers on :8080 inside its own
// namespace, with its own name and the new build.
func TestFixedPortAppStartedAndUpdated(t *testing.T) {
	testfleet.RequireLXC(t)
	testfleet.RequireNode(t)
	if _, err := os.Stat(provision.DefaultTini); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %s is missing: run scripts/setup-host", provision.DefaultTini)
		}
		t.Skipf("%s not found: apt-get install tini", provision.DefaultTini)
	}
	ctx := context.Background()
	dir := t.TempDir()
	e := &layoutEnv{dir: dir, prefix: "lxfp" + layoutRandHex(3) + "-"}
	root, lxcpath := filepath.Join(dir, "root"), filepath.Join(dir, "lxc")
	for _, d := range []string{root, lxcpath} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	// The app's origin: the fixture app, its port fixed at 8080.
	origin := testfleet.NewOrigin(t)
	src, err := os.ReadFile(filepath.Join(testfleet.AppSource(), "server.js"))
	if err != nil {
		t.Fatal(err)
	}
	fixed := strings.Replace(string(src), "const port = Number(process.env.PORT);", "const port = "+strconv.Itoa(fixedPort)+";", 1)
	if fixed == string(src) {
		t.Fatal("the fixture app no longer reads its port as the test expects: update the test")
	}
	origin.Write("build A: listens on a fixed port", map[string]string{"server.js": fixed})
	code, err := codeupdate.New(codeupdate.Options{Root: root, Origin: origin.URL, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	relA, err := code.Build(ctx, "main", nil)
	if err != nil {
		t.Fatalf("building A: %v", err)
	}
	if _, err := code.Switch(ctx, relA, "test setup"); err != nil {
		t.Fatal(err)
	}

	e.layout = mounts.LayoutAt(root)
	if e.host, err = lxcctl.NewHost(lxcctl.Options{LXCPath: lxcpath}); err != nil {
		t.Fatal(err)
	}
	if e.prov, err = NewProvisioner(e.host, e.layout, discardLogger()); err != nil {
		t.Fatal(err)
	}
	e.node = testfleet.NodeBinary(t)
	names := e.names("f", 3)
	e.cleanup(t, names...)
	res, err := e.prov.Provision(ctx, names, ProvisionOptions{
		Template: "busybox",
		Network:  provision.NetworkEmpty,
		Init:     "/usr/bin/node /opt/app/server.js",
		Node:     e.node,
		Tini:     provision.DefaultTini,
	})
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	for _, r := range res {
		if r.Outcome != OutcomeProvisioned || r.Port != 0 {
			t.Fatalf("provisioning %s: %s port %d %s; want provisioned with no PORT", r.Name, r.Outcome, r.Port, r.Error)
		}
	}

	layout := e.layout
	cfg := Config{StateDir: t.TempDir(), KeepReleases: 10, Defaults: testDefaults()}
	cfg.Defaults.Policy.MaxUnavailable = 2
	cfg.Defaults.Policy.StopTimeout = 5 * time.Second
	cfg.Defaults.Policy.Deadline = 20 * time.Second
	cfg.Defaults.Policy.Health = "exec:wget -q -O /dev/null http://127.0.0.1:" + strconv.Itoa(fixedPort) + "/healthz"
	a, err := New(cfg, Deps{
		Containers: e.host,
		Code:       code,
		ReleaseOf:  func(pid int) (string, bool, error) { return mounts.ReleaseOfPID(pid, layout) },
		Logger:     testLogger(t),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	run := func(req Request) Job {
		t.Helper()
		j, err := a.Submit(req)
		if err != nil {
			t.Fatalf("submitting %s: %v", req.Kind, err)
		}
		return waitJob(t, a, j.ID)
	}
	// wantAll checks that every locker answers on :8080 inside, as itself,
	// with build rel, runs rel, and is in a network namespace of its own.
	wantAll := func(rel codeupdate.Release) {
		t.Helper()
		hostNS, _ := os.Readlink("/proc/self/ns/net")
		seen := map[string]string{}
		for _, n := range names {
			r, err := e.host.Exec(ctx, n, "wget", "-q", "-O", "-", fmt.Sprintf("http://127.0.0.1:%d/healthz", fixedPort))
			if err != nil || r.ExitCode != 0 {
				t.Errorf("%s: GET :%d inside: exit %d %q %v", n, fixedPort, r.ExitCode, r.Stderr, err)
				continue
			}
			var h health
			if err := json.Unmarshal(r.Stdout, &h); err != nil {
				t.Errorf("%s: /healthz %q: %v", n, r.Stdout, err)
				continue
			}
			if h.Locker != n || fmt.Sprint(h.Build) != strconv.Itoa(rel.Build) {
				t.Errorf("%s answers as %q with build %v, want itself with build %d", n, h.Locker, h.Build, rel.Build)
			}
			if got := e.release(t, n); got != rel.Name {
				t.Errorf("%s runs release %s, want %s", n, got, rel.Name)
			}
			in, err := e.host.Info(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", in.InitPID))
			if err != nil || ns == hostNS || seen[ns] != "" {
				t.Errorf("%s: network namespace %q (%v), want its own (host %s, others %v)", n, ns, err, hostNS, seen)
			}
			seen[ns] = n
		}
	}

	j := run(Request{Kind: KindStartAll, Trigger: "test"})
	if j.State != JobSucceeded {
		t.Fatalf("start-all: %s: %s", j.State, j.Error)
	}
	wantAll(relA)
	before := pids(t, e.host, names)

	origin.AppChange("build B: app only, same fixed port")
	j = run(Request{Kind: KindUpdate, Strategy: StrategyRolling, Trigger: "test"})
	if j.State != JobSucceeded {
		t.Fatalf("rolling update-code: %s: %s", j.State, j.Error)
	}
	relB, err := code.Current()
	if err != nil {
		t.Fatal(err)
	}
	if relB.Name == relA.Name || relB.Build <= relA.Build {
		t.Fatalf("current after the update: %s (build %d), want a release newer than %s (build %d)", relB.Name, relB.Build, relA.Name, relA.Build)
	}
	wantAll(relB)
	after := pids(t, e.host, names)
	for _, n := range names {
		if before[n] == after[n] {
			t.Errorf("%s kept init pid %d through the update: it was not restarted", n, after[n])
		}
	}
}
