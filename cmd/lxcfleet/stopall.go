package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"lxcfleet/lxcctl"
)

func newStopAllCmd(g *globals) *cobra.Command {
	var sel selection
	opts := lxcctl.StopOptions{Parallel: 8, Timeout: 10 * time.Second}
	cmd := &cobra.Command{
		Use:   "stop-all [NAME...]",
		Short: "Stop lockers gracefully, a bounded number at once",
		Long: `Stop the named containers (all of the lxcpath when none is named, or those of
--group), at most --parallel at once, in reverse start order. Each gets its
halt signal (lxc.signal.halt) and --timeout to exit, then it is killed.

Each container is reported as clean, killed, already-stopped or failed.
Exit code 1 when any failed.`,
		Example: `  lxcfleet stop-all                      # every container, 8 at once, 10s grace
  lxcfleet stop-all --group web --timeout 30s
  lxcfleet stop-all locker-001 locker-002 --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := positiveInt("parallel", opts.Parallel); err != nil {
				return err
			}
			if err := positiveDuration("timeout", opts.Timeout); err != nil {
				return err
			}
			h, err := g.host()
			if err != nil {
				return err
			}
			infos, err := sel.pick(cmd, h, args)
			if err != nil {
				return err
			}
			p := newProgress(g, "stopping", len(infos), lxcctl.PhaseStopped)
			opts.OnEvent = p.event
			begin := time.Now()
			res, err := h.StopAll(cmd.Context(), infoNames(infos), opts)
			p.finish()
			if err != nil {
				return err
			}
			return reportStop(g, p, res, time.Since(begin))
		},
	}
	sel.register(cmd)
	cmd.Flags().IntVarP(&opts.Parallel, "parallel", "p", opts.Parallel, "most containers stopping at once")
	cmd.Flags().DurationVarP(&opts.Timeout, "timeout", "t", opts.Timeout, "grace period per container before it is killed")
	return cmd
}

// stopSummary is the outcome of a stop-all.
type stopSummary struct {
	Total          int                 `json:"total"`
	Clean          int                 `json:"clean"`
	Killed         []string            `json:"killed"`
	AlreadyStopped int                 `json:"already_stopped"`
	Failed         map[string]string   `json:"failed"`
	Seconds        float64             `json:"seconds"`
	Results        []lxcctl.StopResult `json:"results"`
}

func reportStop(g *globals, p *progress, res []lxcctl.StopResult, took time.Duration) error {
	s := stopSummary{Total: len(res), Killed: []string{}, Failed: map[string]string{}, Seconds: took.Seconds(), Results: res}
	var failed []string
	for _, r := range res {
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
		fmt.Fprintf(g.stdout, "stopped %s in %.1fs: %d clean, %d killed, %d already stopped, %d failed\n",
			plural(s.Total, "container"), took.Seconds(), s.Clean, len(s.Killed), s.AlreadyStopped, len(failed))
		if len(s.Killed) > 0 {
			fmt.Fprintf(g.stdout, "killed after the timeout: %s\n", joinMax(s.Killed, 20))
		}
		for _, n := range failed {
			fmt.Fprintf(g.stdout, "FAILED %s: %s\n", n, s.Failed[n])
		}
	}
	if len(failed) > 0 {
		return failedError{len(failed)}
	}
	return nil
}
