package agent

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

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

// stoppedByInterrupted returns the lockers that jobs interrupted by a crash
// (and not yet recovered) began to stop: their stop steps are journaled
// before the stop runs. A locker found already stopped is not counted.
// stopping holds those whose last step is a stop's begin: the dead agent
// may have sent the halt signal, and the stop may land after the
// recovery looked.
func (a *Agent) stoppedByInterrupted() (out, stopping map[string]bool, err error) {
	handled, err := a.jr.Meta("recovered_through")
	if err != nil {
		return nil, nil, err
	}
	jobs, err := a.jr.Jobs(0)
	if err != nil {
		return nil, nil, fmt.Errorf("reading journal: %w", err)
	}
	out, stopping = map[string]bool{}, map[string]bool{}
	for _, j := range jobs {
		if j.State != JobInterrupted || j.ID <= handled {
			continue
		}
		steps, err := a.jr.Steps(j.ID)
		if err != nil {
			return nil, nil, fmt.Errorf("reading steps of job %s: %w", j.ID, err)
		}
		for _, s := range steps {
			if s.Container == "" {
				continue
			}
			if s.Action != "stop" && s.Action != "replace-stop" && s.Action != "back-stop" {
				delete(stopping, s.Container) // a later step: the stop ended
				continue
			}
			switch {
			case s.Phase == "begin":
				out[s.Container] = true
				stopping[s.Container] = true
			case s.Outcome == string(lxcctl.AlreadyStopped):
				delete(out, s.Container)
				delete(stopping, s.Container)
			default:
				delete(stopping, s.Container)
			}
		}
	}
	return out, stopping, nil
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
// interrupted and no recovery has handled yet, or nil.
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
		if j.State == JobInterrupted && j.ID > handled && j.Plan != nil && j.Plan.Target != "" {
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
	begin := time.Now()
	interrupted, jobID, err := a.interruptedPlan()
	if err != nil {
		return nil, err
	}
	infos, err := a.deps.Containers.Select(ctx, nil, "")
	if err != nil {
		return nil, fmt.Errorf("listing lockers: %w", err)
	}
	stopped, stopping, err := a.stoppedByInterrupted()
	if err != nil {
		return nil, err
	}
	ls, err := a.lockers(infos)
	if err != nil {
		return nil, err
	}
	for i := range ls {
		ls[i].Stopping = stopping[ls[i].Name]
	}
	f := a.facts() // a split fleet proves nothing
	target, unproven := rollout.RecoveryTarget(interrupted, f, a.proven)
	plan := rollout.PlanRecovery(ls, stopped, target, unproven, f, req.pol)
	how := "no interrupted update: lockers back to their desired state on current " + orDash(f.Current)
	if interrupted != nil {
		how = fmt.Sprintf("job %s was moving lockers to %s: ", jobID, interrupted.Target)
		if target == interrupted.Target {
			how += "it is proven, so the move is finished"
		} else {
			how += "it is not proven, so the move is undone: back to " + orDash(target)
		}
	}
	r.stage("plan", fmt.Sprintf("%s; %d lockers to start, %d to move", how, len(plan.Names(rollout.OpStart)), len(plan.Names(rollout.OpReplace))))
	if err := a.jr.SetDesired(plan.Names(""), Desired{Running: true, JobID: r.job.ID, Since: time.Now()}); err != nil {
		return nil, fmt.Errorf("recording desired state: %w", err)
	}
	res := a.execute(ctx, r, req, plan, nil)
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
