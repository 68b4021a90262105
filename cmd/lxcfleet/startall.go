package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"lxcfleet/agent"
	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
)

func newStartAllCmd(g *globals) *cobra.Command {
	var sel selection
	var boot bool
	var cf clientFlags
	kf := newKnobFlags([]string{"max_starting", "pacing", "deadline", "delay", "health", "monitor", "monitor_holds", "interval", "max_failure_ratio", "failure_action"},
		map[string]string{"max_starting": "p", "deadline": "t"}, alias{old: "parallel", key: "max_starting"}, alias{old: "timeout", key: "deadline"})
	cmd := &cobra.Command{
		Use:   "start-all [NAME...]",
		Short: "Start lockers in a bounded window, each counted only once healthy",
		Long: `Start the named containers (all of the lxcpath when none is named, or those of
--group) in lxc-autostart's order (lxc.start.order, then name), keeping at
most W of them starting at once. A container holds its place in the window
until its health check passes or its --deadline expires, so the window bounds
the real startup load: no startup storm. With --pacing fixed W is
--max-starting; with adaptive pacing (the default) W starts at --max-starting
(default: defaults.max_starting, else defaults.max_unavailable), grows by one per
window of healthy starts and halves on a failed start, a start over 3x the
fastest recent one, or pressure (PSI) over target.

Health checks (--health):
  none                               running is enough
  http://127.0.0.1:{port}/healthz    GET answers 2xx
  tcp:127.0.0.1:{port}               a TCP connect succeeds
  exec:COMMAND ARGS                  the command exits 0 inside the container
{port} is the container's lxc.environment PORT, {env:KEY} any other key,
{name} its name. After its first healthy check each container is checked
for the --monitor window (default 10 s) before it counts as started; on a
release that is not yet proven (after lxc-stop-all; update-code) the failure
policy applies: too many failures mark it bad, put current back on the last
good release and start every container there.

The start is a job of the agent: through the daemon when one answers on its
socket, in this process otherwise (or with --local). Flags left out take the
agent's [defaults].

With --boot (the host's boot: lxcfleet-lockers.service's ExecStart) only the
lockers whose desired state is running start, after any job that runs (the
agent's boot recovery) has ended; a host shutdown's hold on supervision ends.

Each container is reported as healthy, already-running, unhealthy or failed.
Exit code 1 when any is unhealthy or failed.`,
		Example: `  lxcfleet start-all --health 'http://127.0.0.1:{port}/healthz'
  lxcfleet start-all --max-starting 8 --delay 200ms --group web
  lxcfleet start-all locker-001 --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := agent.Request{Kind: agent.KindStartAll, Group: sel.group, Boot: boot}
			if err := kf.fill(cmd, &req); err != nil {
				return err
			}
			names, err := validNames(args, sel.group)
			if err != nil {
				return err
			}
			req.Names = names
			if boot && (len(names) > 0 || cmd.Flags().Changed("group")) {
				return usagef("--boot starts every locker whose desired state is running: no names, no --group")
			}
			run := runJob
			if boot {
				req.Trigger = "boot"
				run = func(cmd *cobra.Command, g *globals, cf *clientFlags, req agent.Request, verb string, done ...lxcctl.Phase) (agent.Job, *progress, error) {
					return runHostJob(cmd, g, cf, req, false, verb, done...)
				}
			}
			job, p, err := run(cmd, g, &cf, req, "starting", lxcctl.PhaseHealthy)
			if err != nil {
				return err
			}
			res := jobResult(job)
			if len(res.Outcomes) == 0 && job.State != agent.JobSucceeded {
				return jobEnd(job, false)
			}
			if !g.jsonOut && (res.Tripped != "" || res.Halted != "" || res.Cancelled || res.Interrupted) {
				// How the run ended (a tripped failure policy: current
				// went back, the lockers with it) before the counts.
				fmt.Fprintln(g.stdout, res.Summary)
			}
			if err := reportStart(g, p, startResults(res), seconds(job), job.Tally); err != nil {
				return err
			}
			return jobEnd(job, true)
		},
	}
	sel.register(cmd)
	cf.register(cmd)
	kf.register(cmd)
	cmd.Flags().BoolVar(&boot, "boot", false, "the host's boot: start only the lockers whose desired state is running, after the running job")
	return cmd
}

// startSummary is the outcome of a start-all.
type startSummary struct {
	Total          int               `json:"total"`
	Healthy        int               `json:"healthy"`
	AlreadyRunning int               `json:"already_running"`
	Failed         map[string]string `json:"failed"`
	// Skipped are the lockers the start never reached (a tripped
	// failure policy, a cancel), each with its reason (I5).
	Skipped map[string]string `json:"skipped"`
	// Serving says which lockers serve on which release after the job
	// (from the job's tally), e.g. after an automatic rollback.
	Serving string       `json:"serving,omitempty"`
	Seconds float64      `json:"seconds"`
	Results []lockerLine `json:"results"`
}

// reportStart prints a start-all's tail. With the job's tally (tl), a
// locker's reason and what serves at the end come from it, as in the
// console; a locker the start never reached is skipped (with its reason), not failed.
func reportStart(g *globals, p *progress, res []lxcctl.StartResult, took time.Duration, tl *agent.Tally) error {
	s := startSummary{Total: len(res), Failed: map[string]string{}, Skipped: map[string]string{}, Seconds: took.Seconds(), Results: lockerLines(res)}
	byName := map[string]agent.LockerTally{}
	if tl != nil {
		for _, l := range tl.Lockers {
			byName[l.Name] = l
		}
		s.Serving = tl.Serving
	}
	var failed, skipped []string
	for _, r := range res {
		l, known := byName[r.Name]
		switch {
		case known && l.Outcome == rollout.OutSkipped:
			s.Skipped[r.Name] = l.Reason
			skipped = append(skipped, r.Name)
		case r.Outcome == lxcctl.Started:
			s.Healthy++
		case r.Outcome == lxcctl.AlreadyRunning:
			s.AlreadyRunning++
		default:
			msg := string(r.Outcome)
			if known && l.Reason != "" {
				msg += ": " + l.Reason
			} else if r.Err != nil {
				msg += ": " + r.Err.Error()
			}
			s.Failed[r.Name] = msg
			failed = append(failed, r.Name)
		}
	}
	if g.jsonOut {
		p.result(s)
	} else {
		line := fmt.Sprintf("started %s in %.1fs: %d healthy, %d already running, %d failed",
			plural(s.Total, "container"), took.Seconds(), s.Healthy, s.AlreadyRunning, len(failed))
		if len(skipped) > 0 {
			line += fmt.Sprintf(", %d skipped", len(skipped))
		}
		fmt.Fprintln(g.stdout, line)
		for _, n := range failed {
			fmt.Fprintf(g.stdout, "FAILED %s: %s\n", n, s.Failed[n])
		}
		for _, n := range skipped {
			fmt.Fprintf(g.stdout, "SKIPPED %s: %s\n", n, s.Skipped[n])
		}
		if tl != nil && (len(failed) > 0 || len(skipped) > 0) && s.Serving != "" {
			fmt.Fprintf(g.stdout, "now: %s\n", s.Serving)
		}
	}
	if n := len(failed) + len(skipped); n > 0 {
		return failedError{n}
	}
	return nil
}
