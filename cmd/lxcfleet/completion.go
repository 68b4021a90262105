package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"lxcfleet/agent"
	"lxcfleet/config"
	"lxcfleet/rollout"
)

// completions registers what the shell completes beyond commands and
// flags: locker names (the containers of the configured lxcpath), the
// values of the enum flags, and job ids (`jobs ID`, `jobs cancel ID`).
// cobra's own `completion bash|zsh|fish` command prints the scripts; the
// .deb installs the bash one.
func completions(root *cobra.Command, g *globals) {
	enums := map[string][]string{
		"strategy":       {agent.StrategyRolling, agent.StrategyOffline},
		"pacing":         {agent.PacingAdaptive, agent.PacingFixed},
		"monitor-holds":  {string(rollout.MonitorUntilProven), string(rollout.MonitorAll)},
		"failure-action": {agent.ActionRollback, agent.ActionPause},
		"log-format":     {"auto", "text", "json", "journal"},
		"log-level":      {"debug", "info", "warn", "error"},
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for name, vals := range enums {
			if c.Flags().Lookup(name) != nil && c.Flag(name) != nil {
				_ = c.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(vals, cobra.ShellCompDirectiveNoFileComp))
			}
		}
		if strings.Contains(c.Use, "NAME") && c.ValidArgsFunction == nil {
			c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				return lockerNames(cmd, g, toComplete), cobra.ShellCompDirectiveNoFileComp
			}
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	_ = root.RegisterFlagCompletionFunc("log-format", cobra.FixedCompletions(enums["log-format"], cobra.ShellCompDirectiveNoFileComp))
	_ = root.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions(enums["log-level"], cobra.ShellCompDirectiveNoFileComp))
}

// lockerNames lists the containers of the lxcpath (--lxcpath, else the
// config's) whose names start with prefix: a folder with a config file.
func lockerNames(cmd *cobra.Command, g *globals, prefix string) []string {
	path := g.lxcpath
	if path == "" {
		if fc, err := config.Load(g.config, cmd.Flags().Changed("config")); err == nil {
			path = fc.LXCPath
		}
	}
	ents, err := os.ReadDir(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(path, e.Name(), "config")); err == nil && strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// newManCmd writes man pages for every command (section 8: the commands
// are for root) into a folder; the .deb builds and installs them.
func newManCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write man pages for every command into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if st, err := os.Stat(args[0]); err == nil && !st.IsDir() {
				return usagef("man: %q is not a directory: give the folder to write the pages into", args[0])
			}
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return fmt.Errorf("making the man page folder %q: %w", args[0], err)
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			if err := doc.GenManTree(root, &doc.GenManHeader{Title: "LXCFLEET", Section: "8", Source: "lxcfleet " + buildVersion(), Manual: "lxcfleet"}, args[0]); err != nil {
				return err
			}
			// The operators' three scripts: each runs one subcommand.
			for script, sub := range map[string]string{"lxc-stop-all": "stop-all", "update-code": "update-code", "lxc-start-all": "start-all"} {
				b, err := os.ReadFile(filepath.Join(args[0], "lxcfleet-"+sub+".8"))
				if err != nil {
					return err
				}
				page := strings.Replace(string(b), "lxcfleet-"+sub+" - ", script+" - runs lxcfleet "+sub+": ", 1)
				page = strings.Replace(page, `.TH "LXCFLEET"`, `.TH "`+strings.ToUpper(script)+`"`, 1)
				if err := os.WriteFile(filepath.Join(args[0], script+".8"), []byte(page), 0o644); err != nil {
					return err
				}
			}
			return nil
		},
	}
}
