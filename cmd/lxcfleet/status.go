package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"lxcfleet/agent"
	"lxcfleet/heldsock"
	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
)

// lockerStatus is one line of status: the container and the release its
// init really has mounted (from /proc/<pid>/mountinfo).
type lockerStatus struct {
	lxcctl.Info
	Release        string `json:"release,omitempty"`
	ReleaseDeleted bool   `json:"release_deleted,omitempty"`
	ReleaseError   string `json:"release_error,omitempty"`
	// Sleeping: stopped by the agent for want of connections, started
	// when one is pending (held sockets; heldsock.AsleepFile).
	Sleeping bool `json:"sleeping,omitempty"`
	// Quarantined says why the agent's supervision leaves the locker
	// stopped (agent.Locker.Quarantined; "" when it does not, or when no
	// agent answers: supervision lives in the agent).
	Quarantined string `json:"quarantined,omitempty"`
}

func newStatusCmd(g *globals) *cobra.Command {
	var sel selection
	var lf layoutFlags
	cmd := &cobra.Command{
		Use:   "status [NAME...]",
		Short: "Show each locker's state, init pid, start order, groups, port and the release it really runs",
		Long: `status lists the lockers with their state, init pid, start order, groups,
port, and for a running locker the release it really runs: the release its
init has mounted at the app path, read from /proc/<pid>/mountinfo. After
current is switched, a locker keeps its old release until it restarts; a
release whose folder was deleted under a running locker shows as
<release>//deleted.`,
		Example: `  lxcfleet status
  lxcfleet status --group web --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.wire(cmd)
			if err != nil {
				return err
			}
			h, layout := s.host, s.layout
			infos, err := sel.pick(cmd, h, args)
			if err != nil {
				return err
			}
			lockers := make([]lockerStatus, len(infos))
			counted := make([]agent.Locker, len(infos))
			quarantined := quarantinedByAgent(cmd.Context(), s.fc.Listen.Socket, h.LXCPath())
			for i, in := range infos {
				lockers[i] = lockerStatus{Info: in}
				if in.State == lxcctl.StateStopped {
					lockers[i].Quarantined = quarantined[in.Name]
				}
				if in.State == lxcctl.StateStopped {
					_, lockers[i].Sleeping = heldsock.AsleepIn(filepath.Dir(h.ConfigPath(in.Name)))
				}
				rel, deleted, err := mounts.ReleaseOfLocker(in.InitPID, layout)
				if err != nil {
					lockers[i].ReleaseError = err.Error()
				} else {
					lockers[i].Release, lockers[i].ReleaseDeleted = rel, deleted
				}
				counted[i] = agent.Locker{Name: in.Name, Release: lockers[i].Release, ReleaseError: lockers[i].ReleaseError}
			}
			releases, _ := agent.ReleasesInUse(counted) // a locker's error shows in its line
			// Containers LXC cannot load are listed (state BROKEN, with
			// LXC's reason) and make status exit 1.
			var broken []lockerStatus
			for _, l := range lockers {
				if l.Broken() {
					broken = append(broken, l)
				}
			}
			var brokenErr error
			if len(broken) > 0 {
				brokenErr = failedError{len(broken)}
			}
			if g.jsonOut {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(map[string]any{"lxcpath": h.LXCPath(), "root": layout.Root, "containers": lockers, "releases": releases}); err != nil {
					return err
				}
				return brokenErr
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tPID\tORDER\tGROUPS\tPORT\tRELEASE")
			counts := map[lxcctl.State]int{}
			for _, l := range lockers {
				counts[l.State]++
				pid := "-"
				if l.InitPID > 0 {
					pid = strconv.Itoa(l.InitPID)
				}
				groups := strings.Join(l.Groups, ",")
				if groups == "" {
					groups = "-"
				}
				port := l.Env["PORT"]
				if port == "" {
					port = "-"
				}
				rel := "-"
				switch {
				case l.ReleaseDeleted:
					rel = l.Release + "//deleted"
				case l.Release != "":
					rel = l.Release
				case l.ReleaseError != "":
					rel = "?"
				}
				state := string(l.State)
				switch {
				case l.Quarantined != "":
					state = "QUARANTINED"
				case l.Sleeping:
					state = "SLEEPING"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", l.Name, state, pid, l.StartOrder, groups, port, rel)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s in %s: %d running, %d stopped", plural(len(infos), "container"), h.LXCPath(), counts[lxcctl.StateRunning], counts[lxcctl.StateStopped])
			if len(broken) > 0 {
				fmt.Fprintf(g.stdout, ", %d broken (LXC cannot load them; no command acts on them)", len(broken))
			}
			fmt.Fprintln(g.stdout)
			for _, l := range broken {
				fmt.Fprintf(g.stdout, "BROKEN %s: %s\n", l.Name, l.Error)
			}
			for _, l := range lockers {
				if l.Quarantined != "" {
					fmt.Fprintf(g.stdout, "QUARANTINED %s: %s\n", l.Name, strings.TrimPrefix(l.Quarantined, "quarantined: "))
				}
			}
			if len(releases) > 0 {
				var parts []string
				for _, r := range sortedKeys(releases) {
					parts = append(parts, fmt.Sprintf("%s: %d", r, releases[r]))
				}
				fmt.Fprintf(g.stdout, "releases in use (%s): %s\n", layout.Releases, strings.Join(parts, ", "))
			}
			return brokenErr
		},
	}
	sel.register(cmd)
	lf.register(cmd, false)
	return cmd
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// quarantinedByAgent asks the agent on sock, when it serves lxcpath,
// which lockers its supervision quarantined and why (by name). It is nil
// when no agent answers within a second: quarantine is the agent's
// supervision's, and status works without an agent.
func quarantinedByAgent(ctx context.Context, sock, lxcpath string) map[string]string {
	if sock == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	cl := &apiClient{http: socketClient(sock), close: func() {}}
	var host agent.HostInfo
	if err := cl.get(ctx, "/v1/host", &host); err != nil || filepath.Clean(host.LXCPath) != filepath.Clean(lxcpath) {
		return nil
	}
	var list struct {
		Containers []agent.Locker `json:"containers"`
	}
	if err := cl.get(ctx, "/v1/containers", &list); err != nil {
		slog.Debug("reading quarantined lockers from the agent", "socket", sock, "err", err)
		return nil
	}
	out := map[string]string{}
	for _, l := range list.Containers {
		if l.Quarantined != "" {
			out[l.Name] = l.Quarantined
		}
	}
	return out
}
