package agent

import (
	"encoding/json"
	"fmt"
	"slices"
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
// instead of restarting it in a loop. Only a regression counts toward it:
// a locker that ran healthy on an earlier release (its last verdict on a
// release other than current) and crash-loops on this one. A locker never
// healthy on any release (an app that ignores LISTEN_FDS), or one that
// crash-looped on the release before too (its own /Me data), says nothing
// about the release. Those, and one regression alone, are quarantined
// instead: left stopped, shown as quarantined with the reason, and the
// release stays. The ratio's denominator is every locker on the release:
// those whose desired state is running, and sleeping lockers that last ran
// healthy on it (they wake onto it; a sleeper that last ran an older
// release has not tried this one and is no evidence either way).
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
	// verdicts are, per locker, the releases it ran healthy or
	// crash-looped on, newest last (kept in the journal).
	verdicts map[string][]verdict
	// up is, per running locker, since when supervision sees it running
	// with that init on that release.
	up map[string]upMark
}

// verdict is what supervision saw of one locker on one release: the last
// word wins (healthy again after a crash loop, or the other way round).
type verdict struct {
	Release string `json:"release"`
	Healthy bool   `json:"healthy"` // false: it crash-looped (supervision gave up)
}

// maxVerdicts bounds the releases remembered per locker.
const maxVerdicts = 4

// upMark is a running locker's init and release, seen since.
type upMark struct {
	pid   int
	rel   string
	since time.Time
}

func newSupervisor(a *Agent, cfg SupervisionConfig) *supervisor {
	s := &supervisor{a: a, cfg: cfg.withDefaults(), restarts: map[string][]time.Time{}, gaveUp: map[string]string{}, down: map[string]time.Time{}, now: a.deps.Clock.Now,
		verdicts: map[string][]verdict{}, up: map[string]upMark{}}
	s.load()
	return s
}

// supervisionMeta is the journal's meta key for supervision's state.
const supervisionMeta = "supervision"

// verdictsMeta is the journal's meta key of each locker's verdicts per
// release (apart from supervisionMeta: it changes once per locker and
// release, not at every restart).
const verdictsMeta = "supervision_releases"

// supervisionState is what supervision keeps across agent restarts.
type supervisionState struct {
	On       string                 `json:"on,omitempty"` // the release they were counted on
	Restarts map[string][]time.Time `json:"restarts,omitempty"`
	GaveUp   map[string]string      `json:"gave_up,omitempty"`
}

// load reads the state a previous agent kept (nothing when none).
func (s *supervisor) load() {
	if v, err := s.a.jr.Meta(verdictsMeta); err != nil {
		s.a.log.Warn("reading the lockers' release verdicts from the journal: no locker counts as a regression until seen healthy again", "err", err)
	} else if v != "" {
		if err := json.Unmarshal([]byte(v), &s.verdicts); err != nil {
			s.a.log.Warn("decoding the lockers' release verdicts from the journal: no locker counts as a regression until seen healthy again", "err", err)
			s.verdicts = map[string][]verdict{}
		}
	}
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

// saveVerdicts writes the verdicts to the journal. Called with mu held.
func (s *supervisor) saveVerdicts() {
	b, err := json.Marshal(s.verdicts)
	if err == nil {
		err = s.a.jr.SetMeta(verdictsMeta, string(b))
	}
	if err != nil {
		s.a.log.Error("writing the lockers' release verdicts to the journal: an agent restart would forget which releases they ran healthy on", "err", err)
	}
}

// setVerdict records name's verdict on rel as the newest; it reports
// whether that changed anything. Called with mu held.
func (s *supervisor) setVerdict(name, rel string, healthy bool) bool {
	vs := s.verdicts[name]
	if n := len(vs); n > 0 && vs[n-1] == (verdict{rel, healthy}) {
		return false
	}
	vs = slices.DeleteFunc(slices.Clone(vs), func(v verdict) bool { return v.Release == rel })
	vs = append(vs, verdict{rel, healthy})
	if len(vs) > maxVerdicts {
		vs = vs[len(vs)-maxVerdicts:]
	}
	s.verdicts[name] = vs
	return true
}

// prior returns name's last verdict on a release other than rel (ok false
// when it has none: it was never seen on another release). Called with
// mu held.
func (s *supervisor) prior(name, rel string) (verdict, bool) {
	vs := s.verdicts[name]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].Release != rel {
			return vs[i], true
		}
	}
	return verdict{}, false
}

// regression reports whether name crash-looping on rel is the release's
// doing: it ran healthy on the release it was last judged on before rel.
// Called with mu held.
func (s *supervisor) regression(name, rel string) bool {
	p, ok := s.prior(name, rel)
	return ok && p.Healthy
}

// whyAlone says why name crash-looping on rel does not count against rel,
// or, for a regression, that too few lockers regressed. Called with mu
// held.
func (s *supervisor) whyAlone(name, rel string) string {
	p, ok := s.prior(name, rel)
	switch {
	case !ok:
		if vs := s.verdicts[name]; len(vs) > 0 && vs[len(vs)-1].Healthy {
			return "it ran healthy on this release before and was never seen on another: not counted against the release"
		}
		return "it was never seen healthy on any release: not counted against the release"
	case !p.Healthy:
		return fmt.Sprintf("it crash-looped on release %s too: not counted against the release", p.Release)
	}
	return fmt.Sprintf("it ran healthy on release %s: a regression, but too few lockers regressed to roll the release back", p.Release)
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
	return fmt.Sprintf("quarantined: it kept stopping on its own (%d restarts within %v) on release %s; %s; supervision leaves it stopped: start it by hand once fixed",
		s.cfg.Burst, s.cfg.Interval, orDash(rel), s.whyAlone(name, rel))
}

