package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// ProbingFigure is what measuring costs: the prober's own CPU and the
// lockers' CPU answering it, in % of one core, measured on the idle fleet
// (every locker serving) over calibrated periods: lockers with no probing
// at all (the prober stopped with SIGSTOP), with the adaptive prober, and
// with the 20 Hz prober of issue 7 for reference. The lockers' CPU comes
// from their containers' cgroups (cpuacct.usage), so other load on the
// machine does not count in it.
type ProbingFigure struct {
	Seconds float64 `json:"seconds"` // length of each calibration period
	// LockersIdlePct: the lockers' CPU with nothing probing them.
	LockersIdlePct float64 `json:"lockers_idle_pct"`
	// The adaptive prober (the one every scenario is measured with).
	TickMs            float64 `json:"tick_ms"`
	ServingSeconds    float64 `json:"serving_seconds"`
	ServingRate       float64 `json:"serving_rate"`
	AdaptiveProberPct float64 `json:"adaptive_prober_pct"`
	AdaptiveLockerPct float64 `json:"adaptive_lockers_pct"`
	AdaptiveReqPerSec float64 `json:"adaptive_requests_per_s"`
	// The 20 Hz HTTP prober, the reference.
	PollProberPct float64 `json:"poll_prober_pct"`
	PollLockerPct float64 `json:"poll_lockers_pct"`
	PollReqPerSec float64 `json:"poll_requests_per_s"`
	// LockerCPUPerRequestMs is a locker's CPU per answered probe (from the
	// 20 Hz period: many requests, a precise figure).
	LockerCPUPerRequestMs float64 `json:"locker_cpu_per_request_ms"`
	// Over the run (from the fleet's first start, less the time the prober
	// was stopped for the calibration and the breakdowns): the prober's CPU;
	// the requests it sent, and the lockers' CPU answering them (requests ×
	// the per-request cost above), both per second it ran.
	RunProberPct    float64 `json:"run_prober_pct"`
	RunRequests     int64   `json:"run_requests"`
	RunSeconds      float64 `json:"run_seconds"`
	RunLockerPct    float64 `json:"run_lockers_pct"`
	RunTotalPct     float64 `json:"run_total_pct"`
	CalibrationNote string  `json:"note,omitempty"`
	Err             string  `json:"error,omitempty"`
	idle            float64 // the lockers' idle CPU, cores
}

// lockerCPU is the CPU seconds the fleet's containers have used.
func (r *runner) lockerCPU() float64 {
	return detectCgroup(r.cgParent).cpuTotalSeconds(r.fleet.Names())
}

// pauseProber stops the prober with SIGSTOP (the lockers see no probe
// while it is stopped); resume continues it.
func (r *runner) pauseProber() {
	if r.prober != nil && r.pausedAt.IsZero() {
		_ = r.prober.Process.Signal(syscall.SIGSTOP)
		r.pausedAt = time.Now()
	}
}

func (r *runner) resumeProber() {
	if r.prober != nil && !r.pausedAt.IsZero() {
		_ = r.prober.Process.Signal(syscall.SIGCONT)
		r.paused += time.Since(r.pausedAt)
		r.pausedAt = time.Time{}
	}
}

// measureProbing runs the calibration on the idle fleet.
func (r *runner) measureProbing(ctx context.Context) ProbingFigure {
	d := r.o.CalibrateFor
	f := ProbingFigure{Seconds: d.Seconds(), TickMs: 25, ServingRate: r.o.ProbeServingRate,
		ServingSeconds: max(r.o.ProbeServing.Seconds(), float64(len(r.fleet.Targets))/r.o.ProbeServingRate)}
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	pid := r.prober.Process.Pid
	// No probing: the lockers' own idle CPU.
	r.pauseProber()
	if !sleep(time.Second) {
		r.resumeProber()
		return f
	}
	l0 := r.lockerCPU()
	t0 := time.Now()
	sleep(d)
	l1 := r.lockerCPU()
	idle := (l1 - l0) / time.Since(t0).Seconds()
	f.LockersIdlePct = 100 * idle
	r.resumeProber()
	// The adaptive prober.
	sleep(time.Second)
	s0, _ := ReadStatus(r.status)
	p0, l0 := procCPUSeconds(pid), r.lockerCPU()
	t0 = time.Now()
	sleep(d)
	s1, _ := ReadStatus(r.status)
	p1, l1 := procCPUSeconds(pid), r.lockerCPU()
	el := time.Since(t0).Seconds()
	f.AdaptiveProberPct = 100 * (p1 - p0) / el
	f.AdaptiveLockerPct = max(0, 100*((l1-l0)/el-idle))
	f.AdaptiveReqPerSec = float64(s1.Requests-s0.Requests) / el
	f.idle = idle
	return f
}

