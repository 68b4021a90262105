package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"lxcfleet/agent"
	"lxcfleet/fleet"
)

// newFleetCmd is `lxcfleet fleet ...`: the operators' view and controls of
// the fleet on etcd, from the [fleet] section of the config (it talks to
// etcd directly: no agent needs to run here).
func newFleetCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Many hosts on etcd: hosts, channel, publish, pause, resume, holders, unlock",
		Long: `Coordinated updates across the hosts of a group, through etcd ([fleet] in
the config: endpoints, group, ttl, ca/cert/key). Each agent registers its
host under a session lease and follows its group's channel: it takes one of
K slots, runs its own update-code job to the channel's release, reports and
frees the slot. A failed update keeps its slot and pauses the channel.`,
	}
	cmd.AddCommand(
		&cobra.Command{Use: "hosts", Short: "The registry: every live host of the group, its build and state", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				return withStore(cmd, g, func(ctx context.Context, s *fleet.Store) error {
					hs, err := s.Hosts(ctx)
					if err != nil {
						return err
					}
					if g.jsonOut {
						return printJSON(g, hs)
					}
					tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "HOST\tSTATE\tBUILD\tCOMMIT\tLOCKERS\tVERSION\tLAST JOB\tNOTE")
					for _, h := range hs {
						job := "-"
						if h.LastJob != nil {
							job = h.LastJob.Kind + " " + h.LastJob.State
						}
						fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d/%d running\t%s\t%s\t%s\n", h.ID, h.State, h.Build, short(h.Commit),
							h.Lockers["RUNNING"], total(h.Lockers), h.Version, job, h.Note)
					}
					return tw.Flush()
				})
			}},
		newFleetChannelCmd(g),
		newFleetPublishCmd(g),
		&cobra.Command{Use: "pause [REASON]", Short: "Stop every host of the group from starting an update", Args: cobra.MaximumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				reason := "paused by an operator"
				if len(args) == 1 {
					reason = args[0]
				}
				return withStore(cmd, g, func(ctx context.Context, s *fleet.Store) error {
					ch, err := s.Pause(ctx, reason)
					if err != nil {
						return err
					}
					return printChannel(g, s.Group(), ch)
				})
			}},
		&cobra.Command{Use: "resume", Short: "Let hosts start updates again", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				return withStore(cmd, g, func(ctx context.Context, s *fleet.Store) error {
					ch, err := s.Resume(ctx)
					if err != nil {
						return err
					}
					return printChannel(g, s.Group(), ch)
				})
			}},
		&cobra.Command{Use: "holders", Short: "Who holds the update slots", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				return withStore(cmd, g, func(ctx context.Context, s *fleet.Store) error {
					hs, err := s.Holders(ctx)
					if err != nil {
						return err
					}
					if g.jsonOut {
						if hs == nil {
							hs = []fleet.Holder{}
						}
						return printJSON(g, hs)
					}
					printHolders(g.stdout, hs)
					return nil
				})
			}},
		&cobra.Command{Use: "unlock HOLDER", Short: "Force-free the slot held by a host (by its host id)", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return withStore(cmd, g, func(ctx context.Context, s *fleet.Store) error {
					h, err := s.Unlock(ctx, args[0])
					if err != nil {
						return err
					}
					if g.jsonOut {
						return printJSON(g, h)
					}
					fmt.Fprintf(g.stdout, "freed slot %d held by %s since %s\n", h.Slot, h.Host, h.Since.Format(time.RFC3339))
					return nil
				})
			}},
	)
	return cmd
}

func newFleetChannelCmd(g *globals) *cobra.Command {
	var pf policyFlags
	cmd := &cobra.Command{Use: "channel", Short: "Show the group's channel (release, policy, holders, results); policy flags change it at run time", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, set, err := pf.change(cmd)
			if err != nil {
				return err
			}
			return withStore(cmd, g, func(ctx context.Context, s *fleet.Store) error {
				if set {
					if _, err := s.SetPolicy(ctx, c.Apply); err != nil {
						return err
					}
				}
				v, err := agent.ChannelView(ctx, s)
				if err != nil {
					return err
				}
				if g.jsonOut {
					return printJSON(g, v)
				}
				if v.Channel == nil {
					fmt.Fprintf(g.stdout, "group %s: no channel yet (lxcfleet fleet publish REF)\n", s.Group())
					return nil
				}
				if err := printChannel(g, s.Group(), *v.Channel); err != nil {
					return err
				}
				printHolders(g.stdout, v.Holders)
				for _, r := range v.Results {
					st := "ok"
					if !r.OK {
						st = "FAILED: " + r.Error
					}
					fmt.Fprintf(g.stdout, "result %s: %s in %s (job %s)\n", r.Host, st, r.End.Sub(r.Begin).Round(time.Millisecond), r.Job)
				}
				return nil
			})
		}}
	pf.register(cmd)
	return cmd
}

