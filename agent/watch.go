package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
)

// The release watch: an update that proved its release ends, but the
// release is still watched for the policy's release_watch (10 min by
// default), as Nomad's deployment watcher keeps judging a deployment after
// its allocations passed min_healthy_time. Every interval of the update's
// policy (at least watchFloor), each locker the update moved onto the
// release, and whose desired state is running, is looked at: its state
// from the agent's inventory, and, running, the update's health check. A
// locker fails the watch when it crashed (found stopped, or restarted by
// supervision since the watch began: a crash counts at once, not after
// supervision's start limit; supervision tells the watch of every stopped
// locker before it restarts one) or when watchUnhealthyChecks checks in a
// row failed (HTTP 503 included). When at least two lockers, and more
// than the failure ratio of the watched ones, failed, the watch trips the
// failure policy as a failed update would: with failure_action rollback, a
// rollback job (journaled, through the executor) marks the release bad and
// goes back to the previous good one; with pause, the release stays and the
// agent says so. One locker failing alone says nothing about the release:
// supervision restarts it and quarantines it at its start limit. The watch
// is kept in the journal, so an agent restart does not end it, and it ends
// early when current moves (a rollback or another update). It holds still
// while an operator's job runs and during a host shutdown, and is off
// with supervision.

// watchUnhealthyChecks is how many failed checks in a row make a running
// locker unhealthy for the watch: one failed check may be a slow answer.
const watchUnhealthyChecks = 2

// watchFloor is the shortest time between two rounds of the watch.
const watchFloor = time.Second

// watchChecksPerSecond bounds the watch's health checks: a round checks
// at most this many lockers a second of its interval, the next ones in
// turn, so each locker is checked every N/20 s at N > 20 (15 s at N=300,
// as the inventory's health_interval) and every round at N ≤ 20. Measured
// (perf, 2026-12-06): checking all 300 lockers every second for the 10
// minutes after an update was the largest share of the idle agent's CPU,
// and the lockers answered 300 requests a second for it. A stopped locker
// is still seen at every round (from the inventory) and at once when
// supervision finds it.
const watchChecksPerSecond = 20

// watchMeta is the journal's meta key of the release watch.
const watchMeta = "release_watch"

// releaseWatch is a release watched after the update that proved it.
type releaseWatch struct {
	Release string    `json:"release"`
	Job     string    `json:"job"` // the update that moved the lockers
	Since   time.Time `json:"since"`
	Until   time.Time `json:"until"`
	// Lockers are the lockers the update moved onto the release.
	Lockers []string       `json:"lockers"`
	Policy  rollout.Policy `json:"policy"`
}

// watcher runs the release watch: its state is the watch and, per locker,
// the failed checks in a row and why it crashed.
type watcher struct {
	a       *Agent
	mu      sync.Mutex
	w       *releaseWatch
	fails   map[string]int    // failed checks in a row
	lastErr map[string]string // the last failed check's error
	crashed map[string]string
	kick    chan struct{}
	now     func() time.Time
	// next is where the next round's health checks begin in the
	// watched list (watchChecksPerSecond).
	next int
	// pending is set while a tripped watch waits for a running job
	// (supervision's restart) to end: supervision starts nothing new
	// meanwhile, so that the rollback comes next.
	pending atomic.Bool
}

func newWatcher(a *Agent) *watcher {
	w := &watcher{a: a, fails: map[string]int{}, lastErr: map[string]string{}, crashed: map[string]string{}, kick: make(chan struct{}, 1), now: a.deps.Clock.Now}
	v, err := a.jr.Meta(watchMeta)
	if err != nil {
		a.log.Warn("reading the release watch from the journal: no release is watched", "err", err)
		return w
	}
	if v == "" {
		return w
	}
	var rw releaseWatch
	if err := json.Unmarshal([]byte(v), &rw); err != nil {
		a.log.Warn("decoding the release watch from the journal: no release is watched", "err", err)
		return w
	}
	w.w = &rw
	return w
}

