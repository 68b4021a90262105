package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
)

// body is what a job does; it returns the job's result.
type body func(ctx context.Context, r *run) (any, error)

// planTimeout bounds the work Submit does before a job starts.
const planTimeout = 30 * time.Second

// planFor checks what req targets and returns the job's body. Unknown
// containers are an InvalidError, before any job exists.
func (a *Agent) planFor(req Request) (body, error) {
	switch req.Kind {
	case KindUpdate, KindRollback, KindCheckUpdate, KindBuild:
		if a.deps.Code == nil {
			return nil, invalidf("%s needs a code origin: set [code] origin in the config", req.Kind)
		}
	}
	if req.Kind == KindRollback {
		// A rollback that cannot go anywhere is bad input, refused before
		// a job exists; the job computes the target again under the lock.
		if _, _, err := a.rollbackTarget(req); err != nil {
			return nil, err
		}
	}
	var infos []lxcctl.Info
	if req.Kind != KindCheckUpdate && req.Kind != KindBuild {
		ctx, cancel := context.WithTimeout(a.base, planTimeout)
		defer cancel()
		var err error
		infos, err = a.deps.Containers.Select(ctx, req.Names, req.Group)
		if errors.Is(err, lxcctl.ErrNotFound) {
			return nil, InvalidError{err.Error()}
		}
		if err != nil {
			return nil, fmt.Errorf("selecting lockers: %w", err)
		}
		if len(infos) == 0 && req.Group != "" {
			if err := a.checkGroup(ctx, req.Group); err != nil {
				return nil, err
			}
		}
	}
	b, err := a.bodyOf(req, infos)
	if err != nil {
		return nil, err
	}
	return a.reportingBroken(b, infos), nil
}

// bodyOf returns the body of a job of req's kind over infos.
func (a *Agent) bodyOf(req Request, infos []lxcctl.Info) (body, error) {
	switch req.Kind {
	case KindStopAll:
		return func(ctx context.Context, r *run) (any, error) { return a.stopAllJob(ctx, r, req, infos) }, nil
	case KindStartAll:
		return func(ctx context.Context, r *run) (any, error) { return a.startAllJob(ctx, r, req, infos) }, nil
	case KindRestart:
		return func(ctx context.Context, r *run) (any, error) { return a.restartJob(ctx, r, req, infos) }, nil
	case KindUpdate:
		return func(ctx context.Context, r *run) (any, error) { return a.updateJob(ctx, r, req, infos) }, nil
	case KindRollback:
		return func(ctx context.Context, r *run) (any, error) { return a.rollbackJob(ctx, r, req, infos) }, nil
	case KindCheckUpdate:
		return func(ctx context.Context, r *run) (any, error) { return a.checkUpdateJob(ctx, r, req) }, nil
	case KindBuild:
		return func(ctx context.Context, r *run) (any, error) { return a.buildJob(ctx, r, req) }, nil
	case KindRecover:
		return func(ctx context.Context, r *run) (any, error) { return a.recoverJob(ctx, r, req) }, nil
	}
	return nil, invalidf("unknown job kind %q", req.Kind)
}

// reportingBroken wraps b so that the lockers of infos whose config LXC
// cannot load (lxcctl.StateBroken), which no plan moves (see lockers),
// are reported: one failed outcome each, with LXC's reason, beside what
// the job did to the others, and the job fails (exit 1 from the CLI).
func (a *Agent) reportingBroken(b body, infos []lxcctl.Info) body {
	var broken []lxcctl.Info
	for _, in := range infos {
		if in.Broken() {
			broken = append(broken, in)
		}
	}
	if len(broken) == 0 {
		return b
	}
	names := joinNames(namesOf(broken), 10)
	note := fmt.Sprintf("LXC cannot load %s, left alone: %s", nLockers(len(broken)), names)
	return func(ctx context.Context, r *run) (any, error) {
		r.stage("broken", note) // each one is logged with the job's failed lockers
		res, err := b(ctx, r)
		out, ok := res.(*Result)
		if !ok || out == nil {
			if err == nil {
				return res, errors.New(note)
			}
			return res, fmt.Errorf("%w; %s", err, note)
		}
		if out.Counts == nil {
			out.Counts = map[string]int{}
		}
		for _, in := range broken {
			out.Outcomes = append(out.Outcomes, rollout.Outcome{Name: in.Name, Op: "load", Outcome: rollout.OutFailed, Error: in.Error})
			out.Failed = append(out.Failed, in.Name)
			out.Counts[rollout.OutFailed]++
		}
		out.Summary += "; " + note
		if err == nil {
			err = errors.New(out.Summary)
		}
		return out, err
	}
}

func namesOf(infos []lxcctl.Info) []string {
	out := make([]string, len(infos))
	for i, in := range infos {
		out[i] = in.Name
	}
	return out
}

// Result is the result of a job that moved containers.
type Result struct {
	Summary  string            `json:"summary"`
	Counts   map[string]int    `json:"counts"`
	Failed   []string          `json:"failed,omitempty"`
	Outcomes []rollout.Outcome `json:"outcomes"`
	Seconds  float64           `json:"seconds"`
	// Update-specific fields.
	From     string         `json:"from,omitempty"`
	To       string         `json:"to,omitempty"`
	Build    int            `json:"build,omitempty"`
	Strategy string         `json:"strategy,omitempty"`
	NpmRan   *bool          `json:"npm_ran,omitempty"`
	Stages   map[string]any `json:"stages,omitempty"`
	// How the run ended (see rollout.Result).
	Current     string         `json:"current,omitempty"`
	Proven      bool           `json:"proven,omitempty"`
	Tripped     string         `json:"tripped,omitempty"`
	RolledBack  bool           `json:"rolled_back,omitempty"`
	Paused      bool           `json:"paused,omitempty"`
	Halted      string         `json:"halted,omitempty"`
	Cancelled   bool           `json:"cancelled,omitempty"`
	Undone      bool           `json:"undone,omitempty"`
	Interrupted bool           `json:"interrupted,omitempty"`
	Downtime    *DowntimeStats `json:"downtime,omitempty"`
}

