package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"lxcfleet/codeupdate"
	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
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
	// MarkProven records that a release passed a monitor window.
	MarkProven(name string) error
	// History lists every switch of current, oldest first.
	History() ([]codeupdate.Switched, error)
}

var _ Code = (*codeupdate.Manager)(nil)

// stage emits a stage event and journals it as a step.
func (r *run) stage(name, msg string) {
	_ = r.step(Step{Action: name, Phase: "end", Outcome: msg})
	r.emit(Event{Type: "stage", Stage: name, Message: msg})
}

// updateJob builds the target release while every locker keeps serving,
// then moves the lockers onto it with the request's strategy, through the
// rollout executor and its failure policy.
func (a *Agent) updateJob(ctx context.Context, r *run, req Request, infos []lxcctl.Info) (any, error) {
	begin := a.deps.Clock.Now()
	unlock, err := a.deps.Code.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()

	stages := map[string]any{}
	r.stage("build", "building "+req.Target)
	_ = r.step(Step{Action: "build", Phase: "begin", Release: req.Target})
	buildBegin := a.deps.Clock.Now()
	built := a.releaseNames() // releases that exist before this build
	rel, err := a.deps.Code.Build(ctx, req.Target, func(step string) { r.emit(Event{Type: "stage", Stage: "build", Message: step}) })
	if err != nil {
		_ = r.step(Step{Action: "build", Phase: "end", Outcome: "failed", Error: err.Error()})
		return nil, fmt.Errorf("building %s (%s): %w", req.Target, a.untouchedNote(infos), err)
	}
	stages["build_seconds"] = time.Since(buildBegin).Seconds()
	_ = r.step(Step{Action: "build", Phase: "end", Outcome: "built", Release: rel.Name})
	// A release built before (ahead of time, or by an earlier update) ran
	// no npm in this job, whatever its own build did.
	prebuilt := built[rel.Name]
	npmRan := rel.Npm == codeupdate.NpmRan && !prebuilt
	npmNote := "npm " + rel.Npm
	if prebuilt {
		npmNote = "built already: no npm in this job"
		r.stage("build", fmt.Sprintf("release %s is built already (build %d): nothing to build", rel.Name, rel.Build))
	} else {
		r.stage("build", fmt.Sprintf("built %s (build %d, npm %s)", rel.Name, rel.Build, rel.Npm))
	}
	if rel.State == codeupdate.StateBad && !req.Force {
		return nil, invalidf("release %s is marked bad (%s); use --force to update to it anyway", rel.Name, rel.BadReason)
	}
	// The build may have taken minutes: read the lockers' states again.
	if fresh, err := a.deps.Containers.Select(ctx, req.Names, req.Group); err == nil {
		infos = fresh
	}
	ls, err := a.lockers(infos)
	if err != nil {
		return nil, err
	}
	f := a.factsFor(ls)
	plan := rollout.PlanUpdate(ls, f, rel.Name, rel.State == codeupdate.StateProven, rollout.Strategy(req.Strategy), req.pol)
	// Every locker this job stops is started again, even after a crash.
	if err := a.jr.SetDesired(plan.Names(""), Desired{Running: true, JobID: r.job.ID, Since: a.deps.Clock.Now()}); err != nil {
		return nil, fmt.Errorf("recording desired state: %w", err)
	}
	r.stage("plan", fmt.Sprintf("%s: %s to move to %s, %s; falls back to %s; %s",
		req.Strategy, nLockers(len(plan.Items)), rel.Name, planLimit(plan), orDash(plan.Fallback), healthNote(plan.Policy)))
	var hold *portHold
	if plan.Strategy == rollout.Offline {
		hold = a.holdPorts(ctx, r, req, plan.Names(rollout.OpReplace))
	}
	defer hold.releaseAll()
	res := a.execute(ctx, r, req, plan, hold)
	out := toResult(res, begin)
	out.From, out.To, out.Build, out.Strategy, out.NpmRan, out.Stages = f.Current, rel.Name, rel.Build, req.Strategy, &npmRan, stages
	if res.OK() {
		a.prune(ctx, r)
		if len(plan.Items) > 0 && a.proven(rel.Name) && a.watch.begin(rel.Name, r.job.ID, plan.Names(""), plan.Policy) {
			r.stage("release-watch", fmt.Sprintf("%s stays watched for %v: at least 2, and more than %v, of its %d lockers crashed or unhealthy trip %s",
				rel.Name, plan.Policy.ReleaseWatch, plan.Policy.MaxFailureRatio, len(plan.Items), plan.Policy.FailureAction))
		}
	}
	head := fmt.Sprintf("update to %s (build %d, %s, %s)", rel.Name, rel.Build, req.Strategy, npmNote)
	if len(plan.Items) == 0 && res.OK() {
		head += ": no running locker to move; current now points at it"
		if plan.Unproven {
			head += fmt.Sprintf(" (unproven: the next start-all applies the failure policy and falls back to %s)", orDash(plan.Fallback))
		}
	}
	return out, summarize(out, res, plan, head)
}