// begin watches release rel for its policy's release watch, from now on:
// the lockers are those the update moved onto it. It replaces any watch,
// and reports whether it watches: not with a zero release_watch, nor with
// supervision off (the agent then acts on no locker between jobs).
func (w *watcher) begin(rel, job string, lockers []string, pol rollout.Policy) bool {
	if pol.ReleaseWatch <= 0 || len(lockers) == 0 || w.a.sup.cfg.Off {
		w.end("")
		return false
	}
	now := w.now()
	rw := &releaseWatch{Release: rel, Job: job, Since: now, Until: now.Add(pol.ReleaseWatch), Lockers: append([]string(nil), lockers...), Policy: pol}
	w.mu.Lock()
	w.w = rw
	clear(w.fails)
	clear(w.lastErr)
	clear(w.crashed)
	w.save()
	w.mu.Unlock()
	w.a.log.Info("release watch begins: its lockers are checked until it ends", "release", rel, "job", job,
		"lockers", len(lockers), "until", rw.Until.Format(time.RFC3339), "health", orDash(pol.Health))
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return true
}

// end stops the watch, saying why when why is not "".
func (w *watcher) end(why string) {
	w.mu.Lock()
	rw := w.w
	w.w = nil
	w.pending.Store(false)
	clear(w.fails)
	clear(w.lastErr)
	clear(w.crashed)
	if rw != nil {
		w.save()
	}
	w.mu.Unlock()
	if rw != nil && why != "" {
		w.a.log.Info("release watch ends: "+why, "release", rw.Release, "job", rw.Job)
	}
}

// save writes the watch to the journal. Called with mu held.
func (w *watcher) save() {
	v := ""
	if w.w != nil {
		b, err := json.Marshal(w.w)
		if err != nil {
			w.a.log.Error("encoding the release watch", "err", err)
			return
		}
		v = string(b)
	}
	if err := w.a.jr.SetMeta(watchMeta, v); err != nil {
		w.a.log.Error("writing the release watch to the journal: an agent restart would end it", "err", err)
	}
}

// WatchInfo is the release watch as the host overview shows it.
type WatchInfo struct {
	Release string    `json:"release"`
	Job     string    `json:"job"` // the update
	Until   time.Time `json:"until"`
	Lockers int       `json:"lockers"`
	// Failed are the watched lockers failing it now, each with why.
	Failed []string `json:"failed"`
}

// info returns the watch for the host overview, or nil.
func (w *watcher) info() *WatchInfo {
	rw := w.watching()
	if rw == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	failed := w.failedLocked(rw, rw.Lockers)
	sort.Strings(failed)
	return &WatchInfo{Release: rw.Release, Job: rw.Job, Until: rw.Until, Lockers: len(rw.Lockers), Failed: append([]string{}, failed...)}
}

// every is the time between two rounds of the watch: the policy's
// interval, at least watchFloor.
func (rw *releaseWatch) every() time.Duration { return max(rw.Policy.Interval, watchFloor) }

// watching returns the watch, or nil.
func (w *watcher) watching() *releaseWatch {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w
}

// run checks the watched release every interval of its policy until ctx
// ends.
func (w *watcher) run(ctx context.Context) {
	for {
		wait := time.Hour
		if rw := w.watching(); rw != nil {
			wait = rw.every()
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.kick:
			t.Stop()
		case <-t.C:
		}
		w.round(ctx)
	}
}

