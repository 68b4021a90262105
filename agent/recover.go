package agent

import (
	"context"
	"fmt"
	"os"
	"strings"

	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
)

// bootIDPath changes at every boot of the host.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// NeedsRecovery reports whether the agent should drive lockers back to their
// desired state now, and why: a job was interrupted by a crash, or the host
// booted since the agent last ran.
func (a *Agent) NeedsRecovery() (bool, string, error) {
	jobs, err := a.jr.Jobs(20)
	if err != nil {
		return false, "", err
	}
	handled, err := a.jr.Meta("recovered_through")
	if err != nil {
		return false, "", err
	}
	for _, j := range jobs {
		if j.State == JobInterrupted && j.ID > handled {
			return true, "job " + j.ID + " (" + string(j.Kind) + ") was interrupted", nil
		}
	}
	boot, err := os.ReadFile(bootIDPath)
	if err != nil {
		return false, "", nil // no boot id: cannot tell, nothing to do
	}
	last, err := a.jr.Meta("boot_id")
	if err != nil {
		return false, "", err
	}
	if id := strings.TrimSpace(string(boot)); id != last {
		if last == "" {
			return false, "", a.jr.SetMeta("boot_id", id) // first run on this host
		}
		return true, "the host booted", nil
	}
	return false, "", nil
}

// lockersInFlight reads, from the journaled steps of jobs interrupted by
// an agent exit (and not yet recovered), the lockers each left in flight:
// stopped, those it began to stop (their stop steps are journaled before
// the stop runs; one found already stopped is not counted); stopping,
// those whose last step is a stop's begin (the halt signal may land after
// the recovery looked); starting, those whose start began and whose
// monitor window neither ended nor failed (they may still be starting or
// monitoring: recovery watches them, holding their places in K).
func (a *Agent) lockersInFlight() (stopped, stopping, starting map[string]bool, err error) {
	handled, err := a.jr.Meta("recovered_through")
	if err != nil {
		return nil, nil, nil, err
	}
	jobs, err := a.jr.Jobs(0)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("reading journal: %w", err)
	}
	stopped, stopping, starting = map[string]bool{}, map[string]bool{}, map[string]bool{}
	for i := len(jobs) - 1; i >= 0; i-- { // oldest first: a later job's steps win
		j := jobs[i]
		if j.State != JobInterrupted || j.ID <= handled {
			continue
		}
		steps, err := a.jr.Steps(j.ID)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("reading steps of job %s: %w", j.ID, err)
		}
		for _, s := range steps {
			if s.Container == "" {
				continue
			}
			switch s.Action {
			case StepStop, StepReplaceStop, StepBackStop:
				delete(starting, s.Container)
				switch {
				case s.Phase == "begin":
					stopped[s.Container] = true
					stopping[s.Container] = true
				case s.Outcome == string(lxcctl.AlreadyStopped):
					delete(stopped, s.Container)
					delete(stopping, s.Container)
				default:
					delete(stopping, s.Container)
				}
			case StepStart, StepBackStart:
				delete(stopping, s.Container)
				// In flight from its begin through its first healthy
				// check and the monitor window, until moved or failed.
				inFlight := s.Phase == "begin" || (s.Action == StepStart && s.Outcome == string(rollout.PhaseHealthy))
				if inFlight {
					starting[s.Container] = true
				} else {
					delete(starting, s.Container)
				}
			default:
				delete(stopping, s.Container)
				delete(starting, s.Container)
			}
		}
	}
	return stopped, stopping, starting, nil
}

// restartsPending returns the lockers an interrupted restart (or a
// recovery finishing one) was to restart and journaled no step of: the
// dead agent never reached them, so recovery restarts them. Lockers it
// did reach are done, or in flight (lockersInFlight). Nil for other kinds
// of plans: an update's lockers not yet moved are on another release, and
// recovery moves them for that.
func (a *Agent) restartsPending(plan *rollout.Plan, jobID string) (map[string]bool, error) {
	if plan == nil || (plan.Kind != rollout.KindRestart && plan.Kind != rollout.KindRecover) {
		return nil, nil
	}
	steps, err := a.jr.Steps(jobID)
	if err != nil {
		return nil, fmt.Errorf("reading steps of job %s: %w", jobID, err)
	}
	reached := map[string]bool{}
	for _, s := range steps {
		reached[s.Container] = true
	}
	pending := map[string]bool{}
	for _, n := range plan.Names(rollout.OpReplace) {
		if !reached[n] {
			pending[n] = true
		}
	}
	return pending, nil
}

// currentRelease is the name of the release `current` points to, or "".
func (a *Agent) currentRelease() string {
	if a.deps.Code == nil {
		return ""
	}
	rel, err := a.deps.Code.Current()
	if err != nil {
		return ""
	}
	return rel.Name
}

