package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/kardianos/service"
	"github.com/spf13/cobra"

	"lxcfleet/config"
	"lxcfleet/packaging"
	"lxcfleet/provision"
)

// agentService runs the agent under kardianos/service: Start returns at
// once and runs the agent in a goroutine; Stop cancels its context and
// waits for it to end.
type agentService struct {
	stack *stack
	log   *slog.Logger

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan error
}

// Start implements service.Interface.
func (s *agentService) Start(service.Service) error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s.mu.Lock()
	s.cancel, s.done = cancel, done
	s.mu.Unlock()
	go func() {
		err := runAgent(ctx, s.stack)
		if err != nil {
			s.log.Error("the agent stopped", "err", err)
		}
		done <- err
	}()
	return nil
}

// Stop implements service.Interface.
func (s *agentService) Stop(service.Service) error {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	return <-done
}

// serviceConfig describes the lxcfleet unit as kardianos/service installs
// it: the .deb's unit (packaging.Unit), with this binary's path and the
// config given, so that both install the same unit.
func serviceConfig(binary, configPath string) *service.Config {
	return &service.Config{
		Name:        "lxcfleet",
		DisplayName: "lxcfleet host agent",
		Description: "lxcfleet host agent (bounded, graceful restarts and updates of LXC lockers)",
		Executable:  binary,
		Arguments:   []string{"agent", "--config", configPath},
		Option: service.KeyValue{
			// kardianos/service reads it as a text/template; the unit has
			// no actions in it, so it is written as it is.
			"SystemdScript": packaging.UnitFor(binary, configPath),
		},
	}
}

// holderServiceConfig describes the socket holder's unit
// (lxcfleet-holder.service) as kardianos/service installs it: the .deb's
// (packaging.HolderUnit) with the config's lxcfleet-listenfd. The agent's
// unit wants it; it is a unit of its own so that the agent's restarts and
// crashes close no held socket.
func holderServiceConfig(listenfd string) *service.Config {
	return &service.Config{
		Name:        "lxcfleet-holder",
		DisplayName: "lxcfleet socket holder",
		Description: "lxcfleet socket holder (lockers' listening sockets, kept across restarts)",
		Executable:  listenfd,
		Arguments:   []string{"hold", "-dir", packaging.HolderDir},
		Option:      service.KeyValue{"SystemdScript": packaging.HolderUnitFor(listenfd)},
	}
}

// lockersServiceConfig describes the lockers' boot and shutdown unit
// (lxcfleet-lockers.service) as kardianos/service installs it: the .deb's
// (packaging.LockersUnitFor) with this binary's path and the config given.
// It is ordered after the agent's, so at shutdown it stops the lockers
// while the agent still runs.
func lockersServiceConfig(binary, configPath string) *service.Config {
	return &service.Config{
		Name:        "lxcfleet-lockers",
		DisplayName: "lxcfleet lockers",
		Description: "lxcfleet lockers (started at boot through the start policy, stopped gracefully at host shutdown)",
		Executable:  binary,
		Arguments:   []string{"start-all", "--boot", "--config", configPath},
		Option:      service.KeyValue{"SystemdScript": packaging.LockersUnitFor(binary, configPath)},
	}
}

// controlLockers installs or uninstalls the lockers' unit beside the
// agent's (start, stop and restart never act on it: its stop stops every
// locker).
func controlLockers(g *globals, binary, configPath, action string) error {
	ls, err := service.New(holderProgram{}, lockersServiceConfig(binary, configPath))
	if err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if err := service.Control(ls, action); err != nil {
		if action == "uninstall" && errors.Is(err, service.ErrNotInstalled) {
			return nil
		}
		return fmt.Errorf("service %s of the lockers' unit: %w", action, err)
	}
	fmt.Fprintf(g.stdout, "lxcfleet-lockers service: %s done\n", action)
	return nil
}

// holderProgram is the holder's and the lockers' units' service.Interface:
// lxcfleet never runs either under it (install and uninstall only).
type holderProgram struct{}

func (holderProgram) Start(service.Service) error { return nil }
func (holderProgram) Stop(service.Service) error  { return nil }

