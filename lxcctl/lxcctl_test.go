package lxcctl_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
)

func TestMain(m *testing.M) { testfleet.Main(m) }

// health is the body of the fixture app's /healthz.
type health struct {
	Locker   string `json:"locker"`
	PID      int    `json:"pid"`
	BootedAt int64  `json:"bootedAt"`
	ReadyAt  int64  `json:"readyAt"`
}

func getHealth(t *testing.T, l testfleet.Locker) (health, int) {
	t.Helper()
	resp, err := http.Get(l.URL())
	if err != nil {
		t.Fatalf("GET %s: %v", l.URL(), err)
	}
	defer resp.Body.Close()
	var h health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatalf("decoding %s: %v", l.URL(), err)
	}
	return h, resp.StatusCode
}

func TestStartStopOne(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	l := f.Add(1, testfleet.Normal)[0]
	ctx := context.Background()

	if err := f.Host.Start(ctx, l.Name); err != nil {
		t.Fatalf("Start: %v", err)
	}
	st, err := f.Host.State(ctx, l.Name)
	if err != nil || st != lxcctl.StateRunning {
		t.Fatalf("State after Start = %v, %v; want RUNNING", st, err)
	}
	// Starting a running container is a no-op.
	if err := f.Host.Start(ctx, l.Name); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	res, err := lockerverbs.StartAll(ctx, f.Host, []string{l.Name}, lxcctl.StartOptions{Window: 1, Deadline: 10 * time.Second, Health: testfleet.HealthCheck()})
	if err != nil || res[0].Outcome != lxcctl.AlreadyRunning {
		t.Fatalf("StartAll on a running locker = %+v, %v; want already-running", res, err)
	}
	waitHealthy(t, l)
	h, _ := getHealth(t, l)
	if h.Locker != l.Name || h.PID != 1 {
		t.Errorf("healthz = %+v; want locker %s as pid 1", h, l.Name)
	}

	begin := time.Now()
	out, err := f.Host.Stop(ctx, l.Name, 5*time.Second)
	if err != nil || out != lxcctl.StoppedClean {
		t.Fatalf("Stop = %v, %v; want clean", out, err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("a clean stop took %v; want well under the 5s timeout", d)
	}
	out, err = f.Host.Stop(ctx, l.Name, time.Second)
	if err != nil || out != lxcctl.AlreadyStopped {
		t.Errorf("second Stop = %v, %v; want already-stopped", out, err)
	}
	if got := f.LXCLs(t)[l.Name]; got != "STOPPED" {
		t.Errorf("lxc-ls says %s; want STOPPED", got)
	}
}

func waitHealthy(t *testing.T, l testfleet.Locker) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(l.URL())
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		// Paces the health probe: the app says it is ready only by
		// answering it (as lxcctl's own health wait does).
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never answered 200 on %s", l.Name, l.URL())
}

func TestStopAllKillsStubbornAfterOneTimeout(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	f.Add(18, testfleet.Normal)
	f.Add(2, testfleet.Stubborn)
	ctx := context.Background()
	names := testfleet.Names(f.Lockers())
	start, err := lockerverbs.StartAll(ctx, f.Host, names, lxcctl.StartOptions{Window: 8, Deadline: 20 * time.Second, Health: testfleet.HealthCheck()})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range start {
		if !r.OK() {
			t.Fatalf("starting %s: %s %v", r.Name, r.Outcome, r.Err)
		}
	}

	const timeout = 2 * time.Second
	begin := time.Now()
	res, err := lockerverbs.StopAll(ctx, f.Host, names, lxcctl.StopOptions{Parallel: 8, Timeout: timeout})
	wall := time.Since(begin)
	if err != nil {
		t.Fatal(err)
	}
	variant := map[string]testfleet.Variant{}
	for _, l := range f.Lockers() {
		variant[l.Name] = l.Variant
	}
	for _, r := range res {
		want := lxcctl.StoppedClean
		if variant[r.Name] == testfleet.Stubborn {
			want = lxcctl.StoppedKilled
		}
		if r.Outcome != want || r.Err != nil {
			t.Errorf("%s (%s): got %s %v, want %s", r.Name, variant[r.Name], r.Outcome, r.Err, want)
		}
		if r.Outcome == lxcctl.StoppedKilled && r.Duration < timeout {
			t.Errorf("%s was killed after %v, before its %v timeout", r.Name, r.Duration, timeout)
		}
	}
	// Both stubborn lockers wait out their timeout at the same time.
	if wall < timeout || wall > timeout+timeout/2 {
		t.Errorf("stop-all took %v; want about one timeout (%v), not two", wall, timeout)
	}
	for name, st := range f.LXCLs(t) {
		if st != "STOPPED" {
			t.Errorf("lxc-ls: %s is %s; want STOPPED", name, st)
		}
	}
}

