package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"lxcfleet/agent"
	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
)

func newStopAllCmd(g *globals) *cobra.Command {
	var sel selection
	var cf clientFlags
	var shutdown bool
	kf := newKnobFlags([]string{"stop_parallel", "stop_timeout"}, map[string]string{"stop_parallel": "p", "stop_timeout": "t"},
		alias{old: "parallel", key: "stop_parallel"}, alias{old: "timeout", key: "stop_timeout"})
	cmd := &cobra.Command{
		Use:   "stop-all [NAME...]",
		Short: "Stop lockers gracefully, a bounded number at once",
		Long: `Stop the named containers (all of the lxcpath when none is named, or those of
--group), at most --stop-parallel at once, in reverse start order. Each gets its
halt signal (lxc.signal.halt) and --stop-timeout to exit, then it is killed.

The stop is a job of the agent (journaled; a crash of the agent mid-job
starts the stopped lockers again): through the daemon when one answers on
its socket, in this process otherwise (or with --local).

With --host-shutdown (the host shuts down: lxcfleet-lockers.service's
ExecStop) every locker stops and keeps its desired state, so that the boot
starts again those that should run; supervision leaves them stopped until
then, and a job that runs is cancelled first.

Each container is reported as clean, killed, already-stopped or failed.
Exit code 1 when any failed.`,
		Example: `  lxcfleet stop-all                      # every container, 8 at once, 10s grace
  lxcfleet stop-all --group web --stop-timeout 30s
  lxcfleet stop-all locker-001 locker-002 --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := agent.Request{Kind: agent.KindStopAll, Group: sel.group, HostShutdown: shutdown}
			if err := kf.fill(cmd, &req); err != nil {
				return err
			}
			names, err := validNames(args, sel.group)
			if err != nil {
				return err
			}
			req.Names = names
			if shutdown && (len(names) > 0 || cmd.Flags().Changed("group")) {
				return usagef("--host-shutdown stops every locker: no names, no --group")
			}
			run := runJob
			if shutdown {
				req.Trigger = "host shutdown"
				run = func(cmd *cobra.Command, g *globals, cf *clientFlags, req agent.Request, verb string, done ...lxcctl.Phase) (agent.Job, *progress, error) {
					return runHostJob(cmd, g, cf, req, true, verb, done...)
				}
			}
			job, p, err := run(cmd, g, &cf, req, "stopping", lxcctl.PhaseStopped)
			if err != nil {
				return err
			}
			res := jobResult(job)
			if len(res.Outcomes) == 0 && job.State != agent.JobSucceeded {
				return jobEnd(job, false)
			}
			if err := reportStop(g, p, stopResults(res), seconds(job), job.Tally); err != nil {
				return err
			}
			return jobEnd(job, true)
		},
	}
	sel.register(cmd)
	cf.register(cmd)
	kf.register(cmd)
	cmd.Flags().BoolVar(&shutdown, "host-shutdown", false, "the host shuts down: stop every locker, keep desired states (the boot starts them again)")
	return cmd
}

// validNames checks container names (bad input: exit 2) and the group.
func validNames(names []string, group string) ([]string, error) {
	for _, n := range names {
		if err := lxcctl.ValidName(n); err != nil {
			return nil, usageError{err}
		}
	}
	if group != "" {
		if err := lxcctl.ValidName(group); err != nil {
			return nil, usagef("invalid --group %q", group)
		}
	}
	return names, nil
}

// stopSummary is the outcome of a stop-all.
type stopSummary struct {
	Total          int               `json:"total"`
	Clean          int               `json:"clean"`
	Killed         []string          `json:"killed"`
	AlreadyStopped int               `json:"already_stopped"`
	Failed         map[string]string `json:"failed"`
	// Skipped are the lockers the stop never reached (a cancel), each
	// with its reason (I5).
	Skipped map[string]string `json:"skipped"`
	Seconds float64           `json:"seconds"`
	Results []lockerLine      `json:"results"`
}

// reportStop prints a stop-all's tail; with the job's tally (tl) a
// locker the stop never reached is "not stopped", with its reason.
func reportStop(g *globals, p *progress, res []lxcctl.StopResult, took time.Duration, tl *agent.Tally) error {
	s := stopSummary{Total: len(res), Killed: []string{}, Failed: map[string]string{}, Skipped: map[string]string{}, Seconds: took.Seconds(), Results: lockerLines(res)}
	skippedWhy := map[string]string{}
	if tl != nil {
		for _, l := range tl.Lockers {
			if l.Outcome == rollout.OutSkipped {
				skippedWhy[l.Name] = l.Reason
			}
		}
	}
	var failed, skipped []string
	for _, r := range res {
		if why, ok := skippedWhy[r.Name]; ok {
			s.Skipped[r.Name] = why
			skipped = append(skipped, r.Name)
			continue
		}
		switch r.Outcome {
		case lxcctl.StoppedClean:
			s.Clean++
		case lxcctl.StoppedKilled:
			s.Killed = append(s.Killed, r.Name)
		case lxcctl.AlreadyStopped:
			s.AlreadyStopped++
		default:
			msg := "failed"
			if r.Err != nil {
				msg = r.Err.Error()
			}
			s.Failed[r.Name] = msg
			failed = append(failed, r.Name)
		}
	}
	if g.jsonOut {
		p.result(s)
	} else {
		line := fmt.Sprintf("stopped %s in %.1fs: %d clean, %d killed, %d already stopped, %d failed",
			plural(s.Total, "container"), took.Seconds(), s.Clean, len(s.Killed), s.AlreadyStopped, len(failed))
		if len(skipped) > 0 {
			line += fmt.Sprintf(", %d skipped", len(skipped))
		}
		fmt.Fprintln(g.stdout, line)
		if len(s.Killed) > 0 {
			fmt.Fprintf(g.stdout, "killed after the timeout: %s\n", joinMax(s.Killed, 20))
		}
		for _, n := range failed {
			fmt.Fprintf(g.stdout, "FAILED %s: %s\n", n, s.Failed[n])
		}
		for _, n := range skipped {
			fmt.Fprintf(g.stdout, "SKIPPED %s: %s\n", n, s.Skipped[n])
		}
	}
	if len(failed) > 0 {
		return failedError{len(failed)}
	}
	return nil
}
