package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

func newCheckCmd(g *globals) *cobra.Command {
	var lf layoutFlags
	cmd := &cobra.Command{
		Use:   "check [NAME...]",
		Short: "Report lockers whose mounts, folders or ownership deviate from the layout (exit 1 if any)",
		Long: `check compares each locker (every container of the lxcpath when no NAME is
given) with the layout: its mount entries (missing, duplicate, wrong source,
rw where ro is wanted), its Me and Config folders (missing, symlinks, wrong
owner for its idmap), and, when it runs, whether it runs without the code
mount or from a deleted release. It also reports a halt signal the app
cannot handle (SIGUSR1, which opens Node's inspector; node as PID 1 without
tini), an empty network whose loopback is down, and a PORT on the host's
network held by another process. Config templates newer than or missing in a
locker's Config are reported as drift, which is not a deviation.
Exit 1 when any locker deviates.`,
		Example: `  lxcfleet check
  lxcfleet check --json locker-001`,
		RunE: func(cmd *cobra.Command, args []string) error {
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
			results, err := p.Check(cmd.Context(), args)
			if err != nil {
				return asUsage(err)
			}
			deviating := 0
			for _, r := range results {
				if !r.OK() {
					deviating++
				}
			}
			if g.jsonOut {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(map[string]any{"lxcpath": h.LXCPath(), "root": p.Layout().Root, "lockers": results, "deviating": deviating}); err != nil {
					return err
				}
			} else {
				for _, r := range results {
					if !r.OK() {
						fmt.Fprintf(g.stdout, "DEVIATES %s:\n", r.Name)
						for _, d := range r.Deviations {
							fmt.Fprintf(g.stdout, "  - %s\n", d)
						}
					}
					for _, d := range r.Drift {
						fmt.Fprintf(g.stdout, "drift %s: Config/%s: %s\n", r.Name, d.File, d.Kind)
					}
				}
				fmt.Fprintf(g.stdout, "%s checked against the layout in %s: %d deviate\n", plural(len(results), "locker"), p.Layout().Root, deviating)
			}
			if deviating > 0 {
				return failedError{deviating}
			}
			return nil
		},
	}
	lf.register(cmd, true)
	return cmd
}