// rollbackTarget is where a rollback goes from current (I6): the
// refusals (a target that is current, gone, bad, never current or above
// current) are InvalidErrors, so that Submit refuses them before a job
// exists (exit 2), all reasons at once.
func (a *Agent) rollbackTarget(req Request) (cur codeupdate.Release, target string, err error) {
	cur, err = a.deps.Code.Current()
	if err != nil {
		return cur, "", fmt.Errorf("rollback: %w", err)
	}
	to := req.To
	if to != "" {
		rel, err := a.deps.Code.Release(to) // a release name or a build number
		if err != nil {
			return cur, "", invalidf("rollback target %q: %v", to, err)
		}
		to = rel.Name
	}
	hist, err := a.deps.Code.History()
	if err != nil {
		return cur, "", fmt.Errorf("rollback: reading the switch history: %w", err)
	}
	var sw []rollout.Switched
	for _, h := range hist {
		sw = append(sw, rollout.Switched{From: h.From, To: h.To})
	}
	exists := func(n string) bool { _, err := a.deps.Code.Release(n); return err == nil }
	bad := func(n string) bool {
		rel, err := a.deps.Code.Release(n)
		return err == nil && rel.State == codeupdate.StateBad && !(req.Force && n == to)
	}
	target, err = rollout.RollbackTarget(sw, cur.Name, to, exists, bad)
	if err != nil {
		return cur, "", InvalidError{err.Error()}
	}
	return cur, target, nil
}

// untouchedNote says what a failed build left as it was, and, when lockers
// a job ran or stopped are stopped (after lxc-stop-all, say), that they
// stay stopped and what to run: "nothing was stopped" alone reads at 4 a.m. as "the fleet is
// fine".
func (a *Agent) untouchedNote(infos []lxcctl.Info) string {
	// Lockers a job has run or stopped (a container no job touched, such
	// as a template, is not one the operator expects running).
	desired, _ := a.jr.Desired()
	var stopped []string
	for _, in := range infos {
		if _, known := desired[in.Name]; known && !in.Broken() && in.State == lxcctl.StateStopped {
			stopped = append(stopped, in.Name)
		}
	}
	note := "nothing was stopped by this update, current is untouched"
	if len(stopped) == 0 {
		return note
	}
	return fmt.Sprintf("%s; but %s of %d %s stopped and stay%s so: %s; run lxc-start-all (lxcfleet start-all) to start them on current %s",
		note, nLockers(len(stopped)), len(infos), plural(len(stopped), "is", "are"), plural(len(stopped), "s", ""), joinNames(stopped, 5), orDash(a.currentRelease()))
}

