package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"lxcfleet/agent"
	"lxcfleet/codeupdate"
	"lxcfleet/config"
	"lxcfleet/console"
	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
	"lxcfleet/provision"
)

// stack is what every command and the daemon work with, built in one
// place from the config file and the flags that override it (--lxcpath,
// --root, --templates): the layout, the container host, and on demand the
// release manager, the provisioner and the agent.
type stack struct {
	fc     config.File
	layout mounts.Layout
	host   *lxcctl.Host
	log    *slog.Logger
	// configLXCPath is the config's lxcpath before --lxcpath overrode it.
	configLXCPath string
	wired         *config.Stack
}

// wire reads the config (--config; a missing default file gives the
// defaults, a bad one is bad input) and builds the stack.
func (g *globals) wire(cmd *cobra.Command) (*stack, error) {
	f := cmd.Flags()
	fc, err := config.Load(g.config, f.Changed("config"))
	if err != nil {
		return nil, usageError{err}
	}
	s := &stack{log: slog.Default(), configLXCPath: fc.LXCPath}
	for _, w := range fc.Warnings() {
		s.log.Warn(w)
	}
	if f.Changed("lxcpath") {
		abs, err := filepath.Abs(g.lxcpath)
		if err != nil {
			return nil, usageError{fmt.Errorf("--lxcpath %q: %w", g.lxcpath, err)}
		}
		fc.LXCPath = abs
	}
	if f.Changed("root") {
		fc.Layout.Root, _ = f.GetString("root")
	}
	if f.Changed("templates") {
		fc.Layout.Templates, _ = f.GetString("templates")
	}
	st, err := config.Wire(fc, s.log)
	if err != nil {
		return nil, usageError{err}
	}
	s.fc, s.layout, s.host = fc, st.Layout, st.Host
	s.wired = st
	return s, nil
}

// lxcpathOverridden reports whether --lxcpath names another lxcpath than
// the config's.
func (s *stack) lxcpathOverridden() bool {
	return filepath.Clean(s.fc.LXCPath) != filepath.Clean(s.configLXCPath)
}

// code returns the release manager, nil when code.origin is not set.
func (s *stack) code() (*codeupdate.Manager, error) { return s.wired.Code() }

// provisioner checks the layout and returns the provisioner over it.
func (s *stack) provisioner() (*provision.Provisioner, error) {
	p, err := provision.New(s.host, s.layout, s.log)
	if err != nil {
		return nil, asUsage(err)
	}
	return p, nil
}

// provisionOptions returns the [provision] section of the config.
func (s *stack) provisionOptions() provision.Options {
	x := s.fc.Provision
	return provision.Options{
		Template:      x.Template,
		TemplateArgs:  slices.Clone(x.TemplateArgs),
		Network:       x.Network,
		HaltSignal:    x.HaltSignal,
		Init:          x.Init,
		Tini:          x.Tini,
		PortBase:      x.PortBase,
		ExtraConfig:   slices.Clone(x.ExtraConfig),
		Socket:        x.Socket,
		SocketAddress: x.SocketAddress,
		SocketPort:    x.SocketPort,
		ListenFD:      x.ListenFD,
	}
}

// agent builds the agent: the daemon (listeners, console, schedules), or
// one in this process for a CLI command (no listener, no schedules).
func (s *stack) agent(daemon bool) (*agent.Agent, error) {
	deps, err := s.wired.AgentDeps()
	if err != nil {
		return nil, err
	}
	cfg := s.fc.AgentConfig()
	cfg.Version = buildVersion()
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
		cfg.Listen = agent.Listen{}
		cfg.Schedules = nil
		cfg.Fleet.Endpoints = nil // only the daemon joins the fleet
	}
	a, err = agent.New(cfg, deps)
	if errors.Is(err, agent.ErrJournalLocked) {
		return nil, fmt.Errorf("%w\n(the journal is %s/journal.db; give --state-dir to run beside it)", err, s.fc.StateDir)
	}
	return a, err
}
