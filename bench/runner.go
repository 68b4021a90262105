package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
	"lxcfleet/provision"
)

// Options configure a benchmark run.
type Options struct {
	// N is the number of lockers (default 300).
	N int
	// Work is the app's startup work (0: the profile's, 40 for the light
	// app, about 0.3 CPU s a start; 130 for the heavy one).
	Work int
	// App is the app's profile: AppLight (default) or AppHeavy.
	App string
	// MemLimit is the memory limit on the lockers' cgroup parent, which
	// holds every scenario's lockers: 0 is N × MemPerLocker +
	// MemStartRoom, negative none. A storm's out-of-memory kills then
	// happen in that cgroup, not on the host; the run refuses a limit
	// above what the host has free.
	MemLimit int64
	// Results is the folder a run's results/<timestamp>/ goes into.
	Results string
	// LXCFleet is the lxcfleet binary scenarios 4 and 5 and the agent
	// figures use.
	LXCFleet string
	// Self is this program's binary, re-executed for the prober (and the
	// fallback agent); default os.Executable().
	Self string
	// WorkDir holds the private lxcpath, layout root and origin; default a
	// new folder under /var/tmp, removed at the end.
	WorkDir string
	// PortBase is the first locker port tried (default 12000).
	PortBase int
	// Scenarios to run (default all: 1 2 3 4 5).
	Scenarios []string
	// APIDuration and APIRate shape the GET /v1/containers load (20 s at
	// 200 req/s).
	APIDuration time.Duration
	APIRate     int
	// APIFull makes every request of that load ask for the whole list;
	// by default each names the last answer's entity tag, as the
	// console's polls do, and gets 304 while the list is unchanged.
	APIFull bool
	// AgentIdle is how long the agent idles before its RSS is read (8 s).
	AgentIdle time.Duration
	// Monitor is lxcfleet's monitor window in scenarios 4 to 8 (0: its
	// default, 10 s); the smoke test shortens it.
	Monitor time.Duration
	// MaxStarting is lxcfleet's max_starting (W) in scenarios 4 to 8 (0:
	// its default): with --pacing fixed (4f, 5f) the W of the whole
	// update, with adaptive pacing its first value.
	MaxStarting int
	// MaxUnavailable is lxcfleet's max_unavailable (K) in scenarios 4 to
	// 8 (0: its default, 4); an offline update with adaptive pacing takes
	// every locker as K whatever it is.
	MaxUnavailable int
	// ProbeMode is the prober's mode (ProbeAdaptive by default; ProbePoll
	// is issue 7's 20 Hz prober); ProbeServing the adaptive prober's period
	// for serving lockers (2 s, longer when ProbeServingRate, the cap on
	// their probes in all, 10 a second, asks for it).
	ProbeMode        string
	ProbeServing     time.Duration
	ProbeServingRate float64
	// CalibrateFor is the length of each period of the probing-cost
	// calibration (5 s); NoPollReference leaves out its 20 Hz reference
	// period.
	CalibrateFor    time.Duration
	NoPollReference bool
	// BreakdownRuns is how many times one locker's restart is broken into
	// its parts with nothing probing (3; and as many under the 20 Hz
	// prober unless NoPollReference).
	BreakdownRuns int
	// NoCgroupParent leaves the lockers' cgroups where LXC puts them for
	// the LXC tools (top level) instead of in lxcfleet's parent cgroup.
	NoCgroupParent bool
	// HeldN is the lockers of each fleet of issue 20's client scenarios
	// (6, 7; default N) and DensityN of its density scenario (8; default
	// min(N, 40)).
	HeldN    int
	DensityN int
	// LockersCPUWeight is [cgroup] cpu_weight of the fleets lxcfleet
	// provisions (scenarios 6-8; 0: lxcfleet's default).
	LockersCPUWeight int
	// StartCPUWeight is [cgroup] start_cpu_weight of the fleets lxcfleet
	// provisions (scenarios 6-8): 0 leaves lxcfleet's default, < 0 turns
	// the boost off.
	StartCPUWeight int
	// HeldSockets are the socket modes scenarios 6 and 7 run (default
	// both: provision.SocketApp, then provision.SocketHeld).
	HeldSockets []string
	// ClientInterval is each client's period in 6, 7 and 8 (500 ms: two
	// new connections a second a locker); ClientTimeout how long a
	// request may wait for its answer before it counts as timed out (60 s).
	ClientInterval time.Duration
	ClientTimeout  time.Duration
	// ListenFD is the static lxcfleet-listenfd held sockets need (default:
	// beside LXCFleet).
	ListenFD string
	// Log receives progress.
	Log *slog.Logger
	// appEnv is the profile's environment for every locker.
	appEnv []string
}

