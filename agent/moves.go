package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"lxcfleet/codeupdate"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
)

// This file is the wiring between the agent's jobs and the rollout
// executor: the per-locker verbs over lxcctl, the release store over
// codeupdate, and the journal and event stream fed by rollout's events.
// Every job that moves lockers runs a rollout.Plan through execute.

// codeReleases adapts the release manager to rollout.Releases.
type codeReleases struct {
	code Code
	log  *slog.Logger
}

func (c codeReleases) Switch(ctx context.Context, name, reason string) error {
	rel, err := c.code.Release(name)
	if err != nil {
		return err
	}
	_, err = c.code.Switch(ctx, rel, reason)
	return err
}

// MarkBad marks a release bad and says so at warning level: an operator
// alerts on it.
func (c codeReleases) MarkBad(name, reason string) error {
	err := c.code.MarkBad(name, reason)
	if err == nil && c.log != nil {
		c.log.Warn("release marked bad", "release", name, "reason", reason)
	}
	return err
}
func (c codeReleases) MarkProven(name string) error { return c.code.MarkProven(name) }

func (c codeReleases) CurrentRelease() (string, error) {
	r, err := c.code.Current()
	return r.Name, err
}

// healthNote says what a health check really checks, for the job's log.
func healthNote(p rollout.Policy) string {
	hc := healthOfPolicy(p)
	if hc.Kind == lxcctl.HealthNone {
		return fmt.Sprintf("health check none: a locker counts as healthy while it is RUNNING for the %v monitor window (a release that exits is caught; one that runs and serves errors is not: set defaults.health)", p.Monitor)
	}
	return fmt.Sprintf("health check %s, held for a %v monitor window", hc, p.Monitor)
}

