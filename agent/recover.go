package agent

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"lxcfleet/lxcctl"
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

// RecoveryPlan is what a recovery will do.
type RecoveryPlan struct {
	Start   []string `json:"start"`   // desired running, found stopped
	Replace []string `json:"replace"` // running on a release other than current
	Release string   `json:"release,omitempty"`
}

// planRecovery compares every locker's desired state with what it is.
func (a *Agent) planRecovery(ctx context.Context) (RecoveryPlan, []lxcctl.Info, error) {
	desired, err := a.jr.Desired()
	if err != nil {
		return RecoveryPlan{}, nil, fmt.Errorf("reading desired state: %w", err)
	}
	infos, err := a.deps.Containers.Select(ctx, nil, "")
	if err != nil {
		return RecoveryPlan{}, nil, fmt.Errorf("listing lockers: %w", err)
	}
	stoppedByCrash, err := a.stoppedByInterrupted()
	if err != nil {
		return RecoveryPlan{}, nil, err
	}
	var plan RecoveryPlan
	plan.Release = a.currentRelease()
	for _, in := range infos {
		d, ok := desired[in.Name]
		if (!ok || !d.Running) && !stoppedByCrash[in.Name] {
			continue
		}
		if in.State != lxcctl.StateRunning {
			plan.Start = append(plan.Start, in.Name)
			continue
		}
		if plan.Release != "" && a.deps.ReleaseOf != nil && in.InitPID > 0 {
			rel, deleted, err := a.deps.ReleaseOf(in.InitPID)
			if err == nil && (deleted || (rel != "" && rel != plan.Release)) {
				plan.Replace = append(plan.Replace, in.Name)
			}
		}
	}
	return plan, infos, nil
}

// stoppedByInterrupted returns the lockers that jobs interrupted by a crash
// (and not yet recovered) began to stop: their stop steps are journaled
// before the stop runs. A locker found already stopped is not counted.
func (a *Agent) stoppedByInterrupted() (map[string]bool, error) {
	handled, err := a.jr.Meta("recovered_through")
	if err != nil {
		return nil, err
	}
	jobs, err := a.jr.Jobs(0)
	if err != nil {
		return nil, fmt.Errorf("reading journal: %w", err)
	}
	out := map[string]bool{}
	for _, j := range jobs {
		if j.State != JobInterrupted || j.ID <= handled {
			continue
		}
		steps, err := a.jr.Steps(j.ID)
		if err != nil {
			return nil, fmt.Errorf("reading steps of job %s: %w", j.ID, err)
		}
		for _, s := range steps {
			if s.Container == "" || (s.Action != "stop" && s.Action != "replace-stop") {
				continue
			}
			switch {
			case s.Phase == "begin":
				out[s.Container] = true
			case s.Outcome == string(lxcctl.AlreadyStopped):
				delete(out, s.Container)
			}
		}
	}
	return out, nil
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

// recoverJob drives every locker back to its desired state: lockers that
// should run are started in bounded waves, and running lockers on a release
// other than current are replaced, so that no locker the agent stopped stays
// stopped and none ends half on a release.
func (a *Agent) recoverJob(ctx context.Context, r *run, req Request) (any, error) {
	begin := time.Now()
	plan, _, err := a.planRecovery(ctx)
	if err != nil {
		return nil, err
	}
	_ = r.update(func(j *Job) { j.Progress = Progress{Total: len(plan.Start) + len(plan.Replace)} })
	r.emit(Event{Type: "stage", Stage: "plan", Message: fmt.Sprintf("%d lockers to start, %d to move to release %s", len(plan.Start), len(plan.Replace), plan.Release)})
	var outcomes []Outcome
	if len(plan.Start) > 0 {
		if err := a.jr.SetDesired(plan.Start, Desired{Running: true, JobID: r.job.ID, Since: time.Now()}); err != nil {
			return nil, fmt.Errorf("recording desired state: %w", err)
		}
		res, err := a.startWave(ctx, r, req, plan.Start, 0)
		if err != nil {
			return nil, err
		}
		outcomes = append(outcomes, startOutcomes(res)...)
	}
	if len(plan.Replace) > 0 {
		outcomes = append(outcomes, a.replace(ctx, r, req, plan.Replace, 0, nil)...)
	}
	out := tally(outcomes, begin)
	out.To = plan.Release
	out.Summary = fmt.Sprintf("recovery: started %d, moved %d to %s, %d failed, in %.1fs", len(plan.Start), len(plan.Replace), orDash(plan.Release), len(out.Failed), out.Seconds)
	if err := a.markRecovered(); err != nil {
		return out, err
	}
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	return out, out.failedErr("recover")
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