// controlHolder installs or uninstalls the holder's unit beside the
// agent's. Where the config's lxcfleet-listenfd is missing it installs
// none: an error with held sockets configured, a note otherwise.
func controlHolder(g *globals, fc config.File, action string) error {
	listenfd := fc.Provision.ListenFD
	if action == "install" {
		if _, err := os.Stat(listenfd); err != nil {
			if fc.Provision.Socket == provision.SocketHeld {
				return fmt.Errorf("service install: the socket holder's binary %q ([provision] listenfd): %w", listenfd, err)
			}
			fmt.Fprintf(g.stdout, "lxcfleet-holder service: not installed (no %s; needed only with [provision] socket = \"held\")\n", listenfd)
			return nil
		}
	}
	hs, err := service.New(holderProgram{}, holderServiceConfig(listenfd))
	if err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if err := service.Control(hs, action); err != nil {
		if action == "uninstall" && errors.Is(err, service.ErrNotInstalled) {
			return nil
		}
		return fmt.Errorf("service %s of the socket holder: %w", action, err)
	}
	fmt.Fprintf(g.stdout, "lxcfleet-holder service: %s done\n", action)
	return nil
}

func newServiceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service install|uninstall|start|stop|restart|status|run",
		Short: "Install, remove, start, stop or query the agent as a system service",
		Long: `Manage the agent as a system service (systemd on Debian) through
kardianos/service. "install" writes a unit that runs "lxcfleet agent --config
FILE": the same unit the .deb installs (Type=notify with a watchdog,
KillMode=mixed, RestartPreventExitStatus=2), with this binary's path and
the config given, and the socket holder's unit (lxcfleet-holder.service,
which the agent's wants: held sockets outlive the agent's restarts) with
the config's [provision] listenfd, and the lockers' unit
(lxcfleet-lockers.service: "start-all --boot" at boot, "stop-all
--host-shutdown" at shutdown); "uninstall" removes all three. start, stop
and restart act on the agent only (stopping the holder closes every held
socket, stopping the lockers' unit stops every locker: systemctl does
that on purpose). "run" runs the agent in the foreground the way the service
manager does. Use the .deb or "service install", not both.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"install", "uninstall", "start", "stop", "restart", "status", "run"},
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := g.wire(cmd)
			if err != nil {
				return err
			}
			exe, err := os.Executable()
			if err == nil {
				exe, err = filepath.EvalSymlinks(exe)
			}
			if err != nil {
				return fmt.Errorf("finding this binary: %w", err)
			}
			config, err := filepath.Abs(g.config)
			if err != nil {
				return usageError{err}
			}
			svc, err := service.New(&agentService{stack: st, log: slog.Default()}, serviceConfig(exe, config))
			if err != nil {
				return fmt.Errorf("service: %w", err)
			}
			switch action := args[0]; action {
			case "run":
				return svc.Run()
			case "status":
				st, err := svc.Status()
				if errors.Is(err, service.ErrNotInstalled) {
					fmt.Fprintln(g.stdout, "lxcfleet service: not installed")
					return failedError{1}
				}
				if err != nil {
					return fmt.Errorf("service status: %w", err)
				}
				name := map[service.Status]string{service.StatusRunning: "running", service.StatusStopped: "stopped"}[st]
				if name == "" {
					name = "unknown"
				}
				fmt.Fprintf(g.stdout, "lxcfleet service: %s (platform %s)\n", name, svc.Platform())
				if st != service.StatusRunning {
					return failedError{1}
				}
				return nil
			case "install", "uninstall", "start", "stop", "restart":
				// The holder's unit is installed first (the agent's wants
				// it) and removed last; start, stop and restart are the
				// agent's only: stopping the holder closes every held
				// socket.
				if action == "install" {
					if err := controlHolder(g, st.fc, action); err != nil {
						return err
					}
				}
				if err := service.Control(svc, action); err != nil {
					return fmt.Errorf("service %s: %w", action, err)
				}
				fmt.Fprintf(g.stdout, "lxcfleet service: %s done\n", action)
				switch action {
				case "install":
					return controlLockers(g, exe, config, action)
				case "uninstall":
					if err := controlLockers(g, exe, config, action); err != nil {
						return err
					}
					return controlHolder(g, st.fc, action)
				}
				return nil
			default:
				return usagef("unknown service action %q: want install, uninstall, start, stop, restart, status or run", action)
			}
		},
	}
	return cmd
}
