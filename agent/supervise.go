package agent

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"lxcfleet/lxcctl"
)

// Supervision keeps every locker whose desired state is running, running,
// between jobs: a locker that stopped on its own is started again by a
// start-all job (trigger "supervision"), so through the rollout executor
// and its failure policy, journaled and shown like any job. Restarts back
// off exponentially and stop at a start limit, as systemd's Restart= with
// StartLimitBurst/StartLimitIntervalSec (incus's boot.autorestart allows
// 10 a minute). When more lockers of the current release than the failure
// ratio allows hit their start limit, and at least two of them, the
// release is crash-looping: a rollback job marks it bad and goes back,
// instead of restarting it in a loop. One locker crash-looping alone (its
// own /Me data, a hand that kills it) is quarantined instead: left
// stopped, shown as quarantined with the reason, and the release stays.
// Restart counts, backoff and the lockers given up on are kept in the
// journal, so an agent restart does not reset them. Supervision never
// runs while a job runs.

// SupervisionConfig tunes supervision; zero fields take the defaults.
type SupervisionConfig struct {
	// Off turns supervision off.
	Off bool
	// Burst is the most restarts of one locker within Interval (5).
	Burst int
	// Interval is the start limit's window (10m).
	Interval time.Duration
	// Backoff is the wait before the first restart, doubled for each
	// further restart within Interval, up to MaxBackoff (1s, 5m).
	Backoff, MaxBackoff time.Duration
}

func (c SupervisionConfig) withDefaults() SupervisionConfig {
	if c.Burst <= 0 {
		c.Burst = 5
	}
	if c.Interval <= 0 {
		c.Interval = 10 * time.Minute
	}
	if c.Backoff <= 0 {
		c.Backoff = time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Minute
	}
	return c
}

// supervisor is supervision's state: each locker's recent restarts, when
// it may be restarted next, and the lockers it gave up on.
type supervisor struct {
	a        *Agent
	cfg      SupervisionConfig
	mu       sync.Mutex
	restarts map[string][]time.Time
	gaveUp   map[string]string // locker -> release it crash-looped on
	on       string            // the release restarts were counted on
	down     map[string]time.Time
	now      func() time.Time
	ready    atomic.Bool // set by Run once a needed recovery was submitted
}

func newSupervisor(a *Agent, cfg SupervisionConfig) *supervisor {
	s := &supervisor{a: a, cfg: cfg.withDefaults(), restarts: map[string][]time.Time{}, gaveUp: map[string]string{}, down: map[string]time.Time{}, now: time.Now}
	s.load()
	return s
}

// supervisionMeta is the journal's meta key for supervision's state.
const supervisionMeta = "supervision"

// supervisionState is what supervision keeps across agent restarts.
type supervisionState struct {
	On       string                 `json:"on,omitempty"` // the release they were counted on
	Restarts map[string][]time.Time `json:"restarts,omitempty"`
	GaveUp   map[string]string      `json:"gave_up,omitempty"`
}

// load reads the state a previous agent kept (nothing when none).
func (s *supervisor) load() {
	v, err := s.a.jr.Meta(supervisionMeta)
	if err != nil || v == "" {
		if err != nil {
			s.a.log.Warn("reading supervision's state from the journal: restart counts start from zero", "err", err)
		}
		return
	}
	var st supervisionState
	if err := json.Unmarshal([]byte(v), &st); err != nil {
		s.a.log.Warn("decoding supervision's state from the journal: restart counts start from zero", "err", err)
		return
	}
	s.on = st.On
	for n, ts := range st.Restarts {
		s.restarts[n] = ts
	}
	for n, rel := range st.GaveUp {
		s.gaveUp[n] = rel
	}
}

// save writes the state to the journal. Called with mu held.
func (s *supervisor) save() {
	st := supervisionState{On: s.on, Restarts: map[string][]time.Time{}, GaveUp: s.gaveUp}
	now := s.now()
	for n := range s.restarts {
		if r := s.recent(n, now); len(r) > 0 {
			st.Restarts[n] = r
		}
	}
	b, err := json.Marshal(st)
	if err == nil {
		err = s.a.jr.SetMeta(supervisionMeta, string(b))
	}
	if err != nil {
		s.a.log.Error("writing supervision's state to the journal: an agent restart would forget restart counts", "err", err)
	}
}

// quarantined returns why supervision gave up on a locker ("" when it did
// not): it stays stopped until a job starts it on purpose.
func (s *supervisor) quarantined(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	rel, ok := s.gaveUp[name]
	if !ok {
		return ""
	}
	return fmt.Sprintf("quarantined: it kept stopping on its own (%d restarts within %v) on release %s; supervision leaves it stopped: start it by hand once fixed", s.cfg.Burst, s.cfg.Interval, orDash(rel))
}

