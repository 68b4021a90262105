package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"lxcfleet/codeupdate"
	"lxcfleet/lxcctl"
)

// Code is what the agent needs from the release manager;
// *codeupdate.Manager provides it.
type Code interface {
	Lock() (unlock func() error, err error)
	Build(ctx context.Context, target string, progress func(step string)) (codeupdate.Release, error)
	Current() (codeupdate.Release, error)
	Switch(ctx context.Context, rel codeupdate.Release, reason string) (codeupdate.Release, error)
	PreviousGood() (codeupdate.Release, error)
	MarkBad(name, reason string) error
	Release(name string) (codeupdate.Release, error)
	Releases() ([]codeupdate.Release, error)
	CheckUpdate(ctx context.Context, target string) (codeupdate.UpdateInfo, error)
	Prune(ctx context.Context, keep int, inUse map[string]int) ([]string, error)
}

var _ Code = (*codeupdate.Manager)(nil)

// stage emits a stage event and journals it as a step.
func (r *run) stage(name, msg string) {
	_ = r.step(Step{Action: name, Phase: "end", Outcome: msg})
	r.emit(Event{Type: "stage", Stage: name, Message: msg})
}

// updateJob builds the target release while every locker keeps serving,
// then moves the running lockers onto it with the request's strategy.
func (a *Agent) updateJob(ctx context.Context, r *run, req Request, infos []lxcctl.Info) (any, error) {
	begin := time.Now()
	unlock, err := a.deps.Code.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()

	stages := map[string]any{}
	r.stage("build", "building "+req.Target)
	_ = r.step(Step{Action: "build", Phase: "begin", Release: req.Target})
	buildBegin := time.Now()
	rel, err := a.deps.Code.Build(ctx, req.Target, func(step string) { r.emit(Event{Type: "stage", Stage: "build", Message: step}) })
	if err != nil {
		_ = r.step(Step{Action: "build", Phase: "end", Outcome: "failed", Error: err.Error()})
		return nil, fmt.Errorf("building %s (nothing was stopped, current is untouched): %w", req.Target, err)
	}
	stages["build_seconds"] = time.Since(buildBegin).Seconds()
	_ = r.step(Step{Action: "build", Phase: "end", Outcome: "built", Release: rel.Name})
	npmRan := rel.Npm == "ran"
	r.stage("build", fmt.Sprintf("built %s (build %d, npm %s)", rel.Name, rel.Build, rel.Npm))
	if rel.State == codeupdate.StateBad && !req.Force {
		return nil, invalidf("release %s is marked bad; use --force to update to it anyway", rel.Name)
	}
	prev, err := a.deps.Code.Current()
	if err != nil && !errors.Is(err, codeupdate.ErrNoCurrent) {
		return nil, err
	}
	// The build may have taken minutes: read the lockers' states again.
	if fresh, err := a.deps.Containers.Select(ctx, req.Names, req.Group); err == nil {
		infos = fresh
	}
	moving := a.lockersToMove(infos, rel.Name)
	// Every locker this job stops is started again, even after a crash.
	if err := a.jr.SetDesired(moving, Desired{Running: true, JobID: r.job.ID, Since: time.Now()}); err != nil {
		return nil, fmt.Errorf("recording desired state: %w", err)
	}
	_ = r.update(func(j *Job) { j.Progress = Progress{Total: len(moving)} })

	res := &Result{From: prev.Name, To: rel.Name, Build: rel.Build, Strategy: req.Strategy, NpmRan: &npmRan, Stages: stages}
	var outcomes []Outcome
	switch req.Strategy {
	case StrategyOffline:
		outcomes, err = a.offline(ctx, r, req, rel, prev, moving, res)
	default:
		outcomes, err = a.rolling(ctx, r, req, rel, prev, moving, res)
	}
	t := tally(outcomes, begin)
	t.From, t.To, t.Build, t.Strategy, t.NpmRan, t.Stages, t.RolledBack, t.Paused = res.From, res.To, res.Build, res.Strategy, res.NpmRan, res.Stages, res.RolledBack, res.Paused
	a.addDowntime(r, t)
	if err == nil && !t.RolledBack && !t.Paused {
		a.prune(ctx, r)
	}
	switch {
	case t.RolledBack:
		t.Summary = fmt.Sprintf("update to %s rolled back to %s after %d failures: %s", rel.Name, prev.Name, len(t.Failed), joinNames(t.Failed, 10))
		if err == nil {
			err = errors.New(t.Summary)
		}
	case t.Paused:
		t.Summary = fmt.Sprintf("update to %s paused after %d failures; lockers not yet moved stay on %s", rel.Name, len(t.Failed), prev.Name)
		if err == nil {
			err = errors.New(t.Summary)
		}
	default:
		t.Summary = fmt.Sprintf("updated %d lockers to %s (build %d, %s, npm %s) in %.1fs; %d failed",
			len(moving), rel.Name, rel.Build, req.Strategy, rel.Npm, t.Seconds, len(t.Failed))
		if err == nil {
			err = t.failedErr("update")
		}
	}
	return t, err
}