// observe records, from one inventory snapshot, the lockers seen healthy
// on their release: running with the same init for the policy's monitor
// window (and over two snapshots at least), and not failing the
// background health check, as the executor judges a start. It returns the
// lockers on release cur (see onRelease). Called with mu held.
func (s *supervisor) observe(lockers []Locker, now time.Time, cur string) int {
	monitor := s.a.cfg.Defaults.Policy.Monitor
	changed := false
	seen := make(map[string]bool, len(lockers))
	on := 0
	for _, l := range lockers {
		seen[l.Name] = true
		if l.State != lxcctl.StateRunning || l.InitPID <= 0 || l.Release == "" || l.ReleaseDeleted {
			delete(s.up, l.Name)
		} else if m, ok := s.up[l.Name]; !ok || m.pid != l.InitPID || m.rel != l.Release {
			s.up[l.Name] = upMark{pid: l.InitPID, rel: l.Release, since: now}
		} else if now.Sub(m.since) >= monitor && (l.Health == "healthy" || l.Health == "unknown") {
			changed = s.setVerdict(l.Name, l.Release, true) || changed
		}
		if onRelease(l, s.verdicts[l.Name], cur) {
			on++
		}
	}
	if len(lockers) > 0 {
		for n := range s.verdicts {
			if !seen[n] {
				delete(s.verdicts, n) // destroyed
				changed = true
			}
		}
	}
	if changed {
		s.saveVerdicts()
	}
	return on
}

// onRelease reports whether l counts in the crash-loop ratio's
// denominator for release cur: its desired state is running, or it sleeps
// after running healthy on cur (it wakes onto cur).
func onRelease(l Locker, vs []verdict, cur string) bool {
	if l.Desired != nil && l.Desired.Running {
		return true
	}
	return l.Sleeping && len(vs) > 0 && vs[len(vs)-1] == verdict{cur, true}
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
	lockers, seq := s.a.inv.snapshotSeq()
	if !s.a.judgeable(seq) {
		return // a job ran during the reading, or since: the next one judges
	}
	now := s.now()
	var due, stopped []string
	onCurrent := map[string]bool{}
	cur := s.a.currentRelease()
	s.mu.Lock()
	want := s.observe(lockers, now, cur)
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
	for _, l := range lockers {
		if l.Desired == nil || !l.Desired.Running {
			continue
		}
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
				"container", l.Name, "restarts", len(recent), "within", s.cfg.Interval, "release", cur,
				"regression", s.regression(l.Name, cur), "why", s.whyAlone(l.Name, cur))
			if cur != "" && s.setVerdict(l.Name, cur, false) {
				s.saveVerdicts()
			}
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
	var regressed []string
	for n, rel := range s.gaveUp {
		if rel == cur && cur != "" {
			looping++
			if s.regression(n, cur) {
				regressed = append(regressed, n)
			}
		}
	}
	sort.Strings(regressed)
	if len(onCurrent) > 0 {
		s.save()
	}
	s.mu.Unlock()

	if s.a.watch.noteCrashed(stopped) {
		return // the release watch rolls the release back
	}
	if len(onCurrent) > 0 && s.crashLoop(regressed, looping, want, cur) {
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
// lockers, and more than the failure ratio of the lockers on it (want),
// regressed on it: ran healthy on an earlier release and crash-loop on
// this one (regressed; looping counts every locker given up on, for the
// log). It reports whether it did. The others are quarantined: they say
// nothing about the release.
func (s *supervisor) crashLoop(regressed []string, looping, want int, cur string) bool {
	ratio := s.a.cfg.Defaults.Policy.MaxFailureRatio
	if !crashLoopTrips(len(regressed), want, ratio) {
		if cur != "" {
			s.a.log.Warn("lockers crash-loop, too few of them regressions to blame the release: quarantined (left stopped), the release stays",
				"release", cur, "looping", looping, "regressions", len(regressed), "lockers", want, "containers", joinNames(regressed, 10))
		}
		return false
	}
	if s.a.deps.Code == nil || cur == "" {
		return false
	}
	if _, err := s.a.deps.Code.PreviousGood(); err != nil {
		s.a.log.Error("the current release crash-loops and there is no good release to go back to", "release", cur, "lockers", looping)
		return false
	}
	j, err := s.a.Submit(Request{Kind: KindRollback, Trigger: fmt.Sprintf("supervision: %d of %d lockers crash-loop on %s after running healthy on an earlier release (%s)",
		len(regressed), want, cur, joinNames(regressed, 5))})
	if err != nil {
		s.a.log.Warn("supervision could not roll back a crash-looping release", "release", cur, "err", err)
		return false
	}
	s.a.log.Error("the current release crash-loops: rolling back", "release", cur, "regressions", len(regressed), "lockers", want, "job", j.ID,
		"containers", joinNames(regressed, 10))
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

// crashLoopTrips is supervision's rollback rule: at least two lockers,
// and more than the failure ratio of the lockers on the release, regressed
// on it.
func crashLoopTrips(regressed, onRelease int, ratio float64) bool {
	return onRelease > 0 && regressed >= 2 && float64(regressed) > ratio*float64(onRelease)
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
