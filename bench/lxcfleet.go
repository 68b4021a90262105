package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"lxcfleet/config"
)

// lxcfleetCLI is what the benchmark knows about the lxcfleet binary.
type lxcfleetCLI struct {
	Bin        string `json:"bin"`
	Version    string `json:"version,omitempty"`
	UpdateCode bool   `json:"update_code"` // has `update-code --local`
	Agent      bool   `json:"agent"`       // has `agent`
	// Pacing: update-code has --pacing adaptive|fixed (issue 13).
	Pacing bool   `json:"pacing"`
	Err    string `json:"error,omitempty"`
}

// probeLXCFleet asks the binary's help which commands it has.
func probeLXCFleet(bin string) lxcfleetCLI {
	c := lxcfleetCLI{Bin: bin}
	if bin == "" {
		c.Err = "no lxcfleet binary given"
		return c
	}
	if _, err := os.Stat(bin); err != nil {
		c.Err = err.Error()
		return c
	}
	if out, err := exec.Command(bin, "update-code", "--help").CombinedOutput(); err == nil {
		c.UpdateCode = strings.Contains(string(out), "--local") && strings.Contains(string(out), "--strategy")
		c.Pacing = strings.Contains(string(out), "--pacing")
	}
	if out, err := exec.Command(bin, "agent", "--help").CombinedOutput(); err == nil {
		c.Agent = strings.Contains(string(out), "agent")
	}
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err == nil {
		c.Version = strings.TrimSpace(string(out))
	}
	return c
}

func (c lxcfleetCLI) describe() lxcfleetCLI { return c }

// missing says why scenarios 4 and 5 cannot run, or "". They run with
// the lxcfleet binary when it has `update-code --local`, otherwise with
// lockerbench's in-process stand-in (the same agent and codeupdate code
// path, see UpdateMain); only a run without either is skipped.
func (c lxcfleetCLI) missing() string { return "" }

