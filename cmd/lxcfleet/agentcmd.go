package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"lxcfleet/agent"
	"lxcfleet/codeupdate"
	"lxcfleet/console"
	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// newAgent wires an agent from the config: lxcctl for the containers,
// codeupdate when code.origin is set, and the mount table for each
// locker's real release.
func newAgent(fc agent.FileConfig, log *slog.Logger, daemon bool) (*agent.Agent, error) {
	h, err := lxcctl.NewHost(lxcctl.Options{LXCPath: fc.LXCPath, Logger: log})
	if err != nil {
		return nil, usageError{fmt.Errorf("lxcpath: %w", err)}
	}
	deps := agent.Deps{Containers: h, Logger: log}
	layout := mounts.LayoutAt(fc.Layout.Root)
	if fc.Layout.Templates != "" {
		layout.Templates = fc.Layout.Templates
	}
	if fc.Code.Origin != "" {
		m, err := codeupdate.New(codeupdate.Options{Root: fc.Layout.Root, Origin: fc.Code.Origin, Npm: fc.Code.Npm, NpmTimeout: fc.Code.NpmTimeout.D(),
			Target: fc.Defaults.Target, FetchStallTimeout: fc.Code.FetchStallTimeout.D(), FetchTimeout: fc.Code.FetchTimeout.D(), MaxPacks: fc.Code.MaxPacks, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("code.origin: %w", err)
		}
		deps.Code = m
		deps.ReleaseOf = func(pid int) (string, bool, error) { return mounts.ReleaseOfPID(pid, layout) }
	}
	cfg := fc.AgentConfig()
	cfg.Version = version
	var a *agent.Agent
	if daemon {
		// The web console at / of the TCP listener; its maintenance page
		// names the expected end of a running offline update.
		cfg.Listen.Console = console.New(console.Options{Until: func() time.Time {
			if a == nil {
				return time.Time{}
			}
			return a.MaintenanceUntil()
		}})
	} else {
		// An in-process agent has no listener and runs no schedules.
		cfg.Listen = agent.Listen{}
		cfg.Schedules = nil
	}
	a, err = agent.New(cfg, deps)
	if errors.Is(err, agent.ErrJournalLocked) {
		return nil, fmt.Errorf("%w\n(the journal is %s/journal.db; give --state-dir to run beside it)", err, fc.StateDir)
	}
	return a, err
}

func newAgentCmd(g *globals) *cobra.Command {
	var config string
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
			fc, err := agent.LoadConfig(config, cmd.Flags().Changed("config"))
			if err != nil {
				return usageError{err}
			}
			if cmd.Flags().Changed("lxcpath") {
				fc.LXCPath = g.lxcpath
			}
			if !cmd.Flags().Changed("log-level") {
				g.logLevel = "info"
				if err := g.setupLogging(); err != nil {
					return err
				}
			}
			return runAgent(cmd.Context(), fc, slog.Default())
		},
	}
	cmd.Flags().StringVar(&config, "config", agent.DefaultConfigPath, "config file (TOML)")
	return cmd
}

// runAgent runs the daemon until ctx ends; a cancelled ctx is a normal stop.
func runAgent(ctx context.Context, fc agent.FileConfig, log *slog.Logger) error {
	a, err := newAgent(fc, log, true)
	if err != nil {
		return err
	}
	log.Info("lxcfleet agent starting", "version", version, "lxcpath", fc.LXCPath, "state_dir", fc.StateDir, "pid", os.Getpid(), "code_origin", fc.Code.Origin != "")
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
