package main

import (
	"github.com/spf13/cobra"
)

func newAdoptCmd(g *globals) *cobra.Command {
	var lf layoutFlags
	var all bool
	cmd := &cobra.Command{
		Use:   "adopt NAME...|--all",
		Short: "Put existing containers into the layout: folders, Config seed, mount entries",
		Long: `adopt puts existing containers into the layout: it creates each one's Me and
Config folders (owned by its mapped root if it has an lxc.idmap), seeds
Config from the templates without overwriting anything, and adds the
layout's three mount entries to its config file, keeping every other line.
Before a config file changes, a copy is saved next to it as
config.lxcfleet-backup-<time>. Running adopt again changes nothing.
A running container gets the new mounts when it restarts.`,
		Example: `  lxcfleet adopt locker-001 locker-002
  lxcfleet adopt --all --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case all && len(args) > 0:
				return usagef("give NAMEs or --all, not both")
			case !all && len(args) == 0:
				return usagef("adopt needs NAMEs or --all")
			}
			if err := checkLockerNames(args); err != nil {
				return err
			}
			s, err := g.wire(cmd)
			if err != nil {
				return err
			}
			h := s.host
			p, err := s.provisioner()
			if err != nil {
				return err
			}
			names := args
			if all {
				if names = h.Names(); len(names) == 0 {
					return usagef("no containers in %s", h.LXCPath())
				}
			}
			results, err := p.Adopt(cmd.Context(), names)
			if err != nil {
				return asUsage(err)
			}
			return printLockerResults(g, results)
		},
	}
	lf.register(cmd, true)
	cmd.Flags().BoolVar(&all, "all", false, "adopt every container of the lxcpath")
	return cmd
}