func namesOf(infos []lxcctl.Info) []string {
	var out []string
	for _, in := range infos {
		out = append(out, in.Name)
	}
	return out
}

func TestStartAllKeepsWindow(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{StartupMS: 150})
	lockers := f.Add(30, testfleet.Normal)
	ctx := context.Background()
	const k = 4

	var mu sync.Mutex
	starting, most := 0, 0
	onEvent := func(e lxcctl.Event) {
		mu.Lock()
		defer mu.Unlock()
		switch e.Phase {
		case lxcctl.PhaseStarting:
			starting++
			most = max(most, starting)
		case lxcctl.PhaseHealthy, lxcctl.PhaseFailed:
			starting--
		}
	}
	res, err := lockerverbs.StartAll(ctx, f.Host, testfleet.Names(lockers), lxcctl.StartOptions{
		Window: k, Deadline: 30 * time.Second, Health: testfleet.HealthCheck(), OnEvent: onEvent,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Outcome != lxcctl.Started {
			t.Errorf("%s: got %s %v, want healthy", r.Name, r.Outcome, r.Err)
		}
	}
	if most > k {
		t.Errorf("the harness saw %d lockers starting at once; want at most %d", most, k)
	}
	if most < k {
		t.Errorf("the harness saw at most %d lockers starting at once; want the window (%d) used", most, k)
	}

	// The apps' own clocks: from node's boot to its listening, no more than
	// k lockers may overlap.
	type span struct{ at, delta int64 }
	var spans []span
	for _, l := range lockers {
		h, code := getHealth(t, l)
		if code != 200 {
			t.Fatalf("%s: status %d", l.Name, code)
		}
		spans = append(spans, span{h.BootedAt, 1}, span{h.ReadyAt, -1})
	}
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].at != spans[j].at {
			return spans[i].at < spans[j].at
		}
		return spans[i].delta < spans[j].delta // an end before a start at the same ms
	})
	cur, overlap := 0, 0
	for _, s := range spans {
		cur += int(s.delta)
		overlap = max(overlap, cur)
	}
	if overlap > k {
		t.Errorf("the apps' own boot..ready spans overlap %d deep; want at most %d", overlap, k)
	}
	for name, st := range f.LXCLs(t) {
		if strings.HasSuffix(name, "base") {
			continue
		}
		if st != "RUNNING" {
			t.Errorf("lxc-ls: %s is %s; want RUNNING", name, st)
		}
	}
}

