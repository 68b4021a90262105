package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"lxcfleet/config"
	"lxcfleet/heldsock"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
	"lxcfleet/provision"
)

// Issue 20's scenarios: a fleet lxcfleet provisions itself, once with
// held sockets and once with today's (the app binds its port), a client
// at each locker during a rolling (6) and an offline (7) update; and the
// density scenario (8, density.go).
var heldTitles = map[string]string{
	"6": "6 lxcfleet rolling update under a client at each locker",
	"7": "7 lxcfleet offline update under a client at each locker",
}

// HeldFigures is one update under a client at each locker, for one socket
// mode.
type HeldFigures struct {
	ID       string `json:"id"`
	Title    string `json:"title"`
	Socket   string `json:"socket"`
	Strategy string `json:"strategy"`
	From     string `json:"from"`
	To       string `json:"to"`
	N        int    `json:"n"`
	// IntervalMs is each client's period (a new connection each).
	IntervalMs float64 `json:"interval_ms"`
	// Clients is what the requests sent from the command's start to the
	// window's end got.
	Clients ClientFigures `json:"clients"`
	// InRestart and Elsewhere split Clients: the requests sent to a locker
	// between its stopping and its healthy event (they wait for its
	// start, in the held socket's queue), and every other one (what the
	// box's load alone gives a request, with the update running beside).
	InRestart ClientFigures `json:"in_restart"`
	Elsewhere ClientFigures `json:"elsewhere"`
	// WindowSeconds: command start → every locker has answered a request
	// with the target build; CommandSeconds: the command alone.
	WindowSeconds  float64 `json:"window_seconds"`
	CommandSeconds float64 `json:"command_seconds"`
	// Restarted is how many lockers the job started (its events).
	Restarted int `json:"restarted"`
	// From the job's events, per locker: stopping → starting (the stop
	// and the wait for a start slot) and starting → healthy, p50 / max s.
	StopToStartP50    float64 `json:"stop_to_start_p50"`
	StopToStartMax    float64 `json:"stop_to_start_max"`
	StartToHealthyP50 float64 `json:"start_to_healthy_p50"`
	StartToHealthyMax float64 `json:"start_to_healthy_max"`
	// StartCPUWeight is the fleet's startup CPU boost ([cgroup]
	// start_cpu_weight; 0: none).
	StartCPUWeight int `json:"start_cpu_weight"`
	// MaxUnavailable and MaxStarting are the fleet's K and W as its
	// config resolves them (held sockets: K 1, W 4 unless the run sets
	// them; config.HeldMaxUnavailable).
	MaxUnavailable int `json:"max_unavailable"`
	MaxStarting    int `json:"max_starting"`
	// CPU is where the box's CPU went from the command's start to the
	// window's end.
	CPU      HeldCPU `json:"cpu"`
	TimedOut bool    `json:"timed_out,omitempty"`
	Err      string  `json:"error,omitempty"`
}

// HeldCPU is the CPU used over a span, in % of one core: the fleet's
// lockers (their cgroup parent), the agent, the socket holder (0 with
// today's sockets), the benchmark process itself (the clients), and the
// whole box (/proc/stat: everything but idle and iowait, 100 × cores at
// most).
type HeldCPU struct {
	Lockers float64 `json:"lockers_pct"`
	Agent   float64 `json:"agent_pct"`
	Holder  float64 `json:"holder_pct"`
	Bench   float64 `json:"bench_pct"`
	Box     float64 `json:"box_pct"`
}

// cpuMark is a reading of the counters HeldCPU is made of.
type cpuMark struct {
	at                                 time.Time
	lockers, agent, holder, bench, box float64
}

// markCPU reads the counters now.
func (f *lxfFleet) markCPU() cpuMark {
	m := cpuMark{at: time.Now(), lockers: cgroupCPUSeconds(f.r.cgParent), bench: procCPUSeconds(os.Getpid()), box: boxBusySeconds()}
	if f.agent != nil {
		m.agent = procCPUSeconds(f.agent.cmd.Process.Pid)
	}
	if pid := holderPID(filepath.Join(f.dir, "holder")); pid > 0 {
		m.holder = procCPUSeconds(pid)
	}
	return m
}

