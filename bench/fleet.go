package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
)

// Fleet is the benchmark's lockers: busybox containers in a private lxcpath,
// each running the benchmark app from the layout's current release on its
// own 127.0.0.1 port.
type Fleet struct {
	Host    *lxcctl.Host
	Path    string // private lxcpath
	Layout  mounts.Layout
	Prefix  string
	Targets []Target
	base    string
	log     *slog.Logger
}

// FleetOptions configure NewFleet.
type FleetOptions struct {
	N int
	// LXCPath and Root are the private lxcpath and layout root.
	LXCPath, Root string
	// PortBase is the first port tried; lockers get free ports from it up.
	PortBase int
	// Work is the app's startup work (WORK, thousands of hash rounds).
	Work int
	// Env is more of the app's environment (NAME=value), for every
	// locker: its profile (APP_PROFILE).
	Env []string
	// Autostart marks lockers lxc.start.auto = 1 (for lxc-autostart).
	Autostart bool
	// CgroupParent, when set, is written into every locker's config
	// (lxc.cgroup.dir) after Ensure: then every scenario's lockers, started
	// by the LXC tools, the bench or lxcfleet, sit in the same parent with
	// the same CPU weight as the lockers lxcfleet starts (issue 13). On a
	// shared machine a storm of top-level cgroups would otherwise outweigh
	// everything else while lxcfleet's lockers share one low weight.
	CgroupParent lxcctl.CgroupParent
	Log          *slog.Logger
}

