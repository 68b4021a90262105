package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"lxcfleet/agent"
	"lxcfleet/codeupdate"
	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
)

// jobView shows a job's events: container events through progress (a bar
// on a terminal, JSON lines with --json), stage messages as lines.
type jobView struct {
	g    *globals
	verb string
	done []lxcctl.Phase
	p    *progress
}

func (v *jobView) event(e agent.Event) {
	switch e.Type {
	case "container":
		if v.p == nil {
			v.p = newProgress(v.g, v.verb, e.Progress.Total, v.done...)
		}
		v.p.eventPaced(lxcctl.Event{Time: e.Time, Container: e.Container, Phase: lxcctl.Phase(e.Phase), Outcome: e.Outcome, Duration: e.Duration.D(), Error: e.Error}, e.MaxStarting, e.Starting)
	case "stage":
		if v.g.jsonOut {
			_ = json.NewEncoder(v.g.stdout).Encode(struct {
				Type string `json:"type"`
				agent.Event
			}{"stage", e})
			return
		}
		msg := e.Message
		if e.Error != "" {
			msg = strings.TrimSpace(msg + " error: " + e.Error)
		}
		if v.p != nil && v.p.bar != nil {
			_ = v.p.bar.Clear()
		}
		fmt.Fprintf(v.g.stderr, "%s: %s\n", e.Stage, msg)
	}
}

// finish removes the bar; it returns the progress for the result line.
func (v *jobView) finish() *progress {
	if v.p == nil {
		v.p = newProgress(v.g, v.verb, 0, v.done...)
	}
	v.p.finish()
	return v.p
}

// runJob submits req through the agent (the daemon, or one in process),
// follows its progress and returns the finished job. Interrupting a
// follower of the daemon leaves the job running there.
func runJob(cmd *cobra.Command, g *globals, cf *clientFlags, req agent.Request, verb string, done ...lxcctl.Phase) (agent.Job, *progress, error) {
	cl, err := cf.connect(cmd, g)
	if err != nil {
		return agent.Job{}, nil, err
	}
	defer cl.Close()
	if req.Trigger == "" {
		req.Trigger = "cli"
		if cl.local != nil {
			req.Trigger = "cli --local"
		}
	}
	ctx := cmd.Context()
	job, err := cl.submit(ctx, req)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.JobID != "" {
			return job, nil, fmt.Errorf("%w", err)
		}
		return job, nil, asCLIError(err)
	}
	if !g.jsonOut {
		fmt.Fprintf(g.stderr, "job %s: %s\n", job.ID, job.Kind)
	}
	v := &jobView{g: g, verb: verb, done: done}
	final, err := cl.follow(ctx, job.ID, v.event)
	p := v.finish()
	if err != nil {
		if errors.Is(err, context.Canceled) && cl.local == nil {
			fmt.Fprintf(g.stderr, "lxcfleet: stopped following; job %s goes on in the agent (lxcfleet jobs %s --follow, lxcfleet job cancel %s)\n", job.ID, job.ID, job.ID)
		}
		return job, p, err
	}
	return final, p, nil
}

// jobResult decodes a job's result.
func jobResult(j agent.Job) agent.Result {
	var r agent.Result
	if len(j.Result) > 0 {
		_ = json.Unmarshal(j.Result, &r)
	}
	return r
}

// jobEnd turns a finished job into the exit code: its error when it did
// not succeed (a failedError when its summary was printed).
func jobEnd(j agent.Job, printed bool) error {
	switch j.State {
	case agent.JobSucceeded:
		return nil
	case agent.JobCancelled:
		return fmt.Errorf("job %s was cancelled", j.ID)
	}
	res := jobResult(j)
	if printed && len(res.Failed) > 0 {
		return failedError{len(res.Failed)}
	}
	if j.Error != "" {
		return fmt.Errorf("job %s %s: %s", j.ID, j.State, j.Error)
	}
	return fmt.Errorf("job %s %s", j.ID, j.State)
}

// reportJob prints a job's summary (text) or its result line (--json).
func reportJob(g *globals, p *progress, j agent.Job) error {
	res := jobResult(j)
	if g.jsonOut {
		if p != nil && p.enc != nil {
			p.result(struct {
				agent.Job
				Result json.RawMessage `json:"result,omitempty"`
			}{j, j.Result})
		}
		return jobEnd(j, true)
	}
	switch {
	case res.Summary != "":
		fmt.Fprintln(g.stdout, res.Summary)
	case j.State == agent.JobSucceeded && len(j.Result) > 0:
		printResultText(g.stdout, j)
	}
	if j.Tally != nil {
		printTail(g.stdout, j)
	} else {
		for _, o := range res.Outcomes {
			if o.Failed() {
				fmt.Fprintf(g.stdout, "FAILED %s: %s %s\n", o.Name, o.Outcome, o.Error)
			}
		}
	}
	if j.State != agent.JobSucceeded && !(len(res.Failed) > 0) && j.Error != "" {
		return jobEnd(j, false)
	}
	return jobEnd(j, true)
}