// cpuSince is the CPU used from m0 to m1.
func cpuSince(m0, m1 cpuMark) HeldCPU {
	d := m1.at.Sub(m0.at).Seconds()
	if d <= 0 {
		return HeldCPU{}
	}
	pct := func(a, b float64) float64 { return 100 * (b - a) / d }
	return HeldCPU{Lockers: pct(m0.lockers, m1.lockers), Agent: pct(m0.agent, m1.agent), Holder: pct(m0.holder, m1.holder),
		Bench: pct(m0.bench, m1.bench), Box: pct(m0.box, m1.box)}
}

// boxBusySeconds is the CPU time all CPUs spent busy since boot (the
// first line of /proc/stat, all but idle and iowait).
func boxBusySeconds() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy float64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		var x float64
		fmt.Sscan(v, &x)
		busy += x
	}
	return busy / 100 // USER_HZ
}

// HeldAlone is one locker of a socket mode restarted alone (no agent),
// three times: stop call → a new connection answered; the fleet idle, or
// with the clients of scenarios 6 and 7 at every other locker
// (UnderTraffic).
type HeldAlone struct {
	Socket       string    `json:"socket"`
	UnderTraffic bool      `json:"under_traffic,omitempty"`
	Seconds      []float64 `json:"seconds"`
	Median       float64   `json:"median"`
	// StopSeconds is each restart's stop call alone.
	StopSeconds []float64 `json:"stop_seconds"`
	Err         string    `json:"error,omitempty"`
}

// lxfFleet is a fleet lxcfleet made itself (provision, its releases, its
// agent), in a folder of its own under the run's work folder.
type lxfFleet struct {
	r       *runner
	kind    string
	socket  string
	dir     string
	lxcpath string
	root    string
	cfgPath string
	apiSock string
	stack   *config.Stack
	// startWeight is the config's [cgroup] start_cpu_weight (the startup
	// CPU boost; 0: none).
	startWeight int
	// maxUnavailable and maxStarting are the fleet's K and W, as its
	// config resolves them.
	maxUnavailable, maxStarting int
	names                       []string
	addrs                       []string
	agent                       *agentProc
}

// listenFD is the static lxcfleet-listenfd held sockets need: -listenfd,
// else beside the lxcfleet binary; "" when there is none.
func (r *runner) listenFD() string {
	p := r.o.ListenFD
	if p == "" {
		p = filepath.Join(filepath.Dir(r.o.LXCFleet), "lxcfleet-listenfd")
	}
	if !fileExists(p) {
		return ""
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return ""
	}
	return abs
}

