package bench

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"time"
)

// RestartParts is one locker's restart broken into its parts, measured by
// the runner itself (a sock_diag scan of the listening ports every 2 ms,
// then HTTP GETs every 2 ms once the port is open), with the rest of the
// fleet idle. Load says what else ran: "none" (the prober stopped: no
// probing at all) or "20 Hz prober" (issue 7's prober, to show what it
// costs a restart).
//
// The parts add up to the locker's unavailability (app gone → first
// answer):
//
//	stop      app gone (its port closed) → lxc-stop (lxcctl's Stop) returned
//	lxc start lxcctl's Start called → returned (container RUNNING)
//	app ready Start returned → the app's port in LISTEN
//	detection port in LISTEN → first HTTP answer with its build
type RestartParts struct {
	Locker int    `json:"locker"`
	Load   string `json:"load"`
	// StopCall is the whole stop command; AppGone when, within it, the
	// app's port closed (both from the stop call).
	StopCall float64 `json:"stop_call_s"`
	AppGone  float64 `json:"app_gone_s"`
	Stop     float64 `json:"stop_s"`
	LXCStart float64 `json:"lxc_start_s"`
	AppReady float64 `json:"app_ready_s"`
	Detect   float64 `json:"detect_s"`
	Sum      float64 `json:"sum_s"`
	// AppCPU is the CPU the container used from its start to listening:
	// AppReady much longer than AppCPU means the app waited for a CPU.
	AppCPU float64 `json:"app_cpu_s"`
	// Load1 is the load average when the restart began.
	Load1 float64 `json:"load1"`
	Err   string  `json:"error,omitempty"`
}