// NewFleet makes the base container and N stopped lockers. On failure the
// containers made so far are destroyed.
func NewFleet(ctx context.Context, opts FleetOptions) (f *Fleet, err error) {
	if err := os.MkdirAll(opts.LXCPath, 0o755); err != nil {
		return nil, err
	}
	h, err := lxcctl.NewHost(lxcctl.Options{LXCPath: opts.LXCPath, Logger: opts.Log})
	if err != nil {
		return nil, err
	}
	fl := &Fleet{Host: h, Path: opts.LXCPath, Layout: mounts.LayoutAt(opts.Root), Prefix: "lxb" + randHex(3) + "-", log: opts.Log}
	fl.base = fl.Prefix + "base"
	// The cleanup holds fl, not the named result: "return nil, err" sets f
	// to nil before deferred calls run.
	defer func() {
		if err != nil {
			if derr := fl.Destroy(context.WithoutCancel(ctx)); derr != nil && opts.Log != nil {
				opts.Log.Warn("removing a half-made fleet", "err", derr)
			}
		}
	}()
	f = fl
	node, err := exec.LookPath("node")
	if err == nil {
		node, err = filepath.EvalSymlinks(node)
	}
	if err != nil {
		return nil, fmt.Errorf("finding node: %w", err)
	}
	// Create, copy and destroy go through LXC's tools, each in its own
	// process: liblxc forks inside these calls, and a fork from this
	// multi-threaded process hung a clone (seen once in the smoke test).
	if _, err := run(ctx, f.Path, "lxc-create", "-P", f.Path, "-n", f.base, "-t", "busybox"); err != nil {
		return nil, fmt.Errorf("creating base container %s: %w", f.base, err)
	}
	lines := []string{
		"lxc.net.0.type = none",
		"lxc.signal.halt = SIGTERM",
		"lxc.init.cmd = /usr/bin/node /" + strings.TrimPrefix(f.Layout.AppPath, "/") + "/server.js",
		"lxc.mount.entry = " + node + " usr/bin/node none bind,ro,create=file 0 0",
		fmt.Sprintf("lxc.environment = WORK=%d", opts.Work),
	}
	for _, e := range opts.Env {
		lines = append(lines, "lxc.environment = "+e)
	}
	if opts.CgroupParent.Path != "" {
		if err := opts.CgroupParent.Ensure(); err != nil {
			return nil, fmt.Errorf("preparing the lockers' cgroup parent: %w", err)
		}
		lines = append(lines, "lxc.cgroup.dir = "+opts.CgroupParent.Path)
	}
	if _, err := h.EditConfig(f.base, func(old []byte) ([]byte, error) {
		return mounts.AppendConfig(mounts.DropConfigKeys(old, "lxc.net.", "lxc.signal.halt", "lxc.signal.reboot", "lxc.apparmor.", "lxc.start."), lines...), nil
	}); err != nil {
		return nil, fmt.Errorf("configuring base container: %w", err)
	}
	ports, err := freePorts(opts.PortBase, opts.N)
	if err != nil {
		return nil, err
	}
	f.Targets = make([]Target, opts.N)
	for i := range opts.N {
		f.Targets[i] = Target{Name: fmt.Sprintf("%s%03d", f.Prefix, i), Port: ports[i]}
	}
	// Clones are cheap (~70 ms); a few in parallel.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, tg := range f.Targets {
		g.Go(func() error { return f.addLocker(gctx, tg, opts.Autostart) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return fl, nil
}

func (f *Fleet) addLocker(ctx context.Context, tg Target, autostart bool) error {
	if _, err := run(ctx, f.Path, "lxc-copy", "-P", f.Path, "-n", f.base, "-N", tg.Name); err != nil {
		return fmt.Errorf("cloning locker %s: %w", tg.Name, err)
	}
	if _, err := f.Layout.Provision(tg.Name, mounts.Owner{}); err != nil {
		return fmt.Errorf("provisioning locker %s: %w", tg.Name, err)
	}
	_, err := f.Host.EditConfig(tg.Name, func(old []byte) ([]byte, error) {
		extra := []string{
			"lxc.uts.name = " + tg.Name,
			fmt.Sprintf("lxc.environment = PORT=%d", tg.Port),
			"lxc.log.file = " + f.Host.LogFile(tg.Name),
			"lxc.log.level = ERROR",
		}
		if autostart {
			extra = append(extra, "lxc.start.auto = 1")
		}
		out, _, err := mounts.ApplyEntries(mounts.AppendConfig(old, extra...), f.Layout, tg.Name)
		return out, err
	})
	if err != nil {
		return fmt.Errorf("configuring locker %s: %w", tg.Name, err)
	}
	return nil
}

// Names returns the lockers' names in order.
func (f *Fleet) Names() []string {
	out := make([]string, len(f.Targets))
	for i, t := range f.Targets {
		out[i] = t.Name
	}
	return out
}

// Destroy stops and destroys every container the fleet made (lockers and
// base), whatever state they are in. It logs what it cannot remove.
func (f *Fleet) Destroy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var errs []error
	names := append(f.Names(), f.base)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	errc := make(chan error, len(names))
	for _, n := range names {
		g.Go(func() error {
			if err := f.destroy(gctx, n); err != nil {
				errc <- err
			}
			return nil
		})
	}
	_ = g.Wait()
	close(errc)
	for err := range errc {
		errs = append(errs, err)
	}
	// Anything else with our prefix (e.g. a clone that failed half-way).
	for _, n := range f.Host.Names() {
		if strings.HasPrefix(n, f.Prefix) {
			if err := f.destroy(ctx, n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// destroy kills and removes one container with lxc-destroy -f; one that
// does not exist is not an error.
func (f *Fleet) destroy(ctx context.Context, name string) error {
	if !fileExists(filepath.Join(f.Path, name, "config")) {
		return nil
	}
	_, err := run(ctx, f.Path, "lxc-destroy", "-P", f.Path, "-n", name, "-f")
	return err
}

// freePorts returns n ports from base up that nothing listens on now.
// Ports below the ephemeral range (32768+) cannot be taken by an outgoing
// connection's source port.
func freePorts(base, n int) ([]int, error) {
	var out []int
	for p := base; len(out) < n; p++ {
		if p >= 32768 {
			return nil, fmt.Errorf("not enough free ports between %d and 32767 for %d lockers", base, n)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		out = append(out, p)
	}
	return out, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