// round checks the watched lockers once and trips the failure policy when
// the rule says so.
func (w *watcher) round(ctx context.Context) {
	rw := w.watching()
	if rw == nil {
		return
	}
	if w.a.sup.cfg.Off {
		w.end("supervision is off")
		return
	}
	switch {
	case !w.now().Before(rw.Until):
		w.end(fmt.Sprintf("%v passed with the release healthy", rw.Policy.ReleaseWatch))
		return
	case w.a.currentRelease() != rw.Release:
		w.end("current moved to " + orDash(w.a.currentRelease()))
		return
	}
	if w.a.hostShuttingDown() {
		return
	}
	seq := w.a.jobSeq.Load()
	if j, busy := w.a.Running(); busy && !strings.HasPrefix(j.Trigger, "supervision") {
		// A job of the operator's may stop lockers on purpose: its own
		// policy judges what it does. Supervision's restarts only start
		// lockers that stopped, which the watch counts already.
		return
	}
	names, err := w.watched(rw)
	if err != nil {
		w.a.log.Warn("release watch: reading desired states", "err", err)
		return
	}
	results := w.check(ctx, rw, names, seq)
	if ctx.Err() != nil {
		return
	}
	if w.a.jobsMovedSince(seq) {
		// A job began or ended since the desired states were read (an
		// operator's stop-all may have stopped its lockers on purpose):
		// the next round judges.
		return
	}
	w.mu.Lock()
	if w.w != rw { // ended or replaced meanwhile
		w.mu.Unlock()
		return
	}
	for i, n := range names {
		err := results[i]
		switch {
		case errors.Is(err, errNoWord):
		case err == nil:
			w.fails[n], w.lastErr[n] = 0, ""
		case errors.Is(err, lxcctl.ErrNotRunning):
			if _, ok := w.crashed[n]; !ok {
				w.crashed[n] = "stopped on its own"
			}
		default:
			w.fails[n]++
			w.lastErr[n] = err.Error()
		}
	}
	failed := w.failedLocked(rw, names)
	w.mu.Unlock()
	if !watchTrips(len(failed), len(names), rw.Policy.MaxFailureRatio) {
		w.pending.Store(false) // the lockers came back: supervision goes on
		return
	}
	w.trip(rw, failed, len(names))
}

// errNoWord marks a locker the round could not judge (starting,
// stopping, or not in the inventory yet).
var errNoWord = errors.New("no word on this locker this round")

// healthChecker is the one health check of a running locker without LXC
// state reads; *lxcctl.Host provides it.
type healthChecker interface {
	CheckHealth(ctx context.Context, in lxcctl.Info, hc lxcctl.HealthCheck) error
}

// check judges each of names once, its health checks 8 at once and at
// most watchChecksPerSecond a second of the round's interval (the others
// get errNoWord until their turn). A locker's state comes from
// the inventory once it was refreshed after the watch began (a stopped
// one wraps lxcctl.ErrNotRunning); only running ones get the health check
// (at N=300 a round of the agent's full check, two LXC state reads a
// locker, would cost the host 600 reads a second for minutes). seq is the
// agent's jobSeq when the round read the desired states.
func (w *watcher) check(ctx context.Context, rw *releaseWatch, names []string, seq uint64) []error {
	hc := healthOfPolicy(rw.Policy)
	// One snapshot for the whole round, used only when it was read after
	// the watch began and with no job boundary between its reading and
	// the round's desired states (seq); otherwise each locker is read
	// live.
	v := w.a.inv.viewOf(names)
	fresh := v.at.After(rw.Since) && v.seq == seq
	checker, direct := w.a.deps.Containers.(healthChecker)
	results := make([]error, len(names))
	// The lockers probed this round: budget of them, from w.next on.
	budget := int(math.Ceil(watchChecksPerSecond * rw.every().Seconds()))
	first := 0
	if len(names) > 0 {
		first = w.next % len(names)
		w.next = (first + budget) % len(names)
	}
	probed := func(i int) bool { return budget >= len(names) || (i-first+len(names))%len(names) < budget }
	var g errgroup.Group
	g.SetLimit(8)
	for i, n := range names {
		l, known := v.byName[n]
		switch {
		case fresh && known && l.State == lxcctl.StateStopped:
			results[i] = fmt.Errorf("container %q is STOPPED: %w", n, lxcctl.ErrNotRunning)
		case !probed(i):
			results[i] = errNoWord // its turn comes
		case !fresh || !known || !direct:
			g.Go(func() error {
				results[i] = w.a.deps.Containers.CheckRunning(ctx, n, hc)
				return nil
			})
		case l.State != lxcctl.StateRunning:
			results[i] = errNoWord
		case hc.Kind == "" || hc.Kind == lxcctl.HealthNone:
			results[i] = nil // running is healthy
		default:
			g.Go(func() error {
				results[i] = checker.CheckHealth(ctx, lxcctl.Info{Name: n, State: l.State, Env: l.Env}, hc)
				return nil
			})
		}
	}
	_ = g.Wait()
	return results
}