func TestStartAllReportsBrokenWithoutBlocking(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	broken := f.Add(1, testfleet.Broken)[0]
	crash := f.Add(1, testfleet.Crash)[0]
	good := f.Add(4, testfleet.Normal)
	ctx := context.Background()
	names := append([]string{broken.Name, crash.Name}, testfleet.Names(good)...)

	const deadline = 4 * time.Second
	healthyAt := map[string]time.Duration{}
	var mu sync.Mutex
	begin := time.Now()
	res, err := lockerverbs.StartAll(ctx, f.Host, names, lxcctl.StartOptions{
		Window: 2, Deadline: deadline, Health: testfleet.HealthCheck(),
		OnEvent: func(e lxcctl.Event) {
			if e.Phase == lxcctl.PhaseHealthy {
				mu.Lock()
				healthyAt[e.Container] = time.Since(begin)
				mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]lxcctl.StartOutcome{broken.Name: lxcctl.StartUnhealthy, crash.Name: lxcctl.StartFailed}
	for _, g := range good {
		want[g.Name] = lxcctl.Started
	}
	for _, r := range res {
		if r.Outcome != want[r.Name] {
			t.Errorf("%s: got %s (%v), want %s", r.Name, r.Outcome, r.Err, want[r.Name])
		}
		if r.Outcome == lxcctl.StartFailed && r.Err == nil {
			t.Errorf("%s failed without an error", r.Name)
		}
	}
	// The crashing locker frees its slot long before the deadline, so the
	// good ones start while the broken one still holds the other slot.
	for _, g := range good {
		if at, ok := healthyAt[g.Name]; !ok || at >= deadline {
			t.Errorf("%s healthy at %v; want before the broken locker's deadline %v", g.Name, at, deadline)
		}
	}
}

func TestForkStartLeavesCallerCgroups(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	lockers := f.Add(3, testfleet.Normal)
	ctx := context.Background()
	before := readFile(t, "/proc/self/cgroup")
	res, err := lockerverbs.StartAll(ctx, f.Host, testfleet.Names(lockers), lxcctl.StartOptions{Window: 3, Deadline: 20 * time.Second, Health: testfleet.HealthCheck()})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if !r.OK() {
			t.Fatalf("%s: %s %v", r.Name, r.Outcome, r.Err)
		}
	}
	during := readFile(t, "/proc/self/cgroup")
	if _, err := lockerverbs.StopAll(ctx, f.Host, testfleet.Names(lockers), lxcctl.StopOptions{Parallel: 3, Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	after := readFile(t, "/proc/self/cgroup")
	for label, got := range map[string]string{"while running": during, "after stopping": after} {
		if got != before {
			t.Errorf("/proc/self/cgroup %s:\n%s\nwant unchanged:\n%s", label, got, before)
		}
		if strings.Contains(got, "lxc.monitor") || strings.Contains(got, "lxc.payload") {
			t.Errorf("/proc/self/cgroup %s names an LXC cgroup:\n%s", label, got)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestExec(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	l := f.Add(1, testfleet.Normal)[0]
	ctx := context.Background()
	if _, err := f.Host.Exec(ctx, l.Name, "true"); err == nil {
		t.Errorf("Exec in a stopped container: got no error")
	}
	if err := f.Host.Start(ctx, l.Name); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		argv     []string
		code     int
		stdout   string
		stderrIn string
	}{
		{[]string{"hostname"}, 0, l.Name + "\n", ""},
		{[]string{"sh", "-c", "echo out; echo err >&2; exit 7"}, 7, "out\n", "err"},
		{[]string{"cat", "/proc/1/cmdline"}, 0, "/usr/bin/node\x00/opt/app/server.js\x00", ""},
	}
	for _, tc := range tests {
		t.Run(tc.argv[0], func(t *testing.T) {
			res, err := f.Host.Exec(ctx, l.Name, tc.argv...)
			if err != nil {
				t.Fatalf("Exec %v: %v", tc.argv, err)
			}
			if res.ExitCode != tc.code || string(res.Stdout) != tc.stdout || !strings.Contains(string(res.Stderr), tc.stderrIn) {
				t.Errorf("got code %d stdout %q stderr %q, want %d %q %q", res.ExitCode, res.Stdout, res.Stderr, tc.code, tc.stdout, tc.stderrIn)
			}
		})
	}
	// A check run inside the container: the exec health check.
	hc, err := lxcctl.ParseHealthCheck("exec:wget -q -O /dev/null http://127.0.0.1:{port}/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res, err := lockerverbs.StartAll(ctx, f.Host, []string{l.Name}, lxcctl.StartOptions{Window: 1, Deadline: 5 * time.Second, Health: hc})
	if err != nil || !res[0].OK() {
		t.Errorf("StartAll with an exec check: %+v %v", res, err)
	}
	// A cancelled context kills the command.
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	if _, err := f.Host.Exec(cctx, l.Name, "sleep", "30"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Exec past its deadline: got %v, want deadline exceeded", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("a cancelled Exec returned after %v", d)
	}
}

func TestSelectOrderAndGroups(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	ls := f.Add(4, testfleet.Normal)
	set := func(name, key, value string) {
		if err := f.Host.SetConfigItem(name, key, value); err != nil {
			t.Fatal(err)
		}
	}
	set(ls[0].Name, "lxc.start.order", "20")
	set(ls[1].Name, "lxc.start.order", "10")
	set(ls[2].Name, "lxc.group", "web")
	set(ls[3].Name, "lxc.group", "web")
	set(ls[3].Name, "lxc.start.order", "-5")
	ctx := context.Background()

	all, err := f.Host.Select(ctx, testfleet.Names(ls), "")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(namesOf(all), ",")
	want := strings.Join([]string{ls[3].Name, ls[2].Name, ls[1].Name, ls[0].Name}, ",")
	if got != want {
		t.Errorf("start order: got %s, want %s", got, want)
	}
	web, err := f.Host.Select(ctx, nil, "web")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(namesOf(web), ","), ls[3].Name+","+ls[2].Name; got != want {
		t.Errorf("group web: got %s, want %s", got, want)
	}
	if _, err := f.Host.Select(ctx, []string{ls[0].Name, "nope-1", "nope-2"}, ""); !errors.Is(err, lxcctl.ErrNotFound) || !strings.Contains(err.Error(), "nope-1, nope-2") {
		t.Errorf("Select with unknown names: got %v, want ErrNotFound naming them", err)
	}
}

func TestBadInput(t *testing.T) {
	if _, err := lxcctl.NewHost(lxcctl.Options{LXCPath: "/nonexistent/lxcfleet"}); err == nil || !strings.Contains(err.Error(), "/nonexistent/lxcfleet") {
		t.Errorf("NewHost on a missing path: got %v, want an error naming it", err)
	}
	dir := t.TempDir()
	h, err := lxcctl.NewHost(lxcctl.Options{LXCPath: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := lockerverbs.StopAll(ctx, h, nil, lxcctl.StopOptions{Parallel: 0, Timeout: time.Second}); err == nil {
		t.Error("StopAll with parallel 0: no error")
	}
	if _, err := lockerverbs.StopAll(ctx, h, nil, lxcctl.StopOptions{Parallel: 1, Timeout: -time.Second}); err == nil {
		t.Error("StopAll with a negative timeout: no error")
	}
	if _, err := lockerverbs.StartAll(ctx, h, nil, lxcctl.StartOptions{Window: 0, Deadline: time.Second}); err == nil {
		t.Error("StartAll with window 0: no error")
	}
	if _, err := h.Stop(ctx, "x", 0); err == nil {
		t.Error("Stop with timeout 0: no error")
	}
	for _, name := range []string{"", "../etc", "a/b", "-x", ".hidden", strings.Repeat("a", 65), "sp ace"} {
		if _, err := h.Info(ctx, name); err == nil {
			t.Errorf("Info(%q): no error", name)
		}
	}
	if _, err := h.Info(ctx, "does-not-exist"); !errors.Is(err, lxcctl.ErrNotFound) {
		t.Errorf("Info of an unknown container: got %v, want ErrNotFound", err)
	}
}

func TestParseHealthCheck(t *testing.T) {
	in := lxcctl.Info{Name: "l1", Env: map[string]string{"PORT": "4101", "ADMIN": "9"}}
	tests := []struct {
		spec    string
		kind    lxcctl.HealthKind
		target  string
		wantErr bool
	}{
		{"", lxcctl.HealthNone, "", false},
		{"none", lxcctl.HealthNone, "", false},
		{"http://127.0.0.1:{port}/healthz", lxcctl.HealthHTTP, "http://127.0.0.1:4101/healthz", false},
		{"tcp:127.0.0.1:{env:ADMIN}", lxcctl.HealthTCP, "127.0.0.1:9", false},
		{"exec:test -f /Me/{name}", lxcctl.HealthExec, "test -f /Me/l1", false},
		{"http:/relative", "", "", true},
		{"ftp://x", "", "", true},
		{"tcp:", "", "", true},
		{"tcp:127.0.0.1", "", "", true},
		{"tcp::{port}", "", "", true},
		{"http://[::1", "", "", true},
		{"http://:{port}/healthz", "", "", true},
		{"http://[::1]:{port}/healthz", lxcctl.HealthHTTP, "http://[::1]:4101/healthz", false},
		{"tcp:[::1]:{port}", lxcctl.HealthTCP, "[::1]:4101", false},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			hc, err := lxcctl.ParseHealthCheck(tc.spec)
			if (err != nil) != tc.wantErr {
				t.Fatalf("got err %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if hc.Kind != tc.kind {
				t.Errorf("got kind %s, want %s", hc.Kind, tc.kind)
			}
			if tc.target == "" {
				return
			}
			got, err := hc.Expand(in)
			if err != nil || got != tc.target {
				t.Errorf("got %q %v, want %q", got, err, tc.target)
			}
		})
	}
	hc, _ := lxcctl.ParseHealthCheck("tcp:127.0.0.1:{env:MISSING}")
	if _, err := hc.Expand(in); err == nil {
		t.Error("Expand with a missing env key: no error")
	}
}

// TestStartFailsAtOnceWhenDestroyed is finding 6 of the break test of
// 2026-12-06: a container destroyed (lxc-destroy -f) while its start
// waits for health fails that start at once, naming the missing
// container, instead of trying its check until the deadline.
func TestStartFailsAtOnceWhenDestroyed(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	l := f.Add(1, testfleet.Normal)[0]
	// A check that never passes and whose probe hangs (a listener of the
	// test's that never accepts, as a held socket with no app): the start
	// waits until its deadline. Its probe ends (reset) once the container
	// is destroyed, so that the next state read finds it gone.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hc := lxcctl.HealthCheck{Kind: lxcctl.HealthHTTP, Target: "http://" + ln.Addr().String() + "/", Interval: 20 * time.Millisecond, Timeout: 50 * time.Second}
	done := make(chan lxcctl.StartResult, 1)
	go func() { done <- f.Host.StartHealthy(context.Background(), l.Name, hc, 60*time.Second) }()
	if out, err := exec.Command("lxc-wait", "-P", f.Path, "-n", l.Name, "-s", "RUNNING", "-t", "60").CombinedOutput(); err != nil {
		t.Fatalf("lxc-wait %s RUNNING: %v: %s", l.Name, err, out)
	}
	if out, err := exec.Command("lxc-destroy", "-P", f.Path, "-n", l.Name, "-f").CombinedOutput(); err != nil {
		t.Fatalf("lxc-destroy -f %s: %v: %s", l.Name, err, out)
	}
	ln.Close()
	// At once: well within the start's 60 s deadline (a start that waits
	// for it, the mutant "start: a destroyed container waits for the
	// deadline", fails here in 10 s, not at the test binary's timeout).
	var res lxcctl.StartResult
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("start of %s still waiting 10 s after the container was destroyed; want it failed at once", l.Name)
	}
	if res.Outcome != lxcctl.StartFailed || res.Err == nil || !errors.Is(res.Err, lxcctl.ErrNotFound) || !strings.Contains(res.Err.Error(), l.Name) {
		t.Fatalf("start of a container destroyed while it starts = %+v (%v); want failed, naming %s, wrapping ErrNotFound", res, res.Err, l.Name)
	}
	t.Logf("failed %v after its start began: %v", res.Duration.Round(time.Millisecond), res.Err)
}