// lockersToMove returns the running lockers (in start order) that do not
// yet run release rel.
func (a *Agent) lockersToMove(infos []lxcctl.Info, rel string) []string {
	var out []string
	for _, in := range infos {
		if in.State != lxcctl.StateRunning {
			continue
		}
		if a.deps.ReleaseOf != nil && in.InitPID > 0 {
			if cur, deleted, err := a.deps.ReleaseOf(in.InitPID); err == nil && cur == rel && !deleted {
				continue
			}
		}
		out = append(out, in.Name)
	}
	return out
}

// switchTo flips current to rel, journaled.
func (a *Agent) switchTo(ctx context.Context, r *run, rel codeupdate.Release, reason string) error {
	_ = r.step(Step{Action: "switch", Phase: "begin", Release: rel.Name})
	if _, err := a.deps.Code.Switch(ctx, rel, reason); err != nil {
		_ = r.step(Step{Action: "switch", Phase: "end", Outcome: "failed", Release: rel.Name, Error: err.Error()})
		return fmt.Errorf("switching current to %s: %w", rel.Name, err)
	}
	_ = r.step(Step{Action: "switch", Phase: "end", Outcome: "switched", Release: rel.Name})
	r.emit(Event{Type: "stage", Stage: "switch", Message: "current -> " + rel.Name})
	return nil
}

// offline stops every moving locker, switches, and starts them all in the
// start window. Once stopping has begun, a cancel no longer stops the job
// from starting every locker again (on the old release if it came before
// the switch).
func (a *Agent) offline(ctx context.Context, r *run, req Request, rel, prev codeupdate.Release, names []string, res *Result) ([]Outcome, error) {
	r.stage("stop", fmt.Sprintf("stopping %d lockers, %d at once", len(names), req.StopParallel))
	t := a.track(r, "replace-stop", 0)
	so := req.stopOptions()
	hold := a.holdPorts(ctx, r, req, names) // nil unless downtime_page
	defer hold.releaseAll()
	so.OnEvent = hold.wrap(t.onEvent)
	stopBegin := time.Now()
	sres, err := a.deps.Containers.StopAll(ctx, names, so)
	if err != nil {
		return nil, err
	}
	res.Stages["stop_seconds"] = time.Since(stopBegin).Seconds()
	var stopFailed []Outcome
	for _, s := range stopOutcomes(sres) {
		if s.Failed() {
			stopFailed = append(stopFailed, s)
		}
	}
	cancelled := ctx.Err()
	if cancelled == nil {
		if err := a.switchTo(ctx, r, rel, "update-code offline, job "+r.job.ID); err != nil {
			cancelled = err
		}
	}
	// Start everything that was stopped, whatever happened above.
	sctx := context.WithoutCancel(ctx)
	r.stage("start", fmt.Sprintf("starting %d lockers, %d at once", len(names), req.Window))
	startBegin := time.Now()
	st, err := a.startWaveHeld(sctx, r, req, names, 0, hold)
	if err != nil {
		return nil, err
	}
	res.Stages["start_seconds"] = time.Since(startBegin).Seconds()
	outcomes := append(startOutcomes(st), stopFailed...)
	if cancelled != nil {
		return outcomes, cancelled
	}
	failed := countFailed(outcomes)
	if tripped(failed, len(names), *req.MaxFailureRatio) {
		return a.failurePolicy(ctx, r, req, rel, prev, names, outcomes, res)
	}
	return outcomes, nil
}