// interruptedPlan returns the plan of the newest job an agent exit
// interrupted and no recovery has handled yet that recovery resumes (one
// with a target release, or a restart), or nil.
func (a *Agent) interruptedPlan() (*rollout.Plan, string, error) {
	handled, err := a.jr.Meta("recovered_through")
	if err != nil {
		return nil, "", err
	}
	jobs, err := a.jr.Jobs(0)
	if err != nil {
		return nil, "", fmt.Errorf("reading journal: %w", err)
	}
	for _, j := range jobs { // newest first
		if j.State == JobInterrupted && j.ID > handled && j.Plan != nil && (j.Plan.Target != "" || j.Plan.Kind == rollout.KindRestart) {
			return j.Plan, j.ID, nil
		}
	}
	return nil, "", nil
}

// recoverJob drives every locker back to its desired state after an agent
// exit or a boot (I4): the interrupted job's plan is resumed when its
// target is proven and undone otherwise (current back on its fallback);
// every locker whose desired state is running (or that the interrupted job
// stopped) ends running on that one release, under the failure policy
// when it is unproven.
func (a *Agent) recoverJob(ctx context.Context, r *run, req Request) (any, error) {
	begin := a.deps.Clock.Now()
	interrupted, jobID, err := a.interruptedPlan()
	if err != nil {
		return nil, err
	}
	infos, err := a.deps.Containers.Select(ctx, nil, "")
	if err != nil {
		return nil, fmt.Errorf("listing lockers: %w", err)
	}
	stopped, stopping, starting, err := a.lockersInFlight()
	if err != nil {
		return nil, err
	}
	ls, err := a.lockers(infos)
	if err != nil {
		return nil, err
	}
	pending, err := a.restartsPending(interrupted, jobID)
	if err != nil {
		return nil, err
	}
	for i := range ls {
		ls[i].Stopping = stopping[ls[i].Name]
		ls[i].Starting = starting[ls[i].Name]
		ls[i].Restart = pending[ls[i].Name]
	}
	f := a.facts() // a split fleet proves nothing
	target, unproven := rollout.RecoveryTarget(interrupted, f, a.proven)
	// The interrupted plan resumes with its own policy (its K, W, monitor
	// window, failure policy and health check), not the defaults.
	pol := req.pol
	if interrupted != nil {
		pol = interrupted.Policy
		if err := pol.Validate(); err != nil {
			a.log.Warn("the interrupted job's journaled policy is invalid: recovery uses the defaults", "job", jobID, "err", err)
			pol = req.pol
		}
	}
	plan := rollout.PlanRecovery(ls, stopped, target, unproven, f, pol)
	if interrupted != nil && interrupted.Strategy == rollout.Offline {
		// An offline update resumes (or is undone) as it ran: K is all
		// its lockers, W its own (which may be above its K).
		plan.Strategy = rollout.Offline
	}
	how := "no interrupted update: lockers back to their desired state on current " + orDash(f.Current)
	if interrupted != nil {
		how = fmt.Sprintf("job %s was moving lockers to %s: ", jobID, interrupted.Target)
		if target == interrupted.Target {
			how += "it is proven, so the move is finished"
		} else {
			how += "it is not proven, so the move is undone: back to " + orDash(target)
		}
	}
	r.stage("plan", fmt.Sprintf("%s; %d lockers to start, %d to move, %d left in flight to watch; %s, monitor window %v, %s", how,
		len(plan.Names(rollout.OpStart)), len(plan.Names(rollout.OpReplace)), len(plan.Names(rollout.OpWatch)), planLimit(plan), plan.Policy.Monitor, healthNote(plan.Policy)))
	if err := a.jr.SetDesired(plan.Names(""), Desired{Running: true, JobID: r.job.ID, Since: a.deps.Clock.Now()}); err != nil {
		return nil, fmt.Errorf("recording desired state: %w", err)
	}
	res := a.execute(ctx, r, req, plan, nil)
	// A finished update's release is watched as if the update had ended
	// itself: its lockers, with its policy's release watch.
	if res.OK() && interrupted != nil && interrupted.Kind == rollout.KindUpdate && plan.Target == interrupted.Target &&
		a.proven(plan.Target) && a.watch.begin(plan.Target, r.job.ID, interrupted.Names(""), interrupted.Policy) {
		r.stage("release-watch", fmt.Sprintf("%s, the interrupted update's release, stays watched for %v", plan.Target, interrupted.Policy.ReleaseWatch))
	}
	out := toResult(res, begin)
	out.To = plan.Target
	err = summarize(out, res, plan, fmt.Sprintf("recovery to %s", orDash(plan.Target)))
	if !res.Interrupted {
		if merr := a.markRecovered(); merr != nil && err == nil {
			err = merr
		}
	}
	return out, err
}

// markRecovered records that every interrupted job so far and this boot
// have been handled.
func (a *Agent) markRecovered() error {
	jobs, err := a.jr.Jobs(1)
	if err != nil {
		return err
	}
	if len(jobs) > 0 {
		if err := a.jr.SetMeta("recovered_through", jobs[0].ID); err != nil {
			return err
		}
	}
	if boot, err := os.ReadFile(bootIDPath); err == nil {
		return a.jr.SetMeta("boot_id", strings.TrimSpace(string(boot)))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
