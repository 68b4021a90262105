package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"lxcfleet/agent"
	"lxcfleet/lxcctl"
)

// rolloutFlags are the flags of the jobs that move lockers: the policy's
// knobs (knobFlags) and, for update-code, the strategy, target and force.
type rolloutFlags struct {
	knobs                  *knobFlags
	strategy, target       string
	force                  bool
	withStrategy, withCode bool
}

// rollingKnobs are the knobs of restart and rollback (no canary: they move
// lockers onto a release already chosen).
var rollingKnobs = []string{"max_unavailable", "max_starting", "pacing", "stop_parallel", "stop_timeout", "deadline", "delay", "health", "monitor", "monitor_holds", "interval", "max_failure_ratio", "failure_action"}

func (r *rolloutFlags) register(cmd *cobra.Command) {
	if r.knobs == nil {
		keys := rollingKnobs
		if r.withStrategy {
			keys = nil // every knob
		}
		r.knobs = newKnobFlags(keys, nil, alias{old: "window", key: "max_unavailable"})
	}
	r.knobs.register(cmd)
	f := cmd.Flags()
	if r.withCode {
		f.StringVar(&r.target, "target", "", "branch, tag or commit to update to (default: defaults.target of the config)")
		f.BoolVar(&r.force, "force", false, "allow a release marked bad")
	}
	if r.withStrategy {
		f.StringVar(&r.strategy, "strategy", "", "offline (switch, then every locker stopped just before its own start, W at a time) or rolling (K at a time) (default: defaults.strategy of the config)")
	}
}

// fill copies the flags given into req; bad values are bad input.
func (r *rolloutFlags) fill(cmd *cobra.Command, req *agent.Request) error {
	if err := r.knobs.fill(cmd, req); err != nil {
		return err
	}
	req.Target, req.Force = r.target, r.force
	if !r.withStrategy {
		return nil
	}
	if cmd.Flags().Changed("strategy") && r.strategy == "" {
		return usagef("--strategy must be offline or rolling, got \"\"")
	}
	switch r.strategy {
	case "", agent.StrategyOffline, agent.StrategyRolling:
		req.Strategy = r.strategy
	default:
		return usagef("--strategy must be offline or rolling, got %q", r.strategy)
	}
	return nil
}

// newJobCmd makes a command that runs one job kind and reports it.
func newJobCmd(g *globals, kind agent.JobKind, use, short, long, example string, rf *rolloutFlags, extra func(cmd *cobra.Command, req *agent.Request)) *cobra.Command {
	var sel selection
	var cf clientFlags
	var setup func(*cobra.Command)
	cmd := &cobra.Command{
		Use: use, Short: short, Long: long, Example: example,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := agent.Request{Kind: kind, Group: sel.group}
			names, err := validNames(args, sel.group)
			if err != nil {
				return err
			}
			req.Names = names
			if rf != nil {
				if err := rf.fill(cmd, &req); err != nil {
					return err
				}
			}
			if extra != nil {
				extra(cmd, &req)
			}
			job, p, err := runJob(cmd, g, &cf, req, string(kind), lxcctl.PhaseHealthy)
			if err != nil {
				return err
			}
			return reportJob(g, p, job)
		},
	}
	if kind != agent.KindCheckUpdate && kind != agent.KindBuild {
		sel.register(cmd)
	} else {
		cmd.Args = cobra.NoArgs
	}
	cf.register(cmd)
	if rf != nil {
		rf.register(cmd)
	}
	if setup != nil {
		setup(cmd)
	}
	return cmd
}