func newFleetPublishCmd(g *globals) *cobra.Command {
	var pf policyFlags
	var commit, ifRelease string
	cmd := &cobra.Command{Use: "publish REF", Short: "Set the group's release: REF (branch, tag, commit) resolved on the origin to a commit", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, set, err := pf.change(cmd)
			if err != nil {
				return err
			}
			s, err := g.wire(cmd)
			if err != nil {
				return err
			}
			code, err := s.code()
			if err != nil {
				return usageError{err}
			}
			var rc agent.Code
			if code != nil {
				rc = code
			}
			rel, err := agent.ResolveRelease(cmd.Context(), rc, args[0], commit)
			var inv agent.InvalidError
			if errors.As(err, &inv) {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			return withStore(cmd, g, func(ctx context.Context, st *fleet.Store) error {
				var pol *fleet.Policy
				if set {
					cur, _, err := st.Channel(ctx)
					if err != nil && err != fleet.ErrNoChannel {
						return err
					}
					p := cur.Policy
					c.Apply(&p)
					pol = &p
				}
				host, _ := os.Hostname()
				ch, err := st.PublishIf(ctx, rel, pol, "cli on "+host, ifRelease)
				if err != nil {
					return err
				}
				if err := printChannel(g, st.Group(), ch); err != nil {
					return err
				}
				if ch.Paused && !g.jsonOut {
					fmt.Fprintln(g.stdout, "note: the channel is paused; `lxcfleet fleet resume` lets hosts take the release")
				}
				if hs, err := st.Hosts(ctx); err == nil && len(hs) == 0 {
					fmt.Fprintf(g.stderr, "warning: no live host follows group %s (no agent with [fleet] group = %q is registered): nothing will take this release until one joins\n", st.Group(), st.Group())
				}
				return nil
			})
		}}
	cmd.Flags().StringVar(&commit, "commit", "", "the full commit id REF must stand for on the origin (refused otherwise)")
	cmd.Flags().StringVar(&ifRelease, "if-release", "", "publish only if the channel's release is still this commit (as `fleet channel` showed it; a prefix is enough; none: nothing published yet)")
	pf.register(cmd)
	return cmd
}

// policyFlags set the channel's policy fields they name.
type policyFlags struct {
	maxHosts, maxPerPeriod, maxFailed int
	period, phaseDuration             time.Duration
	phaseStart                        float64
	safeMode                          bool
	windows                           []string
	windowDuration, updateTimeout     time.Duration
	timeZone                          string
}

func (p *policyFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.IntVar(&p.maxHosts, "max-hosts", fleet.DefaultMaxHosts, "K: most hosts updating at once")
	f.IntVar(&p.maxPerPeriod, "max-per-period", 0, "most updates started per --period (0: no limit)")
	f.DurationVar(&p.period, "period", fleet.DefaultPeriod, "the period of --max-per-period")
	f.Float64Var(&p.phaseStart, "phase-start", 0, "phased rollout: throttling at publication (0..1)")
	f.DurationVar(&p.phaseDuration, "phase-duration", 0, "phased rollout: time for the throttling to reach 1 (0: no phasing)")
	f.BoolVar(&p.safeMode, "safe-mode", false, "the first host updates alone (canary)")
	f.IntVar(&p.maxFailed, "max-failed-hosts", fleet.DefaultMaxFailedHosts, "hosts failing on a release that pause the channel")
	f.StringArrayVar(&p.windows, "window", nil, "an update window's opening, a 5-field cron time (repeatable; --window '' clears them): hosts take a slot only within --window-duration after one")
	f.DurationVar(&p.windowDuration, "window-duration", fleet.DefaultWindowDuration, "how long each update window stays open")
	f.StringVar(&p.timeZone, "time-zone", "", "the time zone of the windows' cron times (IANA name, default UTC)")
	f.DurationVar(&p.updateTimeout, "update-timeout", 0, "a host's update past this counts as failed and is stopped (0: none)")
}

// change returns the fields the command line set, and whether any was;
// a bad value is a usage error (exit 2).
func (p *policyFlags) change(cmd *cobra.Command) (agent.PolicyChange, bool, error) {
	c, set := p.fields(cmd)
	if err := c.Validate(); err != nil {
		return c, set, usageError{fmt.Errorf("%s: %w", cmd.CommandPath(), err)}
	}
	return c, set, nil
}

