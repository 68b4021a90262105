package console_test

import (
	"context"
	"errors"
	"fmt"
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
	"lxcfleet/codeupdate"
	"lxcfleet/console"
	"lxcfleet/internal/testfleet"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
)

func TestMain(m *testing.M) { testfleet.Main(m) }

// stubCode stands in for the release manager (codeupdate.Manager), so
// that these tests exercise the console and the agent's strategies on real
// lockers without a git origin and npm: Build makes the next build number
// at once, target "slow" builds until cancelled, "broken" fails. It also
// plays ReleaseOf: a locker's init pid runs the release that was current
// when it was first asked about (pids can be pinned with runs).
type stubCode struct {
	mu       sync.Mutex
	releases []codeupdate.Release // oldest first
	current  string
	pidRel   map[int]string
}

func newStubCode(builds ...int) *stubCode {
	s := &stubCode{pidRel: map[int]string{}}
	for _, b := range builds {
		s.releases = append(s.releases, s.release(b))
		s.current = s.releases[len(s.releases)-1].Name
	}
	return s
}

func (s *stubCode) release(build int) codeupdate.Release {
	sha := fmt.Sprintf("%02dc0ffee%031x", build, build)
	now := time.Now()
	return codeupdate.Release{
		Name: fmt.Sprintf("%d-%s", build, sha[:12]), Build: build, SHA: sha, Short: sha[:12], Ref: "main",
		Subject: fmt.Sprintf("build %d: faster locker startup", build), CommitTime: now.Add(-time.Hour), BuildTime: now,
		Npm: "reused", State: codeupdate.StateGood,
	}
}

func (s *stubCode) Lock() (func() error, error) { return func() error { return nil }, nil }

func (s *stubCode) Build(ctx context.Context, target string, progress func(string)) (codeupdate.Release, error) {
	progress("fetching " + target)
	switch target {
	case "slow":
		<-ctx.Done()
		return codeupdate.Release{}, ctx.Err()
	case "broken":
		return codeupdate.Release{}, errors.New("npm ci: exit status 1: npm ERR! missing: left-pad@1.3.0")
	}
	if err := sleep(ctx, 400*time.Millisecond); err != nil {
		return codeupdate.Release{}, err
	}
	progress("npm: lockfile unchanged, node_modules reused")
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.release(s.releases[len(s.releases)-1].Build + 1)
	s.releases = append(s.releases, r)
	return r, nil
}

func (s *stubCode) Current() (codeupdate.Release, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.find(s.current)
}

func (s *stubCode) find(name string) (codeupdate.Release, error) {
	for _, r := range s.releases {
		if r.Name == name {
			r.Current = r.Name == s.current
			return r, nil
		}
	}
	if name == s.current {
		return codeupdate.Release{}, codeupdate.ErrNoCurrent
	}
	return codeupdate.Release{}, fmt.Errorf("release %q not found", name)
}

func (s *stubCode) Switch(ctx context.Context, rel codeupdate.Release, reason string) (codeupdate.Release, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current = rel.Name
	return s.find(rel.Name)
}

func (s *stubCode) PreviousGood() (codeupdate.Release, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.releases) - 1; i >= 0; i-- {
		if r := s.releases[i]; r.Name != s.current && r.Good() {
			return r, nil
		}
	}
	return codeupdate.Release{}, errors.New("no previous good release")
}

func (s *stubCode) MarkBad(name, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.releases {
		if s.releases[i].Name == name {
			s.releases[i].State, s.releases[i].BadReason = codeupdate.StateBad, reason
		}
	}
	return nil
}

func (s *stubCode) MarkProven(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.releases {
		if s.releases[i].Name == name {
			s.releases[i].State = codeupdate.StateProven
		}
	}
	return nil
}

func (s *stubCode) History() ([]codeupdate.Switched, error) { return nil, nil }

func (s *stubCode) Release(name string) (codeupdate.Release, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.find(name)
}

func (s *stubCode) Releases() ([]codeupdate.Release, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]codeupdate.Release, len(s.releases))
	for i, r := range s.releases {
		r.Current = r.Name == s.current
		out[i] = r
	}
	return out, nil
}

// stubHead is the build the origin's main is at: a check is as many commits
// behind as current is builds below it.
const stubHead = 4

// stubMainSHA is the commit the origin's main is at; the origin knows
// main and this commit, nothing else.
const stubMainSHA = "feedface00000000000000000000000000000004"

func (s *stubCode) CheckUpdate(ctx context.Context, target string) (codeupdate.UpdateInfo, error) {
	if target != "main" && target != stubMainSHA {
		return codeupdate.UpdateInfo{}, fmt.Errorf("resolving %q on the origin: %w", target, codeupdate.ErrUnknownTarget)
	}
	cur, _ := s.Current()
	commits := []codeupdate.Commit{{SHA: "feedface00", Subject: "locker: retry the owner sync"}, {SHA: "beadbead00", Subject: "config: new default theme"}}
	behind := max(stubHead-cur.Build, 0)
	u := codeupdate.UpdateInfo{Target: target, TargetSHA: stubMainSHA, CurrentRelease: cur.Name, CurrentSHA: cur.SHA, Available: behind > 0, Behind: behind,
		Commits: commits[:min(behind, len(commits))], ChangedFiles: 3, TargetBuild: stubHead}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.releases {
		if r.Build == stubHead {
			u.TargetRelease, u.TargetBuilt, u.TargetBad = r.Name, true, r.State == codeupdate.StateBad
		}
	}
	return u, nil
}

// addBadHead adds the origin's head build as a release marked bad (as a
// failed update leaves it).
func (s *stubCode) addBadHead() {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.release(stubHead)
	r.State, r.BadReason = codeupdate.StateBad, "3 of 4 lockers failed their health check"
	s.releases = append(s.releases, r)
}

func (s *stubCode) Prune(ctx context.Context, keep int, inUse map[string]int) ([]string, error) {
	return nil, nil
}

// releaseOf is the agent's ReleaseOf.
func (s *stubCode) releaseOf(pid int) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.pidRel[pid]; ok {
		return r, false, nil
	}
	s.pidRel[pid] = s.current
	return s.current, false, nil
}

// pin says that pid runs release name.
func (s *stubCode) pin(pid int, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pidRel[pid] = name
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// lockersOnly is the real host without the fleet's base container (which
// is not a locker: it has no port and is never started).
type lockersOnly struct {
	*lxcctl.Host
	base string
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
	code    *stubCode
	agent   *agent.Agent
	url     string
	token   string
	stop    func() // stops the agent (Run returns)
}

// newEnv makes n running lockers and an agent with the console; tune
// changes the agent's config before it starts.
func newEnv(t *testing.T, n int, fopts testfleet.Options, tune func(*agent.Config)) *env {
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
	code := newStubCode(1, 2)
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
	a, err := agent.New(cfg, agent.Deps{Containers: lockersOnly{fleet.Host, fleet.Prefix + "base"}, Code: code, ReleaseOf: code.releaseOf, Logger: log})
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