func (o *Options) defaults() error {
	if o.N <= 0 {
		o.N = 300
	}
	env, work, err := appProfile(o.App)
	if err != nil {
		return err
	}
	if o.App == "" {
		o.App = AppLight
	}
	if o.Work <= 0 {
		o.Work = work
	}
	o.appEnv = env
	if o.Results == "" {
		o.Results = "results"
	}
	if o.Self == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.Self = exe
	}
	if o.PortBase == 0 {
		o.PortBase = 12000
	}
	if len(o.Scenarios) == 0 {
		o.Scenarios = DefaultScenarios
	}
	if len(o.HeldSockets) == 0 {
		o.HeldSockets = []string{provision.SocketApp, provision.SocketHeld}
	}
	for _, m := range o.HeldSockets {
		if m != provision.SocketApp && m != provision.SocketHeld {
			return fmt.Errorf("socket mode %q: want %q or %q", m, provision.SocketApp, provision.SocketHeld)
		}
	}
	if o.HeldN <= 0 {
		o.HeldN = o.N
	}
	if o.DensityN <= 0 {
		o.DensityN = min(o.N, 40)
	}
	o.DensityN = max(o.DensityN, 4)
	if o.ClientInterval <= 0 {
		o.ClientInterval = 500 * time.Millisecond
	}
	if o.ClientTimeout <= 0 {
		o.ClientTimeout = time.Minute
	}
	if o.APIDuration == 0 {
		o.APIDuration = 20 * time.Second
	}
	if o.AgentIdle == 0 {
		o.AgentIdle = 8 * time.Second
	}
	if o.APIRate == 0 {
		o.APIRate = 200
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.ProbeMode == "" {
		o.ProbeMode = ProbeAdaptive
	}
	if o.ProbeServing == 0 {
		o.ProbeServing = 2 * time.Second
	}
	if o.ProbeServingRate == 0 {
		o.ProbeServingRate = 10
	}
	if o.CalibrateFor == 0 {
		o.CalibrateFor = 5 * time.Second
	}
	if o.BreakdownRuns == 0 {
		o.BreakdownRuns = 3
	}
	return nil
}

