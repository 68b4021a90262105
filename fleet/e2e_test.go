package fleet_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"lxcfleet/agent"
	"lxcfleet/fleet"
	"lxcfleet/internal/etcdtest"
	"lxcfleet/internal/npmregistry"
	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
)

// TestMain routes the forkstart re-exec (as testfleet.Main), points npm at
// the test registry and removes the lxcfleet binary the tests built.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == lxcctl.ForkStartCommand {
		os.Exit(lxcctl.ForkStartMain(os.Args[2:]))
	}
	if _, err := npmregistry.Use(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	npmregistry.Done()
	testfleet.CleanBinary()
	os.Exit(code)
}

// lxcfleetBin returns the real binary (testfleet.Binary).
func lxcfleetBin(t *testing.T) string { return testfleet.Binary(t) }

// testHost is one fleet host on this machine: its own lxcpath, layout
// root, state folder, socket and config, and the real binary as its agent.
type testHost struct {
	id      string
	dir     string
	config  string
	sock    string
	lxcpath string
	names   []string
	cmd     *exec.Cmd
	exited  chan struct{}
	log     string
	stopped bool
	cl      *http.Client
}

type testFleet struct {
	t       *testing.T
	bin     string
	etcd    *etcdtest.Cluster
	origin  *testfleet.Origin
	hosts   []*testHost
	group   string
	prefix  string
	monitor string
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newTestFleet starts a 3-member etcd cluster and n hosts, each with
// lockers real busybox lockers running the fixture app from its own
// layout, on build A of a real origin.
func newTestFleet(t *testing.T, n, lockers int) *testFleet {
	return newTestFleetWith(t, fleetOptions{hosts: n, lockers: lockers})
}

// fleetOptions shape a test fleet.
type fleetOptions struct {
	hosts, lockers int
	// ttl is the hosts' session TTL ("3s" when empty).
	ttl string
	// maxUnavailable is each host's own K for its jobs (2 when 0).
	maxUnavailable int
	// endpoints, when set, gives a host the etcd endpoints it dials
	// instead of the members' (proxies of the test's, say).
	endpoints func(h *testHost, members []string) []string
}

// newTestFleetWith is newTestFleet with options.
func newTestFleetWith(t *testing.T, o fleetOptions) *testFleet {
	n, lockers := o.hosts, o.lockers
	if o.ttl == "" {
		o.ttl = "3s"
	}
	if o.maxUnavailable == 0 {
		o.maxUnavailable = 2
	}
	testfleet.RequireLXC(t)
	testfleet.RequireNode(t)
	f := &testFleet{t: t, bin: lxcfleetBin(t), group: "g" + randHex(3), prefix: "/lxcfleet-test-" + randHex(3), monitor: "2s"}
	f.etcd = etcdtest.Start(t, 3)
	f.origin = testfleet.NewOrigin(t)
	node := testfleet.NodeBinary(t)
	prefix := "lxfl" + randHex(3) + "-"
	for i := range n {
		h := &testHost{id: fmt.Sprintf("h%d", i), dir: t.TempDir()}
		h.lxcpath = filepath.Join(h.dir, "lxc")
		sockDir, err := os.MkdirTemp("", "lxff")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(sockDir) })
		h.sock = filepath.Join(sockDir, "s.sock")
		h.cl = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", h.sock)
		}}}
		for _, d := range []string{h.lxcpath, filepath.Join(h.dir, "root")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		h.config = filepath.Join(h.dir, "lxcfleet.toml")
		eps := f.etcd.Endpoints()
		if o.endpoints != nil {
			eps = o.endpoints(h, eps)
		}
		quoted := make([]string, 0, 3)
		for _, e := range eps {
			quoted = append(quoted, fmt.Sprintf("%q", e))
		}
		cfg := fmt.Sprintf(`lxcpath = %q
state_dir = %q
keep_releases = 20
inventory_interval = "1s"
[listen]
socket = %q
[layout]
root = %q
[code]
origin = %q
[defaults]
max_unavailable = %d
monitor = %q
deadline = "30s"
stop_timeout = "5s"
health = "http://127.0.0.1:{port}/healthz"
[supervision]
off = true
[fleet]
endpoints = [%s]
group = %q
host_id = %q
ttl = %q
prefix = %q
`, h.lxcpath, filepath.Join(h.dir, "state"), h.sock, filepath.Join(h.dir, "root"), f.origin.URL, o.maxUnavailable, f.monitor,
			strings.Join(quoted, ", "), f.group, h.id, o.ttl, f.prefix)
		if err := os.WriteFile(h.config, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		h.log = filepath.Join(h.dir, "agent.log")
		for j := range lockers {
			h.names = append(h.names, fmt.Sprintf("%s%s-%d", prefix, h.id, j))
		}
		f.hosts = append(f.hosts, h)
		// Build A and switch current (no locker yet), then provision.
		f.cli(t, h, 0, "update-code", "--local", "--target", "main", "--json")
		args := append([]string{"provision", "--template", "busybox", "--node", node, "--init", "/usr/bin/node /opt/app/server.js",
			"--port-base", fmt.Sprint(testfleet.PortRange(t, len(h.names)))}, h.names...)
		f.cleanupLockers(h)
		f.cli(t, h, 0, args...)
	}
	for _, h := range f.hosts {
		f.startAgent(h)
		f.cli(t, h, 0, "start-all", "--json")
	}
	return f
}