// restartParts restarts locker i and times its parts.
func (r *runner) restartParts(ctx context.Context, i int, load string) RestartParts {
	tg := r.fleet.Targets[i]
	p := RestartParts{Locker: i, Load: load, Load1: loadavg1()}
	ls, err := newListenScanner()
	if err != nil {
		p.Err = err.Error()
		return p
	}
	defer ls.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// The watcher: when the port closed, and when it opened again.
	type edges struct{ closed, open time.Time }
	got := make(chan edges, 1)
	ready := make(chan struct{})
	go func() {
		var e edges
		ports := map[int]bool{}
		close(ready)
		for ctx.Err() == nil {
			if err := ls.scan(ports); err == nil {
				now := time.Now()
				switch {
				case e.closed.IsZero() && !ports[tg.Port]:
					e.closed = now
				case !e.closed.IsZero() && ports[tg.Port]:
					e.open = now
					got <- e
					return
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		got <- e
	}()
	<-ready
	t0 := time.Now()
	if _, err := r.fleet.Host.Stop(ctx, tg.Name, 5*time.Second); err != nil {
		p.Err = fmt.Sprintf("stopping %s: %v", tg.Name, err)
		return p
	}
	t1 := time.Now()
	if err := r.fleet.Host.Start(ctx, tg.Name); err != nil {
		p.Err = fmt.Sprintf("starting %s: %v", tg.Name, err)
		return p
	}
	t2 := time.Now()
	e := <-got
	if e.open.IsZero() || e.closed.IsZero() {
		p.Err = fmt.Sprintf("locker %s: port %d never closed and opened again", tg.Name, tg.Port)
		return p
	}
	cpu := detectCgroup(r.cgParent).cpuSeconds(tg.Name)
	c := &http.Client{Timeout: time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", tg.Port)
	var t3 time.Time
	for ctx.Err() == nil {
		if probe(ctx, c, url) != "" {
			t3 = time.Now()
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	c.CloseIdleConnections()
	if t3.IsZero() {
		p.Err = fmt.Sprintf("locker %s did not answer after its restart", tg.Name)
		return p
	}
	s := func(a, b time.Time) float64 { return b.Sub(a).Seconds() }
	p.StopCall, p.AppGone = s(t0, t1), s(t0, e.closed)
	p.Stop = max(0, s(e.closed, t1))
	p.LXCStart = s(t1, t2)
	p.AppReady = max(0, s(t2, e.open))
	p.Detect = s(e.open, t3)
	p.Sum = p.Stop + p.LXCStart + p.AppReady + p.Detect
	p.AppCPU = cpu
	return p
}

// Breakdown is the median of several RestartParts under one load.
type Breakdown struct {
	Load string         `json:"load"`
	Runs []RestartParts `json:"runs"`
	// Median of each part over the runs without error.
	Median RestartParts `json:"median"`
}

// partsAlone times locker i's restart with nothing probing (the prober
// stopped meanwhile).
func (r *runner) partsAlone(ctx context.Context, i int) RestartParts {
	r.pauseProber()
	defer r.resumeProber()
	time.Sleep(time.Second)
	return r.restartParts(ctx, i, "none")
}

// breakdownUnderPoll times restarts of lockers 0, 1, 2, … under issue 7's
// 20 Hz prober (the adaptive one stopped): what a heavy prober does to a
// restart.
func (r *runner) breakdownUnderPoll(ctx context.Context) Breakdown {
	const load = "20 Hz prober"
	b := Breakdown{Load: load}
	r.pauseProber()
	defer r.resumeProber()
	cmd, _, err := r.launchProber("breakdown", ProbeConfig{Mode: ProbePoll, Interval: 50 * time.Millisecond, Timeout: time.Second, SampleEvery: time.Second})
	if err != nil {
		b.Runs = append(b.Runs, RestartParts{Load: load, Err: err.Error()})
		b.Median = medianParts(b.Runs)
		return b
	}
	defer stopCmd(cmd)
	time.Sleep(2 * time.Second)
	runs := min(r.o.BreakdownRuns, len(r.fleet.Targets))
	if len(r.fleet.Targets) > 100 {
		// Beyond 100 lockers the 20 Hz prober saturates the box: one
		// restart under it says enough (at N=100 one took 25 s).
		runs = min(runs, 1)
	}
	for i := range runs {
		if ctx.Err() != nil {
			break
		}
		b.Runs = append(b.Runs, r.restartParts(ctx, i, load))
		time.Sleep(500 * time.Millisecond)
	}
	b.Median = medianParts(b.Runs)
	r.log.Info("restart breakdown", "load", load, "stop", b.Median.Stop, "lxc_start", b.Median.LXCStart, "app_ready", b.Median.AppReady,
		"detect", b.Median.Detect, "sum", b.Median.Sum, "app_cpu", b.Median.AppCPU)
	return b
}

func medianParts(runs []RestartParts) RestartParts {
	var ok []RestartParts
	for _, p := range runs {
		if p.Err == "" {
			ok = append(ok, p)
		}
	}
	m := RestartParts{Locker: -1}
	if len(runs) > 0 {
		m.Load = runs[0].Load
	}
	if len(ok) == 0 {
		m.Err = "no run without error"
		return m
	}
	med := func(get func(RestartParts) float64) float64 {
		xs := make([]float64, len(ok))
		for i, p := range ok {
			xs[i] = get(p)
		}
		sort.Float64s(xs)
		return xs[(len(xs)-1)/2]
	}
	m.StopCall = med(func(p RestartParts) float64 { return p.StopCall })
	m.AppGone = med(func(p RestartParts) float64 { return p.AppGone })
	m.Stop = med(func(p RestartParts) float64 { return p.Stop })
	m.LXCStart = med(func(p RestartParts) float64 { return p.LXCStart })
	m.AppReady = med(func(p RestartParts) float64 { return p.AppReady })
	m.Detect = med(func(p RestartParts) float64 { return p.Detect })
	m.Sum = med(func(p RestartParts) float64 { return p.Sum })
	m.AppCPU = med(func(p RestartParts) float64 { return p.AppCPU })
	m.Load1 = med(func(p RestartParts) float64 { return p.Load1 })
	return m
}
