package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"lxcfleet/downtime"
	"lxcfleet/rollout"
)

// portHold holds the host ports of lockers stopped by an offline update
// with the maintenance page (Defaults.DowntimePage): from the moment a
// locker begins to stop (the hold binds as soon as the app lets go) until
// just before it starts again. Each held port says when its own locker is
// expected back (startEstimate), updated at every stop and start of the
// job. A nil portHold does nothing.
type portHold struct {
	h     *downtime.Holder
	r     *run
	a     *Agent
	ports map[string]int
	held  map[string]bool
	est   *startEstimate
}

// lastStartMeta is the journal's meta key of the median healthy start of
// the last job that measured one: the first estimate of the next job.
const lastStartMeta = "last_start_median"

// holdPorts returns the hold for an offline update of names (in the
// order they start), or nil when the option is off. Lockers without a
// PORT in lxc.environment are not held.
func (a *Agent) holdPorts(ctx context.Context, r *run, req Request, names []string) *portHold {
	if !a.cfg.Defaults.DowntimePage || len(names) == 0 {
		return nil
	}
	infos, err := a.deps.Containers.Select(ctx, names, "")
	if err != nil {
		r.emit(Event{Type: "stage", Stage: "downtime-page", Error: err.Error()})
		return nil
	}
	est := newStartEstimate(names, req.pol)
	est.lastStart = a.lastKnownStart()
	p := &portHold{h: &downtime.Holder{Log: a.log}, r: r, a: a, ports: map[string]int{}, held: map[string]bool{}, est: est}
	held := a.heldLockers()
	skipped := 0
	for _, in := range infos {
		if held[in.Name] {
			skipped++ // its socket queues connections: no page needed
			continue
		}
		if port, err := strconv.Atoi(in.Env["PORT"]); err == nil && port > 0 {
			p.ports[in.Name] = port
		}
	}
	if skipped > 0 && a.heldPageSaid.CompareAndSwap(false, true) {
		a.log.Info("the maintenance page skips held-socket lockers: their sockets queue connections while they are down, and the next instance serves them", "job", r.job.ID, "lockers", skipped)
	}
	if skipped > 0 && len(p.ports) == 0 {
		return nil
	}
	a.setHold(p)
	r.stage("downtime-page", fmt.Sprintf("holding %d lockers' ports with the maintenance page while they are down", len(p.ports)))
	return p
}

// heldLockers returns the lockers whose socket the host holds (nil when
// none or unknown: their pages would wait for a port that never frees,
// harmless).
func (a *Agent) heldLockers() map[string]bool {
	if a.deps.Held == nil {
		return nil
	}
	specs, err := a.deps.Held.Specs()
	if err != nil {
		a.log.Warn("reading held sockets for the maintenance page", "err", err)
		return nil
	}
	out := make(map[string]bool, len(specs))
	for n := range specs {
		out[n] = true
	}
	return out
}

// wrap returns an observer that holds a locker's port when it begins to
// stop, gives it back when the stop fails, and releases it just before
// the locker starts; every event also moves each held port's expected
// end. Then it calls next.
func (p *portHold) wrap(next func(rollout.Event)) func(rollout.Event) {
	if p == nil {
		return next
	}
	return func(e rollout.Event) {
		p.est.observe(e)
		if _, ok := p.ports[e.Container]; ok {
			switch e.Phase {
			case rollout.PhaseStopping:
				p.held[e.Container] = true
			case rollout.PhaseStarting, rollout.PhaseFailed, rollout.PhaseSkipped:
				delete(p.held, e.Container)
				p.h.Release(p.ports[e.Container])
			}
		}
		if len(p.held) > 0 {
			until := p.est.untilAll()
			for n := range p.held {
				_ = p.h.Hold(p.ports[n], until[n]) // a held port only moves its end
			}
		}
		next(e)
	}
}

// releaseAll gives every port back (the job is over) and keeps the
// job's median healthy start for the next one.
func (p *portHold) releaseAll() {
	if p == nil {
		return
	}
	p.h.ReleaseAll()
	p.a.setHold(nil)
	if d, ok := p.est.measuredStart(); ok {
		if err := p.a.jr.SetMeta(lastStartMeta, d.String()); err != nil {
			p.a.log.Warn("keeping the median start for the next maintenance page's estimate", "err", err)
		}
	}
}

// lastKnownStart is the median healthy start the journal knows: the last
// offline update's (kept by releaseAll), else that of the newest job that
// started lockers (start-all, recovery: a start outcome's downtime is its
// start to its first healthy check); 0 when none.
func (a *Agent) lastKnownStart() time.Duration {
	if v, err := a.jr.Meta(lastStartMeta); err == nil && v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	jobs, err := a.jr.Jobs(20)
	if err != nil {
		return 0
	}
	for _, j := range jobs {
		var res Result
		if len(j.Result) == 0 || json.Unmarshal(j.Result, &res) != nil {
			continue
		}
		var ds []time.Duration
		for _, o := range res.Outcomes {
			if o.Op == rollout.OpStart && o.Downtime > 0 && !o.Failed() {
				ds = append(ds, o.Downtime)
			}
		}
		if len(ds) > 0 {
			return median(ds, 0)
		}
	}
	return 0
}

// Defaults of startEstimate before anything is measured.
const (
	defaultStartEstimate = 3 * time.Second
	defaultStopEstimate  = time.Second
)