// Mark is one measured phase of the run, as the runner saw it; the figures
// come from the prober's events between T0 and Done.
type Mark struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	// Locker is set for a single-locker restart (the "alone" baseline).
	Locker int    `json:"locker,omitempty"`
	From   string `json:"from"`
	To     string `json:"to"`
	// T0 is when the command started, CmdEnd when it returned, Done when the
	// prober saw every locker answer To (or the deadline passed).
	T0     time.Time `json:"t0"`
	CmdEnd time.Time `json:"cmd_end"`
	Done   time.Time `json:"done"`
	// Window is K for lxcfleet scenarios; Pacing the --pacing it was run
	// with ("" when the binary has none).
	Window int    `json:"window,omitempty"`
	Pacing string `json:"pacing,omitempty"`
	// From lxcfleet's --json events: the most lockers starting at once as
	// its controller counts them, its starts, the highest starting limit W
	// its stage messages stated (0: none stated) and how often it changed,
	// and the events at which more were starting than the cap (W, or K
	// where no W was stated).
	CtlMaxStarting int `json:"ctl_max_starting,omitempty"`
	CtlStarts      int `json:"ctl_starts,omitempty"`
	CtlMaxW        int `json:"ctl_max_w,omitempty"`
	CtlWChanges    int `json:"ctl_w_changes,omitempty"`
	CtlOverCap     int `json:"ctl_over_cap,omitempty"`
	// Memory is what happened in the lockers' memory cgroup (its peak,
	// the limit hit, OOM kills) during the update; nil without a limit.
	Memory *MemFigures `json:"memory,omitempty"`
	// AppMemory is a single-locker restart's app memory.
	AppMemory *AppMemory `json:"app_memory,omitempty"`
	// Parts is a single-locker restart timed by the runner itself.
	Parts *RestartParts `json:"parts,omitempty"`
	// Agent is the agent that ran the update, measured during it.
	Agent *UpdateAgent `json:"agent,omitempty"`
	// NpmSeconds is the time spent in npm (measured around the command for
	// the shell plans; from lxcfleet's own report for lxcfleet).
	NpmSeconds *float64 `json:"npm_seconds,omitempty"`
	// Npm is how lxcfleet got node_modules ("ran", "reused"), when it says.
	Npm string `json:"npm,omitempty"`
	// BuildSeconds is lxcfleet's build step, as it reports it.
	BuildSeconds *float64 `json:"build_seconds,omitempty"`
	// CmdFailures counts lxc-stop/lxc-start invocations (or an lxcfleet
	// command) that exited non-zero.
	CmdFailures int      `json:"cmd_failures"`
	TimedOut    bool     `json:"timed_out,omitempty"`
	Skipped     string   `json:"skipped,omitempty"`
	Err         string   `json:"error,omitempty"`
	Notes       []string `json:"notes,omitempty"`
	Output      string   `json:"output,omitempty"` // file with the command's output
}

// runner holds one run's state.
type runner struct {
	o      Options
	log    *slog.Logger
	dir    string // results/<timestamp>
	work   string
	root   string
	origin *Origin
	fleet  *Fleet
	prober *exec.Cmd
	// pausedAt is when the prober was stopped with SIGSTOP (zero while it
	// runs); paused the time it spent stopped, which the run-wide probing
	// figures leave out.
	pausedAt time.Time
	paused   time.Duration
	// The prober's CPU and requests when the measured part of the run
	// began (after the fleet's first start).
	proberCPUAtStart float64
	proberReqAtStart int64
	status           string
	events           string
	cfgPath          string
	socket           string
	marks            []Mark
	lxcf             lxcfleetCLI
	// cgParent is the lockers' cgroup parent ("" with NoCgroupParent);
	// mem its memory side (nil without a limit).
	cgParent string
	mem      *memCgroup
	// nextPort is above every port handed out so far (issue 20's fleets).
	nextPort int
}

// DefaultScenarios is what a run does when not told: every scenario but
// 5f (rolling with pacing off).
var DefaultScenarios = []string{"1", "2", "3", "4", "4f", "5", "6", "7", "8"}

// Run runs the whole benchmark and writes its report. Every container it
// made is destroyed before it returns, also when ctx is cancelled.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the benchmark needs root (it makes privileged LXC containers)")
	}
	stamp := time.Now().UTC().Format("20060102-150405")
	r := &runner{o: o, log: o.Log, dir: filepath.Join(o.Results, stamp)}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, err
	}
	work := o.WorkDir
	if work == "" {
		w, err := os.MkdirTemp(filepath.Dir(workGlob), filepath.Base(workGlob))
		if err != nil {
			return nil, err
		}
		work = w
		defer os.RemoveAll(work)
	}
	r.work = work
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	if err := writePID(work); err != nil {
		return nil, err
	}
	r.root = filepath.Join(work, "root")
	if !o.NoCgroupParent {
		// The bench's own parent, beside lxcfleet's: its memory limit
		// must not touch lockers other work on the machine starts.
		r.cgParent = "lockerbench." + randHex(4)
		if err := os.WriteFile(filepath.Join(work, cgroupFile), []byte(r.cgParent+"\n"), 0o644); err != nil {
			return nil, err
		}
	}
	defer r.cleanup()

	rep, err := r.run(ctx)
	if rep != nil {
		r.log.Info("writing the report", "dir", r.dir)
		if werr := rep.Write(r.dir); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	return rep, err
}