// noteCrashed is supervision's word that lockers whose desired state is
// running are stopped: those of the watch count as crashed at once (before
// supervision restarts them), and when the rule then says so the watch
// trips; it reports whether it did (supervision then restarts nothing).
func (w *watcher) noteCrashed(stopped []string) bool {
	rw := w.watching()
	if rw == nil || len(stopped) == 0 || w.a.currentRelease() != rw.Release || !w.now().Before(rw.Until) {
		return false
	}
	names, err := w.watched(rw)
	if err != nil {
		return false
	}
	w.mu.Lock()
	if w.w != rw {
		w.mu.Unlock()
		return false
	}
	for _, n := range stopped {
		if _, ok := w.crashed[n]; !ok && slices.Contains(names, n) {
			w.crashed[n] = "stopped on its own"
		}
	}
	failed := w.failedLocked(rw, names)
	w.mu.Unlock()
	if !watchTrips(len(failed), len(names), rw.Policy.MaxFailureRatio) {
		return false
	}
	w.trip(rw, failed, len(names))
	return true
}

// watched returns the watch's lockers whose desired state is running.
func (w *watcher) watched(rw *releaseWatch) ([]string, error) {
	desired, err := w.a.jr.Desired()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range rw.Lockers {
		if d, ok := desired[n]; ok && d.Running {
			names = append(names, n)
		}
	}
	return names, nil
}

// failedLocked returns the watched lockers that failed the watch, each
// with why. Called with mu held.
func (w *watcher) failedLocked(rw *releaseWatch, names []string) []string {
	var failed []string
	for _, n := range names {
		if _, ok := w.crashed[n]; !ok && w.a.sup.restartedSince(n, rw.Since) {
			w.crashed[n] = "restarted by supervision"
		}
		switch {
		case w.crashed[n] != "":
			failed = append(failed, n+" ("+w.crashed[n]+")")
		case w.fails[n] >= watchUnhealthyChecks:
			failed = append(failed, fmt.Sprintf("%s (unhealthy: %s)", n, w.lastErr[n]))
		}
	}
	return failed
}

// rollbackPending reports whether a tripped watch waits for a job's end
// to roll back; it kicks the watch so that it tries again at once.
func (w *watcher) rollbackPending() bool {
	if !w.pending.Load() {
		return false
	}
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return true
}

// watchTrips is the release watch's rule: at least two lockers, and more
// than the failure ratio of the watched ones, failed.
func watchTrips(failed, watched int, ratio float64) bool {
	return failed >= 2 && float64(failed) > ratio*float64(watched)
}

// trip applies the failure policy of the watched release's update.
func (w *watcher) trip(rw *releaseWatch, failed []string, watched int) {
	sort.Strings(failed)
	within := w.now().Sub(rw.Since).Round(100 * time.Millisecond)
	crashed := 0
	for _, f := range failed {
		if !strings.Contains(f, "(unhealthy") {
			crashed++
		}
	}
	// The trigger is short (it is the job's one line); the log names each.
	why := fmt.Sprintf("%d of %d lockers on %s failed (%d crashed, %d unhealthy) %v after update %s",
		len(failed), watched, rw.Release, crashed, len(failed)-crashed, within, rw.Job)
	if rw.Policy.FailureAction == rollout.Pause {
		w.a.log.Error("release watch tripped the failure policy; failure action pause: the release stays, roll back by hand (lxcfleet rollback)",
			"release", rw.Release, "failed", len(failed), "lockers", watched, "job", rw.Job, "containers", joinNames(failed, 10))
		w.a.metrics.supervision("watch-pause")
		w.end("")
		return
	}
	j, err := w.a.Submit(Request{Kind: KindRollback, Trigger: "release watch: " + why})
	var busy BusyError
	switch {
	case errors.As(err, &busy):
		w.pending.Store(true) // supervision's restart runs: the next round rolls back
		return
	case err != nil:
		w.a.log.Error("release watch tripped the failure policy but cannot roll back", "release", rw.Release, "err", err,
			"failed", len(failed), "lockers", watched, "containers", joinNames(failed, 10))
		w.end("")
		return
	}
	w.a.log.Warn("release watch tripped the failure policy: rolling back, the release is marked bad",
		"release", rw.Release, "failed", len(failed), "lockers", watched, "after", within, "update", rw.Job, "job", j.ID,
		"containers", joinNames(failed, 10))
	w.a.metrics.supervision("watch-rollback")
	w.end("")
}
