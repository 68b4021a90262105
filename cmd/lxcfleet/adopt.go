package main

import (
	"github.com/spf13/cobra"

	"lxcfleet/provision"
)

func newAdoptCmd(g *globals) *cobra.Command {
	var lf layoutFlags
	var all, clearAuto bool
	var tini string
	cmd := &cobra.Command{
		Use:   "adopt NAME...|--all",
		Short: "Put existing containers into the layout: folders, Config seed, mount entries",
		Long: `adopt puts existing containers into the layout: it creates each one's Me and
Config folders (owned by its mapped root if it has an lxc.idmap), seeds
Config from the templates without overwriting anything, and adds the
layout's three mount entries to its config file, keeping every other line.
Before a config file changes, a copy is saved next to it as
config.lxcfleet-backup-<time>. Running adopt again changes nothing.
A running container gets the new mounts when it restarts.

A container with lxc.start.auto = 1 is started by lxc.service at boot,
before the agent and one at a time, and stopped one at a time at shutdown:
adopt warns about it, and --clear-start-auto sets it to 0 so that the agent
alone starts the lockers, in its bounded window.

A container whose lxc.init.cmd runs the app with lxc.signal.halt = SIGUSR1
(the busybox template's) would have Node open its inspector on every stop:
adopt always sets SIGTERM there. --tini runs such an app under tini (bound
read-only at /sbin/tini), so that an app with no SIGTERM handler stops,
with its output and exit status in <lxcpath>/<name>/applog/app.log. An
empty network gets its loopback up (lxc.net.0.flags = up).

adopt does not convert a container to held sockets ([provision] socket =
"held"): it adopts it as it is and its note says so. To convert one, stop
it, lxc-destroy it (Me and Config live in the layout and are kept), and
provision it again with the same name.`,
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
			results, err := p.AdoptWith(cmd.Context(), names, provision.AdoptOptions{ClearStartAuto: clearAuto, Tini: tini, Socket: s.fc.Provision.Socket})
			if err != nil {
				return asUsage(err)
			}
			return printLockerResults(g, results)
		},
	}
	lf.register(cmd, true)
	cmd.Flags().BoolVar(&all, "all", false, "adopt every container of the lxcpath")
	cmd.Flags().BoolVar(&clearAuto, "clear-start-auto", false, "set lxc.start.auto = 0 where it is 1 (otherwise lxc.service starts the locker at boot before the agent, and adopt warns)")
	cmd.Flags().StringVar(&tini, "tini", "", "run the app init under this host tini binary (bare --tini: "+provision.DefaultTini+"), halt signal SIGTERM")
	cmd.Flags().Lookup("tini").NoOptDefVal = provision.DefaultTini
	return cmd
}