// cleanup stops the prober and destroys every container, with a context of
// its own (ctx may be cancelled by then).
func (r *runner) cleanup() {
	ctx := context.Background()
	r.stopProber()
	if r.fleet != nil {
		r.log.Info("destroying the bench fleet", "lockers", len(r.fleet.Targets))
		if err := r.fleet.Destroy(ctx); err != nil {
			r.log.Error("cleanup", "err", err)
		}
	}
	if err := removeCgroupParent(r.cgParent); err != nil {
		r.log.Error("cleanup", "err", err)
	}
}

func (r *runner) run(ctx context.Context) (*Report, error) {
	o := r.o
	rep := &Report{Started: time.Now(), N: o.N, Machine: machineFacts(), Command: strings.Join(os.Args, " ")}
	r.lxcf = probeLXCFleet(o.LXCFleet)
	rep.LXCFleet = r.lxcf.describe()

	r.log.Info("making the origin (builds A, B, C)")
	var err error
	if r.origin, err = NewOrigin(ctx, r.work); err != nil {
		return nil, err
	}
	if err := r.setupShared(ctx); err != nil {
		return nil, err
	}
	r.log.Info("making lockers", "n", o.N)
	t := time.Now()
	parent := lxcctl.CgroupParent{Path: r.cgParent, CPUWeight: lxcctl.DefaultLockersCPUWeight}
	if o.NoCgroupParent {
		parent = lxcctl.CgroupParent{}
	}
	rep.CgroupParent = fmt.Sprintf("%s (cpu weight %d)", orDash(parent.Path), parent.CPUWeight)
	rep.App, rep.Work = o.App, o.Work
	if err := r.limitMemory(rep); err != nil {
		return nil, err
	}
	r.fleet, err = NewFleet(ctx, FleetOptions{N: o.N, LXCPath: filepath.Join(r.work, "lxc"), Root: r.root, PortBase: o.PortBase, Work: o.Work, Env: o.appEnv, Autostart: true,
		CgroupParent: parent, Log: r.log})
	if err != nil {
		return nil, err
	}
	rep.ProvisionSeconds = time.Since(t).Seconds()
	if err := r.writeLXCFleetConfig(); err != nil {
		return nil, err
	}
	if err := r.startProber(); err != nil {
		return nil, err
	}
	if err := r.startAll(ctx, BuildA); err != nil {
		return rep, err
	}
	proberStarted := time.Now()
	r.proberCPUAtStart = procCPUSeconds(r.prober.Process.Pid)
	if st, err := ReadStatus(r.status); err == nil {
		r.proberReqAtStart = st.Requests
	}
	// What probing costs, on the idle fleet (no probing, then the adaptive
	// prober). Then one locker restarted alone, three times (the yardstick
	// for rolling), each followed by the same restart broken into its parts
	// with nothing probing: pairs taken under the same conditions on a
	// shared machine. The 20 Hz reference (its cost, a restart under it)
	// comes last, so that its load does not spill into the others.
	r.log.Info("calibrating the probing cost")
	rep.Probing = r.measureProbing(ctx)
	r.log.Info("probing cost", "prober_pct", rep.Probing.AdaptiveProberPct, "lockers_pct", rep.Probing.AdaptiveLockerPct)
	none := Breakdown{Load: "none"}
	for i := range min(3, o.N) {
		m, err := r.restartAlone(ctx, i)
		r.marks = append(r.marks, m)
		if err != nil {
			return rep, err
		}
		if i < r.o.BreakdownRuns {
			none.Runs = append(none.Runs, r.partsAlone(ctx, i))
		}
	}
	none.Median = medianParts(none.Runs)
	rep.Breakdown = append(rep.Breakdown, none)
	r.log.Info("restart breakdown", "load", none.Load, "stop", none.Median.Stop, "lxc_start", none.Median.LXCStart, "app_ready", none.Median.AppReady,
		"detect", none.Median.Detect, "sum", none.Median.Sum, "app_cpu", none.Median.AppCPU)
	if !r.o.NoPollReference {
		r.measurePollProbing(ctx, &rep.Probing)
		r.log.Info("20 Hz probing cost", "prober_pct", rep.Probing.PollProberPct, "lockers_pct", rep.Probing.PollLockerPct)
		rep.Breakdown = append(rep.Breakdown, r.breakdownUnderPoll(ctx))
		time.Sleep(5 * time.Second)
	}
	if _, ok := r.waitAll(ctx, BuildA, time.Now().Add(time.Minute)); !ok {
		return rep, errors.New("lockers do not all answer build A after the restart breakdown")
	}
	if r.mem != nil {
		rep.ServingMemMiB = float64(r.mem.usage()) / (1 << 20)
	}
	issue20 := map[string]bool{}
	for _, id := range o.Scenarios {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if id == "6" || id == "7" || id == "8" {
			issue20[id] = true
			continue
		}
		ms, err := r.scenario(ctx, id)
		r.marks = append(r.marks, ms...)
		if err != nil {
			r.log.Error("scenario failed", "scenario", id, "err", err)
			if ctx.Err() != nil {
				return rep, err
			}
		}
	}
	if len(issue20) > 0 {
		if err := r.issue20(ctx, issue20, rep); err != nil {
			return rep, err
		}
	}
	rep.Agent = r.measureAgent(ctx)
	rep.ProberCPUPercent = procCPUPercent(r.prober.Process.Pid)
	r.finishProbing(&rep.Probing, proberStarted)
	r.stopProber()
	evs, err := ReadEvents(r.events)
	if err != nil {
		return rep, err
	}
	rep.Finished = time.Now()
	rep.analyze(evs, r.marks, r.fleet.Targets)
	return rep, nil
}