// measurePollProbing adds the 20 Hz prober's cost to f: in a process of
// its own, with the adaptive one stopped meanwhile.
func (r *runner) measurePollProbing(ctx context.Context, f *ProbingFigure) {
	d := r.o.CalibrateFor
	idle := f.idle
	sleep := func(d time.Duration) {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	r.pauseProber()
	defer r.resumeProber()
	cmd, status, err := r.launchProber("calibrate", ProbeConfig{Mode: ProbePoll, Interval: 50 * time.Millisecond, Timeout: time.Second, SampleEvery: time.Second})
	if err != nil {
		f.Err = err.Error()
		return
	}
	defer stopCmd(cmd)
	sleep(time.Second)
	s0, _ := ReadStatus(status)
	p0, l0 := procCPUSeconds(cmd.Process.Pid), r.lockerCPU()
	t0 := time.Now()
	sleep(d)
	s1, _ := ReadStatus(status)
	p1, l1 := procCPUSeconds(cmd.Process.Pid), r.lockerCPU()
	el := time.Since(t0).Seconds()
	f.PollProberPct = 100 * (p1 - p0) / el
	f.PollLockerPct = max(0, 100*((l1-l0)/el-idle))
	f.PollReqPerSec = float64(s1.Requests-s0.Requests) / el
	if n := s1.Requests - s0.Requests; n > 0 {
		f.LockerCPUPerRequestMs = 1000 * max(0, (l1-l0)-idle*el) / float64(n)
	}
}

// finishProbing adds the run-wide figures, before the prober stops.
func (r *runner) finishProbing(f *ProbingFigure, started time.Time) {
	if r.prober == nil {
		return
	}
	// Over the time it ran: the calibration and the breakdowns stop it.
	f.RunSeconds = (time.Since(started) - r.paused).Seconds()
	if f.RunSeconds > 0 {
		f.RunProberPct = 100 * (procCPUSeconds(r.prober.Process.Pid) - r.proberCPUAtStart) / f.RunSeconds
	}
	if s, err := ReadStatus(r.status); err == nil {
		f.RunRequests = s.Requests - r.proberReqAtStart
	}
	perReq := f.LockerCPUPerRequestMs
	if perReq == 0 && f.AdaptiveReqPerSec > 0 {
		perReq = 1000 * (f.AdaptiveLockerPct / 100) / f.AdaptiveReqPerSec
	}
	if f.RunSeconds > 0 {
		f.RunLockerPct = 100 * float64(f.RunRequests) * perReq / 1000 / f.RunSeconds
	}
	f.RunTotalPct = f.RunProberPct + f.RunLockerPct
}

// launchProber starts a prober process (a separate process of this
// binary) with cfg's targets set to the fleet, and waits for its first
// status. name tells its files apart.
func (r *runner) launchProber(name string, cfg ProbeConfig) (*exec.Cmd, string, error) {
	cfg.Targets = r.fleet.Targets
	cfg.CgroupParents = []string{r.cgParent}
	if cfg.Events == "" {
		cfg.Events = filepath.Join(r.work, name+"-events.jsonl")
	}
	cfg.Status = filepath.Join(r.work, name+"-status.json")
	b, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(r.work, name+"-probe.json")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		return nil, "", err
	}
	logf, err := os.Create(filepath.Join(r.dir, name+"-prober.log"))
	if err != nil {
		return nil, "", err
	}
	defer logf.Close()
	cmd := exec.Command(r.o.Self, "probe", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("starting the %s prober: %w", name, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := ReadStatus(cfg.Status); err == nil {
			return cmd, cfg.Status, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopCmd(cmd)
	return nil, "", fmt.Errorf("the %s prober wrote no status within 10s", name)
}

// stopCmd ends a process this run started, by its PID: SIGTERM, then
// SIGKILL after 10 s.
func stopCmd(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}