// GaveUp lists the lockers supervision stopped restarting (they hit the
// start limit), sorted.
func (s *supervisor) GaveUp() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.gaveUp))
	for n := range s.gaveUp {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// forget drops a locker's history (a job started it on purpose).
func (s *supervisor) forget(names []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for _, n := range names {
		_, r := s.restarts[n]
		_, g := s.gaveUp[n]
		changed = changed || r || g
		delete(s.restarts, n)
		delete(s.gaveUp, n)
		delete(s.down, n)
	}
	if changed {
		s.save()
	}
}

// tick looks at the last inventory snapshot once: lockers that should run
// and are stopped are restarted when their backoff has passed.
func (s *supervisor) tick() {
	if s.cfg.Off || !s.ready.Load() {
		return
	}
	if _, busy := s.a.Running(); busy {
		return // never fight a running job
	}
	if s.a.hostShuttingDown() {
		return // the host shuts down: its lockers stay stopped
	}
	now := s.now()
	var due, stopped []string
	onCurrent := map[string]bool{}
	want := 0
	cur := s.a.currentRelease()
	s.mu.Lock()
	// Restarts and give-ups, kept across agent restarts, are about the
	// release they happened on: once current moves (an update or a
	// rollback), every locker gets a fresh start limit and backoff.
	if cur != s.on {
		clear(s.restarts)
		for n, rel := range s.gaveUp {
			if rel != cur {
				delete(s.gaveUp, n)
			}
		}
		s.on = cur
		s.save()
	}
	for _, l := range s.a.inv.snapshot() {
		if l.Desired == nil || !l.Desired.Running {
			continue
		}
		want++
		if l.State == lxcctl.StateRunning {
			delete(s.down, l.Name)
			continue
		}
		if l.State != lxcctl.StateStopped {
			continue
		}
		if _, ok := s.gaveUp[l.Name]; ok {
			continue
		}
		if _, ok := s.down[l.Name]; !ok {
			s.down[l.Name] = now
		}
		stopped = append(stopped, l.Name)
		recent := s.recent(l.Name, now)
		if len(recent) >= s.cfg.Burst {
			s.gaveUp[l.Name] = cur
			onCurrent[l.Name] = true
			s.a.log.Error("locker keeps stopping: supervision gives up on it (start it by hand, or fix the release)",
				"container", l.Name, "restarts", len(recent), "within", s.cfg.Interval, "release", cur)
			s.a.metrics.supervision("gave-up")
			continue
		}
		wait := s.cfg.Backoff << min(len(recent), 30)
		if wait > s.cfg.MaxBackoff || wait <= 0 {
			wait = s.cfg.MaxBackoff
		}
		if len(recent) == 0 || now.Sub(recent[len(recent)-1]) >= wait {
			due = append(due, l.Name)
		}
	}
	looping := 0
	for _, rel := range s.gaveUp {
		if rel == cur && cur != "" {
			looping++
		}
	}
	if len(onCurrent) > 0 {
		s.save()
	}
	s.mu.Unlock()

	if s.a.watch.noteCrashed(stopped) {
		return // the release watch rolls the release back
	}
	if len(onCurrent) > 0 && s.crashLoop(looping, want, cur) {
		return
	}
	if len(due) == 0 {
		return
	}
	if s.a.watch.rollbackPending() {
		return // the release watch rolls the release back first
	}
	j, err := s.a.Submit(Request{Kind: KindStartAll, Names: due, Trigger: fmt.Sprintf("supervision: %s stopped on its own", joinNames(due, 5))})
	if err != nil {
		s.a.log.Warn("supervision could not start lockers", "err", err, "containers", joinNames(due, 10))
		return
	}
	s.mu.Lock()
	for _, n := range due {
		s.restarts[n] = append(s.recent(n, now), now)
	}
	s.save()
	s.mu.Unlock()
	s.a.metrics.supervision("restart")
	s.a.log.Warn("supervision restarts lockers that stopped on their own", "job", j.ID, "containers", joinNames(due, 10))
}

// restartedSince reports whether supervision restarted name at or after
// since (the release watch counts such a locker as crashed).
func (s *supervisor) restartedSince(name string, since time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.restarts[name] {
		if !t.Before(since) {
			return true
		}
	}
	return false
}

// recent returns name's restarts within the start limit's window. Called
// with mu held.
func (s *supervisor) recent(name string, now time.Time) []time.Time {
	var out []time.Time
	for _, t := range s.restarts[name] {
		if now.Sub(t) < s.cfg.Interval {
			out = append(out, t)
		}
	}
	return out
}

// crashLoop rolls the current release back when at least two of its
// lockers, and more than the failure ratio allows, crash-loop on it; it
// reports whether it did. One locker alone is quarantined: it says
// nothing about the release.
func (s *supervisor) crashLoop(looping, want int, cur string) bool {
	ratio := s.a.cfg.Defaults.Policy.MaxFailureRatio
	if looping == 1 && cur != "" {
		s.a.log.Warn("one locker crash-loops alone: quarantined (left stopped), the release stays", "release", cur, "lockers", want)
	}
	if s.a.deps.Code == nil || cur == "" || want == 0 || looping < 2 || float64(looping) <= ratio*float64(want) {
		return false
	}
	if _, err := s.a.deps.Code.PreviousGood(); err != nil {
		s.a.log.Error("the current release crash-loops and there is no good release to go back to", "release", cur, "lockers", looping)
		return false
	}
	j, err := s.a.Submit(Request{Kind: KindRollback, Trigger: fmt.Sprintf("supervision: %d of %d lockers crash-loop on %s", looping, want, cur)})
	if err != nil {
		s.a.log.Warn("supervision could not roll back a crash-looping release", "release", cur, "err", err)
		return false
	}
	s.a.log.Error("the current release crash-loops: rolling back", "release", cur, "lockers", looping, "job", j.ID)
	s.a.metrics.supervision("rollback")
	s.mu.Lock()
	for n, rel := range s.gaveUp {
		if rel == cur {
			delete(s.gaveUp, n) // a fresh start on the release rolled back to
			delete(s.restarts, n)
		}
	}
	s.save()
	s.mu.Unlock()
	return true
}

// healthOf names a running locker's health from its last check: a failed
// check within its start deadline is "starting", not "unhealthy".
func healthOf(ok bool, startedAt time.Time, deadline time.Duration) string {
	switch {
	case ok:
		return "healthy"
	case !startedAt.IsZero() && time.Since(startedAt) < deadline:
		return "starting"
	}
	return "unhealthy"
}
