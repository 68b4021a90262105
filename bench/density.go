package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"lxcfleet/agent"
	"lxcfleet/heldsock"
	"lxcfleet/lxcctl"
	"lxcfleet/provision"
)

// DensityFigures is scenario 8 (issue 20): more lockers than fit in
// memory awake, most of them asleep.
type DensityFigures struct {
	N int `json:"n"`
	// Traffic is how many lockers have a client (10 %), each a new
	// connection every IntervalMs; the rest sleep.
	Traffic    int     `json:"traffic"`
	IntervalMs float64 `json:"interval_ms"`
	// AppRSSMiB is the app's VmRSS serving (the restarts alone, median):
	// the limit is FitAwake (N/2) of it. PerLockerMiB is what one serving
	// locker adds to its cgroup (the main fleet's use with every locker
	// serving ÷ N, page cache included): less, since the node binary's
	// pages are shared.
	PerLockerMiB float64 `json:"per_locker_mib"`
	AppRSSMiB    float64 `json:"app_rss_mib,omitempty"`
	// LimitMiB is the lockers' memory limit: room for N/2 awake at
	// PerLockerMiB; FitAwake how many that is.
	LimitMiB float64 `json:"limit_mib"`
	FitAwake int     `json:"fit_awake"`
	// IdleStop is the [sleep] idle_stop it ran with.
	IdleStop string `json:"idle_stop"`
	// With the traffic lockers awake and the others asleep: how many were
	// awake and asleep, the cgroup's memory use, and over CPUSeconds of
	// wall time the lockers' CPU (their cgroup) and the agent's and the
	// holder's, each in % of one core.
	Awake        int     `json:"awake"`
	Asleep       int     `json:"asleep"`
	MemoryMiB    float64 `json:"memory_mib"`
	CPUSeconds   float64 `json:"cpu_seconds"`
	LockersCPU   float64 `json:"lockers_cpu_pct"`
	AgentCPU     float64 `json:"agent_cpu_pct"`
	HolderCPU    float64 `json:"holder_cpu_pct"`
	AgentRSSMiB  float64 `json:"agent_rss_mib"`
	HolderRSSMiB float64 `json:"holder_rss_mib"`
	// WakeSeconds: a request to a sleeping locker, connect to answer;
	// StartSeconds: one sleeping locker started alone by a start-all job
	// of its own (submitted → its end, monitor 0 s). Medians beside.
	WakeSeconds  []float64 `json:"wake_seconds"`
	StartSeconds []float64 `json:"start_seconds"`
	WakeMedian   float64   `json:"wake_median"`
	StartMedian  float64   `json:"start_median"`
	// The update (rolling A → B through the agent): awake (running)
	// before it, its window (the command), how many lockers it started,
	// and how many slept after it.
	UpdateAwake     int     `json:"update_awake"`
	UpdateWindow    float64 `json:"update_window_seconds"`
	UpdateRestarted int     `json:"update_restarted"`
	// UpdateWoken are the lockers it started that were not running
	// before it (sleeping ones it woke: none wanted).
	UpdateWoken      []string `json:"update_woken,omitempty"`
	UpdateAsleepThen int      `json:"update_asleep_after"`
	// Clients is what the traffic lockers' clients got over the scenario.
	Clients ClientFigures `json:"clients"`
	Err     string        `json:"error,omitempty"`
}

// densityIdleStop is the scenario's [sleep] idle_stop: the shortest the
// config takes (config.MinIdleStop).
const densityIdleStop = 10 * time.Second

