package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"lxcfleet/lxcctl"
)

func newStatusCmd(g *globals) *cobra.Command {
	var sel selection
	cmd := &cobra.Command{
		Use:   "status [NAME...]",
		Short: "Show each locker's state, init pid, start order and groups",
		Example: `  lxcfleet status
  lxcfleet status --group web --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := g.host()
			if err != nil {
				return err
			}
			infos, err := sel.pick(cmd, h, args)
			if err != nil {
				return err
			}
			if g.jsonOut {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"lxcpath": h.LXCPath(), "containers": infos})
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tPID\tORDER\tGROUPS\tPORT")
			counts := map[lxcctl.State]int{}
			for _, in := range infos {
				counts[in.State]++
				pid := "-"
				if in.InitPID > 0 {
					pid = strconv.Itoa(in.InitPID)
				}
				groups := strings.Join(in.Groups, ",")
				if groups == "" {
					groups = "-"
				}
				port := in.Env["PORT"]
				if port == "" {
					port = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", in.Name, in.State, pid, in.StartOrder, groups, port)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s in %s: %d running, %d stopped\n", plural(len(infos), "container"), h.LXCPath(), counts[lxcctl.StateRunning], counts[lxcctl.StateStopped])
			return nil
		},
	}
	sel.register(cmd)
	return cmd
}