func (p *policyFlags) fields(cmd *cobra.Command) (agent.PolicyChange, bool) {
	var c agent.PolicyChange
	f := cmd.Flags()
	set := false
	if f.Changed("max-hosts") {
		c.MaxHosts, set = &p.maxHosts, true
	}
	if f.Changed("max-per-period") {
		c.MaxPerPeriod, set = &p.maxPerPeriod, true
	}
	if f.Changed("period") {
		d := fleet.Duration(p.period)
		c.Period, set = &d, true
	}
	if f.Changed("phase-start") {
		c.PhaseStart, set = &p.phaseStart, true
	}
	if f.Changed("phase-duration") {
		d := fleet.Duration(p.phaseDuration)
		c.PhaseDuration, set = &d, true
	}
	if f.Changed("safe-mode") {
		c.SafeMode, set = &p.safeMode, true
	}
	if f.Changed("max-failed-hosts") {
		c.MaxFailedHosts, set = &p.maxFailed, true
	}
	if f.Changed("window") {
		w := slices.DeleteFunc(slices.Clone(p.windows), func(s string) bool { return strings.TrimSpace(s) == "" })
		c.Windows, set = &w, true
	}
	if f.Changed("window-duration") {
		d := fleet.Duration(p.windowDuration)
		c.WindowDuration, set = &d, true
	}
	if f.Changed("time-zone") {
		c.TimeZone, set = &p.timeZone, true
	}
	if f.Changed("update-timeout") {
		d := fleet.Duration(p.updateTimeout)
		c.UpdateTimeout, set = &d, true
	}
	return c, set
}

// withStore connects to the config's etcd and runs fn on the group's
// store.
func withStore(cmd *cobra.Command, g *globals, fn func(ctx context.Context, s *fleet.Store) error) error {
	s, err := g.wire(cmd)
	if err != nil {
		return err
	}
	fc := s.fc.FleetConfig()
	if !fc.Enabled() {
		return usagef("no [fleet] endpoints in the config %s: this host is not in a fleet", g.config)
	}
	fc = fc.WithDefaults()
	cli, err := fleet.Dial(fc)
	if err != nil {
		return usageError{err} // a ca/cert/key that cannot be read: the config
	}
	defer cli.Close()
	err = fn(cmd.Context(), fleet.NewStore(cli, fc.Prefix, fc.Group))
	if errors.Is(err, context.DeadlineExceeded) {
		// Say which endpoint, and whether TLS is the trouble.
		pctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
		defer cancel()
		if perr := fleet.Probe(pctx, fc); perr != nil {
			return fmt.Errorf("%w\n%v", err, perr)
		}
	}
	return err
}

func printChannel(g *globals, group string, ch fleet.Channel) error {
	if g.jsonOut {
		return printJSON(g, ch)
	}
	p := ch.Policy.Defaults()
	state := "active"
	if ch.Paused {
		state = "PAUSED: " + ch.PausedReason
	}
	fmt.Fprintf(g.stdout, "group %s: release %s (commit %s), published %s by %s; %s\n", group, ch.Release.Ref, ch.Release.Commit,
		ch.PublishedAt.Format(time.RFC3339), orDash(ch.PublishedBy), state)
	var b strings.Builder
	fmt.Fprintf(&b, "policy: at most %d %s at once", p.MaxHosts, map[bool]string{true: "host", false: "hosts"}[p.MaxHosts == 1])
	if p.MaxPerPeriod > 0 {
		fmt.Fprintf(&b, ", %d updates per %s", p.MaxPerPeriod, p.Period.D())
	}
	if p.PhaseDuration > 0 {
		fmt.Fprintf(&b, ", phased from %.2f over %s (now %.3f)", p.PhaseStart, p.PhaseDuration.D(), fleet.Throttle(p, ch.PublishedAt, time.Now()))
	}
	if p.SafeMode {
		b.WriteString(", safe mode (a canary first)")
	}
	fmt.Fprintf(&b, ", %d failed %s pause", p.MaxFailedHosts, map[bool]string{true: "host", false: "hosts"}[p.MaxFailedHosts == 1])
	if p.UpdateTimeout > 0 {
		fmt.Fprintf(&b, ", an update past %s fails", p.UpdateTimeout.D())
	}
	fmt.Fprintln(g.stdout, b.String())
	if len(p.Windows) > 0 {
		d, tz := p.WindowDuration.D(), p.TimeZone
		if d <= 0 {
			d = fleet.DefaultWindowDuration
		}
		if tz == "" {
			tz = "UTC"
		}
		in, next, err := fleet.InWindow(p, time.Now())
		now := "open now"
		switch {
		case err != nil:
			now = "unreadable: " + err.Error()
		case !in:
			now = "closed; next opens " + next.Format(time.RFC3339)
		}
		fmt.Fprintf(g.stdout, "update windows: %s for %s after each of %q (%s)\n", tz, d, p.Windows, now)
	}
	return nil
}

func printHolders(w io.Writer, hs []fleet.Holder) {
	if len(hs) == 0 {
		fmt.Fprintln(w, "no slot held")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tHOLDER\tRELEASE\tSINCE\tLEASE\tFAILED")
	for _, h := range hs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", h.Slot, h.Host, h.Release, h.Since.Format(time.RFC3339), h.Lease, orDash(h.Failed))
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