// printTail prints, from the job's tally (the account the console and
// the job history render too), each locker that was not moved as planned
// with its reason (I5), and, when the job did not simply succeed, which
// lockers serve on which release now.
func printTail(w io.Writer, j agent.Job) {
	t := j.Tally
	if t == nil {
		return
	}
	for _, l := range t.Undone() {
		fmt.Fprintf(w, "%s %s: %s\n", undoneWord(l), l.Name, l.Reason)
	}
	res := jobResult(j)
	if t.Serving != "" && (j.State != agent.JobSucceeded || res.RolledBack || res.Undone || len(t.Undone()) > 0) {
		fmt.Fprintf(w, "now: %s\n", t.Serving)
	}
}

// undoneWord is the tail's first word for a locker not moved as planned.
func undoneWord(l agent.LockerTally) string {
	switch {
	case l.State == agent.TallyBroken:
		return "BROKEN"
	case l.Failed:
		return "FAILED"
	}
	return "SKIPPED"
}

// printResultText prints the result of a job with no summary (check-update,
// build) as text for people.
func printResultText(w io.Writer, j agent.Job) {
	switch j.Kind {
	case agent.KindCheckUpdate:
		var u codeupdate.UpdateInfo
		if err := json.Unmarshal(j.Result, &u); err != nil {
			break
		}
		printUpdateInfo(w, u)
		return
	case agent.KindBuild:
		var r agent.BuildResult
		if err := json.Unmarshal(j.Result, &r); err != nil {
			break
		}
		if r.Prebuilt {
			fmt.Fprintf(w, "release %s is built already: build %d, commit %s%s; nothing was built, npm did not run; current is unchanged\n", r.Name, r.Build, r.Short, subject(r.Subject))
		} else {
			fmt.Fprintf(w, "built release %s: build %d, commit %s%s, npm %s; current is unchanged\n", r.Name, r.Build, r.Short, subject(r.Subject), r.Npm)
		}
		if r.State == codeupdate.StateBad {
			fmt.Fprintf(w, "release %s is marked bad (%s): update-code to it needs --force\n", r.Name, r.BadReason)
		}
		return
	}
	fmt.Fprintf(w, "job %s %s\n", j.ID, j.State)
}

// printUpdateInfo says whether an update is available, what it brings and
// what it needs.
func printUpdateInfo(w io.Writer, u codeupdate.UpdateInfo) {
	cur := u.CurrentRelease
	if cur == "" {
		cur = "none yet"
	}
	if !u.Available {
		fmt.Fprintf(w, "up to date: current release %s is %s (%s)\n", cur, u.Target, short(u.TargetSHA))
		return
	}
	need := "a restart is enough (package-lock.json unchanged)"
	switch {
	case u.TargetBuilt:
		need = "a restart is enough (its release is built already)"
	case u.NpmNeeded:
		need = "npm will run (package-lock.json changed)"
	}
	fmt.Fprintf(w, "update available: %s is %s ahead of current release %s; target release %s; %s\n",
		u.Target, plural(u.Behind, "commit"), cur, u.TargetRelease, need)
	if u.TargetBuilt {
		fmt.Fprintf(w, "release %s is built already\n", u.TargetRelease)
	}
	if u.TargetBad {
		fmt.Fprintf(w, "WARNING: release %s is marked bad: update-code to it is refused without --force\n", u.TargetRelease)
	}
	for _, c := range u.Commits {
		fmt.Fprintf(w, "  %s %s\n", short(c.SHA), c.Subject)
	}
	if len(u.Commits) < u.Behind {
		fmt.Fprintf(w, "  ... and %d more\n", u.Behind-len(u.Commits))
	}
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func subject(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

// stopResults and startResults turn a job's outcomes back into lxcctl's.
func stopResults(res agent.Result) []lxcctl.StopResult {
	out := make([]lxcctl.StopResult, 0, len(res.Outcomes))
	for _, o := range res.Outcomes {
		r := lxcctl.StopResult{Name: o.Name, Outcome: stopOutcome(o.Outcome), Duration: o.Duration}
		if o.Error != "" {
			r.Err = errors.New(o.Error)
		}
		out = append(out, r)
	}
	return out
}

func startResults(res agent.Result) []lxcctl.StartResult {
	out := make([]lxcctl.StartResult, 0, len(res.Outcomes))
	for _, o := range res.Outcomes {
		r := lxcctl.StartResult{Name: o.Name, Outcome: startOutcome(o.Outcome), Duration: o.Duration}
		if r.Outcome == lxcctl.StartFailed && o.Start == rollout.StartUnhealthy {
			r.Outcome = lxcctl.StartUnhealthy
		}
		if o.Error != "" {
			r.Err = errors.New(o.Error)
		}
		out = append(out, r)
	}
	return out
}

// stopOutcome and startOutcome map the rollout executor's outcome words
// (rollout.Outcome) to lxcctl's, which the stop and start reports count.
func stopOutcome(s string) lxcctl.StopOutcome {
	switch s {
	case "stopped":
		return lxcctl.StoppedClean
	case "killed", "already-stopped":
		return lxcctl.StopOutcome(s)
	}
	return lxcctl.StopFailed
}

func startOutcome(s string) lxcctl.StartOutcome {
	switch s {
	case "started", "moved", "unverified":
		return lxcctl.Started
	case "already-running":
		return lxcctl.AlreadyRunning
	}
	return lxcctl.StartFailed
}

// seconds is a job's wall time.
func seconds(j agent.Job) time.Duration {
	if j.Finished.IsZero() {
		return 0
	}
	return j.Finished.Sub(j.Created)
}

var _ = os.Stderr