// issue20 runs issue 20's scenarios (6, 7: a client at each locker of a
// fleet lxcfleet provisioned, with held sockets and today's; 8: density)
// after the others, with the main fleet stopped, and starts it again.
func (r *runner) issue20(ctx context.Context, ids map[string]bool, rep *Report) error {
	s, _ := ReadStatus(r.status)
	build := ""
	for b, k := range s.Builds {
		if k == len(r.fleet.Targets) {
			build = b
		}
	}
	r.log.Info("issue 20: stopping the main fleet meanwhile", "build", build)
	if err := r.stopAll(ctx); err != nil {
		return err
	}
	if ids["6"] || ids["7"] {
		if err := r.clientScenarios(ctx, ids, rep); err != nil {
			return err
		}
	}
	if ids["8"] {
		rep.Density = r.density(ctx, rep)
	}
	if build == "" {
		return errors.New("the main fleet was not all on one build before issue 20's scenarios")
	}
	return r.startAll(ctx, build)
}

// limitMemory puts the run's memory limit on the lockers' cgroup parent,
// after checking that the host has that much free and 2 GiB more (so that
// the lockers hit their limit before the host runs out).
func (r *runner) limitMemory(rep *Report) error {
	limit := memLimitFor(r.o.MemLimit, r.o.N)
	if r.cgParent == "" {
		// The lockers sit at the top level: no limit but an explicit one,
		// which cannot be kept.
		if r.o.MemLimit > 0 {
			return errors.New("a memory limit needs the lockers' cgroup parent: drop -no-cgroup-parent")
		}
		return nil
	}
	if limit == 0 {
		return nil
	}
	if avail := keyedInt("/proc/meminfo", "MemAvailable:") << 10; avail > 0 && limit > avail-2<<30 {
		return fmt.Errorf("memory limit %s for %d lockers: the host has %s available, and keeps 2 GiB of it: run fewer lockers or set -mem-limit", FormatBytes(limit), r.o.N, FormatBytes(avail))
	}
	m, err := newMemCgroup(r.cgParent, limit)
	if err != nil {
		return err
	}
	r.mem = m
	rep.MemLimitMiB = float64(limit) / (1 << 20)
	r.log.Info("lockers' memory limit", "cgroup", r.cgParent, "limit", FormatBytes(limit))
	return nil
}

