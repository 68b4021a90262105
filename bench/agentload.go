package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// AgentFigure is the agent's footprint and API latency with the fleet.
type AgentFigure struct {
	// Source is the command that ran the agent.
	Source string `json:"source,omitempty"`
	// IdleRSSMiB is VmRSS after the agent has idled with every locker
	// running; PeakRSSMiB is VmHWM after the load.
	IdleRSSMiB float64 `json:"idle_rss_mib"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// Latency of GET /v1/containers on the Unix socket under a steady
	// (open-loop) load of Rate requests a second for Seconds.
	Rate     int     `json:"rate"`
	Seconds  float64 `json:"seconds"`
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	// NotModified counts the answers that were 304 (the request named
	// the last answer's entity tag, as the console's polls do).
	NotModified int     `json:"not_modified"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	// CPUSeconds is the agent's CPU time during that load: what serving
	// the API costs it (CPUPerRequestMs per request).
	CPUSeconds      float64 `json:"cpu_seconds"`
	CPUPerRequestMs float64 `json:"cpu_per_request_ms"`
	// Full is the same load with every request asking for the whole list
	// (issue 7's load, before the console's polls were conditional), run
	// after it when the load above was conditional; nil otherwise.
	Full *FullLoad `json:"full,omitempty"`
	// Containers is how many lockers the answer listed.
	Containers int    `json:"containers"`
	Err        string `json:"error,omitempty"`
}