// rolling switches current, then replaces lockers with at most Window
// down at once: first the canary lockers, held for the soak time, then the
// rest, with the failure policy checked before each launch.
func (a *Agent) rolling(ctx context.Context, r *run, req Request, rel, prev codeupdate.Release, names []string, res *Result) ([]Outcome, error) {
	if err := a.switchTo(ctx, r, rel, "update-code rolling, job "+r.job.ID); err != nil {
		return nil, err
	}
	canary := min(*req.Canary, len(names))
	var outcomes []Outcome
	if canary > 0 {
		r.stage("canary", fmt.Sprintf("moving %d canary lockers to %s", canary, rel.Name))
		co := a.replace(ctx, r, req, names[:canary], 0, nil)
		outcomes = append(outcomes, co...)
		if failed := countFailed(co); failed > 0 {
			r.stage("canary", fmt.Sprintf("%d of %d canaries failed", failed, canary))
			return a.failurePolicy(ctx, r, req, rel, prev, names[:canary], outcomes, res)
		}
		if req.Soak > 0 {
			r.stage("soak", fmt.Sprintf("holding %v with %d canaries on %s", req.Soak.D(), canary, rel.Name))
			if err := sleepCtx(ctx, req.Soak.D()); err != nil {
				return outcomes, err
			}
			if down := a.notRunning(ctx, names[:canary]); len(down) > 0 {
				for i := range outcomes {
					if contains(down, outcomes[i].Name) {
						outcomes[i].Outcome, outcomes[i].Error = string(lxcctl.StartFailed), "stopped during the soak"
					}
				}
				r.stage("soak", fmt.Sprintf("%d canaries stopped during the soak: %s", len(down), joinNames(down, 10)))
				return a.failurePolicy(ctx, r, req, rel, prev, names[:canary], outcomes, res)
			}
		}
	}
	rest := names[canary:]
	r.stage("rollout", fmt.Sprintf("moving %d lockers to %s, %d at once", len(rest), rel.Name, req.Window))
	ratio := *req.MaxFailureRatio
	total := len(names)
	k := req.Window
	stop := func(done []Outcome) bool {
		failed := countFailed(outcomes) + countFailed(done)
		if tripped(failed, total, ratio) {
			return true
		}
		// Per wave: the last K finished lockers.
		last := done[max(0, len(done)-k):]
		return len(last) == k && tripped(countFailed(last), k, ratio)
	}
	ro := a.replace(ctx, r, req, rest, 1, stop)
	outcomes = append(outcomes, ro...)
	var moved []string
	for _, o := range outcomes {
		if o.Outcome != "skipped" {
			moved = append(moved, o.Name)
		}
	}
	failed := countFailed(outcomes)
	skipped := len(names) - len(moved)
	if ctx.Err() != nil {
		return outcomes, ctx.Err()
	}
	if skipped > 0 || tripped(failed, total, ratio) {
		return a.failurePolicy(ctx, r, req, rel, prev, moved, outcomes, res)
	}
	return outcomes, nil
}

// tripped reports whether failed of total is over the allowed ratio.
func tripped(failed, total int, ratio float64) bool {
	return failed > 0 && float64(failed) > ratio*float64(total)
}

func countFailed(outcomes []Outcome) int {
	n := 0
	for _, o := range outcomes {
		if o.Failed() {
			n++
		}
	}
	return n
}