// setupShared makes the operators' shared code folder: a clone of the
// origin with node_modules, that current points at for the shell plans.
func (r *runner) setupShared(ctx context.Context) error {
	if err := os.MkdirAll(r.root, 0o755); err != nil {
		return err
	}
	shared := filepath.Join(r.root, "shared")
	if _, err := run(ctx, r.root, "git", "clone", "--quiet", r.origin.URL, shared); err != nil {
		return err
	}
	return r.codeShared(ctx, BuildA)
}

// codeShared puts the shared folder on a build (git + npm install) and
// points current at it.
func (r *runner) codeShared(ctx context.Context, build string) error {
	shared := filepath.Join(r.root, "shared")
	if _, err := run(ctx, shared, "git", "checkout", "--quiet", "-B", "main", buildTag[build]); err != nil {
		return err
	}
	if _, err := run(ctx, shared, "git", "branch", "--quiet", "--set-upstream-to=origin/main", "main"); err != nil {
		return err
	}
	if _, err := run(ctx, shared, "npm", "install", "--no-audit", "--no-fund"); err != nil {
		return err
	}
	return r.pointCurrent(shared)
}

// pointCurrent replaces the current symlink atomically.
func (r *runner) pointCurrent(target string) error {
	cur := filepath.Join(r.root, "current")
	tmp := cur + ".bench"
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, cur)
}

func (r *runner) startProber() error {
	r.events = filepath.Join(r.dir, "events.jsonl")
	cmd, status, err := r.launchProber("main", ProbeConfig{Events: r.events, Interval: 50 * time.Millisecond, Timeout: time.Second,
		SampleEvery: 500 * time.Millisecond, Mode: r.o.ProbeMode, Serving: r.o.ProbeServing, ServingRate: r.o.ProbeServingRate})
	if err != nil {
		return err
	}
	r.prober, r.status = cmd, status
	r.log.Info("prober started", "pid", cmd.Process.Pid, "mode", r.o.ProbeMode)
	return nil
}

// stopProber ends the prober by its PID (SIGTERM, then SIGKILL).
func (r *runner) stopProber() {
	if r.prober == nil {
		return
	}
	p := r.prober
	r.prober = nil
	stopCmd(p)
}

