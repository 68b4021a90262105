package console_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"lxcfleet/agent"
	"lxcfleet/console"
	"lxcfleet/internal/fakecode"
	"lxcfleet/internal/testfleet"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
)

func TestMain(m *testing.M) { testfleet.Main(m) }

// lockersOnly is the real host without the fleet's base container (which
// is not a locker: it has no port and is never started).
type lockersOnly struct {
	*lxcctl.Host
	base string
}

// slowStops, when a test sets it (console tests run one at a time), makes
// a locker's stop take that much longer after the container stopped: the
// time between its stop and its start, which an offline update, stopping
// each locker just before its own start, otherwise makes a few ms.
var slowStops map[string]time.Duration

func (h lockersOnly) Stop(ctx context.Context, name string, timeout time.Duration) (lxcctl.StopOutcome, error) {
	out, err := h.Host.Stop(ctx, name, timeout)
	if d := slowStops[name]; d > 0 && err == nil {
		time.Sleep(d) // the stop's own time: nothing waits on it
	}
	return out, err
}

func (h lockersOnly) Select(ctx context.Context, names []string, group string) ([]lxcctl.Info, error) {
	infos, err := h.Host.Select(ctx, names, group)
	if err != nil || len(names) > 0 {
		return infos, err
	}
	kept := infos[:0]
	for _, in := range infos {
		if in.Name != h.base {
			kept = append(kept, in)
		}
	}
	return kept, nil
}

// env is a real agent serving the console over TCP, on real lockers.
type env struct {
	fleet   *testfleet.Fleet
	lockers []testfleet.Locker
	code    *fakecode.Code
	agent   *agent.Agent
	url     string
	token   string
	stop    func() // stops the agent (Run returns)
}

// newEnv makes n running lockers and an agent with the console; tune
// changes the agent's config before it starts.
func newEnv(t *testing.T, n int, fopts testfleet.Options, tune func(*agent.Config)) *env {
	t.Helper()
	return newEnvHeld(t, n, fopts, tune, nil)
}

// newEnvHeld is newEnv with held sockets (agent.Deps.Held) for sleeping
// lockers.
func newEnvHeld(t *testing.T, n int, fopts testfleet.Options, tune func(*agent.Config), held func(*testfleet.Fleet) agent.HeldSockets) *env {
	t.Helper()
	fleet := testfleet.New(t, fopts)
	lockers := fleet.Add(n, testfleet.Normal)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := lockerverbs.StartAll(ctx, fleet.Host, testfleet.Names(lockers), lxcctl.StartOptions{Window: n, Deadline: 30 * time.Second, Health: testfleet.HealthCheck()})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("starting %s: %v", r.Name, r.Err)
		}
	}
	code := fakecode.NewBuilds(1, 2)
	e := &env{fleet: fleet, lockers: lockers, code: code, token: "console-test-token-of-32-bytes-" + fleet.Prefix}
	addr := freeAddr(t)
	e.url = "http://" + addr + "/"
	d := agent.DefaultDefaults()
	d.Policy.Monitor = time.Second // the monitor window is tested in agent and rollout
	d.Policy.Health = "http://127.0.0.1:{port}/healthz"
	d.Policy.StopTimeout = 5 * time.Second
	d.Policy.Deadline = 30 * time.Second
	d.Policy.MaxUnavailable = 2
	cfg := agent.Config{
		LXCPath:           fleet.Path,
		StateDir:          t.TempDir(),
		Version:           "test",
		InventoryInterval: 250 * time.Millisecond,
		HealthInterval:    time.Second,
		Defaults:          d,
		Listen:            agent.Listen{Socket: filepath.Join(t.TempDir(), "agent.sock"), TCP: addr, Token: e.token, Console: console.Handler()},
		Schedules: []agent.Schedule{
			{Name: "sunday-window", Cron: "0 4 * * SUN", Request: agent.Request{Kind: agent.KindUpdate, Strategy: agent.StrategyRolling}},
			{Name: "nightly-check", Cron: "30 2 * * *", Request: agent.Request{Kind: agent.KindCheckUpdate}},
		},
	}
	if tune != nil {
		tune(&cfg)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	deps := agent.Deps{Containers: lockersOnly{fleet.Host, fleet.Prefix + "base"}, Code: code, ReleaseOf: code.ReleaseOf, Logger: log}
	if held != nil {
		deps.Held = held(fleet)
	}
	a, err := agent.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	e.agent = a
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(rctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			rcancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("agent Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("agent Run did not return 20s after its context ended")
			}
			if err := a.Close(); err != nil {
				t.Errorf("closing agent: %v", err)
			}
		})
	}
	t.Cleanup(e.stop)
	select {
	case <-a.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("the agent does not listen on %s", addr)
	}
	return e
}

// testWriter sends the agent's log to the test log (quiet unless -v or a
// failure).
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// requireChromium returns the browser's path; it skips the test with a
// reason when there is none, and fails it when CI=true.
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	why := "no chromium: run scripts/setup-host (apt-get install chromium)"
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and this browser test cannot run: %s", why)
	}
	t.Skip(why)
	return ""
}

// artifactDir is where a test saves screenshots: $LXCFLEET_ARTIFACTS or
// results/ at the repository root, else a temp dir.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("LXCFLEET_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "results", "console")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		dir = t.TempDir()
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

var _ io.Writer = testWriter{}