// failurePolicy applies the request's failure action after too many
// failures. Either way the release is marked bad and current goes back to
// prev, so that no locker restarting on its own picks up the bad release.
// pause leaves the lockers where they are for the operator; rollback moves
// every locker that was touched back to prev in the same bounded waves.
func (a *Agent) failurePolicy(ctx context.Context, r *run, req Request, rel, prev codeupdate.Release, touched []string, outcomes []Outcome, res *Result) ([]Outcome, error) {
	reason := fmt.Sprintf("%d lockers failed on it in job %s", countFailed(outcomes), r.job.ID)
	if err := a.deps.Code.MarkBad(rel.Name, reason); err != nil {
		r.emit(Event{Type: "stage", Stage: "mark-bad", Error: err.Error()})
	}
	_ = r.step(Step{Action: "mark-bad", Phase: "end", Release: rel.Name, Outcome: reason})
	if prev.Name == "" || prev.Name == rel.Name {
		res.Paused = true
		r.stage("pause", "no previous release to go back to; lockers stay where they are")
		return outcomes, nil
	}
	if err := a.switchTo(context.WithoutCancel(ctx), r, prev, "failure policy of job "+r.job.ID); err != nil {
		return outcomes, err
	}
	if req.FailureAction == ActionPause {
		res.Paused = true
		r.stage("pause", fmt.Sprintf("paused: %s marked bad, current back on %s; %d lockers stay on %s until you act", rel.Name, prev.Name, len(touched), rel.Name))
		return outcomes, nil
	}
	res.RolledBack = true
	r.stage("rollback", fmt.Sprintf("moving %d lockers back to %s", len(touched), prev.Name))
	back := a.replace(context.WithoutCancel(ctx), r, req, touched, 2, nil)
	// The update's failures stay reported; rollback failures are added.
	for _, o := range back {
		if o.Failed() {
			o.Action = "rollback"
			outcomes = append(outcomes, o)
		}
	}
	return outcomes, nil
}

// notRunning returns those of names that are not RUNNING.
func (a *Agent) notRunning(ctx context.Context, names []string) []string {
	infos, err := a.deps.Containers.Select(ctx, names, "")
	if err != nil {
		return nil
	}
	var out []string
	for _, in := range infos {
		if in.State != lxcctl.StateRunning {
			out = append(out, in.Name)
		}
	}
	return out
}

// rollbackJob goes back to the previous good release (or req.To): it marks
// the release being left bad, switches, and moves every running locker in
// the same bounded waves as an update. A second rollback therefore goes one
// release further back.
func (a *Agent) rollbackJob(ctx context.Context, r *run, req Request, infos []lxcctl.Info) (any, error) {
	begin := time.Now()
	unlock, err := a.deps.Code.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	cur, err := a.deps.Code.Current()
	if err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	var target codeupdate.Release
	if req.To != "" {
		target, err = a.deps.Code.Release(req.To)
		if err != nil {
			return nil, invalidf("rollback target %q: %v", req.To, err)
		}
		if target.State == codeupdate.StateBad && !req.Force {
			return nil, invalidf("release %s is marked bad; use --force to roll back to it anyway", target.Name)
		}
	} else {
		target, err = a.deps.Code.PreviousGood()
		if err != nil {
			return nil, fmt.Errorf("rollback from %s: %w", cur.Name, err)
		}
	}
	if target.Name == cur.Name {
		return nil, invalidf("release %s is already current", cur.Name)
	}
	if err := a.deps.Code.MarkBad(cur.Name, "rolled back by job "+r.job.ID); err != nil {
		return nil, fmt.Errorf("marking %s bad: %w", cur.Name, err)
	}
	_ = r.step(Step{Action: "mark-bad", Phase: "end", Release: cur.Name})
	if err := a.switchTo(ctx, r, target, "rollback, job "+r.job.ID); err != nil {
		return nil, err
	}
	moving := a.lockersToMove(infos, target.Name)
	_ = r.update(func(j *Job) { j.Progress = Progress{Total: len(moving)} })
	r.stage("rollout", fmt.Sprintf("moving %d lockers back to %s, %d at once", len(moving), target.Name, req.Window))
	outcomes := a.replace(ctx, r, req, moving, 1, nil)
	t := tally(outcomes, begin)
	t.From, t.To, t.Build = cur.Name, target.Name, target.Build
	a.addDowntime(r, t)
	t.Summary = fmt.Sprintf("rolled back %d lockers from %s to %s (build %d) in %.1fs; %s marked bad; %d failed",
		len(moving), cur.Name, target.Name, target.Build, t.Seconds, cur.Name, len(t.Failed))
	if ctx.Err() != nil {
		return t, ctx.Err()
	}
	return t, t.failedErr("roll back")
}