// newLXFFleet provisions n lockers of the bench app with lxcfleet's own
// provision (busybox, node under tini, host network, socket mode socket),
// on a first release of build A that lxcfleet builds, in cgroup parent
// cg. extra is more of the config (a [sleep] section).
func (r *runner) newLXFFleet(ctx context.Context, kind, socket string, n int, cg, extra string) (*lxfFleet, error) {
	f := &lxfFleet{r: r, kind: kind, socket: socket, dir: filepath.Join(r.work, kind)}
	f.lxcpath, f.root = filepath.Join(f.dir, "lxc"), filepath.Join(f.dir, "root")
	f.cfgPath, f.apiSock = filepath.Join(f.dir, "lxcfleet.toml"), filepath.Join(f.dir, "lxcfleet.sock")
	for _, d := range []string{f.lxcpath, f.root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	base, err := r.freeRange(n)
	if err != nil {
		return nil, err
	}
	env := []string{fmt.Sprintf("lxc.environment = WORK=%d", r.o.Work), "lxc.log.level = ERROR"}
	for _, e := range r.o.appEnv {
		env = append(env, "lxc.environment = "+e)
	}
	envTOML, _ := json.Marshal(env)
	cfg := fmt.Sprintf(`# written by lockerbench (issue 20's scenarios)
lxcpath = %q
state_dir = %q

[listen]
socket = %q

[layout]
root = %q

[code]
origin = %q

[provision]
template = "busybox"
init = "/usr/bin/node /opt/app/server.js"
network = "none"
port_base = %d
socket = %q
extra_config = %s
`, f.lxcpath, filepath.Join(f.dir, "state"), f.apiSock, f.root, r.origin.URL, base, socket, envTOML)
	if socket == provision.SocketHeld {
		lfd := r.listenFD()
		if lfd == "" {
			return nil, errors.New("held sockets need a static lxcfleet-listenfd: build it (CGO_ENABLED=0 go build -o bin/lxcfleet-listenfd ./cmd/lxcfleet-listenfd) or pass -listenfd")
		}
		cfg += fmt.Sprintf("listenfd = %q\nholder_dir = %q\n", lfd, filepath.Join(f.dir, "holder"))
	}
	cfg += `
[defaults]
health = "http://127.0.0.1:{port}/healthz"
deadline = "120s"
stop_timeout = "10s"
`
	policy, err := r.policyLines()
	if err != nil {
		return nil, err
	}
	cfg += policy
	cfg += fmt.Sprintf("\n[cgroup]\nparent = %q\n", cg)
	if w := r.o.StartCPUWeight; w != 0 {
		cfg += fmt.Sprintf("start_cpu_weight = %d\n", max(0, w))
	}
	if w := r.o.LockersCPUWeight; w > 0 {
		cfg += fmt.Sprintf("cpu_weight = %d\n", w)
	}
	cfg += extra
	if err := os.WriteFile(f.cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	file, err := config.Load(f.cfgPath, true)
	if err != nil {
		return nil, fmt.Errorf("the bench's %s config does not load: %w", kind, err)
	}
	f.startWeight = file.Cgroup.StartCPUWeight
	pol := file.AgentDefaults().Policy
	f.maxUnavailable, f.maxStarting = pol.MaxUnavailable, pol.MaxStarting
	if f.stack, err = config.Wire(file, r.log); err != nil {
		return nil, err
	}
	// The names first: a failure below destroys what was made.
	prefix := "lxb" + randHex(3) + kind[:1] + "-"
	for i := range n {
		f.names = append(f.names, fmt.Sprintf("%s%03d", prefix, i))
	}
	if _, err := f.cli(ctx, "update-code", "--local", "--strategy", "offline", "--target", buildTag[BuildA]); err != nil {
		return f, fmt.Errorf("building the %s fleet's first release: %w", kind, err)
	}
	node, err := exec.LookPath("node")
	if err == nil {
		node, err = filepath.EvalSymlinks(node)
	}
	if err != nil {
		return f, fmt.Errorf("finding node: %w", err)
	}
	out, err := f.cli(ctx, append([]string{"provision", "--node", node}, f.names...)...)
	if err != nil {
		return f, fmt.Errorf("provisioning the %s fleet: %w", kind, err)
	}
	var res struct {
		Lockers []provision.LockerResult `json:"lockers"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return f, fmt.Errorf("reading provision's answer: %w", err)
	}
	port := map[string]int{}
	for _, l := range res.Lockers {
		port[l.Name] = l.Port
	}
	for _, name := range f.names {
		if port[name] == 0 {
			return f, fmt.Errorf("provision gave locker %s no port", name)
		}
		f.addrs = append(f.addrs, "127.0.0.1:"+strconv.Itoa(port[name]))
	}
	return f, nil
}

// freeRange returns the first port of n free ones in a row above every
// port the run has handed out so far.
func (r *runner) freeRange(n int) (int, error) {
	base := r.o.PortBase
	if r.fleet != nil {
		for _, t := range r.fleet.Targets {
			base = max(base, t.Port+1)
		}
	}
	base = max(base, r.nextPort)
	for p := base; p+n < 32768; {
		ports, err := freePorts(p, n)
		if err != nil {
			return 0, err
		}
		if ports[n-1] == ports[0]+n-1 {
			r.nextPort = p + n + 10
			return p, nil
		}
		p = ports[n-1] + 1
	}
	return 0, fmt.Errorf("no %d free ports in a row below 32768", n)
}

// cli runs one lxcfleet command on the fleet (--json) and returns its
// standard output.
func (f *lxfFleet) cli(ctx context.Context, args ...string) ([]byte, error) {
	out, _, err := f.cliAt(ctx, args...)
	return out, err
}

// errBusy is the agent's answer while another job runs (one mutating job
// at a time): the sleep rule's idle and wake jobs come and go on their own.
const errBusy = "another job is running"

// cliAt is cli, trying again for up to 2 minutes while the agent runs
// another job; started is when the last try began.
func (f *lxfFleet) cliAt(ctx context.Context, args ...string) (out []byte, started time.Time, err error) {
	full := append([]string{"--lxcpath", f.lxcpath}, args[0], "--config", f.cfgPath, "--json")
	full = append(full, args[1:]...)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, f.r.o.LXCFleet, full...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		started = time.Now()
		err = cmd.Run()
		if err == nil {
			return stdout.Bytes(), started, nil
		}
		busy := strings.Contains(stdout.String()+stderr.String(), errBusy)
		if !busy || time.Now().After(deadline) || ctx.Err() != nil {
			return stdout.Bytes(), started, fmt.Errorf("lxcfleet %s: %w: %s %s", strings.Join(args, " "), err, tail(stdout.Bytes()), tail(stderr.Bytes()))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startAll starts every locker (4 at once, health-gated; not measured)
// through the fleet's own host (its start hook holds the sockets).
func (f *lxfFleet) startAll(ctx context.Context) error {
	hc := lxcctl.HealthCheck{Kind: lxcctl.HealthHTTP, Target: "http://127.0.0.1:{port}/healthz", Interval: 50 * time.Millisecond}
	res, err := lockerverbs.StartAll(ctx, f.stack.Host, f.names, lxcctl.StartOptions{Window: 4, Deadline: 2 * time.Minute, Health: hc})
	if err != nil {
		return err
	}
	for _, s := range res {
		if s.Outcome != lxcctl.Started && s.Outcome != lxcctl.AlreadyRunning {
			return fmt.Errorf("starting locker %s: %s: %v", s.Name, s.Outcome, s.Err)
		}
	}
	return nil
}

// restartsAlone restarts locker 0 alone three times (the fleet idle, no
// agent): from the stop call to a new connection answered (with held
// sockets the first one, which waits in the queue; today's, the first
// of new connections every 5 ms that is not refused).
func (f *lxfFleet) restartsAlone(ctx context.Context, underTraffic bool) HeldAlone {
	a := HeldAlone{Socket: f.socket, UnderTraffic: underTraffic}
	name, addr := f.names[0], f.addrs[0]
	if underTraffic {
		// Another locker than the idle runs', with every other locker's
		// client running (this one's is the loop below).
		name, addr = f.names[len(f.names)/2], f.addrs[len(f.names)/2]
		others := slices.Concat(f.addrs[:len(f.names)/2], f.addrs[len(f.names)/2+1:])
		c := startClients(others, f.r.o.ClientInterval, f.r.o.ClientTimeout)
		defer c.finish()
		time.Sleep(2 * time.Second) // every client sending
	}
	hc, err := lxcctl.ParseHealthCheck("http://127.0.0.1:{port}/healthz")
	if err != nil {
		a.Err = err.Error()
		return a
	}
	for range 3 {
		time.Sleep(time.Second)
		t0 := time.Now()
		if _, err := f.stack.Host.Stop(ctx, name, 10*time.Second); err != nil {
			a.Err = fmt.Sprintf("stopping locker %s: %v", name, err)
			return a
		}
		a.StopSeconds = append(a.StopSeconds, time.Since(t0).Seconds())
		// The agent's start verb (with the startup CPU boost, if any).
		started := make(chan error, 1)
		go func() {
			if r := f.stack.Host.StartHealthy(ctx, name, hc, time.Minute); !r.OK() {
				started <- fmt.Errorf("%s: %w", r.Outcome, r.Err)
				return
			}
			started <- nil
		}()
		var done time.Time
		for time.Since(t0) < time.Minute {
			r := oneRequest(addr, 30*time.Second)
			if r.fail == "" {
				done = r.sent.Add(r.took)
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := <-started; err != nil {
			a.Err = fmt.Sprintf("starting locker %s: %v", name, err)
			return a
		}
		if done.IsZero() {
			a.Err = "locker " + name + " did not answer within a minute of its restart"
			return a
		}
		a.Seconds = append(a.Seconds, done.Sub(t0).Seconds())
	}
	a.Median = quantile(a.Seconds, 0.5)
	return a
}

// startAgent starts lxcfleet's agent on the fleet.
func (f *lxfFleet) startAgent(ctx context.Context) error {
	ap, err := f.r.startAgentOn(ctx, f.lxcpath, f.cfgPath, f.apiSock, "agent-"+f.kind+".log")
	if err != nil {
		return err
	}
	f.agent = ap
	return nil
}

// updateUnderClients runs one update-code through the agent with a client
// at each locker, from 2 s before the command until every locker has
// answered the target build (or a deadline), and 1 s more.
func (f *lxfFleet) updateUnderClients(ctx context.Context, id, strategy, from, to string) HeldFigures {
	o := f.r.o
	h := HeldFigures{ID: id, Title: heldTitles[id], Socket: f.socket, Strategy: strategy, From: from, To: to, N: len(f.names),
		IntervalMs: float64(o.ClientInterval.Milliseconds()), StartCPUWeight: f.startWeight,
		MaxUnavailable: f.maxUnavailable, MaxStarting: f.maxStarting}
	f.r.log.Info("scenario", "id", id, "socket", f.socket, "strategy", strategy, "from", from, "to", to)
	c := startClients(f.addrs, o.ClientInterval, o.ClientTimeout)
	time.Sleep(2 * time.Second)
	m0 := f.markCPU()
	out, t0, err := f.cliAt(ctx, "update-code", "--strategy", strategy, "--target", buildTag[to])
	cmdEnd := time.Now()
	h.CommandSeconds = cmdEnd.Sub(t0).Seconds()
	if err != nil {
		h.Err = err.Error()
	}
	_ = os.WriteFile(filepath.Join(f.r.dir, "scenario-"+id+"-"+f.socket+".log"), out, 0o644)
	end, ok := time.Time{}, false
	for deadline := cmdEnd.Add(90 * time.Second); ctx.Err() == nil; time.Sleep(100 * time.Millisecond) {
		if end, ok = c.allOn(to); ok || time.Now().After(deadline) {
			break
		}
	}
	h.TimedOut = !ok
	if !ok {
		end = time.Now()
	}
	h.CPU = cpuSince(m0, f.markCPU())
	time.Sleep(time.Second)
	reqs := c.finish()
	h.WindowSeconds = end.Sub(t0).Seconds()
	h.Clients = clientFigures(reqs, t0, end)
	h.InRestart, h.Elsewhere = splitByRestart(reqs, t0, end, f.names, restartSpans(out))
	if f.agent != nil {
		h.Restarted = startedLockers(jobEvents(ctx, f.agent.client, out))
	}
	stopStart, startHealthy := phaseSpans(out)
	h.StopToStartP50, h.StopToStartMax = quantile(stopStart, 0.5), quantile(stopStart, 1)
	h.StartToHealthyP50, h.StartToHealthyMax = quantile(startHealthy, 0.5), quantile(startHealthy, 1)
	return h
}

// lockerEvent is one locker's event in update-code's --json output.
type lockerEvent struct {
	Type      string    `json:"type"`
	Time      time.Time `json:"time"`
	Container string    `json:"container"`
	Phase     string    `json:"phase"`
}

// lockerEvents reads update-code's --json output: its lockers' events, in
// order (other lines are skipped).
func lockerEvents(out []byte) []lockerEvent {
	var evs []lockerEvent
	for _, line := range bytes.Split(out, []byte("\n")) {
		var e lockerEvent
		if json.Unmarshal(line, &e) == nil && e.Type == "event" && e.Container != "" {
			evs = append(evs, e)
		}
	}
	return evs
}

// restartSpan is one locker's restart, from its stopping event to its
// healthy (or failed) one; a zero to: it never ended.
type restartSpan struct{ from, to time.Time }

// restartSpans gives, per locker, each stopping → healthy (or failed)
// span of update-code's --json output.
func restartSpans(out []byte) map[string][]restartSpan {
	spans := map[string][]restartSpan{}
	for _, e := range lockerEvents(out) {
		ss := spans[e.Container]
		open := len(ss) > 0 && ss[len(ss)-1].to.IsZero()
		switch {
		case e.Phase == "stopping" && !open:
			spans[e.Container] = append(ss, restartSpan{from: e.Time})
		case (e.Phase == "healthy" || e.Phase == "failed") && open:
			ss[len(ss)-1].to = e.Time
		}
	}
	return spans
}

// during reports whether t falls in the span (one that never ended runs
// to the end).
func (sp restartSpan) during(t time.Time) bool {
	return !t.Before(sp.from) && (sp.to.IsZero() || t.Before(sp.to))
}

// splitByRestart splits the requests sent in [from, to] into those sent to
// a locker (names[r.locker]) during one of its restart spans, and the
// rest.
func splitByRestart(reqs []clientReq, from, to time.Time, names []string, spans map[string][]restartSpan) (in, elsewhere ClientFigures) {
	var inR, outR []clientReq
	for _, r := range reqs {
		var ss []restartSpan
		if r.locker >= 0 && r.locker < len(names) {
			ss = spans[names[r.locker]]
		}
		if slices.ContainsFunc(ss, func(sp restartSpan) bool { return sp.during(r.sent) }) {
			inR = append(inR, r)
		} else {
			outR = append(outR, r)
		}
	}
	return clientFigures(inR, from, to), clientFigures(outR, from, to)
}

// phaseSpans reads update-code's --json events: per locker, stopping →
// starting and starting → healthy, in seconds (each locker's first of
// each phase).
func phaseSpans(out []byte) (stopStart, startHealthy []float64) {
	at := map[string]map[string]time.Time{}
	for _, e := range lockerEvents(out) {
		if at[e.Container] == nil {
			at[e.Container] = map[string]time.Time{}
		}
		if _, ok := at[e.Container][e.Phase]; !ok {
			at[e.Container][e.Phase] = e.Time
		}
	}
	for _, p := range at {
		stop, start, healthy := p["stopping"], p["starting"], p["healthy"]
		if !stop.IsZero() && !start.IsZero() {
			stopStart = append(stopStart, start.Sub(stop).Seconds())
		}
		if !start.IsZero() && !healthy.IsZero() {
			startHealthy = append(startHealthy, healthy.Sub(start).Seconds())
		}
	}
	return stopStart, startHealthy
}

// startedLockers counts the lockers a job's events show starting.
func startedLockers(evs []any) int { return len(startedNames(evs)) }

// startedNames are the lockers a job's events show starting.
func startedNames(evs []any) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range evs {
		e, ok := v.(map[string]any)
		if !ok {
			continue
		}
		if e["phase"] == "starting" {
			c, _ := e["container"].(string)
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out
}

// destroy stops the agent, destroys the lockers and stops the socket
// holder (by its pid), whatever state they are in.
func (f *lxfFleet) destroy(ctx context.Context) error {
	if f.agent != nil {
		f.agent.stop()
		f.agent = nil
	}
	var errs []error
	for _, n := range f.names {
		if !fileExists(filepath.Join(f.lxcpath, n, "config")) {
			continue
		}
		if _, err := run(ctx, f.lxcpath, "lxc-destroy", "-P", f.lxcpath, "-n", n, "-f"); err != nil {
			errs = append(errs, err)
		}
	}
	if f.socket == provision.SocketHeld {
		c := heldsock.Client{Dir: filepath.Join(f.dir, "holder")}
		if _, err := c.List(ctx); err == nil {
			if b, err := os.ReadFile(filepath.Join(c.Dir, heldsock.PIDFile)); err == nil {
				if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
					if p, err := os.FindProcess(pid); err == nil {
						_ = p.Kill()
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

// clientScenarios runs issue 20's client scenarios (6: rolling A → B,
// 7: offline, from where 6 left the fleet) on a fleet lxcfleet
// provisioned with today's sockets, then on one with held sockets, one
// fleet at a time; the main fleet is stopped meanwhile.
func (r *runner) clientScenarios(ctx context.Context, ids map[string]bool, rep *Report) error {
	n := r.o.HeldN
	for _, socket := range r.o.HeldSockets {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.log.Info("issue 20: a fleet provisioned by lxcfleet", "socket", socket, "n", n)
		f, err := r.newLXFFleet(ctx, socket, socket, n, r.cgParent, "")
		if f != nil {
			defer f.destroy(context.WithoutCancel(ctx))
		}
		fail := func(err error) {
			for _, id := range []string{"6", "7"} {
				if ids[id] {
					rep.Held = append(rep.Held, HeldFigures{ID: id, Title: heldTitles[id], Socket: socket, N: n, Err: err.Error()})
				}
			}
		}
		if err == nil {
			err = f.startAll(ctx)
		}
		if err != nil {
			fail(err)
			r.log.Error("issue 20 fleet", "socket", socket, "err", err)
			continue
		}
		rep.HeldAlone = append(rep.HeldAlone, f.restartsAlone(ctx, false), f.restartsAlone(ctx, true))
		if err := f.startAgent(ctx); err != nil {
			fail(err)
			continue
		}
		build := BuildA
		if ids["6"] {
			rep.Held = append(rep.Held, f.updateUnderClients(ctx, "6", "rolling", build, BuildB))
			build = BuildB
		}
		if ids["7"] {
			to := BuildB
			if build == BuildB {
				to = BuildC
			}
			rep.Held = append(rep.Held, f.updateUnderClients(ctx, "7", "offline", build, to))
		}
		if err := f.destroy(context.WithoutCancel(ctx)); err != nil {
			r.log.Error("destroying the issue 20 fleet", "err", err)
		}
	}
	sort.SliceStable(rep.Held, func(i, j int) bool { return rep.Held[i].ID < rep.Held[j].ID })
	return nil
}