// FullLoad is the idle agent under whole-list requests.
type FullLoad struct {
	Requests   int     `json:"requests"`
	Errors     int     `json:"errors"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	CPUSeconds float64 `json:"cpu_seconds"`
}

// measureAgent runs the agent (lxcfleet's `agent` command, or this
// program's in-process stand-in while the binary has none) against the
// bench fleet, measures its idle RSS and loads its API.
func (r *runner) measureAgent(ctx context.Context) AgentFigure {
	var a AgentFigure
	ap, err := r.startAgent(ctx, "agent.log")
	if err != nil {
		a.Err = err.Error()
		return a
	}
	defer ap.stop()
	a.Source = ap.source
	a.Containers = ap.containers
	// Idle: let its inventory refresh a couple of times.
	select {
	case <-ctx.Done():
		a.Err = ctx.Err().Error()
		return a
	case <-time.After(r.o.AgentIdle):
	}
	a.IdleRSSMiB = procStatusMiB(ap.cmd.Process.Pid, "VmRSS:")
	a.Rate, a.Seconds = r.o.APIRate, r.o.APIDuration.Seconds()
	cpu0 := procCPUSeconds(ap.cmd.Process.Pid)
	ld := loadGet(ctx, ap.client, "http://agent/v1/containers", r.o.APIRate, r.o.APIDuration, r.o.APIFull)
	lat := ld.lat
	a.CPUSeconds = procCPUSeconds(ap.cmd.Process.Pid) - cpu0
	a.Requests, a.Errors, a.NotModified = len(lat)+ld.errs, ld.errs, ld.notModified
	if a.Requests > 0 {
		a.CPUPerRequestMs = 1000 * a.CPUSeconds / float64(a.Requests)
	}
	a.P50ms, a.P99ms, a.MaxMs = quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 1)
	if !r.o.APIFull {
		cpu0 := procCPUSeconds(ap.cmd.Process.Pid)
		fl := loadGet(ctx, ap.client, "http://agent/v1/containers", r.o.APIRate, r.o.APIDuration, true)
		a.Full = &FullLoad{Requests: len(fl.lat) + fl.errs, Errors: fl.errs, CPUSeconds: procCPUSeconds(ap.cmd.Process.Pid) - cpu0,
			P50ms: quantile(fl.lat, 0.5), P99ms: quantile(fl.lat, 0.99), MaxMs: quantile(fl.lat, 1)}
	}
	a.PeakRSSMiB = procStatusMiB(ap.cmd.Process.Pid, "VmHWM:")
	return a
}

// agentProc is an agent process this run started.
type agentProc struct {
	cmd        *exec.Cmd
	exited     chan struct{}
	client     *http.Client
	source     string
	containers int
	logf       *os.File
}

// startAgent starts the agent (lxcfleet's `agent` command, or this
// program's in-process stand-in while the binary has none) on the bench
// fleet and waits until GET /v1/containers answers.
func (r *runner) startAgent(ctx context.Context, logName string) (*agentProc, error) {
	return r.startAgentOn(ctx, r.fleet.Path, r.cfgPath, r.socket, logName)
}

// startAgentOn starts the agent on an lxcpath with a config whose API
// socket is socket, and waits until GET /v1/containers answers.
func (r *runner) startAgentOn(ctx context.Context, lxcpath, cfgPath, socket, logName string) (*agentProc, error) {
	ap := &agentProc{exited: make(chan struct{})}
	var cmd *exec.Cmd
	if r.lxcf.Agent {
		cmd = exec.Command(r.o.LXCFleet, "--lxcpath", lxcpath, "agent", "--config", cfgPath)
		ap.source = "lxcfleet agent"
	} else {
		cmd = exec.Command(r.o.Self, "agent", cfgPath)
		ap.source = "lxcfleet/agent in lockerbench's agent subcommand (the lxcfleet binary has no agent command yet)"
	}
	logf, err := os.Create(filepath.Join(r.dir, logName))
	if err != nil {
		return nil, err
	}
	ap.logf = logf
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	_ = os.Remove(socket)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting the agent: %w", err)
	}
	ap.cmd = cmd
	r.log.Info("agent started", "pid", cmd.Process.Pid, "source", ap.source)
	go func() { _ = cmd.Wait(); close(ap.exited) }()
	ap.client = &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			MaxIdleConnsPerHost: 64,
		},
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := ap.client.Get("http://agent/v1/containers")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				ap.containers = strings.Count(string(body), `"name"`)
				return ap, nil
			}
		}
		select {
		case <-ap.exited:
			ap.stop()
			return nil, errors.New("the agent exited at start (see " + logName + ")")
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			ap.stop()
			return nil, fmt.Errorf("the agent did not answer on %s within 20s: %v", socket, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends the agent by its PID (SIGTERM, then SIGKILL after 15 s).
func (ap *agentProc) stop() {
	_ = ap.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ap.exited:
	case <-time.After(15 * time.Second):
		_ = ap.cmd.Process.Kill()
		<-ap.exited
	}
	ap.logf.Close()
}

// apiLoad is what loadGet measured: the latency of each answered request
// (ms), the errors, and how many answers were 304 Not Modified.
type apiLoad struct {
	lat         []float64
	errs        int
	notModified int
}

// loadGet sends GETs at a steady rate (open loop: a slow answer does not
// delay the next request) for d or until ctx ends. Unless full, each
// request names the entity tag of the last full answer (If-None-Match), as
// the console's polls do, and a 304 counts as answered.
func loadGet(ctx context.Context, c *http.Client, url string, rate int, d time.Duration, full bool) apiLoad {
	var mu sync.Mutex
	var out apiLoad
	etag, tagSeq, sent := "", 0, 0
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(d)
	for time.Now().Before(end) && ctx.Err() == nil {
		<-tick.C
		sent++
		seq := sent
		wg.Go(func() {
			t := time.Now()
			req, err := http.NewRequest("GET", url, nil)
			if err != nil {
				panic(err) // a constant URL
			}
			mu.Lock()
			if !full && etag != "" {
				req.Header.Set("If-None-Match", etag)
			}
			mu.Unlock()
			resp, err := c.Do(req)
			ok, notModified, tag := err == nil, false, ""
			if ok {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				notModified = resp.StatusCode == http.StatusNotModified && !full
				ok = resp.StatusCode == http.StatusOK || notModified
				if resp.StatusCode == http.StatusOK {
					tag = resp.Header.Get("ETag")
				}
			}
			ms := float64(time.Since(t).Microseconds()) / 1000
			mu.Lock()
			defer mu.Unlock()
			switch {
			case !ok:
				out.errs++
			default:
				out.lat = append(out.lat, ms)
				if notModified {
					out.notModified++
				}
				if tag != "" && seq > tagSeq {
					// A late answer to an older request does not
					// bring back an older tag.
					etag, tagSeq = tag, seq
				}
			}
		})
	}
	wg.Wait()
	return out
}

// procStatusMiB reads a kB field of /proc/<pid>/status in MiB.
func procStatusMiB(pid int, key string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// AgentMain runs lxcfleet's agent in this process from a config file (the
// stand-in used while the lxcfleet binary has no agent command). It serves
// until SIGTERM or SIGINT.
func AgentMain(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: agent CONFIG")
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := localAgent(args[0], log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer a.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := a.Run(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
