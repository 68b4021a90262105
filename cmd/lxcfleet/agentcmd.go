package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/spf13/cobra"

	"lxcfleet/agent"
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
// Under systemd (Type=notify) it says READY=1 once it serves, pings the
// watchdog while its API answers, and says STOPPING=1 on the way out.
// SIGHUP is ignored (with a note): the config is read at start.
func runAgent(ctx context.Context, s *stack) error {
	fc, log := s.fc, s.log
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	a, err := s.agent(true)
	if err != nil {
		return err
	}
	log.Info("lxcfleet agent starting", "version", buildVersion(), "lxcpath", fc.LXCPath, "state_dir", fc.StateDir, "pid", os.Getpid(), "code_origin", fc.Code.Origin != "")
	nctx, stopNotify := context.WithCancel(ctx)
	notified := make(chan struct{})
	go func() {
		defer close(notified)
		notifySystemd(nctx, a, hup, log)
	}()
	err = a.Run(ctx)
	stopNotify()
	<-notified
	if _, nerr := daemon.SdNotify(false, daemon.SdNotifyStopping); nerr != nil {
		log.Debug("telling systemd the agent stops", "err", nerr)
	}
	if cerr := a.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	log.Info("lxcfleet agent stopped")
	return nil
}

// notifySystemd tells the service manager the agent is ready once it
// listens, then pings the watchdog (when WatchdogSec is set) each half
// interval in which the agent's own /healthz answers, and logs each SIGHUP.
func notifySystemd(ctx context.Context, a *agent.Agent, hup <-chan os.Signal, log *slog.Logger) {
	select {
	case <-a.Ready():
	case <-ctx.Done():
		return
	}
	if sent, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("telling systemd the agent is ready", "err", err)
	} else if sent {
		log.Info("told systemd the agent is ready")
	}
	var tick <-chan time.Time
	if every, err := daemon.SdWatchdogEnabled(false); err != nil {
		log.Warn("reading the systemd watchdog settings", "err", err)
	} else if every > 0 {
		t := time.NewTicker(every / 2)
		defer t.Stop()
		tick = t.C
	}
	// The watchdog is pinged only after a real round trip through the
	// agent's socket (a hung server or handler stops the pings).
	var cl *http.Client
	for _, ad := range a.Addrs() {
		if ad.Network() == "unix" {
			cl = socketClient(ad.String())
			cl.Timeout = 5 * time.Second
			break
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Warn("SIGHUP ignored: the config is read at start; restart the agent to apply a change")
		case <-tick:
			if cl != nil {
				resp, err := cl.Get("http://lxcfleet/healthz")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				if err != nil {
					log.Error("the agent's /healthz does not answer: not pinging the systemd watchdog", "err", err)
					continue
				}
			}
			if _, err := daemon.SdNotify(false, daemon.SdNotifyWatchdog); err != nil {
				log.Warn("pinging the systemd watchdog", "err", err)
			}
		}
	}
}