// buildJob builds the target release (fetch, checkout, npm when the
// lockfile changed) without switching current or touching a locker: the
// next update-code to that target finds it built.
func (a *Agent) buildJob(ctx context.Context, r *run, req Request) (any, error) {
	unlock, err := a.deps.Code.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	_ = r.step(Step{Action: "build", Phase: "begin", Release: req.Target})
	rel, err := a.deps.Code.Build(ctx, req.Target, func(step string) { r.emit(Event{Type: "stage", Stage: "build", Message: step}) })
	if err != nil {
		_ = r.step(Step{Action: "build", Phase: "end", Outcome: "failed", Error: err.Error()})
		return nil, fmt.Errorf("building %s: %w", req.Target, err)
	}
	_ = r.step(Step{Action: "build", Phase: "end", Outcome: "built", Release: rel.Name})
	r.stage("build", fmt.Sprintf("built %s (build %d, npm %s); current is unchanged", rel.Name, rel.Build, rel.Npm))
	return rel, nil
}

// checkUpdateJob fetches and compares without building.
func (a *Agent) checkUpdateJob(ctx context.Context, r *run, req Request) (any, error) {
	info, err := a.deps.Code.CheckUpdate(ctx, req.Target)
	if err != nil {
		return nil, err
	}
	if b, err := json.Marshal(struct {
		codeupdate.UpdateInfo
		CheckedAt time.Time `json:"checked_at"`
	}{info, time.Now()}); err == nil {
		_ = a.jr.SetMeta("last_update_check", string(b))
	}
	msg := "up to date"
	if info.Available {
		need := "a restart is enough"
		if info.NpmNeeded {
			need = "npm install needed"
		}
		msg = fmt.Sprintf("%d commits behind %s; %s", info.Behind, req.Target, need)
	}
	r.stage("check", msg)
	return info, nil
}

// LastUpdateCheck returns the result of the newest check-update job.
func (a *Agent) LastUpdateCheck() (json.RawMessage, error) {
	v, err := a.jr.Meta("last_update_check")
	if err != nil || v == "" {
		return nil, err
	}
	return json.RawMessage(v), nil
}

// prune removes old releases that no running locker uses.
func (a *Agent) prune(ctx context.Context, r *run) {
	if a.cfg.KeepReleases <= 0 {
		return
	}
	inUse, err := a.ReleasesInUse(ctx)
	if err != nil {
		r.emit(Event{Type: "stage", Stage: "prune", Error: err.Error()})
		return
	}
	removed, err := a.deps.Code.Prune(ctx, a.cfg.KeepReleases, inUse)
	if err != nil {
		r.emit(Event{Type: "stage", Stage: "prune", Error: err.Error()})
		return
	}
	if len(removed) > 0 {
		r.stage("prune", "removed releases "+joinNames(removed, 10))
	}
}

// ReleasesInUse counts running lockers per release (from their mountinfo).
func (a *Agent) ReleasesInUse(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	if a.deps.ReleaseOf == nil {
		return out, nil
	}
	infos, err := a.deps.Containers.Select(ctx, nil, "")
	if err != nil {
		return nil, err
	}
	for _, in := range infos {
		if in.InitPID <= 0 {
			continue
		}
		rel, _, err := a.deps.ReleaseOf(in.InitPID)
		if err != nil {
			return nil, fmt.Errorf("reading release of %s: %w", in.Name, err)
		}
		if rel != "" {
			out[rel]++
		}
	}
	return out, nil
}

// addDowntime adds each locker's measured downtime (from its stop to its
// healthy start) to the result.
func (a *Agent) addDowntime(r *run, t *Result) {
	down := r.downtimes()
	if len(down) == 0 {
		return
	}
	var ds []time.Duration
	for i := range t.Outcomes {
		if d, ok := down[t.Outcomes[i].Name]; ok {
			t.Outcomes[i].Downtime = Duration(d)
			ds = append(ds, d)
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	if len(ds) > 0 {
		t.Downtime = &DowntimeStats{
			P50: Duration(ds[len(ds)/2]),
			P99: Duration(ds[min(len(ds)-1, len(ds)*99/100)]),
			Max: Duration(ds[len(ds)-1]),
		}
	}
}

// DowntimeStats summarises per-locker downtime in a job.
type DowntimeStats struct {
	P50 Duration `json:"p50"`
	P99 Duration `json:"p99"`
	Max Duration `json:"max"`
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