func newRestartCmd(g *globals) *cobra.Command {
	cmd := newJobCmd(g, agent.KindRestart, "restart NAME...|--group GROUP",
		"Restart lockers: stop gracefully, start, wait healthy, at most --max-unavailable at once",
		`Replace each named locker (or each of --group): a graceful stop (halt
signal, then kill after --stop-timeout), a start on the current release, and
a wait until it is healthy (--health, within --deadline). At most --max-unavailable
lockers are down at once. The restart is a job of the agent, journaled: a
crash of the agent mid-job starts the stopped lockers again.`,
		"  lxcfleet restart locker-001 locker-002\n  lxcfleet restart --group web --max-unavailable 2 --health 'http://127.0.0.1:{port}/healthz'",
		&rolloutFlags{}, nil)
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 || cmd.Flags().Changed("group") {
			// An empty or invalid --group is refused by refuseEmpty, in
			// the words every command uses.
			return refuseEmpty(cmd)
		}
		return errors.New("restart needs NAMEs or --group")
	}
	return cmd
}

func newUpdateCodeCmd(g *globals) *cobra.Command {
	rf := &rolloutFlags{withStrategy: true, withCode: true}
	return newJobCmd(g, agent.KindUpdate, "update-code [NAME...]",
		"Build the target release once, then move the lockers onto it (rolling or offline)",
		`Fetch the origin, check out the target into a new immutable release and run
npm (skipped when the lockfile is unchanged) while every locker keeps
serving; a failed build touches nothing. Then move the running lockers onto
the release:

  rolling (default)  switch current, then replace K lockers at a time (stop,
                     start on the new release, wait healthy); canaries first
  offline            stop all (bounded, graceful), switch, start all in waves

Too many failures (--max-failure-ratio, overall and per wave) mark the
release bad, put current back and pause or roll back (--failure-action).`,
		`  lxcfleet update-code
  lxcfleet update-code --strategy offline --target v2.3.0
  lxcfleet update-code --canary 2 --soak 1m --max-unavailable 8 --failure-action pause`, rf, nil)
}

func newRollbackCmd(g *globals) *cobra.Command {
	rf := &rolloutFlags{}
	var to string
	var force bool
	cmd := newJobCmd(g, agent.KindRollback, "rollback [NAME...]",
		"Go back to the previous good release (or --to one) and move the lockers onto it",
		`Mark the current release bad, switch current to the previous good release
(or the one named by --to) and replace the running lockers K at a time.
A second rollback goes one release further back.`,
		`  lxcfleet rollback
  lxcfleet rollback --to 41-3f2a9c1d0e4b`, rf, func(cmd *cobra.Command, req *agent.Request) { req.To, req.Force = to, force })
	cmd.Flags().StringVar(&to, "to", "", "release name or build to go back to")
	cmd.Flags().BoolVar(&force, "force", false, "allow a release marked bad")
	return cmd
}

func newCheckUpdateCmd(g *globals) *cobra.Command {
	var target string
	cmd := newJobCmd(g, agent.KindCheckUpdate, "check-update",
		"Fetch the origin and say whether the target has commits current lacks",
		"Fetch the origin (nothing is built or restarted) and compare the target with\nthe current release: commits behind, and whether npm would run.",
		"  lxcfleet check-update\n  lxcfleet check-update --target v2 --json", nil,
		func(cmd *cobra.Command, req *agent.Request) { req.Target = target })
	cmd.Flags().StringVar(&target, "target", "", "branch, tag or commit (default: defaults.target)")
	return cmd
}

func newBuildCmd(g *globals) *cobra.Command {
	var target string
	var current bool
	var cf clientFlags
	cmd := newJobCmd(g, agent.KindBuild, "build",
		"Build the target release ahead of time (no switch, no restart), or show the current build",
		`Fetch the origin, check out the target into a release folder and run npm
(skipped when the lockfile is unchanged), without switching current or
touching a locker: a later update-code to the same target finds it built.
With --current, print the current build (release, build number, commit).`,
		"  lxcfleet build --target v2.3.0\n  lxcfleet build --current", nil,
		func(cmd *cobra.Command, req *agent.Request) { req.Target = target })
	cmd.Flags().StringVar(&target, "target", "", "branch, tag or commit (default: defaults.target)")
	cmd.Flags().BoolVar(&current, "current", false, "print the current build instead of building")
	run := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if !current {
			return run(cmd, args)
		}
		cf = clientFlagsOf(cmd)
		var b agent.BuildInfo
		if err := getJSON(cmd, g, &cf, "/v1/build", &b); err != nil {
			return err
		}
		if g.jsonOut {
			return printJSON(g, b)
		}
		fmt.Fprintf(g.stdout, "build %d  release %s  commit %s  %s\n", b.Build, b.Name, b.Short, b.Subject)
		return nil
	}
	return cmd
}