// waitAll waits until the prober sees every locker answer build, and
// returns when it did; ok is false at the deadline. Only a status the prober
// wrote at least 250 ms after now counts: one written earlier may predate
// the stops the caller just made (it polls every 50 ms and writes its
// status every 100 ms).
func (r *runner) waitAll(ctx context.Context, build string, deadline time.Time) (time.Time, bool) {
	fresh := time.Now().Add(250 * time.Millisecond).UnixNano()
	for {
		s, err := ReadStatus(r.status)
		if err == nil && s.T >= fresh && s.Builds[build] == len(r.fleet.Targets) {
			return time.Unix(0, s.T), true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Now(), false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startAll starts every stopped locker (4 at once, health-gated; not
// measured) and waits until all answer build.
func (r *runner) startAll(ctx context.Context, build string) error {
	r.log.Info("starting the fleet", "build", build)
	hc := lxcctl.HealthCheck{Kind: lxcctl.HealthHTTP, Target: "http://127.0.0.1:{port}/healthz", Interval: 50 * time.Millisecond}
	res, err := lockerverbs.StartAll(ctx, r.fleet.Host, r.fleet.Names(), lxcctl.StartOptions{Window: 4, Deadline: 2 * time.Minute, Health: hc})
	if err != nil {
		return err
	}
	for _, s := range res {
		if s.Outcome != lxcctl.Started && s.Outcome != lxcctl.AlreadyRunning {
			return fmt.Errorf("starting locker %s: %s: %v", s.Name, s.Outcome, s.Err)
		}
	}
	if _, ok := r.waitAll(ctx, build, time.Now().Add(time.Minute)); !ok {
		s, _ := ReadStatus(r.status)
		return fmt.Errorf("lockers do not all answer build %s after a start: %v", build, s.Builds)
	}
	return nil
}

// stopAll stops every locker (8 at once; not measured).
func (r *runner) stopAll(ctx context.Context) error {
	res, err := lockerverbs.StopAll(ctx, r.fleet.Host, r.fleet.Names(), lxcctl.StopOptions{Parallel: 8, Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	for _, s := range res {
		if s.Err != nil {
			return fmt.Errorf("stopping locker %s: %w", s.Name, s.Err)
		}
	}
	return nil
}

// restartAlone restarts locker i with the rest of the fleet idle and the
// prober running. The runner times the same restart itself (RestartParts,
// 2 ms resolution): the prober's figure is checked against it.
func (r *runner) restartAlone(ctx context.Context, i int) (Mark, error) {
	name := r.fleet.Targets[i].Name
	time.Sleep(time.Second)
	m := Mark{ID: "alone", Title: "one locker restarted alone", Locker: i, From: BuildA, To: BuildA, T0: time.Now()}
	p := r.restartParts(ctx, i, "prober ("+r.o.ProbeMode+")")
	if p.Err != "" {
		return m, fmt.Errorf("restarting locker %s alone: %s", name, p.Err)
	}
	m.CmdEnd = time.Now()
	m.Parts = &p
	// The locker must first be seen down, then up again.
	var ok bool
	m.Done, ok = r.waitAll(ctx, BuildA, time.Now().Add(time.Minute))
	if !ok {
		m.TimedOut = true
		return m, fmt.Errorf("locker %s did not come back alone", name)
	}
	m.AppMemory = r.appMemory(ctx, name)
	return m, nil
}

// AppMemory is one locker's app's memory (its init's /proc status, MiB):
// its peak over the start (VmHWM), then what it holds once serving, read
// 3 s after it first answered.
type AppMemory struct {
	PeakMiB    float64 `json:"peak_mib"`
	ServingMiB float64 `json:"serving_mib"`
	// ServingAnonMiB is its own part (RssAnon): the rest (RssFile) is
	// mostly the node binary's pages, shared by every locker.
	ServingAnonMiB float64 `json:"serving_anon_mib"`
	Err            string  `json:"error,omitempty"`
}

// appMemory reads the locker's app's memory after its start.
func (r *runner) appMemory(ctx context.Context, name string) *AppMemory {
	info, err := r.fleet.Host.Info(ctx, name)
	if err != nil || info.InitPID <= 0 {
		return &AppMemory{Err: fmt.Sprintf("finding locker %s's app: %v", name, err)}
	}
	status := fmt.Sprintf("/proc/%d/status", info.InitPID)
	a := &AppMemory{PeakMiB: float64(keyedInt(status, "VmHWM:")) / 1024}
	time.Sleep(3 * time.Second) // the app settles on its serving heap
	a.ServingMiB = float64(keyedInt(status, "VmRSS:")) / 1024
	a.ServingAnonMiB = float64(keyedInt(status, "RssAnon:")) / 1024
	if a.ServingMiB == 0 {
		a.Err = "locker " + name + "'s app exited"
	}
	return a
}

func machineFacts() Machine {
	m := Machine{Cores: runtime.NumCPU(), GOOS: runtime.GOOS}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb int64
				fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
				m.MemoryGiB = float64(kb) / (1 << 20)
			}
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if out, err := exec.Command("lxc-start", "--version").Output(); err == nil {
		m.LXC = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("node", "--version").Output(); err == nil {
		m.Node = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("npm", "--version").Output(); err == nil {
		m.Npm = strings.TrimSpace(string(out))
	}
	m.PSI = fileExists("/proc/pressure/cpu")
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAtStart = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return m
}

// procCPUPercent is a process's CPU time over its life, in % of one core.
func procCPUPercent(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 20 {
		return 0
	}
	var utime, stime, start float64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	fmt.Sscan(f[19], &start)
	up, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	var uptime float64
	fmt.Sscan(strings.Fields(string(up))[0], &uptime)
	const hz = 100 // USER_HZ on Linux
	life := uptime - start/hz
	if life <= 0 {
		return 0
	}
	return 100 * (utime + stime) / hz / life
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