// cleanupLockers stops and destroys the host's lockers when the test ends.
func (f *testFleet) cleanupLockers(h *testHost) {
	host, err := lxcctl.NewHost(lxcctl.Options{LXCPath: h.lxcpath})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, name := range h.names {
		f.t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := host.Stop(ctx, name, 2*time.Second); err != nil {
				f.t.Logf("cleanup: stopping %s: %v", name, err)
			}
			if err := host.Destroy(ctx, name); err != nil {
				f.t.Errorf("cleanup: destroying %s: %v", name, err)
			}
		})
	}
}

// cli runs the binary with the host's config and wants exit code want.
func (f *testFleet) cli(t *testing.T, h *testHost, want int, args ...string) string {
	t.Helper()
	cmd := exec.Command(f.bin, append(args, "--config", h.config)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("lxcfleet %s: %v", strings.Join(args, " "), err)
	}
	if code != want {
		t.Fatalf("lxcfleet %s on %s: exit %d, want %d\n%s%s", strings.Join(args, " "), h.id, code, want, out.String(), errb.String())
	}
	return out.String()
}

// startAgent runs the host's agent (the real binary) and waits for its
// socket. Stopped with SIGTERM (by pid) when the test ends.
func (f *testFleet) startAgent(h *testHost) {
	t := f.t
	lf, err := os.OpenFile(h.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	h.cmd = exec.Command(f.bin, "agent", "--config", h.config, "--log-level", "info", "--log-format", "text")
	h.cmd.Stdout, h.cmd.Stderr = lf, lf
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("starting the agent of %s: %v", h.id, err)
	}
	h.exited = make(chan struct{})
	cmd, exited := h.cmd, h.exited
	go func() { _ = cmd.Wait(); lf.Close(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Errorf("the agent of %s (pid %d) did not stop 30s after SIGTERM; killing it", h.id, cmd.Process.Pid)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-exited
		}
	})
	waitFor(t, 30*time.Second, "the agent of "+h.id+" to listen", func() bool {
		c, err := net.Dial("unix", h.sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (f *testFleet) get(h *testHost, path string, out any) error {
	resp, err := h.cl.Get("http://lxcfleet" + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// build returns the host's current commit.
func (f *testFleet) build(h *testHost) string {
	var b agent.BuildInfo
	if err := f.get(h, "/v1/build", &b); err != nil {
		return ""
	}
	return b.SHA
}

// fleetJobs returns the host's update jobs started by the fleet.
func (f *testFleet) fleetJobs(t *testing.T, h *testHost) []agent.Job {
	t.Helper()
	var body struct{ Jobs []agent.Job }
	if err := f.get(h, "/v1/jobs?limit=200", &body); err != nil {
		t.Fatalf("jobs of %s: %v", h.id, err)
	}
	var out []agent.Job
	for _, j := range body.Jobs {
		if j.Kind == agent.KindUpdate && strings.HasPrefix(j.Trigger, "fleet:") {
			out = append(out, j)
		}
	}
	return out
}

// lockers returns the host's lockers as its agent sees them.
func (f *testFleet) lockers(h *testHost) ([]agent.Locker, error) {
	var body struct {
		Containers []agent.Locker `json:"containers"`
	}
	err := f.get(h, "/v1/containers", &body)
	return body.Containers, err
}

// done reports whether the host runs commit with no job running: neither
// the agent's running job nor one its journal has not yet recorded as
// ended (the agent frees its job slot a moment before it journals the end).
func (f *testFleet) done(h *testHost, commit string) bool {
	var hi agent.HostInfo
	if f.build(h) != commit || f.get(h, "/v1/host", &hi) != nil || hi.RunningJob != nil {
		return false
	}
	var body struct{ Jobs []agent.Job }
	if f.get(h, "/v1/jobs?limit=5", &body) != nil {
		return false
	}
	for _, j := range body.Jobs {
		if !j.State.Done() {
			return false
		}
	}
	return true
}

// lockersOn checks that each of the host's lockers runs and really runs
// the release of commit.
func (f *testFleet) lockersOn(t *testing.T, h *testHost, commit string) {
	t.Helper()
	ls, err := f.lockers(h)
	if err != nil {
		t.Fatalf("containers of %s: %v", h.id, err)
	}
	if len(ls) != len(h.names) {
		t.Fatalf("%s has %d lockers, want %d", h.id, len(ls), len(h.names))
	}
	for _, l := range ls {
		if l.State != lxcctl.StateRunning || !strings.HasSuffix(l.Release, "-"+commit[:12]) {
			t.Errorf("%s: locker %s is %s on %q, want RUNNING on the release of %s", h.id, l.Name, l.State, l.Release, commit[:12])
		}
	}
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !ok() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		// Paces the poll of a real agent's or etcd's state, which sends
		// this test no event (its HTTP API, a key); 100 ms is the
		// resolution of what the callers measure.
		time.Sleep(100 * time.Millisecond)
	}
}

// store is an operator's view of the group, straight on etcd.
func (f *testFleet) store(t *testing.T) *fleet.Store {
	cli, err := fleet.Dial(fleet.Config{Endpoints: f.etcd.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return fleet.NewStore(cli, f.prefix, f.group)
}

// waitAllOn waits until every host in hs runs commit.
func (f *testFleet) waitAllOn(t *testing.T, hs []*testHost, commit string, d time.Duration) {
	t.Helper()
	waitFor(t, d, "every host on "+commit[:12], func() bool {
		for _, h := range hs {
			if !f.done(h, commit) {
				return false
			}
		}
		return true
	})
}

// maxOverlap is the most fleet update jobs running at once, from the
// hosts' own job records (created..finished), for the jobs to commit.
func maxOverlap(jobs []agent.Job) int {
	type ev struct {
		at time.Time
		d  int
	}
	var evs []ev
	for _, j := range jobs {
		evs = append(evs, ev{j.Created, +1}, ev{j.Finished, -1})
	}
	sort.Slice(evs, func(i, k int) bool {
		if evs[i].at.Equal(evs[k].at) {
			return evs[i].d < evs[k].d // an end before a start at the same instant
		}
		return evs[i].at.Before(evs[k].at)
	})
	n, most := 0, 0
	for _, e := range evs {
		n += e.d
		most = max(most, n)
	}
	return most
}

// rollout publishes commit with the policy flags and waits for every host
// in hs to be on it; it returns the wall time and the fleet jobs to it.
func (f *testFleet) rollout(t *testing.T, commit string, hs []*testHost, flags ...string) (time.Duration, map[string][]agent.Job) {
	t.Helper()
	begin := time.Now()
	f.cli(t, f.hosts[0], 0, append([]string{"fleet", "publish", "main", "--commit", commit}, flags...)...)
	f.waitAllOn(t, hs, commit, 3*time.Minute)
	took := time.Since(begin)
	jobs := map[string][]agent.Job{}
	for _, h := range hs {
		for _, j := range f.fleetJobs(t, h) {
			if j.Request.Target == commit {
				jobs[h.id] = append(jobs[h.id], j)
			}
		}
	}
	return took, jobs
}

func flatten(m map[string][]agent.Job) []agent.Job {
	var out []agent.Job
	for _, js := range m {
		out = append(out, js...)
	}
	return out
}