// clientFlagsOf reads the client flags a command registered.
func clientFlagsOf(cmd *cobra.Command) clientFlags {
	f := cmd.Flags()
	var c clientFlags
	c.socket, _ = f.GetString("socket")
	c.local, _ = f.GetBool("local")
	c.stateDir, _ = f.GetString("state-dir")
	return c
}

// getJSON reads one API resource through the agent.
func getJSON(cmd *cobra.Command, g *globals, cf *clientFlags, path string, out any) error {
	cl, err := cf.connect(cmd, g)
	if err != nil {
		return err
	}
	defer cl.Close()
	if cl.local != nil {
		if err := cl.local.RefreshInventory(cmd.Context()); err != nil {
			return err
		}
	}
	return asCLIError(cl.get(cmd.Context(), path, out))
}

func printJSON(g *globals, v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newReleasesCmd(g *globals) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "releases",
		Short: "List the releases on this host, newest first, with the lockers running each",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Releases []map[string]any `json:"releases"`
			}
			if err := getJSON(cmd, g, &cf, "/v1/releases", &out); err != nil {
				return err
			}
			if g.jsonOut {
				return printJSON(g, out)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RELEASE\tBUILD\tSTATE\tCURRENT\tIN USE\tNPM\tSUBJECT")
			for _, r := range out.Releases {
				cur := ""
				if r["current"] == true {
					cur = "*"
				}
				fmt.Fprintf(tw, "%v\t%v\t%v\t%s\t%v\t%v\t%v\n", r["name"], r["build"], r["state"], cur, r["in_use"], r["npm"], r["subject"])
			}
			return tw.Flush()
		},
	}
	cf.register(cmd)
	return cmd
}