// lockers describes infos for the planners: desired state from the
// journal, release from each init's mountinfo. Lockers LXC cannot load
// (lxcctl.StateBroken) are left out: no plan moves them, and their failure
// counts against no release (planFor reports them).
func (a *Agent) lockers(infos []lxcctl.Info) ([]rollout.Locker, error) {
	desired, err := a.jr.Desired()
	if err != nil {
		return nil, fmt.Errorf("reading desired state: %w", err)
	}
	out := make([]rollout.Locker, 0, len(infos))
	for _, in := range infos {
		if in.Broken() {
			continue // LXC cannot load it: no plan moves it (planFor reports it)
		}
		l := rollout.Locker{Name: in.Name, Running: in.State == lxcctl.StateRunning, StartDelay: in.StartDelay}
		d, ok := desired[in.Name]
		l.WantRunning = !ok && l.Running || d.Running
		if l.Running && a.deps.ReleaseOf != nil && in.InitPID > 0 {
			if rel, deleted, err := a.deps.ReleaseOf(in.InitPID); err == nil {
				l.Release, l.Stale = rel, deleted
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// facts reads current, whether it is proven, and the last good release.
func (a *Agent) facts() rollout.ReleaseFacts { return a.factsFor(nil) }

// factsFor is facts with the lockers known: a current release that is not
// marked bad and that every running locker runs (there is at least one)
// has been proven in production (a release from before proven marks
// existed, say) and is marked so. A fleet split across releases proves
// nothing: recovery passes no lockers.
func (a *Agent) factsFor(ls []rollout.Locker) rollout.ReleaseFacts {
	var f rollout.ReleaseFacts
	if a.deps.Code == nil {
		return f
	}
	if cur, err := a.deps.Code.Current(); err == nil {
		f.Current, f.CurrentProven = cur.Name, cur.State == codeupdate.StateProven
		running, on := 0, 0
		for _, l := range ls {
			if l.Running {
				running++
				if !l.Stale && l.Release == cur.Name {
					on++
				}
			}
		}
		if cur.State == codeupdate.StateGood && running > 0 && on == running {
			// Proven by what runs, whether or not the mark can be written
			// (a full disk must not leave an update without a way back).
			f.CurrentProven = true
			if err := a.deps.Code.MarkProven(cur.Name); err != nil {
				a.log.Warn("marking the current release proven", "release", cur.Name, "err", err)
			}
		}
	}
	if pg, err := a.deps.Code.PreviousGood(); err == nil {
		f.LastGood = pg.Name
	}
	return f
}

// proven reports whether a release is proven.
func (a *Agent) proven(name string) bool {
	if a.deps.Code == nil || name == "" {
		return false
	}
	r, err := a.deps.Code.Release(name)
	return err == nil && r.State == codeupdate.StateProven
}

// execute journals plan with the job, runs it, and returns its result.
func (a *Agent) execute(ctx context.Context, r *run, req Request, plan rollout.Plan, hold *portHold) rollout.Result {
	// No plan, no moves: the journaled plan is what the next agent
	// resumes (I4), so a plan that cannot be written runs nothing.
	if err := r.update(func(j *Job) {
		p := plan
		j.Plan = &p
		j.Progress = Progress{Total: len(plan.Items)}
	}); err != nil {
		err = fmt.Errorf("journaling the plan of job %s: %w (nothing was moved)", r.job.ID, err)
		a.log.Error("job cannot journal its plan", "job", r.job.ID, "err", err)
		return rollout.Result{Err: err}
	}
	env := rollout.Env{
		Host:    lockerverbs.Verbs{C: a.deps.Containers, Health: healthOfPolicy(plan.Policy)},
		Observe: hold.wrap(a.track(r).onEvent),
		Reason:  "job " + r.job.ID,
		Gauge:   a.deps.Gauge,
		Clock:   a.deps.Clock,
	}
	if a.deps.Code != nil {
		env.Releases = codeReleases{a.deps.Code, a.log}
	}
	if req.Fence != nil {
		env.Fence = func() error {
			if err := req.Fence(); err != nil {
				err = fencedCause(err)
				r.cancel(err) // the job ends cancelled by its fence
				return err
			}
			return nil
		}
	}
	res := rollout.Run(ctx, plan, env)
	if res.Err != nil {
		a.log.Error("job could not carry out its plan", "job", r.job.ID, "err", res.Err)
	}
	return res
}

// tracker feeds rollout's events to the journal (a begin step before each
// stop or start, an end step after), the job's event stream, its progress
// and downtime, and the metrics.
type tracker struct {
	r    *run
	m    *metrics
	mu   sync.Mutex
	done map[string]bool
}

func (a *Agent) track(r *run) *tracker {
	return &tracker{r: r, m: a.metrics, done: map[string]bool{}}
}

// The journal's per-locker step actions: what recovery reads back to know
// whom the interrupted job stopped and whom it left starting.
const (
	StepStop        = "stop"         // a stop-all's stop
	StepReplaceStop = "replace-stop" // the stop of a replace
	StepStart       = "start"        // a start; its end "healthy" opens the monitor window
	StepMonitor     = "monitor"      // a failure inside the monitor window
	StepBackStop    = "back-stop"    // the way back's stop
	StepBackStart   = "back-start"   // the way back's start
)

// stepAction names the journal step of an event.
func stepAction(e rollout.Event) string {
	switch {
	case e.Back && e.Op == "stop":
		return StepBackStop
	case e.Back:
		return StepBackStart
	case e.Op == "stop":
		return StepReplaceStop
	case e.Op == "monitor":
		return StepMonitor
	}
	return StepStart
}

func (t *tracker) onEvent(e rollout.Event) {
	if e.Container == "" {
		s := Step{Action: e.Stage, Phase: "end", Outcome: e.Message, Release: e.Release, Error: e.Error}
		_ = t.r.step(s)
		t.r.emit(Event{Type: "stage", Stage: e.Stage, Message: e.Message, Error: e.Error, Back: e.Back, Release: e.Release})
		return
	}
	// A watched locker (left starting by a dead agent) is in flight from
	// its first check, as a start is from its begin.
	begin := e.Phase == rollout.PhaseStopping || e.Phase == rollout.PhaseStarting || (e.Phase == rollout.PhaseWatching && e.Outcome == "")
	end := e.Phase == rollout.PhaseStopped || e.Phase == rollout.PhaseMoved || e.Phase == rollout.PhaseFailed || e.Phase == rollout.PhaseSkipped ||
		(e.Phase == rollout.PhaseHealthy && e.Back)
	if begin || end || e.Phase == rollout.PhaseHealthy {
		s := Step{Container: e.Container, Action: stepAction(e), Phase: "begin", Release: e.Release}
		if !begin {
			s.Phase, s.Outcome, s.Error = "end", e.Outcome, e.Error
			if e.Phase == rollout.PhaseHealthy {
				s.Outcome = string(rollout.PhaseHealthy)
			}
		}
		// A failed write stops the job (run.journalFailed); the step
		// itself still runs: a lost record beats a stranded locker.
		_ = t.r.step(s)
	}
	if end {
		t.m.containerOp(strings.TrimPrefix(stepAction(e), "replace-"), e.Outcome)
	}
	counts := end && !e.Back && !(e.Phase == rollout.PhaseStopped && t.r.job.Kind != KindStopAll)
	if counts {
		t.mu.Lock()
		first := !t.done[e.Container]
		t.done[e.Container] = true
		t.mu.Unlock()
		if first || e.Phase == rollout.PhaseFailed {
			_ = t.r.update(func(j *Job) {
				if first {
					j.Progress.Done++
				}
				if e.Phase == rollout.PhaseFailed {
					j.Progress.Failed++
				}
			})
		}
	}
	t.r.emit(Event{Type: "container", Container: e.Container, Phase: string(e.Phase), Outcome: e.Outcome,
		Error: e.Error, Duration: Duration(e.Duration), Message: backNote(e), MaxStarting: e.MaxStarting, Starting: e.Starting,
		Back: e.Back, Release: e.Release})
}

func backNote(e rollout.Event) string {
	if e.Back {
		return "on the way back"
	}
	return ""
}

// toResult turns rollout's result into the job's.
func toResult(res rollout.Result, begin time.Time) *Result {
	out := &Result{Counts: res.Counts(), Seconds: time.Since(begin).Seconds(), Failed: res.Failed(),
		RolledBack: res.RolledBack, Paused: res.Paused, Tripped: res.Tripped, Proven: res.Proven,
		Cancelled: res.Cancelled, Interrupted: res.Interrupted, Undone: res.Undone, Halted: res.Halted, Current: res.Current}
	out.Outcomes = slices.Clone(res.Outcomes)
	var ds []time.Duration
	for _, o := range res.Outcomes {
		if o.Op == rollout.OpReplace && o.Downtime > 0 {
			ds = append(ds, o.Downtime)
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	if len(ds) > 0 {
		out.Downtime = &DowntimeStats{P50: Duration(ds[len(ds)/2]), P99: Duration(ds[min(len(ds)-1, len(ds)*99/100)]), Max: Duration(ds[len(ds)-1])}
	}
	return out
}

// tail says how a run ended beyond its counts (I5): "" for a clean one.
func tail(res rollout.Result, plan rollout.Plan) string {
	var parts []string
	if res.Err != nil {
		parts = append(parts, res.Err.Error())
	}
	if res.Tripped != "" {
		parts = append(parts, "failure policy tripped: "+res.Tripped)
		if res.MarkedBad {
			parts = append(parts, plan.Target+" marked bad")
		}
	}
	if res.Current != "" && res.Current != plan.Target {
		parts = append(parts, "current back on "+res.Current)
	}
	switch n := res.Counts()["back-"+rollout.BackRolledBack]; {
	case res.RolledBack:
		parts = append(parts, fmt.Sprintf("rolled back to %s (%s moved back)", orDash(plan.Fallback), nLockers(n)))
	case n > 0:
		parts = append(parts, fmt.Sprintf("%s moved back to %s", nLockers(n), orDash(plan.Fallback)))
	}
	if n := res.Counts()["back-"+rollout.BackFailed]; n > 0 {
		parts = append(parts, fmt.Sprintf("%d failed on the way back", n))
	}
	switch {
	case res.Paused && res.Tripped != "":
		parts = append(parts, "paused: lockers that moved healthy stay; act with update-code --force or rollback")
	case res.Paused:
		parts = append(parts, "paused: no good release to go back to")
	}
	if res.Halted != "" {
		parts = append(parts, "stopped early: "+res.Halted)
	}
	if res.Cancelled {
		s := "cancelled"
		if res.Undone {
			s += ": undone"
		}
		parts = append(parts, s)
	}
	if res.Interrupted {
		parts = append(parts, "interrupted by the agent's stop: the next agent finishes or undoes it")
	}
	return strings.Join(parts, "; ")
}

// countLine lists the non-zero counts in a fixed order.
func countLine(c map[string]int) string {
	var parts []string
	for _, k := range []string{rollout.OutMoved, rollout.OutStarted, rollout.OutStopped, rollout.OutKilled, rollout.OutAlreadyStopped,
		rollout.OutAlreadyRunning, rollout.OutUnverified, rollout.OutFailed, rollout.OutSkipped} {
		if c[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c[k], k))
		}
	}
	if len(parts) == 0 {
		return "nothing to do"
	}
	return strings.Join(parts, ", ")
}

// runErr is the job's error for a run that did not do all it planned:
// wrapping rollout.Shutdown (the job is recorded interrupted, for the next
// agent's recovery) or context.Canceled (cancelled), else the summary.
func runErr(res rollout.Result, summary string) error {
	switch {
	case res.Interrupted:
		return fmt.Errorf("%s: %w", summary, rollout.Shutdown)
	case res.Cancelled:
		return fmt.Errorf("%s: %w", summary, context.Canceled)
	case res.OK():
		return nil
	}
	return errors.New(summary)
}