// DowntimeStats summarises per-locker downtime in a job.
type DowntimeStats struct {
	P50 Duration `json:"p50"`
	P99 Duration `json:"p99"`
	Max Duration `json:"max"`
}

// summarize sets the result's summary: verb, counts, and how the run
// ended; it returns the job's error (nil when all went as planned).
func summarize(out *Result, res rollout.Result, plan rollout.Plan, head string) error {
	out.Summary = fmt.Sprintf("%s in %.1fs: %s", head, out.Seconds, countLine(out.Counts))
	if t := tail(res, plan); t != "" {
		out.Summary += "; " + t
	}
	return runErr(res, out.Summary)
}

// stopAllJob stops lockers, StopParallel at once. The stopped lockers'
// desired state changes only once the job has ended with the agent alive:
// when the agent dies mid-job, recovery starts again every locker the
// interrupted job stopped.
func (a *Agent) stopAllJob(ctx context.Context, r *run, req Request, infos []lxcctl.Info) (any, error) {
	begin := a.deps.Clock.Now()
	ls, err := a.lockers(infos)
	if err != nil {
		return nil, err
	}
	plan := rollout.PlanStop(ls, req.pol)
	if req.HostShutdown {
		if err := a.beginHostShutdown(); err != nil {
			return nil, fmt.Errorf("recording the host shutdown: %w", err)
		}
		r.stage("host-shutdown", "every locker stops, desired states kept; they start again at the boot")
	}
	res := a.execute(ctx, r, req, plan, nil)
	if req.HostShutdown {
		out := toResult(res, begin)
		return out, summarize(out, res, plan, "host shutdown: stopped "+nLockers(len(plan.Items)))
	}
	var stopped []string
	for _, o := range res.Outcomes {
		switch o.Outcome {
		case rollout.OutStopped, rollout.OutKilled, rollout.OutAlreadyStopped:
			stopped = append(stopped, o.Name)
		}
	}
	if err := a.jr.SetDesired(stopped, Desired{Running: false, JobID: r.job.ID, Since: a.deps.Clock.Now()}); err != nil {
		return nil, fmt.Errorf("recording desired state: %w", err)
	}
	out := toResult(res, begin)
	return out, summarize(out, res, plan, "stopped "+nLockers(len(plan.Items)))
}

// startAllJob starts lockers on current with at most Window starting at
// once. On an unproven current (after lxc-stop-all; update-code) the
// failure policy applies: a release that fails is marked bad and current
// goes back to the last good release (I3).
func (a *Agent) startAllJob(ctx context.Context, r *run, req Request, infos []lxcctl.Info) (any, error) {
	begin := a.deps.Clock.Now()
	if req.Boot {
		if err := a.endHostShutdown(); err != nil {
			return nil, fmt.Errorf("ending the host shutdown: %w", err)
		}
		all := len(infos)
		var err error
		if infos, err = a.desiredRunning(infos); err != nil {
			return nil, fmt.Errorf("reading desired states: %w", err)
		}
		r.stage("boot", fmt.Sprintf("%d of %d lockers should run", len(infos), all))
	}
	if !strings.HasPrefix(req.Trigger, "supervision") {
		a.sup.forget(namesOf(infos)) // started on purpose: a fresh start limit
	}
	if err := a.jr.SetDesired(namesOf(infos), Desired{Running: true, JobID: r.job.ID, Since: begin}); err != nil {
		return nil, fmt.Errorf("recording desired state: %w", err)
	}
	ls, err := a.lockers(infos)
	if err != nil {
		return nil, err
	}
	f := a.factsFor(ls)
	plan := rollout.PlanStart(ls, f, req.pol)
	if plan.Unproven {
		r.stage("policy", fmt.Sprintf("current %s is unproven: the failure policy applies (%s); falls back to %s", plan.Target, healthNote(plan.Policy), orDash(plan.Fallback)))
	}
	res := a.execute(ctx, r, req, plan, nil)
	out := toResult(res, begin)
	out.To = f.Current
	return out, summarize(out, res, plan, "started "+nLockers(len(plan.Items)))
}

// restartJob replaces each locker (stop, start, healthy through the
// monitor window) with at most Window lockers down at once.
func (a *Agent) restartJob(ctx context.Context, r *run, req Request, infos []lxcctl.Info) (any, error) {
	begin := a.deps.Clock.Now()
	a.sup.forget(namesOf(infos))
	if err := a.jr.SetDesired(namesOf(infos), Desired{Running: true, JobID: r.job.ID, Since: begin}); err != nil {
		return nil, fmt.Errorf("recording desired state: %w", err)
	}
	ls, err := a.lockers(infos)
	if err != nil {
		return nil, err
	}
	plan := rollout.PlanRestart(ls, a.factsFor(ls), req.pol)
	res := a.execute(ctx, r, req, plan, nil)
	out := toResult(res, begin)
	return out, summarize(out, res, plan, "restarted "+nLockers(len(plan.Items)))
}

// nLockers is "1 locker" or "n lockers".
func nLockers(n int) string {
	if n == 1 {
		return "1 locker"
	}
	return fmt.Sprintf("%d lockers", n)
}
