package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"lxcfleet/agent"
	"lxcfleet/config"
	"lxcfleet/mounts"
	"lxcfleet/provision"
)

// layoutFlags are the flags that override the config's [layout]; wire
// reads them.
type layoutFlags struct{}

func (layoutFlags) register(cmd *cobra.Command, templates bool) {
	cmd.Flags().String("root", "", "layout root holding current, releases/ and lockers/ (default: layout.root of the config, else "+mounts.DefaultRoot+")")
	if templates {
		cmd.Flags().String("templates", "", "folder of config templates seeded into each locker's Config, never overwriting (default: layout.templates of the config)")
	}
}

// asUsage turns an InvalidError of the agent or of provision into bad
// input (exit 2).
func asUsage(err error) error {
	var ie agent.InvalidError
	var pe provision.InvalidError
	if errors.As(err, &ie) || errors.As(err, &pe) {
		return usageError{err}
	}
	return err
}

// checkLockerNames rejects invalid names and traversal attempts before
// anything is opened.
func checkLockerNames(names []string) error {
	for _, n := range names {
		if err := mounts.ValidName(n); err != nil {
			return usageError{err}
		}
	}
	return nil
}

func newProvisionCmd(g *globals) *cobra.Command {
	var lf layoutFlags
	var template, network, init, node, tini string
	var templateArgs, idmap []string
	var portBase int
	cmd := &cobra.Command{
		Use:   "provision NAME...",
		Short: "Create new lockers in the layout: container, Me and Config folders, mounts, port",
		Long: `provision creates one container per NAME from an LXC template and puts it
into the layout: the shared code (current) read-only at /opt/app, its own Me
read-write and its own Config, folders created (owned by the container's
mapped root when --idmap is given) and Config seeded from the templates.
Its environment comes from Config/locker.env (KEY=VALUE lines); a locker
without a PORT there gets the lowest port from --port-base up that no
container uses. The lockers are left stopped: start them with start-all.
The app (--init) runs under tini (--tini), which forwards the halt signal
(SIGTERM) to it: a Node app with no SIGTERM handler still stops at once.

A locker that fails leaves nothing behind: no container, no folders.
Defaults come from the [layout] and [provision] sections of the config
(--config, default ` + config.DefaultPath + `); the flags given override them.`,
		Example: `  lxcfleet provision --template busybox --node /usr/bin/node \
      --init '/usr/bin/node /opt/app/server.js' --port-base 4100 locker-001 locker-002`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("provision needs at least one NAME")
			}
			if err := checkLockerNames(args); err != nil {
				return err
			}
			s, err := g.wire(cmd)
			if err != nil {
				return err
			}
			opts := s.provisionOptions()
			f := cmd.Flags()
			if f.Changed("template") {
				opts.Template = template
			}
			if f.Changed("template-arg") {
				opts.TemplateArgs = templateArgs
			}
			if f.Changed("network") {
				opts.Network = network
			}
			if f.Changed("init") {
				opts.Init = init
			}
			if f.Changed("port-base") {
				opts.PortBase = portBase
			}
			opts.Node, opts.Idmap = node, idmap
			if f.Changed("tini") {
				opts.Tini = tini
			}
			if opts.Init == "" {
				opts.Tini = "" // tini runs an init; the template's own needs none
			}
			p, err := s.provisioner()
			if err != nil {
				return err
			}
			results, err := p.Provision(cmd.Context(), args, opts)
			if err != nil {
				return asUsage(err)
			}
			return printLockerResults(g, results)
		},
	}
	lf.register(cmd, true)
	f := cmd.Flags()
	f.StringVar(&template, "template", "", "LXC template to create the containers from, e.g. busybox or download (default: provision.template)")
	f.StringArrayVar(&templateArgs, "template-arg", nil, "argument for the template, repeatable (e.g. --template-arg=--dist --template-arg=alpine)")
	f.StringVar(&network, "network", "", "lxc.net.0.type: none (host network, one port each; default), empty (a namespace of its own, loopback up: lockers may share a fixed port, check health with exec:), or template to keep the template's")
	f.StringVar(&init, "init", "", "lxc.init.cmd, e.g. '/usr/bin/node /opt/app/server.js' (default: the template's)")
	f.StringVar(&tini, "tini", "", "host tini binary bound read-only at /sbin/tini and run as PID 1 in front of --init (forwards the halt signal, reaps zombies); '' runs the app as PID 1 (default: provision.tini, "+provision.DefaultTini+")")
	f.StringVar(&node, "node", "", "host node binary to bind-mount read-only at /usr/bin/node")
	f.IntVar(&portBase, "port-base", 0, "first PORT handed out to a locker whose Config/locker.env has none (default: provision.port_base)")
	f.StringArrayVar(&idmap, "idmap", nil, "lxc.idmap line for an unprivileged locker, repeatable (e.g. 'u 0 100000 65536')")
	return cmd
}

// printLockerResults prints what provision or adopt did; any failure is
// exit 1.
func printLockerResults(g *globals, results []provision.LockerResult) error {
	failed := 0
	counts := map[string]int{}
	for _, r := range results {
		counts[r.Outcome]++
		if r.Outcome == provision.OutcomeFailed {
			failed++
		}
	}
	if g.jsonOut {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"lockers": results, "failed": failed}); err != nil {
			return err
		}
	} else {
		printLockerText(g.stdout, results)
		var parts []string
		for _, o := range []string{provision.OutcomeProvisioned, provision.OutcomeAdopted, provision.OutcomeUnchanged, provision.OutcomeFailed} {
			if counts[o] > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", counts[o], o))
			}
		}
		fmt.Fprintf(g.stdout, "%s: %s\n", plural(len(results), "locker"), strings.Join(parts, ", "))
	}
	if failed > 0 {
		return failedError{failed}
	}
	return nil
}

func printLockerText(w io.Writer, results []provision.LockerResult) {
	for _, r := range results {
		switch r.Outcome {
		case provision.OutcomeFailed:
			fmt.Fprintf(w, "FAILED %s: %s\n", r.Name, r.Error)
			continue
		case provision.OutcomeUnchanged:
			fmt.Fprintf(w, "unchanged %s\n", r.Name)
			continue
		}
		port := ""
		if r.Port > 0 {
			port = fmt.Sprintf(" (port %d)", r.Port)
		}
		fmt.Fprintf(w, "%s %s%s\n", r.Outcome, r.Name, port)
		if r.Backup != "" {
			fmt.Fprintf(w, "  backup of the original config: %s\n", r.Backup)
		}
		if r.Note != "" {
			fmt.Fprintf(w, "  note: %s\n", r.Note)
		}
	}
}