// rollbackJob goes back one release on the rollback stack (or to req.To,
// a release name or build number, never forward): it marks the release
// being left bad, switches, and moves every locker whose desired state is
// running onto the target, stopped ones included (I6).
func (a *Agent) rollbackJob(ctx context.Context, r *run, req Request, infos []lxcctl.Info) (any, error) {
	begin := a.deps.Clock.Now()
	unlock, err := a.deps.Code.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	cur, target, err := a.rollbackTarget(req)
	if err != nil {
		return nil, err
	}
	if err := a.deps.Code.MarkBad(cur.Name, "rolled back by job "+r.job.ID); err != nil {
		return nil, fmt.Errorf("marking %s bad: %w", cur.Name, err)
	}
	a.log.Warn("release marked bad", "release", cur.Name, "reason", "rolled back by job "+r.job.ID)
	r.stage("mark-bad", cur.Name+" marked bad: rolled back")
	ls, err := a.lockers(infos)
	if err != nil {
		return nil, err
	}
	plan := rollout.PlanRollback(ls, target, req.pol)
	if err := a.jr.SetDesired(plan.Names(""), Desired{Running: true, JobID: r.job.ID, Since: a.deps.Clock.Now()}); err != nil {
		return nil, fmt.Errorf("recording desired state: %w", err)
	}
	res := a.execute(ctx, r, req, plan, nil)
	out := toResult(res, begin)
	tr, _ := a.deps.Code.Release(target)
	out.From, out.To, out.Build = cur.Name, target, tr.Build
	return out, summarize(out, res, plan, fmt.Sprintf("rolled back from %s to %s (build %d); %s marked bad", cur.Name, target, tr.Build, cur.Name))
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
	built := a.releaseNames()
	rel, err := a.deps.Code.Build(ctx, req.Target, func(step string) { r.emit(Event{Type: "stage", Stage: "build", Message: step}) })
	if err != nil {
		_ = r.step(Step{Action: "build", Phase: "end", Outcome: "failed", Error: err.Error()})
		return nil, fmt.Errorf("building %s: %w", req.Target, err)
	}
	_ = r.step(Step{Action: "build", Phase: "end", Outcome: "built", Release: rel.Name})
	if built[rel.Name] {
		r.stage("build", fmt.Sprintf("release %s is built already (build %d): nothing built, no npm run; current is unchanged", rel.Name, rel.Build))
	} else {
		r.stage("build", fmt.Sprintf("built %s (build %d, npm %s); current is unchanged", rel.Name, rel.Build, rel.Npm))
	}
	return BuildResult{Release: rel, Prebuilt: built[rel.Name]}, nil
}

// BuildResult is a build job's result: the release, and whether it was
// built before this job (then this job ran neither git checkout nor npm;
// Npm says what its first build did).
type BuildResult struct {
	codeupdate.Release
	Prebuilt bool `json:"prebuilt,omitempty"`
}

// releaseNames returns the names of the releases built so far.
func (a *Agent) releaseNames() map[string]bool {
	out := map[string]bool{}
	if rels, err := a.deps.Code.Releases(); err == nil {
		for _, x := range rels {
			out[x.Name] = true
		}
	}
	return out
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
	}{info, a.deps.Clock.Now()}); err == nil {
		_ = a.jr.SetMeta("last_update_check", string(b))
	}
	msg := "up to date"
	if info.Available {
		need := "a restart is enough"
		switch {
		case info.TargetBuilt:
			need = "its release is built already: a restart is enough"
		case info.NpmNeeded:
			need = "npm install needed"
		}
		msg = fmt.Sprintf("%d %s behind %s; %s", info.Behind, plural(info.Behind, "commit", "commits"), req.Target, need)
		if info.LockMismatch != "" {
			msg += "; package.json and package-lock.json disagree, so the build will fail: " + info.LockMismatch
		}
		if info.TargetBad {
			msg += "; the target's release is marked bad (update-code needs --force)"
		}
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
	// From a fresh read: a locker started or moved since the last refresh
	// counts.
	lockers, err := a.inv.refreshed(ctx)
	var inUse map[string]int
	if err == nil {
		inUse, err = ReleasesInUse(lockers)
	}
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

// plural picks one or many by n.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// planLimit names the limit a plan runs under, for its plan stage: K
// where lockers serve while others restart ("at most 1 down at once");
// the first W where every locker it moves is down anyway (an offline
// update and its recovery, a recovery with only stopped lockers to
// start), whose K is all of them and whose W may be above the configured
// K (rollout's Plan.allDown).
func planLimit(plan rollout.Plan) string {
	n := len(plan.Items)
	if plan.Strategy != rollout.Offline && (n == 0 || len(plan.Names(rollout.OpStart)) != n) {
		return fmt.Sprintf("at most %d down at once", plan.Policy.MaxUnavailable)
	}
	w := plan.Policy.MaxStarting
	if w <= 0 {
		w = plan.Policy.MaxUnavailable
	}
	how := "each stopped just before its own start"
	if plan.Strategy != rollout.Offline {
		how = "all stopped already"
	}
	return fmt.Sprintf("%s, first W %d", how, min(w, max(n, 1)))
}