// startEstimate says when each locker of an offline update (each stopped
// just before its own start, W starting at once in plan order) is
// expected back, from what this job measured: the median of its healthy
// starts (from the starting to the healthy event; before the first one,
// the last job's median from the journal, else 3 s) and of its stops
// (else 1 s). A locker waits for its own stop, if it has not stopped yet,
// then for the lockers before it in the plan and those starting now, W at
// a time, then for its own start: Retry-After = its stop + (⌊(before it +
// starting) / W⌋ + 1) × median start, at least 1 s. It is the Retry-After
// of its port (held from its stop: the locker right after it in the plan
// is told about one start), and replaces a fixed formula (18 s for a 1 s
// outage, 311 s for a 116 s update at N=300).
type startEstimate struct {
	mu        sync.Mutex
	order     []string
	w         int
	lastStart time.Duration
	stopAt    map[string]time.Time // began to stop
	stopped   map[string]bool
	startAt   map[string]time.Time // began to start
	begun     map[string]bool      // began to start (done or not)
	starts    []time.Duration
	stops     []time.Duration
	now       func() time.Time
}

func newStartEstimate(order []string, pol rollout.Policy) *startEstimate {
	// An offline update's first W: max starting even above K (its K is
	// all lockers: rollout's startingAllDown), else K.
	w := pol.MaxStarting
	if w <= 0 {
		w = pol.MaxUnavailable
	}
	w = min(w, max(len(order), 1))
	return &startEstimate{order: order, w: max(w, 1), stopAt: map[string]time.Time{}, stopped: map[string]bool{},
		startAt: map[string]time.Time{}, begun: map[string]bool{}, now: time.Now}
}

// observe takes one event of the job: W as the pacer moves it, and the
// stops and starts it measures.
func (s *startEstimate) observe(e rollout.Event) {
	if e.Container == "" || e.Back {
		return
	}
	at := e.Time
	if at.IsZero() {
		at = s.now()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.MaxStarting > 0 {
		s.w = e.MaxStarting
	}
	switch e.Phase {
	case rollout.PhaseStopping:
		s.stopAt[e.Container] = at
	case rollout.PhaseStopped:
		if t, ok := s.stopAt[e.Container]; ok && !s.stopped[e.Container] {
			s.stops = append(s.stops, at.Sub(t))
		}
		s.stopped[e.Container] = true
	case rollout.PhaseStarting:
		s.stopped[e.Container] = true
		s.begun[e.Container] = true
		s.startAt[e.Container] = at
	case rollout.PhaseHealthy:
		if t, ok := s.startAt[e.Container]; ok {
			s.starts = append(s.starts, at.Sub(t))
			delete(s.startAt, e.Container)
		}
	case rollout.PhaseFailed, rollout.PhaseSkipped:
		s.stopped[e.Container] = true
		s.begun[e.Container] = true
		delete(s.startAt, e.Container)
	}
}

// median is the median of ds, or def when ds is empty.
func median(ds []time.Duration, def time.Duration) time.Duration {
	if len(ds) == 0 {
		return def
	}
	c := slices.Clone(ds)
	slices.Sort(c)
	return c[len(c)/2]
}

// measuredStart is the median of this job's healthy starts, if any.
func (s *startEstimate) measuredStart() (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return median(s.starts, 0), len(s.starts) > 0
}

// untilAll returns when each locker of the plan that has not begun to
// start is expected back.
func (s *startEstimate) untilAll() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	def := defaultStartEstimate
	if s.lastStart > 0 {
		def = s.lastStart
	}
	start := median(s.starts, def)
	stop := median(s.stops, defaultStopEstimate)
	out := make(map[string]time.Time, len(s.order))
	ahead := len(s.startAt) // starting now
	for _, n := range s.order {
		if s.begun[n] {
			continue
		}
		var d time.Duration
		if !s.stopped[n] {
			d = stop // its own stop, just before its start
		}
		d += time.Duration(ahead/s.w+1) * start
		out[n] = now.Add(max(d, time.Second))
		ahead++
	}
	return out
}

// jobEnd is when the last locker of the plan is expected back.
func (s *startEstimate) jobEnd() time.Time {
	var end time.Time
	for _, t := range s.untilAll() {
		if t.After(end) {
			end = t
		}
	}
	return end
}

// MaintenanceUntil estimates when the running job ends, for the
// maintenance page (downtime.PageInfo.Until): for an offline update that
// holds ports, when its last locker is expected back (startEstimate);
// otherwise from its progress so far; zero when no job runs or nothing is
// known yet.
func (a *Agent) MaintenanceUntil() time.Time {
	j, ok := a.Running()
	if !ok || j.Progress.Total == 0 {
		return time.Time{}
	}
	if p := a.activeHold(); p != nil {
		if end := p.est.jobEnd(); !end.IsZero() {
			return end
		}
	}
	if j.Progress.Done == 0 {
		return time.Time{}
	}
	elapsed := time.Since(j.Created)
	left := j.Progress.Total - j.Progress.Done
	return a.deps.Clock.Now().Add(time.Duration(float64(elapsed) / float64(j.Progress.Done) * float64(left)))
}

// setHold records the running job's port hold (nil: none).
func (a *Agent) setHold(p *portHold) { a.hold.Store(p) }

// activeHold is the running job's port hold, or nil.
func (a *Agent) activeHold() *portHold { return a.hold.Load() }