// writeLXCFleetConfig writes the config file lxcfleet is run with: the
// bench fleet's lxcpath and layout root, the origin, and an HTTP health
// check (so that a locker counts as started only once it answers). The
// wave size is left at lxcfleet's default.
func (r *runner) writeLXCFleetConfig() error {
	r.cfgPath = filepath.Join(r.work, "lxcfleet.toml")
	r.socket = filepath.Join(r.work, "lxcfleet.sock")
	cfg := fmt.Sprintf(`# written by lockerbench
lxcpath = %q
state_dir = %q

[listen]
socket = %q

[layout]
root = %q

[code]
origin = %q

[defaults]
health = "http://127.0.0.1:{port}/healthz"
deadline = "120s"
stop_timeout = "10s"
`, r.fleet.Path, filepath.Join(r.root, "state"), r.socket, r.root, r.origin.URL)
	policy, err := r.policyLines()
	if err != nil {
		return err
	}
	cfg += policy
	// lxcfleet's lockers sit where the others' do: in the bench's parent
	// (with its memory limit), or where LXC puts them.
	cfg += fmt.Sprintf("\n[cgroup]\nparent = %q\n", r.cgParent)
	if err := os.WriteFile(r.cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	if _, err := config.Load(r.cfgPath, true); err != nil {
		return fmt.Errorf("the bench's lxcfleet config does not load: %w", err)
	}
	return nil
}

// policyLines are the [defaults] lines the run's options set (-monitor,
// -max-unavailable, -max-starting), for every scenario that runs lxcfleet.
func (r *runner) policyLines() (string, error) {
	var cfg string
	if r.o.Monitor > 0 {
		cfg += fmt.Sprintf("monitor = %q\n", r.o.Monitor.String())
	}
	if r.o.MaxStarting < 0 || r.o.MaxUnavailable < 0 {
		return "", fmt.Errorf("-max-starting %d, -max-unavailable %d: W and K are at least 1 (0 for lxcfleet's default)", r.o.MaxStarting, r.o.MaxUnavailable)
	}
	if r.o.MaxUnavailable > 0 {
		cfg += fmt.Sprintf("max_unavailable = %d\n", r.o.MaxUnavailable)
	}
	if r.o.MaxStarting > 0 {
		cfg += fmt.Sprintf("max_starting = %d\n", r.o.MaxStarting)
	}
	return cfg, nil
}

// window is the wave size (K) lxcfleet uses with the bench's config.
func (r *runner) window() int {
	c, err := config.Load(r.cfgPath, true)
	if err != nil {
		return 0
	}
	return c.AgentDefaults().Policy.MaxUnavailable
}

// updateCommand is the update-code command line: the lxcfleet binary's
// when it has the command, else lockerbench's in-process stand-in. pacing
// ("adaptive", "fixed" or "" for none) is passed only to a binary that
// has --pacing; local false sends the job to a running agent.
func (r *runner) updateCommand(strategy, build, pacing string, local bool) (bin string, args []string) {
	if r.lxcf.UpdateCode {
		args = []string{"--lxcpath", r.fleet.Path, "update-code", "--config", r.cfgPath}
		if local {
			args = append(args, "--local")
		}
		args = append(args, "--strategy", strategy, "--target", buildTag[build], "--json")
		if pacing != "" && r.lxcf.Pacing {
			args = append(args, "--pacing", pacing)
		}
		return r.o.LXCFleet, args
	}
	return r.o.Self, []string{"update-code", r.cfgPath, strategy, buildTag[build]}
}

// resetLXCFleet puts every locker on a fresh lxcfleet release of build A:
// it stops them, removes lxcfleet's releases, mirror and journal from the
// layout root (so that the measured update builds B from scratch, npm
// included), builds A with lxcfleet and starts the lockers on it.
func (r *runner) resetLXCFleet(ctx context.Context) error {
	r.log.Info("reset: lxcfleet release of build A")
	if err := r.stopAll(ctx); err != nil {
		return err
	}
	for _, p := range []string{"current", "releases", "repo.git", "state"} {
		if err := os.RemoveAll(filepath.Join(r.root, p)); err != nil {
			return err
		}
	}
	bin, args := r.updateCommand("offline", BuildA, "", true)
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if _, serr := os.Stat(filepath.Join(r.root, "current", "BENCH_BUILD")); serr != nil {
		return fmt.Errorf("lxcfleet update-code to build A left no current release (%v): %s", err, tail(out))
	}
	return r.startAll(ctx, BuildA)
}

// UpdateAgent is the agent that ran an lxcfleet update, measured during
// it: through the daemon (offline updates, when the binary has `agent`),
// with GET /v1/containers loaded at the API rate for the whole update; or
// the update-code --local process itself (the agent in process).
type UpdateAgent struct {
	Via string `json:"via"` // "daemon" or "local"
	// CPUSeconds is the agent process's CPU time during the update;
	// CPUPct the same in % of one core over the command.
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUPct     float64 `json:"cpu_pct"`
	// IdleRSSMiB before the update (daemon only); PeakRSSMiB its high-water
	// mark (VmHWM, or the --local process's max RSS).
	IdleRSSMiB float64 `json:"idle_rss_mib,omitempty"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// The API under the update (daemon only).
	Rate        int     `json:"rate,omitempty"`
	Requests    int     `json:"requests,omitempty"`
	Errors      int     `json:"errors,omitempty"`
	NotModified int     `json:"not_modified,omitempty"`
	P50ms       float64 `json:"p50_ms,omitempty"`
	P99ms       float64 `json:"p99_ms,omitempty"`
	MaxMs       float64 `json:"max_ms,omitempty"`
	Err         string  `json:"error,omitempty"`
}

// lxcfleetUpdate runs one measured lxcfleet update-code.
func (r *runner) lxcfleetUpdate(ctx context.Context, id, strategy, from, to, pacing string) (Mark, error) {
	m := Mark{ID: id, Title: scenarioTitles[id], From: from, To: to, Window: r.window()}
	if r.lxcf.Pacing {
		m.Pacing = pacing
		if strategy == "offline" && pacing == "adaptive" {
			// Offline with adaptive pacing: K is every locker, the
			// configured window only W's first value.
			m.Notes = append(m.Notes, fmt.Sprintf("K = all %d lockers; W starts at the window, %d", len(r.fleet.Targets), m.Window))
			m.Window = len(r.fleet.Targets)
		}
	} else {
		m.Title = strings.Replace(m.Title, " --pacing adaptive", "", 1) + " (binary without --pacing: its fixed window)"
		m.Notes = append(m.Notes, "the lxcfleet binary has no --pacing: run with its own (fixed) window")
	}
	r.log.Info("scenario", "id", id, "title", m.Title)
	outPath := filepath.Join(r.dir, "scenario-"+id+".log")
	m.Output = filepath.Base(outPath)
	ua := &UpdateAgent{Via: "local"}
	var ap *agentProc
	if strategy == "offline" && r.lxcf.Agent && r.lxcf.UpdateCode {
		var err error
		if ap, err = r.startAgent(ctx, "agent-"+id+".log"); err != nil {
			ua.Err = err.Error()
			m.Notes = append(m.Notes, "run with --local: "+err.Error())
		} else {
			ua.Via = "daemon"
			defer ap.stop()
			time.Sleep(time.Second)
			ua.IdleRSSMiB = procStatusMiB(ap.cmd.Process.Pid, "VmRSS:")
		}
	}
	bin, args := r.updateCommand(strategy, to, pacing, ap == nil)
	if bin == r.o.Self {
		m.Notes = append(m.Notes, "run with lockerbench's in-process stand-in for `lxcfleet update-code --local` (agent + codeupdate, same code path): the lxcfleet binary has no update-code command yet")
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var agentCPU0 float64
	var apiEvents []any
	var ld apiLoad
	loadDone := make(chan struct{})
	m.T0 = time.Now()
	if ap != nil {
		agentCPU0 = procCPUSeconds(ap.cmd.Process.Pid)
		lctx, stopLoad := context.WithCancel(ctx)
		defer stopLoad()
		go func() {
			defer close(loadDone)
			ld = loadGet(lctx, ap.client, "http://agent/v1/containers", r.o.APIRate, 24*time.Hour, r.o.APIFull)
		}()
		err := cmd.Run()
		m.CmdEnd = time.Now()
		stopLoad()
		<-loadDone
		ua.CPUSeconds = procCPUSeconds(ap.cmd.Process.Pid) - agentCPU0
		apiEvents = jobEvents(ctx, ap.client, stdout.Bytes())
		ua.PeakRSSMiB = procStatusMiB(ap.cmd.Process.Pid, "VmHWM:")
		ua.Rate, ua.Requests, ua.Errors, ua.NotModified = r.o.APIRate, len(ld.lat)+ld.errs, ld.errs, ld.notModified
		ua.P50ms, ua.P99ms, ua.MaxMs = quantile(ld.lat, 0.5), quantile(ld.lat, 0.99), quantile(ld.lat, 1)
		if err != nil {
			m.CmdFailures++
			m.Err = fmt.Sprintf("lxcfleet update-code: %v: %s", err, tail(stderr.Bytes()))
		}
	} else {
		err := cmd.Run()
		m.CmdEnd = time.Now()
		if ps := cmd.ProcessState; ps != nil {
			ua.CPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
			if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
				ua.PeakRSSMiB = float64(ru.Maxrss) / 1024
			}
		}
		if err != nil {
			m.CmdFailures++
			m.Err = fmt.Sprintf("lxcfleet update-code: %v: %s", err, tail(stderr.Bytes()))
		}
	}
	if d := m.CmdEnd.Sub(m.T0).Seconds(); d > 0 {
		ua.CPUPct = 100 * ua.CPUSeconds / d
	}
	m.Agent = ua
	log := fmt.Sprintf("$ %s %s\n%s\n--- stderr\n%s", bin, strings.Join(args, " "), stdout.String(), stderr.String())
	_ = os.WriteFile(outPath, []byte(log), 0o644)
	fillFromJSON(&m, stdout.Bytes())
	if len(apiEvents) > 0 {
		// The agent's own events carry W (max_starting); the CLI's
		// --json lines do not.
		m.CtlMaxStarting, m.CtlStarts, m.CtlMaxW, m.CtlWChanges, m.CtlOverCap = 0, 0, 0, 0, 0
		ctlStarting(&m, apiEvents)
	}
	var ok bool
	m.Done, ok = r.waitAll(ctx, to, r.deadline())
	m.TimedOut = !ok
	settle()
	return m, ctx.Err()
}

// fillFromJSON takes the build time and npm outcome from lxcfleet's --json
// output (any line holding them).
func fillFromJSON(m *Mark, out []byte) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var all []any
	for sc.Scan() {
		var v any
		if json.Unmarshal(sc.Bytes(), &v) == nil {
			all = append(all, v)
		}
	}
	if len(all) == 0 {
		var v any
		if json.Unmarshal(out, &v) == nil {
			all = append(all, v)
		}
	}
	// npm's time from lxcfleet's own stage events: from the "npm ..." stage
	// to the next one.
	var npmAt time.Time
	for _, v := range all {
		ev, ok := v.(map[string]any)
		if !ok || ev["type"] != "stage" {
			continue
		}
		msg, _ := ev["message"].(string)
		ts, _ := ev["time"].(string)
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		if !npmAt.IsZero() && m.NpmSeconds == nil {
			d := t.Sub(npmAt).Seconds()
			m.NpmSeconds = &d
		}
		if strings.HasPrefix(msg, "npm ") {
			npmAt = t
		}
	}
	ctlStarting(m, all)
	for _, v := range all {
		walkJSON(v, func(k string, x any) {
			switch k {
			case "build_seconds":
				if f, ok := x.(float64); ok {
					m.BuildSeconds = &f
				}
			case "npm_seconds":
				if f, ok := x.(float64); ok {
					m.NpmSeconds = &f
				}
			case "npm_ran":
				if b, ok := x.(bool); ok && m.Npm == "" {
					m.Npm = map[bool]string{true: "ran", false: "skipped"}[b]
				}
			case "npm":
				if s, ok := x.(string); ok && s != "" {
					m.Npm = s
				}
			}
		})
	}
}

func walkJSON(v any, fn func(k string, x any)) {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			fn(k, x)
			walkJSON(x, fn)
		}
	case []any:
		for _, x := range t {
			walkJSON(x, fn)
		}
	}
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "…" + s[len(s)-600:]
	}
	return s
}

// wRe finds the pacing controller's starting limit in a stage message
// ("W=3", "W = 3").
var wRe = regexp.MustCompile(`\bW\s*=\s*(\d+)`)

// ctlStarting computes, from lxcfleet's --json container events, the most
// lockers starting at once as the controller counts them (a "starting"
// event until that locker's "healthy", "moved", "failed" or "skipped"),
// and checks the controller's cap as it keeps it: at each launch, the
// lockers launched and not yet healthy are at most the W that launch was
// made under. A replace is launched at its "stopping" event (it takes its
// start place before its stop; the event carries that W), a start at its
// "starting" event. A cut of W does not recall launches in flight (as a
// TCP window cut does not recall packets in flight), so a count above
// the W of a later moment is no breach. Where no event states W, K is the
// cap.
func ctlStarting(m *Mark, all []any) {
	type ev struct {
		t     time.Time
		c     string
		phase string
		w     int
	}
	var evs []ev
	for _, v := range all {
		e, ok := v.(map[string]any)
		if !ok {
			continue
		}
		ts, _ := e["time"].(string)
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		switch e["type"] {
		case "event", "container":
			c, _ := e["container"].(string)
			ph, _ := e["phase"].(string)
			evs = append(evs, ev{t: t, c: c, phase: ph})
			// The agent's events state W on each stopping/starting event.
			if w, ok := e["max_starting"].(float64); ok && w > 0 {
				evs[len(evs)-1].w = int(w)
			}
		case "stage":
			msg, _ := e["message"].(string)
			if sm := wRe.FindStringSubmatch(msg); sm != nil {
				w, _ := strconv.Atoi(sm[1])
				evs = append(evs, ev{t: t, w: w})
			}
		}
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].t.Before(evs[j].t) })
	starting := map[string]bool{}
	inFlight := map[string]bool{}
	w := 0
	for _, e := range evs {
		if e.w > 0 && e.c == "" { // a stage stating W
			if e.w != w {
				m.CtlWChanges++
			}
			w = e.w
			m.CtlMaxW = max(m.CtlMaxW, w)
			continue
		}
		launchW := 0
		switch e.phase {
		case "stopping", "starting":
			if e.w > 0 && !inFlight[e.c] {
				launchW = e.w
				m.CtlMaxW = max(m.CtlMaxW, e.w)
			}
			if e.phase == "starting" {
				starting[e.c] = true
				m.CtlStarts++
			}
			if e.phase == "starting" || e.w > 0 { // a phase stop (stop-all) has no W: no launch
				if !inFlight[e.c] && launchW == 0 {
					launchW = w
					if launchW == 0 {
						launchW = m.Window
					}
				}
				inFlight[e.c] = true
			} else {
				launchW = 0
			}
		case "healthy", "moved", "failed", "skipped":
			delete(starting, e.c)
			delete(inFlight, e.c)
		case "stopped":
			delete(starting, e.c)
		}
		m.CtlMaxStarting = max(m.CtlMaxStarting, len(starting))
		if launchW > 0 && len(inFlight) > launchW {
			m.CtlOverCap++
		}
	}
}

// jobEvents reads a finished job's events from the agent
// (GET /v1/jobs/{id}/events, a Server-Sent Events stream that replays the
// job's events and ends), the job id taken from update-code's --json
// output. It returns nil when it cannot.
func jobEvents(ctx context.Context, c *http.Client, out []byte) []any {
	var id string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() && id == "" {
		var v struct {
			Job string `json:"job"`
		}
		if json.Unmarshal(sc.Bytes(), &v) == nil {
			id = v.Job
		}
	}
	return jobEventsByID(ctx, c, id)
}

// jobEventsByID reads a finished job's events from the agent (see
// jobEvents); nil when it cannot.
func jobEventsByID(ctx context.Context, c *http.Client, id string) []any {
	if id == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/v1/jobs/"+id+"/events", nil)
	if err != nil {
		return nil
	}
	cl := *c
	cl.Timeout = 0 // the stream is bounded by ctx
	resp, err := cl.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var evs []any
	rd := bufio.NewScanner(resp.Body)
	rd.Buffer(make([]byte, 1<<20), 16<<20)
	for rd.Scan() {
		line := rd.Text()
		if strings.HasPrefix(line, "event: end") {
			break
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var v any
		if json.Unmarshal([]byte(data), &v) == nil {
			evs = append(evs, v)
		}
	}
	return evs
}
