package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"lxcfleet/config"
	"lxcfleet/lxcctl"
)

// globals are the flags every subcommand shares.
type globals struct {
	config    string
	lxcpath   string
	jsonOut   bool
	logLevel  string
	logFormat string
	stdout    io.Writer
	stderr    io.Writer
}

func newRootCmd() *cobra.Command {
	g := &globals{stdout: os.Stdout, stderr: os.Stderr}
	root := &cobra.Command{
		Use:   "lxcfleet",
		Short: "Keep an LXC host's lockers on one shared code tree, with bounded, graceful restarts",
		Long: `lxcfleet runs many near-identical app containers ("lockers") on one LXC host
from one shared code tree. It stops and starts them gracefully in bounded
waves (no startup storm), and reports what every locker is doing.

Exit codes: 0 success, 1 some container or step failed, 2 bad input.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := refuseEmpty(cmd); err != nil {
				return err
			}
			return g.setupLogging()
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see '%s --help')", err, cmd.CommandPath())}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&g.config, "config", config.DefaultPath, "config file (TOML); the flags given override it")
	pf.StringVar(&g.lxcpath, "lxcpath", "", "folder holding the containers (default: lxcpath of the config, else "+lxcctl.DefaultLXCPath+")")
	pf.BoolVar(&g.jsonOut, "json", false, "print machine-readable JSON instead of text")
	pf.StringVar(&g.logLevel, "log-level", "warn", "log level on stderr: debug, info, warn or error")
	pf.StringVar(&g.logFormat, "log-format", logAuto, "log format on stderr: text, json, journal (syslog priority prefixes, no timestamps), or auto (journal when systemd's journal reads stderr, else text)")
	root.AddCommand(
		newStopAllCmd(g),
		newStartAllCmd(g),
		newStatusCmd(g),
		newAgentCmd(g),
		newUpdateCodeCmd(g),
		newRollbackCmd(g),
		newCheckUpdateCmd(g),
		newBuildCmd(g),
		newReleasesCmd(g),
		newSchedulesCmd(g),
		newJobsCmd(g),
		newJobGroupCmd(g),
		newServiceCmd(g),
		newProvisionCmd(g), newAdoptCmd(g), newCheckCmd(g),
		newRestartCmd(g),
		newFleetCmd(g),
		newManCmd(),
	)
	completions(root, g)
	root.Version = buildVersion()
	root.SetVersionTemplate("lxcfleet {{.Version}}\n")
	strictArgs(root)
	return root
}

// strictArgs makes every argument error bad input (exit 2): an unknown
// command, a group command given an unknown subcommand (`job cancl x`) or
// none, and too many or too few arguments.
func strictArgs(c *cobra.Command) {
	for _, sub := range c.Commands() {
		strictArgs(sub)
	}
	if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.SuggestionsMinimumDistance = 2
		c.Args = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, ", "))
			}
			return usagef("%s (see '%s --help')", msg, cmd.CommandPath())
		}
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if !cmd.HasParent() {
				return cmd.Help()
			}
			return usagef("%s needs a subcommand (see '%s --help')", cmd.CommandPath(), cmd.CommandPath())
		}
		return
	}
	if v := c.Args; v != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := v(cmd, args); err != nil {
				return usagef("%v (see '%s --help')", err, cmd.CommandPath())
			}
			return nil
		}
	}
}

func (g *globals) setupLogging() error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return usagef("invalid --log-level %q: want debug, info, warn or error", g.logLevel)
	}
	h, err := newLogHandler(g.logFormat, g.stderr, lvl)
	if err != nil {
		return usageError{err}
	}
	slog.SetDefault(slog.New(h))
	return nil
}

// emptyMeansNothing are the string flags whose empty value cannot mean
// anything: given as "" (a script's unset variable, say) they are refused,
// never read as "all" or "the default" (`stop-all --group ”` stopped the
// whole host).
var emptyMeansNothing = []string{"group", "lxcpath", "config", "root", "templates", "socket", "state-dir", "target",
	"strategy", "to", "health", "pacing", "failure-action", "commit", "reason", "holder"}

// refuseEmpty refuses an empty value for a flag of emptyMeansNothing, and
// an invalid --group.
func refuseEmpty(cmd *cobra.Command) error {
	f := cmd.Flags()
	for _, name := range emptyMeansNothing {
		fl := f.Lookup(name)
		if fl == nil || !fl.Changed || fl.Value.Type() != "string" {
			continue
		}
		if strings.TrimSpace(fl.Value.String()) == "" {
			return usagef("--%s is empty: give a value or leave the flag out (an unset variable in a script?)", name)
		}
	}
	if fl := f.Lookup("group"); fl != nil && fl.Changed {
		if err := lxcctl.ValidName(fl.Value.String()); err != nil {
			return usagef("invalid --group %q: %v", fl.Value.String(), err)
		}
	}
	return nil
}

// selection is the flags that pick containers.
type selection struct {
	group string
}

func (s *selection) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.group, "group", "", "only containers in this lxc.group")
}

// pick returns the selected containers in start order; unknown names and
// invalid names are bad input.
func (s *selection) pick(cmd *cobra.Command, h *lxcctl.Host, names []string) ([]lxcctl.Info, error) {
	for _, n := range names {
		if err := lxcctl.ValidName(n); err != nil {
			return nil, usageError{err}
		}
	}
	infos, err := h.Select(cmd.Context(), names, s.group)
	if errors.Is(err, lxcctl.ErrNotFound) {
		return nil, usageError{err}
	}
	return infos, err
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func joinMax(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:max], ", ") + fmt.Sprintf(" and %d more", len(names)-max)
}