func newSchedulesCmd(g *globals) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "schedules",
		Short: "Show the cron maintenance windows with their next and last runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := g.wire(cmd)
			if err != nil {
				return err
			}
			fc := st.fc
			var out struct {
				Schedules []agent.ScheduleInfo `json:"schedules"`
			}
			cl, err := cf.connect(cmd, g)
			if err != nil {
				return err
			}
			local := cl.local != nil
			if !local {
				err = asCLIError(cl.get(cmd.Context(), "/v1/schedules", &out))
			}
			cl.Close()
			if err != nil {
				return err
			}
			if local {
				// No daemon runs the schedules: show the config's, with
				// when they would run next.
				out.Schedules, err = agent.PlanSchedules(fc.Schedules)
				if err != nil {
					return usageError{err}
				}
			}
			if g.jsonOut {
				return printJSON(g, out)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tCRON\tKIND\tNEXT\tLAST")
			for _, s := range out.Schedules {
				last := s.Last
				if last == "" {
					last = "-"
				}
				if !s.LastAt.IsZero() {
					last = s.LastAt.Local().Format("2006-01-02 15:04:05") + " " + last
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Cron, s.Kind, s.Next.Local().Format("2006-01-02 15:04:05 MST"), last)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if local {
				fmt.Fprintln(g.stderr, "(no agent is running: these run only under `lxcfleet agent`)")
			}
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}

func newJobsCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var limit int
	var follow, steps bool
	cmd := &cobra.Command{
		Use:   "jobs [ID]",
		Short: "List the agent's jobs, or show one (--follow its progress, --steps its journal)",
		Example: `  lxcfleet jobs
  lxcfleet jobs 20260105T040000.123Z-a1b2c3 --follow
  lxcfleet jobs cancel 20260105T040000.123Z-a1b2c3`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit <= 0 || limit > 1000 {
				return usagef("--limit must be from 1 to 1000, got %d", limit)
			}
			cl, err := cf.connect(cmd, g)
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx := cmd.Context()
			if len(args) == 0 {
				var out struct {
					Jobs []agent.Job `json:"jobs"`
				}
				if err := cl.get(ctx, "/v1/jobs?limit="+strconv.Itoa(limit), &out); err != nil {
					return asCLIError(err)
				}
				if g.jsonOut {
					return printJSON(g, out)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tKIND\tSTATE\tTRIGGER\tPROGRESS\tTOOK\tERROR")
				for _, j := range out.Jobs {
					took := "-"
					if !j.Finished.IsZero() {
						took = j.Finished.Sub(j.Created).Round(100 * time.Millisecond).String()
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d (%d failed)\t%s\t%s\n", j.ID, j.Kind, j.State, j.Trigger, j.Progress.Done, j.Progress.Total, j.Progress.Failed, took, truncate(j.Error, 60))
				}
				return tw.Flush()
			}
			id := args[0]
			path := "/v1/jobs/" + url.PathEscape(id)
			if steps {
				var out json.RawMessage
				if err := cl.get(ctx, path+"/steps", &out); err != nil {
					return asCLIError(err)
				}
				_, err := g.stdout.Write(out)
				return err
			}
			var j agent.Job
			if follow {
				v := &jobView{g: g, verb: "job", done: []lxcctl.Phase{lxcctl.PhaseHealthy, lxcctl.PhaseStopped}}
				j, err = cl.follow(ctx, id, v.event)
				p := v.finish()
				if err != nil {
					return asCLIError(err)
				}
				return reportJob(g, p, j)
			}
			if err := cl.get(ctx, path, &j); err != nil {
				return asCLIError(err)
			}
			if g.jsonOut {
				return printJSON(g, j)
			}
			fmt.Fprintf(g.stdout, "job %s: %s, %s (trigger %s)\ncreated %s", j.ID, j.Kind, j.State, j.Trigger, j.Created.Local().Format(time.RFC3339))
			if !j.Finished.IsZero() {
				fmt.Fprintf(g.stdout, ", took %s", j.Finished.Sub(j.Created).Round(10*time.Millisecond))
			}
			fmt.Fprintf(g.stdout, "\nprogress %d/%d, %d failed\n", j.Progress.Done, j.Progress.Total, j.Progress.Failed)
			if s := jobResult(j).Summary; s != "" {
				fmt.Fprintln(g.stdout, s)
			}
			if j.Error != "" {
				fmt.Fprintf(g.stdout, "error: %s\n", j.Error)
			}
			printTail(g.stdout, j) // the FAILED, SKIPPED and now lines, as --follow prints them
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().IntVar(&limit, "limit", 50, "most jobs listed")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the job's progress until it ends")
	cmd.Flags().BoolVar(&steps, "steps", false, "print the job's journaled steps (JSON)")
	cmd.AddCommand(newCancelCmd(g))
	return cmd
}

// newJobGroupCmd is `lxcfleet job cancel ID`.
func newJobGroupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "job", Short: "Act on one job (cancel)"}
	cmd.AddCommand(newCancelCmd(g))
	return cmd
}

func newCancelCmd(g *globals) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a running job: lockers being stopped or started finish that step, nothing new begins",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := cf.connect(cmd, g)
			if err != nil {
				return err
			}
			defer cl.Close()
			var j agent.Job
			if err := cl.do(cmd.Context(), "POST", "/v1/jobs/"+url.PathEscape(args[0])+"/cancel", nil, &j); err != nil {
				return asCLIError(err)
			}
			if g.jsonOut {
				return printJSON(g, j)
			}
			fmt.Fprintf(g.stdout, "cancelling job %s (%s)\n", j.ID, j.Kind)
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
