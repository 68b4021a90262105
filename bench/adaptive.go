package bench

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// The adaptive prober (ProbeAdaptive) measures each locker's
// unavailability as precisely as the 20 Hz prober without making 300
// lockers answer 6,000 requests a second. It learns both edges from the
// kernel instead of from the app:
//
//   - every Tick (25 ms) one sock_diag netlink dump lists the TCP ports in
//     LISTEN state, and one getdents lists the containers' cgroups. A
//     serving locker whose port leaves the list has stopped answering
//     (its app closed its socket or exited): down at that tick. A locker
//     that is down and whose port appears is asked over HTTP at once; its
//     answer (the build) makes it serving again, from that tick.
//   - a serving locker is asked over HTTP only every Serving (2 s, or
//     N / ServingRate when longer: 30 s at N=300; on a keep-alive connection): to read its build and to catch an app that
//     hangs with its port open (that fallback is the only edge measured
//     to within Serving rather than Tick).
//   - a locker that is down, or whose probe just failed, is asked every
//     tick while its port is open ("just missed": fast), never while it
//     is closed (nothing could answer).
//
// Both edges are therefore seen to within one Tick plus the time to
// schedule the prober; the lockers answer at most ServingRate (10)
// requests a second plus one per start, instead of N × 20 (6,000 at N=300).

// aLocker is one locker's state in the adaptive prober.
type aLocker struct {
	url    string
	client *http.Client
	seen   bool // an answer (or its absence) has been written
	cgroupEdge
	serving  bool // answering a build now
	build    string
	gen      uint64 // bumped on every down edge: answers sent before are stale
	inflight bool
	next     time.Time // next slow probe while serving
}

// aResult is one HTTP probe's answer.
type aResult struct {
	i     int
	gen   uint64
	sent  time.Time
	build string
}

func runAdaptive(ctx context.Context, cfg ProbeConfig, cg cgroupReader, ls *listenScanner, w *eventWriter, states []*lockerState, cnt *probeCounters) error {
	n := len(cfg.Targets)
	cs := newCgroupScanner(cg)
	ls2 := make([]*aLocker, n)
	start := time.Now()
	for i, tg := range cfg.Targets {
		ls2[i] = &aLocker{
			url: fmt.Sprintf("http://127.0.0.1:%d/healthz", tg.Port),
			client: &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{
				MaxIdleConnsPerHost: 1, DisableCompression: true, Proxy: nil,
			}},
			// Spread the slow probes over the period.
			next: start.Add(time.Duration(int64(cfg.Serving) * int64(i) / int64(max(1, n)))),
		}
	}
	results := make(chan aResult, n)
	dispatch := func(i int, now time.Time) {
		a := ls2[i]
		a.inflight = true
		gen := a.gen
		cnt.requests.Add(1)
		go func() {
			b := probe(ctx, a.client, a.url)
			results <- aResult{i: i, gen: gen, sent: now, build: b}
		}()
	}
	setBuild := func(i int, b string) {
		states[i].build.Store(&b)
	}
	down := func(i int, t time.Time) {
		a := ls2[i]
		a.gen++
		a.inflight = false
		if a.serving || !a.seen {
			w.write(Event{T: t.UnixNano(), Kind: "h", L: i, B: ""})
		}
		a.serving, a.build, a.seen = false, "", true
		setBuild(i, "")
		a.client.CloseIdleConnections()
	}
	listening := map[int]bool{}
	cgroups := map[string]uint64{}
	tick := time.NewTicker(cfg.Tick)
	defer tick.Stop()
	first := true
	scan := func(now time.Time) error {
		cnt.scans.Add(1)
		if err := ls.scan(listening); err != nil {
			return err
		}
		if err := cs.scan(cgroups); err != nil {
			return err
		}
		for i, tg := range cfg.Targets {
			a := ls2[i]
			ino, up := cgroups[tg.Name]
			a.observe(w, i, now, ino, up, first)
			open := listening[tg.Port]
			switch {
			case first:
				dispatch(i, now)
			case a.serving && !open:
				down(i, now)
			case !a.serving && open && !a.inflight:
				dispatch(i, now)
			case a.serving && !a.inflight && !now.Before(a.next):
				a.next = now.Add(cfg.Serving)
				dispatch(i, now)
			}
		}
		first = false
		return nil
	}
	handle := func(r aResult) {
		a := ls2[r.i]
		if r.gen != a.gen {
			return // it went down after this probe was sent
		}
		a.inflight = false
		if r.build == "" {
			if a.serving || !a.seen {
				// A serving locker that stopped answering with its port
				// open (or the first probe): down from when it was asked.
				down(r.i, r.sent)
			}
			return
		}
		e := Event{T: r.sent.UnixNano(), Kind: "h", L: r.i, B: r.build}
		changed := !a.seen || !a.serving || r.build != a.build
		if !a.seen {
			a.healthy = a.up
		} else if a.up && !a.healthy {
			a.healthy = true
			e.CPU = cg.cpuSeconds(cfg.Targets[r.i].Name)
			changed = true
		}
		if !a.serving {
			a.next = r.sent.Add(cfg.Serving)
		}
		a.seen, a.serving, a.build = true, true, r.build
		if changed {
			setBuild(r.i, r.build)
			w.write(e)
		}
	}
	if err := scan(time.Now()); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-results:
			handle(r)
		case <-tick.C:
			// Answers that arrived before this tick are applied first, so
			// that a locker is not asked twice.
			for drained := false; !drained; {
				select {
				case r := <-results:
					handle(r)
				default:
					drained = true
				}
			}
			if err := scan(time.Now()); err != nil {
				return err
			}
		}
	}
}
