package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"lxcfleet/lxcctl"
)

func newStartAllCmd(g *globals) *cobra.Command {
	var sel selection
	var health string
	opts := lxcctl.StartOptions{Window: 4, Deadline: 60 * time.Second}
	cmd := &cobra.Command{
		Use:   "start-all [NAME...]",
		Short: "Start lockers in a bounded window, each counted only once healthy",
		Long: `Start the named containers (all of the lxcpath when none is named, or those of
--group) in lxc-autostart's order (lxc.start.order, then name), keeping at
most --parallel of them starting at once. A container holds its place in the
window until its health check passes or its --timeout expires, so the window
bounds the real startup load: no startup storm.

Health checks (--health):
  none                               running is enough
  http://127.0.0.1:{port}/healthz    GET answers 2xx
  tcp:127.0.0.1:{port}               a TCP connect succeeds
  exec:COMMAND ARGS                  the command exits 0 inside the container
{port} is the container's lxc.environment PORT, {env:KEY} any other key,
{name} its name.

Each container is reported as healthy, already-running, unhealthy or failed.
Exit code 1 when any is unhealthy or failed.`,
		Example: `  lxcfleet start-all --health 'http://127.0.0.1:{port}/healthz'
  lxcfleet start-all --parallel 8 --delay 200ms --group web
  lxcfleet start-all locker-001 --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := positiveInt("parallel", opts.Window); err != nil {
				return err
			}
			if err := positiveDuration("timeout", opts.Deadline); err != nil {
				return err
			}
			if opts.Delay < 0 {
				return usagef("--delay must not be negative, got %v", opts.Delay)
			}
			hc, err := lxcctl.ParseHealthCheck(health)
			if err != nil {
				return usageError{err}
			}
			opts.Health = hc
			h, err := g.host()
			if err != nil {
				return err
			}
			infos, err := sel.pick(cmd, h, args)
			if err != nil {
				return err
			}
			p := newProgress(g, "starting", len(infos), lxcctl.PhaseHealthy)
			opts.OnEvent = p.event
			begin := time.Now()
			res, err := h.StartAll(cmd.Context(), infoNames(infos), opts)
			p.finish()
			if err != nil {
				return err
			}
			return reportStart(g, p, res, time.Since(begin))
		},
	}
	sel.register(cmd)
	cmd.Flags().IntVarP(&opts.Window, "parallel", "p", opts.Window, "most containers starting at once (the window K)")
	cmd.Flags().DurationVarP(&opts.Deadline, "timeout", "t", opts.Deadline, "time each container has to become healthy")
	cmd.Flags().DurationVar(&opts.Delay, "delay", 0, "wait between two launches")
	cmd.Flags().StringVar(&health, "health", "none", "health check: none, http://..., tcp:HOST:PORT or exec:COMMAND")
	return cmd
}

// startSummary is the outcome of a start-all.
type startSummary struct {
	Total          int                  `json:"total"`
	Healthy        int                  `json:"healthy"`
	AlreadyRunning int                  `json:"already_running"`
	Failed         map[string]string    `json:"failed"`
	Seconds        float64              `json:"seconds"`
	Results        []lxcctl.StartResult `json:"results"`
}

func reportStart(g *globals, p *progress, res []lxcctl.StartResult, took time.Duration) error {
	s := startSummary{Total: len(res), Failed: map[string]string{}, Seconds: took.Seconds(), Results: res}
	var failed []string
	for _, r := range res {
		switch r.Outcome {
		case lxcctl.Started:
			s.Healthy++
		case lxcctl.AlreadyRunning:
			s.AlreadyRunning++
		default:
			msg := string(r.Outcome)
			if r.Err != nil {
				msg += ": " + r.Err.Error()
			}
			s.Failed[r.Name] = msg
			failed = append(failed, r.Name)
		}
	}
	if g.jsonOut {
		p.result(s)
	} else {
		fmt.Fprintf(g.stdout, "started %s in %.1fs: %d healthy, %d already running, %d failed\n",
			plural(s.Total, "container"), took.Seconds(), s.Healthy, s.AlreadyRunning, len(failed))
		for _, n := range failed {
			fmt.Fprintf(g.stdout, "FAILED %s: %s\n", n, s.Failed[n])
		}
	}
	if len(failed) > 0 {
		return failedError{len(failed)}
	}
	return nil
}