// density runs scenario 8.
func (r *runner) density(ctx context.Context, rep *Report) *DensityFigures {
	n := r.o.DensityN
	d := &DensityFigures{N: n, Traffic: max(1, (n+9)/10), IdleStop: densityIdleStop.String(),
		IntervalMs: float64(r.o.ClientInterval.Milliseconds())}
	if r.cgParent == "" {
		d.Err = "needs the lockers' cgroup parent for its memory limit (drop -no-cgroup-parent)"
		return d
	}
	if rep.ServingMemMiB <= 0 || rep.N <= 0 {
		d.Err = "no serving memory measured on the main fleet"
		return d
	}
	d.PerLockerMiB = rep.ServingMemMiB / float64(rep.N)
	var rss []float64
	for _, m := range r.marks {
		if m.AppMemory != nil && m.AppMemory.ServingMiB > 0 {
			rss = append(rss, m.AppMemory.ServingMiB)
		}
	}
	if len(rss) == 0 {
		d.Err = "the app's serving RSS was not measured (restarts alone)"
		return d
	}
	d.AppRSSMiB = quantile(rss, 0.5)
	d.FitAwake = n / 2
	limit := int64(float64(d.FitAwake) * d.AppRSSMiB * (1 << 20))
	d.LimitMiB = float64(limit) / (1 << 20)
	cg := r.cgParent + "/density"
	mem, err := newMemCgroup(cg, limit)
	if err != nil {
		d.Err = err.Error()
		return d
	}
	defer func() {
		if err := removeCgroupParent(cg); err != nil {
			r.log.Error("cleanup", "err", err)
		}
	}()
	r.log.Info("scenario 8: density", "n", n, "limit", FormatBytes(limit), "traffic", d.Traffic)
	sleep := fmt.Sprintf("\n[sleep]\nidle_stop = %q\nsample = \"1s\"\n", densityIdleStop.String())
	f, err := r.newLXFFleet(ctx, "density", provision.SocketHeld, n, cg, sleep)
	if f != nil {
		defer f.destroy(context.WithoutCancel(ctx))
	}
	if err != nil {
		d.Err = err.Error()
		return d
	}
	if err := f.startAgent(ctx); err != nil {
		d.Err = err.Error()
		return d
	}
	asleep := func(name string) bool { return fileExists(filepath.Join(f.lxcpath, name, "sleeping.json")) }
	countAsleep := func() int {
		k := 0
		for _, name := range f.names {
			if asleep(name) {
				k++
			}
		}
		return k
	}
	// Start them a quarter at a time (the traffic lockers first, their
	// clients from then on), each quarter's idle ones left to fall
	// asleep before the next: never more than N/2 awake.
	var c *clients
	t0 := time.Now()
	batch := max(1, n/4)
	for i := 0; i < n; i += batch {
		names := f.names[i:min(n, i+batch)]
		if _, err := f.cli(ctx, append([]string{"start-all", "--monitor", "0s"}, names...)...); err != nil {
			d.Err = err.Error()
			return d
		}
		if c == nil {
			c = startClients(f.addrs[:d.Traffic], r.o.ClientInterval, r.o.ClientTimeout)
			defer func() {
				if c != nil {
					c.finish()
				}
			}()
		}
		deadline := time.Now().Add(densityIdleStop + time.Minute)
		for _, name := range names[max(0, d.Traffic-i):] {
			for !asleep(name) && time.Now().Before(deadline) && ctx.Err() == nil {
				time.Sleep(250 * time.Millisecond)
			}
		}
	}
	d.Asleep = countAsleep()
	d.Awake = n - d.Asleep
	if d.Asleep < n-d.Traffic {
		d.Err = fmt.Sprintf("%d of %d lockers without traffic fell asleep", d.Asleep, n-d.Traffic)
		return d
	}
	// Memory and CPU with the traffic lockers awake and the rest asleep.
	time.Sleep(2 * time.Second)
	d.MemoryMiB = float64(mem.usage()) / (1 << 20)
	holder := holderPID(filepath.Join(f.dir, "holder"))
	const span = 10 * time.Second
	cpu0, a0, h0 := cgroupCPUSeconds(cg), procCPUSeconds(f.agent.cmd.Process.Pid), procCPUSeconds(holder)
	time.Sleep(span)
	d.CPUSeconds = span.Seconds()
	d.LockersCPU = 100 * (cgroupCPUSeconds(cg) - cpu0) / span.Seconds()
	d.AgentCPU = 100 * (procCPUSeconds(f.agent.cmd.Process.Pid) - a0) / span.Seconds()
	if holder > 0 {
		d.HolderCPU = 100 * (procCPUSeconds(holder) - h0) / span.Seconds()
		d.HolderRSSMiB = procStatusMiB(holder, "VmRSS:")
	}
	d.AgentRSSMiB = procStatusMiB(f.agent.cmd.Process.Pid, "VmRSS:")
	// The first request to a sleeping locker against one sleeping locker
	// started alone, taken in turns (sleepers with no traffic, each used
	// once: a woken locker stays awake idle_stop after its last request).
	sleepers := f.names[d.Traffic:]
	addrOf := map[string]string{}
	for i, name := range f.names {
		addrOf[name] = f.addrs[i]
	}
	for k := 0; k+1 < len(sleepers) && k < 6; k += 2 {
		time.Sleep(time.Second)
		w := oneRequest(addrOf[sleepers[k]], r.o.ClientTimeout)
		if w.fail != "" {
			d.Err = fmt.Sprintf("waking locker %s: %s (%s)", sleepers[k], w.fail, w.err)
			return d
		}
		d.WakeSeconds = append(d.WakeSeconds, w.took.Seconds())
		time.Sleep(time.Second)
		s, err := startAlone(ctx, f.agent.client, sleepers[k+1])
		if err != nil {
			d.Err = err.Error()
			return d
		}
		d.StartSeconds = append(d.StartSeconds, s.Seconds())
	}
	d.WakeMedian, d.StartMedian = quantile(d.WakeSeconds, 0.5), quantile(d.StartSeconds, 0.5)
	// An update: it should move the awake lockers only. Awake = running
	// just before it (the agent's record aside).
	running := map[string]bool{}
	for _, name := range f.names {
		if in, err := f.stack.Host.Info(ctx, name); err == nil && in.State == lxcctl.StateRunning {
			running[name] = true
		}
	}
	d.UpdateAwake = len(running)
	out, u0, err := f.cliAt(ctx, "update-code", "--strategy", "rolling", "--target", buildTag[BuildB])
	d.UpdateWindow = time.Since(u0).Seconds()
	_ = os.WriteFile(filepath.Join(r.dir, "scenario-8.log"), out, 0o644)
	if err != nil {
		d.Err = err.Error()
	}
	started := startedNames(jobEvents(ctx, f.agent.client, out))
	d.UpdateRestarted = len(started)
	for _, name := range started {
		if !running[name] {
			d.UpdateWoken = append(d.UpdateWoken, name)
		}
	}
	d.UpdateAsleepThen = countAsleep()
	reqs := c.finish()
	c = nil
	d.Clients = clientFigures(reqs, t0, time.Now())
	return d
}

