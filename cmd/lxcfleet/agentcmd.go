package main

import (
	"context"
	"os"

	"github.com/spf13/cobra"
)

func newAgentCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the lxcfleet daemon: HTTP API, job journal, crash recovery, schedules",
		Long: `Run the host agent. It serves the HTTP API on a Unix socket (root only) and,
when listen.tcp is set, on TCP with a bearer token (TLS when configured); it
runs every operation as a journaled job, one mutating job at a time; after a
crash or a host boot it drives every locker back to its desired state; and it
runs the cron maintenance windows of the config.

The config file is validated at start: an unknown key or a bad value stops
the agent with a message naming it (exit code 2). Logs go to stderr.`,
		Example: `  lxcfleet agent
  lxcfleet agent --config /etc/lxcfleet/lxcfleet.toml --log-level info`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("log-level") {
				g.logLevel = "info"
				if err := g.setupLogging(); err != nil {
					return err
				}
			}
			s, err := g.wire(cmd)
			if err != nil {
				return err
			}
			return runAgent(cmd.Context(), s)
		},
	}
	return cmd
}

// runAgent runs the daemon until ctx ends; a cancelled ctx is a normal stop.
func runAgent(ctx context.Context, s *stack) error {
	fc, log := s.fc, s.log
	a, err := s.agent(true)
	if err != nil {
		return err
	}
	log.Info("lxcfleet agent starting", "version", buildVersion(), "lxcpath", fc.LXCPath, "state_dir", fc.StateDir, "pid", os.Getpid(), "code_origin", fc.Code.Origin != "")
	err = a.Run(ctx)
	if cerr := a.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	log.Info("lxcfleet agent stopped")
	return nil
}