// startAlone starts one locker by a start-all job of its own through the
// agent's API (monitor 0 s) and returns the time from the submission to
// the job's end.
func startAlone(ctx context.Context, c *http.Client, name string) (time.Duration, error) {
	body, err := json.Marshal(agent.Request{Kind: agent.KindStartAll, Names: []string{name}, Trigger: "lockerbench", Policy: map[string]any{"monitor": "0s"}})
	if err != nil {
		return 0, err
	}
	var t0 time.Time
	var job struct {
		ID string `json:"id"`
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/v1/jobs", bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		t0 = time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return 0, fmt.Errorf("starting locker %s alone: %w", name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusAccepted && json.Unmarshal(b, &job) == nil && job.ID != "" {
			break
		}
		// The sleep rule's own jobs come and go: try again while one runs.
		if !strings.Contains(string(b), errBusy) || time.Now().After(deadline) {
			return 0, fmt.Errorf("starting locker %s alone: answer %d: %s", name, resp.StatusCode, tail(b))
		}
	}
	evs := jobEventsByID(ctx, c, job.ID)
	took := time.Since(t0)
	if evs == nil {
		return 0, fmt.Errorf("starting locker %s alone: no events of job %s", name, job.ID)
	}
	for _, v := range evs {
		if e, ok := v.(map[string]any); ok && e["container"] == name && e["phase"] == "failed" {
			return 0, fmt.Errorf("starting locker %s alone: it failed", name)
		}
	}
	return took, nil
}

// holderPID is the pid of the socket holder serving dir, 0 when none
// answers.
func holderPID(dir string) int {
	c := heldsock.Client{Dir: dir}
	if _, err := c.List(context.Background()); err != nil {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(dir, heldsock.PIDFile))
	if err != nil {
		return 0
	}
	var pid int
	fmt.Sscan(strings.TrimSpace(string(b)), &pid)
	return pid
}

// cgroupCPUSeconds is the CPU time a cgroup (relative to the cgroup
// root) and its children used so far.
func cgroupCPUSeconds(path string) float64 {
	if lxcctl.CgroupV2() {
		return float64(keyedInt(filepath.Join(lxcctl.CgroupRoot, path, "cpu.stat"), "usage_usec")) / 1e6
	}
	return float64(readInt(filepath.Join(lxcctl.CgroupRoot, "cpuacct", path, "cpuacct.usage"))) / 1e9
}
