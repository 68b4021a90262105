package provision

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
)

// InvalidError is bad input (a name, an option, a layout): exit 2 from
// the CLI.
type InvalidError struct{ Msg string }

func (e InvalidError) Error() string { return e.Msg }

func invalidf(format string, a ...any) error { return InvalidError{fmt.Sprintf(format, a...)} }

// LockerHost is what provisioning, adoption and layout checks need from
// LXC; *lxcctl.Host provides it.
type LockerHost interface {
	Names() []string
	Info(ctx context.Context, name string) (lxcctl.Info, error)
	Create(ctx context.Context, name, template string, args ...string) error
	Destroy(ctx context.Context, name string) error
	ConfigItem(name, key string) ([]string, error)
	ConfigPath(name string) string
	EditConfig(name string, edit func(old []byte) ([]byte, error)) (bool, error)
}

// LockerEnvFile is the file in a locker's Config folder whose KEY=VALUE
// lines become the container's lxc.environment (PORT among them).
const LockerEnvFile = "locker.env"

// The networks Options.Network accepts.
const (
	// NetworkNone shares the host's network (each locker on its own port).
	NetworkNone = "none"
	// NetworkEmpty gives the locker a network namespace of its own with
	// loopback only, up (lxc.net.0.flags = up): every locker may listen on
	// the same port, and health is checked inside (exec:).
	NetworkEmpty = "empty"
	// NetworkTemplate keeps what the LXC template configured.
	NetworkTemplate = "template"
)

// Options says how Provision makes a locker's container.
type Options struct {
	// Template is the LXC template ("busybox", "download", ...); required.
	Template string
	// TemplateArgs are passed to the template (e.g. --dist alpine ...).
	TemplateArgs []string
	// Network is lxc.net.0.type: NetworkNone (the default), NetworkEmpty,
	// or NetworkTemplate to keep the template's network.
	Network string
	// HaltSignal is lxc.signal.halt (default SIGTERM); it also replaces
	// the template's lxc.signal.reboot.
	HaltSignal string
	// Init is lxc.init.cmd, e.g. "/usr/bin/node /opt/app/server.js";
	// empty keeps the template's init.
	Init string
	// Node, when set, is a host file (the node binary) bind-mounted
	// read-only at /usr/bin/node.
	Node string
	// Tini, when set with Init, is a host file (a static tini, Debian's
	// DefaultTini) bind-mounted read-only at /sbin/tini and run as PID 1 in
	// front of Init: it forwards the halt signal to the app (Node as PID 1
	// ignores SIGTERM unless the app handles it) and reaps zombies.
	Tini string
	// PortBase is the first port handed out to a locker whose Config has
	// no PORT: the lowest port from PortBase up that no container of the
	// host uses and no socket of the host listens on, below the kernel's
	// ephemeral port range (net.ipv4.ip_local_port_range; a base in it is
	// an InvalidError). 0 hands out none.
	PortBase int
	// Idmap are lxc.idmap values ("u 0 100000 65536", "g 0 100000 65536")
	// for an unprivileged locker; empty makes a privileged one. An
	// unprivileged locker on the host's network (NetworkNone) gets no /sys:
	// the kernel lets a user namespace mount sysfs only in a network
	// namespace it owns, so provision drops "sys" from the template's
	// lxc.mount.auto (measured: with it, LXC 5.0.2 fails at "Failed to mount
	// sysfs"); its app listens on a PORT of the host, 1024 or above.
	Idmap []string
	// ExtraConfig lines are appended to each container's config as they
	// are.
	ExtraConfig []string
	// Parallel is how many containers are created at once (default 4).
	Parallel int
	// Socket is how the app gets its listening socket: SocketApp (""
	// too; it binds its port itself) or SocketHeld (the host's socket
	// holder keeps it; the app listens on fd 3, LISTEN_FDS=1). Held needs
	// Tini, Init and ListenFD, and network none or empty; with empty, the
	// locker joins a named network namespace of its own (NetNSName) that
	// outlives its restarts, and the socket is held in it.
	Socket string
	// SocketAddress is the IP a held socket binds (DefaultSocketAddress).
	SocketAddress string
	// SocketPort is the port of a held socket for an app on a fixed port
	// (network empty, no PORT); 0 takes the locker's PORT.
	SocketPort int
	// ListenFD is the host's lxcfleet-listenfd (DefaultListenFD), bound
	// read-only at /sbin/lxcfleet-listenfd in a held-socket locker.
	ListenFD string
}

// The outcomes of LockerResult.
const (
	OutcomeProvisioned = "provisioned"
	OutcomeAdopted     = "adopted"
	OutcomeUnchanged   = "unchanged"
	OutcomeFailed      = "failed"
)

// LockerResult is what Provision or Adopt did to one locker.
type LockerResult struct {
	Name    string `json:"name"`
	Outcome string `json:"outcome"`
	// Port is the locker's PORT, when it has one.
	Port int `json:"port,omitempty"`
	// Changes lists what was done, for a human.
	Changes []string `json:"changes,omitempty"`
	// Backup is the copy of the config file Adopt made before changing it.
	Backup string `json:"backup,omitempty"`
	// Note is something the operator should know (e.g. a restart is due).
	Note  string `json:"note,omitempty"`
	Error string `json:"error,omitempty"`
	Err   error  `json:"-"`
}

// CheckResult is how one locker deviates from the layout.
type CheckResult struct {
	Name  string `json:"name"`
	State string `json:"state,omitempty"`
	// Deviations say what is wrong with its mounts, folders or ownership;
	// empty when the locker matches the layout.
	Deviations []string `json:"deviations,omitempty"`
	// Drift lists config templates that are missing or newer than the
	// locker's copy; it is reported, not a deviation.
	Drift []mounts.Drift `json:"drift,omitempty"`
	// Release is the release a running locker really uses.
	Release        string `json:"release,omitempty"`
	ReleaseDeleted bool   `json:"release_deleted,omitempty"`
}

// OK reports whether the locker matches the layout.
func (r CheckResult) OK() bool { return len(r.Deviations) == 0 }

// Provisioner puts lockers into the mount layout: it creates new ones
// (Provision), converts existing containers (Adopt) and reports deviations
// (Check). It is the one place that combines LXC and the layout.
type Provisioner struct {
	host   LockerHost
	layout mounts.Layout
	log    *slog.Logger
	now    func() time.Time
	// portMu serialises port hand-out between concurrent Provision calls.
	portMu sync.Mutex
}

// New checks the layout (its root must exist, no path may lead
// out of it, a template folder must exist) and returns a Provisioner. A bad
// layout is an InvalidError.
func New(h LockerHost, l mounts.Layout, log *slog.Logger) (*Provisioner, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := l.Validate(); err != nil {
		return nil, InvalidError{err.Error()}
	}
	if l.Templates != "" {
		fi, err := os.Stat(l.Templates)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, invalidf("config template folder %s does not exist", l.Templates)
		case err != nil:
			return nil, invalidf("config template folder: %v", err)
		case !fi.IsDir():
			return nil, invalidf("config template folder %s is not a directory", l.Templates)
		}
	}
	return &Provisioner{host: h, layout: l, log: log, now: time.Now}, nil
}

// Layout returns the layout the Provisioner applies.
func (p *Provisioner) Layout() mounts.Layout { return p.layout }

// withDefaults fills zero fields and validates the options.
func (o Options) withDefaults() (Options, error) {
	if o.Network == "" {
		o.Network = NetworkNone
	}
	if o.HaltSignal == "" {
		o.HaltSignal = "SIGTERM"
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	switch {
	case o.Template == "":
		return o, invalidf("no LXC template given")
	case o.Network != NetworkNone && o.Network != NetworkEmpty && o.Network != NetworkTemplate:
		return o, invalidf("network %q: want %s, %s or %s", o.Network, NetworkNone, NetworkEmpty, NetworkTemplate)
	case o.PortBase < 0 || o.PortBase > 65535:
		return o, invalidf("port base %d: want 1-65535, or 0 for none", o.PortBase)
	}
	for _, v := range []struct{ what, s string }{{"init", o.Init}, {"halt signal", o.HaltSignal}, {"node", o.Node}, {"tini", o.Tini}} {
		if strings.ContainsAny(v.s, "\n\r") {
			return o, invalidf("%s %q contains a line break", v.what, v.s)
		}
	}
	// LXC's own parser judges what provision writes: a value it refuses
	// would make a container that no command can load.
	if err := lxcctl.CheckConfigItem("lxc.signal.halt", o.HaltSignal); err != nil {
		return o, invalidf("halt signal %q: %v (e.g. SIGTERM, SIGUSR1, SIGPWR, SIGRTMIN+3)", o.HaltSignal, err)
	}
	if o.Node != "" {
		if err := checkHostFile("node", o.Node); err != nil {
			return o, err
		}
	}
	if o.Tini != "" {
		if err := checkHostFile("tini", o.Tini); err != nil {
			return o, err
		}
		if o.Init == "" {
			return o, invalidf("tini %q needs an init command to run (the app's, e.g. /usr/bin/node /opt/app/server.js)", o.Tini)
		}
	}
	if err := checkHeldOptions(o); err != nil {
		return o, err
	}
	for _, l := range o.ExtraConfig {
		if strings.ContainsAny(l, "\n\r") {
			return o, invalidf("extra config line %q contains a line break", l)
		}
		if err := lxcctl.CheckConfigLine(l); err != nil {
			return o, invalidf("extra config: %v", err)
		}
	}
	if len(o.Idmap) > 0 {
		if _, err := mounts.OwnerFromIdmap(o.Idmap); err != nil {
			return o, InvalidError{err.Error()}
		}
		if _, _, err := parseIdmap(o.Idmap); err != nil {
			return o, InvalidError{err.Error()}
		}
	}
	return o, nil
}

// checkNames validates names (as LXC names that are safe folder names) and
// rejects duplicates.
func checkNames(names []string) error {
	if len(names) == 0 {
		return invalidf("no locker names given")
	}
	seen := map[string]bool{}
	for _, n := range names {
		if err := mounts.ValidName(n); err != nil {
			return InvalidError{err.Error()}
		}
		if seen[n] {
			return invalidf("locker %q named twice", n)
		}
		seen[n] = true
	}
	return nil
}

// lockerPlan is one locker being provisioned, and what to undo.
type lockerPlan struct {
	name    string
	owner   mounts.Owner
	env     [][2]string // from Config/locker.env, PORT included
	port    int
	created []string // folders made, parents first
	copied  []string // config files seeded, relative to Config
	made    bool     // the container exists
	held    *heldSetup
}

// Provision makes a new locker for each name: its folders (Me, Config,
// owned by the container's mapped root), its Config seeded from the
// templates, then a container from opts.Template configured with the
// network, halt signal, init, environment (Config/locker.env, and PORT
// handed out from opts.PortBase if that has none), the node bind and the
// layout's mount entries. The containers are left stopped.
//
// Bad input (a name that is not valid, a container or name that exists,
// bad options) is an InvalidError and nothing is done. Otherwise each
// locker either is provisioned completely or, on failure, leaves nothing
// behind: no container, and none of the folders and files this call made.
// The results come back in the order of names.
func (p *Provisioner) Provision(ctx context.Context, names []string, opts Options) ([]LockerResult, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkNames(names); err != nil {
		return nil, err
	}
	owner, err := mounts.OwnerFromIdmap(opts.Idmap)
	if err != nil {
		return nil, InvalidError{err.Error()}
	}
	for _, n := range names {
		_, err := p.host.Info(ctx, n)
		switch {
		case err == nil || errors.Is(err, lxcctl.ErrCannotLoad):
			return nil, invalidf("container %q already exists: use adopt to put it into the layout", n)
		case !errors.Is(err, lxcctl.ErrNotFound):
			return nil, err
		}
	}
	p.portMu.Lock()
	defer p.portMu.Unlock()
	used, err := p.usedPorts(ctx)
	if err != nil {
		return nil, err
	}
	portLimit := 65536
	if opts.PortBase > 0 {
		lo, hi, err := ephemeralRange()
		if err != nil {
			return nil, err
		}
		if opts.PortBase >= lo {
			return nil, invalidf("port base %d is not below the kernel's ephemeral port range %d-%d (net.ipv4.ip_local_port_range): a locker port there can be taken by any outgoing connection; use a base below %d", opts.PortBase, lo, hi, lo)
		}
		portLimit = lo
		ls, err := hostListeners()
		if err != nil {
			return nil, err
		}
		for port := range ls {
			used[port] = true
		}
	}

	results := make([]LockerResult, len(names))
	plans := make([]*lockerPlan, len(names))
	// Folders, config and ports, one locker after the other (cheap, and
	// the port hand-out must see every earlier locker).
	for i, name := range names {
		results[i] = LockerResult{Name: name}
		pl := &lockerPlan{name: name, owner: owner}
		if err := p.prepare(pl, opts, used, portLimit); err != nil {
			p.fail(ctx, &results[i], pl, err)
			continue
		}
		plans[i] = pl
	}
	// Containers, a few at once.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Parallel)
	for i, pl := range plans {
		if pl == nil {
			continue
		}
		g.Go(func() error {
			if err := p.build(gctx, pl, opts); err != nil {
				p.fail(ctx, &results[i], pl, err)
				return nil
			}
			results[i].Outcome = OutcomeProvisioned
			results[i].Port = pl.port
			results[i].Changes = provisionChanges(pl, opts)
			p.log.Info("provisioned locker", "container", pl.name, "port", pl.port)
			return nil
		})
	}
	_ = g.Wait()
	return results, ctx.Err()
}

// provisionChanges describes a provisioned locker for a human.
func provisionChanges(pl *lockerPlan, opts Options) []string {
	out := []string{fmt.Sprintf("created container from template %q", opts.Template)}
	for _, c := range pl.created {
		out = append(out, "created folder "+c)
	}
	for _, c := range pl.copied {
		out = append(out, "seeded Config/"+c)
	}
	return out
}

// fail records a failed locker and undoes what was done for it.
func (p *Provisioner) fail(ctx context.Context, r *LockerResult, pl *lockerPlan, err error) {
	if uerr := p.undo(ctx, pl); uerr != nil {
		err = fmt.Errorf("%w; undoing: %w", err, uerr)
	}
	r.Outcome, r.Err, r.Error = OutcomeFailed, err, err.Error()
	p.log.Error("provisioning failed", "container", pl.name, "err", err)
}

// undo removes the container, the seeded files and the folders a plan
// made, in reverse order. Folders that are not empty any more stay.
func (p *Provisioner) undo(ctx context.Context, pl *lockerPlan) error {
	var errs []error
	if pl.held != nil {
		if err := pl.held.undo(); err != nil {
			errs = append(errs, err)
		}
	}
	if pl.made {
		// A fresh context: a cancelled provision must still clean up.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		if err := p.host.Destroy(dctx, pl.name); err != nil {
			errs = append(errs, err)
		}
		cancel()
		pl.made = false
	}
	if len(pl.copied) > 0 || len(pl.created) > 0 {
		root, err := os.OpenRoot(p.layout.Root)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		defer root.Close()
		rel := func(abs string) string {
			r, _ := filepath.Rel(filepath.Clean(p.layout.Root), abs)
			return r
		}
		cfg := rel(p.layout.ConfigDir(pl.name))
		for _, f := range slices.Backward(pl.copied) {
			if err := root.Remove(filepath.Join(cfg, filepath.FromSlash(f))); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		for _, d := range slices.Backward(pl.created) {
			// lockers/ may hold other lockers by now: it stays.
			if err := root.Remove(rel(d)); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) {
				errs = append(errs, err)
			}
		}
		pl.copied, pl.created = nil, nil
	}
	return errors.Join(errs...)
}

// prepare makes a locker's folders, seeds its Config, reads its
// environment and hands out its port.
func (p *Provisioner) prepare(pl *lockerPlan, opts Options, used map[int]bool, portLimit int) error {
	created, err := p.layout.Provision(pl.name, pl.owner)
	pl.created = created
	if err != nil {
		return err
	}
	if p.layout.Templates != "" {
		copied, err := p.layout.SeedConfig(pl.name, pl.owner)
		pl.copied = copied
		if err != nil {
			return err
		}
	}
	env, err := readLockerEnv(p.layout.ConfigDir(pl.name))
	if err != nil {
		return err
	}
	pl.env = env
	for _, kv := range env {
		if kv[0] == "PORT" {
			port, err := strconv.Atoi(kv[1])
			if err != nil || port < 1 || port > 65535 {
				return fmt.Errorf("locker %q: Config/%s: PORT=%q is not a port", pl.name, LockerEnvFile, kv[1])
			}
			pl.port = port
		}
	}
	if pl.port == 0 && opts.PortBase > 0 {
		port := opts.PortBase
		for used[port] {
			port++
		}
		if port >= portLimit {
			return fmt.Errorf("handing out a port to locker %q: none free from %d below %d (the kernel's ephemeral port range starts there)", pl.name, opts.PortBase, portLimit)
		}
		pl.port = port
		pl.env = append(pl.env, [2]string{"PORT", strconv.Itoa(port)})
	}
	if pl.port != 0 {
		used[pl.port] = true
	}
	if opts.Socket == SocketHeld {
		port := pl.port
		if opts.SocketPort > 0 {
			port = opts.SocketPort
		}
		if port == 0 {
			return fmt.Errorf("locker %q: a held socket needs a port: a PORT in Config/%s, a port base, or a socket port (fixed-port apps)", pl.name, LockerEnvFile)
		}
		hs := newHeldSetup(opts, pl.name, filepath.Dir(p.host.ConfigPath(pl.name)), port, pl.owner)
		pl.held = &hs
	}
	return nil
}

// build creates the container and writes its config.
func (p *Provisioner) build(ctx context.Context, pl *lockerPlan, opts Options) error {
	if err := p.host.Create(ctx, pl.name, opts.Template, opts.TemplateArgs...); err != nil {
		// Create cleans up after itself, but a container that exists now
		// is ours to remove.
		if _, ierr := p.host.Info(context.WithoutCancel(ctx), pl.name); ierr == nil || errors.Is(ierr, lxcctl.ErrCannotLoad) {
			pl.made = true
		}
		return err
	}
	pl.made = true
	if len(opts.Idmap) > 0 {
		if err := p.shiftContainer(pl.name, opts.Idmap); err != nil {
			return err
		}
	}
	if opts.Tini != "" {
		if err := p.initSetup(pl.name, opts.Tini).writeFiles(pl.owner); err != nil {
			return err
		}
	}
	if pl.held != nil {
		if err := pl.held.write(); err != nil {
			return err
		}
	}
	if _, err := p.host.EditConfig(pl.name, func(old []byte) ([]byte, error) {
		return p.render(old, pl, opts)
	}); err != nil {
		return err
	}
	// A config LXC cannot load would leave a container no command can
	// act on: the locker fails and is removed instead.
	if _, err := p.host.Info(ctx, pl.name); err != nil {
		return err
	}
	return nil
}

// initSetup returns how a locker's init is set up with the host's tini.
func (p *Provisioner) initSetup(name, tini string) initSetup {
	return initSetup{tini: tini, ctDir: filepath.Dir(p.host.ConfigPath(name))}
}

// render rewrites a freshly created container's config: the keys
// Provision sets are dropped where the template put them and written after
// the template's lines, then the layout's mount entries are applied.
func (p *Provisioner) render(old []byte, pl *lockerPlan, opts Options) ([]byte, error) {
	drop := func(key, value string) bool {
		switch {
		case opts.Network != NetworkTemplate && strings.HasPrefix(key, "lxc.net."):
		case key == "lxc.signal.halt" || key == "lxc.signal.reboot":
		case key == "lxc.init.cmd" && opts.Init != "":
		case key == "lxc.idmap" && len(opts.Idmap) > 0:
		case key == "lxc.mount.auto" && noSysfs(opts):
		case key == "lxc.environment":
		case key == "lxc.mount.entry" && opts.Node != "" && mounts.EntryTarget(value) == "usr/bin/node":
		case key == "lxc.mount.entry" && opts.Tini != "" && ownsInitTarget(mounts.EntryTarget(value)):
		case key == "lxc.mount.entry" && pl.held != nil && ownsHeldTarget(mounts.EntryTarget(value)):
		case key == "lxc.namespace.share.net" && pl.held != nil:
		default:
			return false
		}
		return true
	}
	var b bytes.Buffer
	b.Write(mounts.DropConfig(old, drop))
	if b.Len() > 0 && !bytes.HasSuffix(b.Bytes(), []byte("\n")) {
		b.WriteByte('\n')
	}
	b.WriteString("\n# lxcfleet provision\n")
	add := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, v) }
	switch {
	case pl.held != nil && pl.held.spec.NetNS != "":
		// The named namespace (loopback up) outlives the locker's
		// restarts, and with it the socket held in it.
		add("lxc.namespace.share.net", pl.held.spec.NetNS)
	case opts.Network != NetworkTemplate:
		add("lxc.net.0.type", opts.Network)
	}
	if opts.Network == NetworkEmpty && pl.held == nil {
		// Measured: "empty" leaves lo down, and nothing (not even the app
		// itself) reaches 127.0.0.1 inside.
		add("lxc.net.0.flags", "up")
	}
	add("lxc.signal.halt", opts.HaltSignal)
	setup := p.initSetup(pl.name, opts.Tini)
	switch {
	case opts.Init != "" && pl.held != nil:
		add("lxc.init.cmd", setup.cmd(pl.held.cmd(opts.Init)))
	case opts.Init != "" && opts.Tini != "":
		add("lxc.init.cmd", setup.cmd(opts.Init))
	case opts.Init != "":
		add("lxc.init.cmd", opts.Init)
	}
	for _, m := range opts.Idmap {
		add("lxc.idmap", m)
	}
	if noSysfs(opts) {
		if auto := mountAutoWithoutSys(old); auto != "" {
			add("lxc.mount.auto", auto)
		}
	}
	add("lxc.environment", "LOCKER="+pl.name)
	for _, kv := range pl.env {
		if kv[0] != "LOCKER" {
			add("lxc.environment", kv[0]+"="+kv[1])
		}
	}
	if opts.Node != "" {
		add("lxc.mount.entry", opts.Node+" usr/bin/node none bind,ro,create=file 0 0")
	}
	if opts.Tini != "" {
		for _, e := range setup.entries() {
			add("lxc.mount.entry", e)
		}
	}
	if pl.held != nil {
		for _, e := range pl.held.entries() {
			add("lxc.mount.entry", e)
		}
	}
	for _, l := range opts.ExtraConfig {
		b.WriteString(l + "\n")
	}
	out, _, err := mounts.ApplyEntries(b.Bytes(), p.layout, pl.name)
	return out, err
}

// noSysfs reports whether a locker cannot mount /sys: an unprivileged
// one on the host's network (its user namespace does not own that network
// namespace, and the kernel refuses it sysfs).
func noSysfs(opts Options) bool { return len(opts.Idmap) > 0 && opts.Network == NetworkNone }

// mountAutoWithoutSys returns a config's lxc.mount.auto (see mountAutoOf)
// without its sys entries ("sys", "sys:ro", "sys:mixed", ...).
func mountAutoWithoutSys(config []byte) string {
	var keep []string
	for _, f := range strings.Fields(mountAutoOf(config)) {
		if f != "sys" && !strings.HasPrefix(f, "sys:") {
			keep = append(keep, f)
		}
	}
	return strings.Join(keep, " ")
}

// mountAutoOf returns the entries of every lxc.mount.auto line of a
// config, space-separated; an empty value clears the earlier ones.
func mountAutoOf(config []byte) string {
	var all []string
	for _, v := range mounts.ConfigValues(config, "lxc.mount.auto") {
		if v == "" {
			all = nil
			continue
		}
		all = append(all, strings.Fields(v)...)
	}
	return strings.Join(all, " ")
}

// envKeyRe is a shell-style environment variable name.
var envKeyRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// readLockerEnv reads Config/locker.env: KEY=VALUE lines, blank lines and
// "#" comments; a missing file is no environment. It is read through an
// os.Root at the Config folder: a symlink out of it is refused.
func readLockerEnv(configDir string) ([][2]string, error) {
	root, err := os.OpenRoot(configDir)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(configDir, LockerEnvFile), err)
	}
	defer root.Close()
	b, err := root.ReadFile(LockerEnvFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	path := filepath.Join(configDir, LockerEnvFile)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var out [][2]string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		k = strings.TrimSpace(k)
		if !ok || !envKeyRe.MatchString(k) {
			return nil, fmt.Errorf("%s line %d: want KEY=VALUE, got %q", path, n, line)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out = append(out, [2]string{k, v})
	}
	return out, sc.Err()
}

// usedPorts returns the PORT of every container of the host.
func (p *Provisioner) usedPorts(ctx context.Context) (map[int]bool, error) {
	used := map[int]bool{}
	for _, n := range p.host.Names() {
		in, err := p.host.Info(ctx, n)
		if errors.Is(err, lxcctl.ErrNotFound) {
			continue
		}
		if err != nil && !errors.Is(err, lxcctl.ErrCannotLoad) { // a broken one keeps its port
			return nil, err
		}
		if port, err := strconv.Atoi(in.Env["PORT"]); err == nil {
			used[port] = true
		}
	}
	return used, nil
}

// idRange is one lxc.idmap line of one kind.
type idRange struct{ ns, host, count int64 }

// parseIdmap splits lxc.idmap values into uid and gid ranges.
func parseIdmap(lines []string) (uids, gids []idRange, err error) {
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 4 {
			return nil, nil, fmt.Errorf("idmap %q: want 4 fields (type nsid hostid range)", l)
		}
		var n [3]int64
		for i, s := range f[1:] {
			if n[i], err = strconv.ParseInt(s, 10, 64); err != nil || n[i] < 0 {
				return nil, nil, fmt.Errorf("idmap %q: %q is not an id", l, s)
			}
		}
		r := idRange{n[0], n[1], n[2]}
		switch f[0] {
		case "u":
			uids = append(uids, r)
		case "g":
			gids = append(gids, r)
		case "b":
			uids, gids = append(uids, r), append(gids, r)
		default:
			return nil, nil, fmt.Errorf("idmap %q: type %q is not u, g or b", l, f[0])
		}
	}
	return uids, gids, nil
}

// mapID returns the host id of a container id.
func mapID(rs []idRange, id int64) (int, bool) {
	for _, r := range rs {
		if id >= r.ns && id < r.ns+r.count {
			return int(r.host + id - r.ns), true
		}
	}
	return 0, false
}

// shiftContainer makes a container created privileged fit its idmap: its
// folder in the lxcpath is given to the mapped root (as lxc-create does for
// an unprivileged container) and every file of its rootfs to the host ids
// its ids map to. Only directory rootfs ("dir:" or a plain path) are
// supported.
func (p *Provisioner) shiftContainer(name string, idmap []string) error {
	uids, gids, err := parseIdmap(idmap)
	if err != nil {
		return err
	}
	rootUID, ok1 := mapID(uids, 0)
	rootGID, ok2 := mapID(gids, 0)
	if !ok1 || !ok2 {
		return fmt.Errorf("idmap %q does not map root", idmap)
	}
	items, err := p.host.ConfigItem(name, "lxc.rootfs.path")
	if err != nil {
		return err
	}
	if len(items) == 0 {
		return fmt.Errorf("shifting container %q to its idmap: it has no lxc.rootfs.path", name)
	}
	rootfs, isDir := strings.CutPrefix(strings.TrimSpace(items[0]), "dir:")
	if !isDir && (!filepath.IsAbs(rootfs) || strings.Contains(rootfs, ":")) {
		return fmt.Errorf("shifting container %q to its idmap: rootfs %q is not a directory rootfs", name, items[0])
	}
	if err := os.Chown(filepath.Dir(p.host.ConfigPath(name)), rootUID, rootGID); err != nil {
		return fmt.Errorf("shifting container %q to its idmap: %w", name, err)
	}
	seen := map[[2]uint64]bool{}
	err = filepath.WalkDir(rootfs, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no owner information", path)
		}
		key := [2]uint64{uint64(st.Dev), st.Ino}
		if seen[key] { // a hard link already shifted
			return nil
		}
		seen[key] = true
		uid, ok1 := mapID(uids, int64(st.Uid))
		gid, ok2 := mapID(gids, int64(st.Gid))
		if !ok1 || !ok2 {
			return fmt.Errorf("%s is owned by %d:%d, which the idmap does not map", path, st.Uid, st.Gid)
		}
		if err := os.Lchown(path, uid, gid); err != nil {
			return err
		}
		// chown clears the setuid and setgid bits: put them back.
		if fi.Mode()&fs.ModeSymlink == 0 && fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
			return os.Chmod(path, fi.Mode())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("shifting the rootfs of container %q to its idmap: %w", name, err)
	}
	return nil
}

// ownerOf returns the owner of a container's folders from its lxc.idmap.
func (p *Provisioner) ownerOf(name string) (mounts.Owner, error) {
	items, err := p.host.ConfigItem(name, "lxc.idmap")
	if err != nil {
		return mounts.Owner{}, err
	}
	var idmap []string // go-lxc returns [""] for a key that is not set
	for _, it := range items {
		if strings.TrimSpace(it) != "" {
			idmap = append(idmap, it)
		}
	}
	o, err := mounts.OwnerFromIdmap(idmap)
	if err != nil {
		return o, fmt.Errorf("container %q: %w", name, err)
	}
	return o, nil
}

// existing checks that names are valid and are containers of the host, and
// returns their infos. Unknown names are an InvalidError.
func (p *Provisioner) existing(ctx context.Context, names []string) ([]lxcctl.Info, error) {
	if err := checkNames(names); err != nil {
		return nil, err
	}
	var infos []lxcctl.Info
	var missing []string
	for _, n := range names {
		in, err := p.host.Info(ctx, n)
		switch {
		case errors.Is(err, lxcctl.ErrNotFound):
			missing = append(missing, n)
		case err != nil && !errors.Is(err, lxcctl.ErrCannotLoad): // Check reports a broken one
			return nil, err
		default:
			infos = append(infos, in)
		}
	}
	if len(missing) > 0 {
		return nil, invalidf("unknown containers: %s", strings.Join(missing, ", "))
	}
	return infos, nil
}

// backupSuffix starts the name of the copy Adopt keeps of a config file.
const backupSuffix = ".lxcfleet-backup-"

// Adopt puts existing containers into the layout: it creates their Me and
// Config folders (owned by the container's mapped root), seeds Config from
// the templates without overwriting anything, and adds the layout's mount
// entries to the config file, keeping every other line. Before the config
// file changes, a copy is saved next to it as
// config.lxcfleet-backup-<time>. Adopting a locker that already matches
// changes nothing and reports OutcomeUnchanged. A running container keeps
// its mounts until it restarts.
//
// Invalid or unknown names are an InvalidError and nothing is done. A
// locker that fails has the folders and files made for it removed again.
func (p *Provisioner) Adopt(ctx context.Context, names []string) ([]LockerResult, error) {
	return p.AdoptWith(ctx, names, AdoptOptions{})
}

// AdoptOptions tune Adopt.
type AdoptOptions struct {
	// ClearStartAuto sets lxc.start.auto = 0 in a container that has it at
	// 1: otherwise lxc.service starts the locker at boot before the agent
	// (one at a time, not in its bounded window) and stops it one at a time
	// at shutdown. Without it Adopt keeps the line and warns in the Note.
	ClearStartAuto bool
	// Tini, when set, is a host file (a static tini, DefaultTini) to run
	// an app init (lxc.init.cmd) under, bound read-only at /sbin/tini, with
	// lxc.signal.halt = SIGTERM. Without it Adopt still replaces a halt
	// signal Node takes as a debugger signal (SIGUSR1) by SIGTERM.
	Tini string
	// Socket is the fleet's [provision] socket. Adopt does not convert a
	// container to held sockets (that rewrites its init, its mounts and,
	// for a fixed-port app, its network): with SocketHeld, a container
	// without a held socket is adopted as it is and its Note says so, and
	// what to do (NotHeldNote).
	Socket string
}

// NotHeldNote is what adopt says of a container it adopts into a fleet
// with held sockets without converting it.
const NotHeldNote = `not converted to held sockets ([provision] socket = "held"): adopt does not rewrite a container's init, mounts or network; its app keeps binding its port, and restarts refuse connections. To convert it: stop it, lxc-destroy it (its Me and Config live in the layout and are kept; anything else in its rootfs is not), then lxcfleet provision it again with the same name and port`

// startsAtBoot reports whether a config makes lxc.service start the
// container at boot (its last lxc.start.auto is 1).
func startsAtBoot(config []byte) bool {
	return mounts.LastConfigValue(config, "lxc.start.auto") == "1"
}

// clearStartAuto turns every lxc.start.auto = 1 line of a config into
// lxc.start.auto = 0, in place.
func clearStartAuto(config []byte) []byte {
	return mounts.EditConfig(config, func(k, v, line string) string {
		if k != "lxc.start.auto" || v != "1" {
			return line
		}
		return "lxc.start.auto = 0" + line[len(strings.TrimRight(line, "\r\n")):]
	})
}

// AdoptWith is Adopt with options.
func (p *Provisioner) AdoptWith(ctx context.Context, names []string, opts AdoptOptions) ([]LockerResult, error) {
	if opts.Tini != "" {
		if err := checkHostFile("tini", opts.Tini); err != nil {
			return nil, err
		}
	}
	infos, err := p.existing(ctx, names)
	if err != nil {
		return nil, err
	}
	results := make([]LockerResult, len(infos))
	for i, in := range infos {
		if err := ctx.Err(); err != nil {
			return results[:i], err
		}
		results[i] = p.adoptOne(ctx, in, opts)
	}
	return results, nil
}

func (p *Provisioner) adoptOne(ctx context.Context, in lxcctl.Info, opts AdoptOptions) LockerResult {
	r := LockerResult{Name: in.Name}
	pl := &lockerPlan{name: in.Name}
	fail := func(err error) LockerResult {
		p.fail(ctx, &r, pl, err)
		return r
	}
	owner, err := p.ownerOf(in.Name)
	if err != nil {
		return fail(err)
	}
	pl.owner = owner
	if pl.created, err = p.layout.Provision(in.Name, owner); err != nil {
		return fail(err)
	}
	if p.layout.Templates != "" {
		if pl.copied, err = p.layout.SeedConfig(in.Name, owner); err != nil {
			return fail(err)
		}
	}
	if opts.Tini != "" {
		// The wrapper and the log folder exist before the config uses them.
		if b, err := os.ReadFile(p.host.ConfigPath(in.Name)); err == nil {
			if f := initFactsOf(b); f.runsApp() && !f.underTini() {
				if err := p.initSetup(in.Name, opts.Tini).writeFiles(owner); err != nil {
					return fail(err)
				}
			}
		}
	}
	backup := ""
	autoStart, clearedAuto := false, false
	var fixChanges []string
	mountsChanged := false
	changed, err := p.host.EditConfig(in.Name, func(old []byte) ([]byte, error) {
		if _, mountsChanged, err = mounts.ApplyEntries(old, p.layout, in.Name); err != nil {
			return old, err
		}
		// The init lines first: the layout's entries stay the file's end.
		fixed, ch := fixInit(old, p.initSetup(in.Name, opts.Tini))
		fixed, netCh := fixNet(fixed)
		ch = append(ch, netCh...)
		fixChanges = ch
		out, changed, err := mounts.ApplyEntries(fixed, p.layout, in.Name)
		if err != nil {
			return old, err
		}
		changed = changed || len(ch) > 0
		if startsAtBoot(out) {
			if opts.ClearStartAuto {
				out = clearStartAuto(out)
				changed, clearedAuto = true, true
			} else {
				autoStart = true
			}
		}
		if !changed {
			return old, nil
		}
		b, err := writeBackup(p.host.ConfigPath(in.Name), old, p.now())
		if err != nil {
			return nil, err
		}
		backup = b
		return out, nil
	})
	if err != nil {
		return fail(err)
	}
	for _, c := range pl.created {
		r.Changes = append(r.Changes, "created folder "+c)
	}
	for _, c := range pl.copied {
		r.Changes = append(r.Changes, "seeded Config/"+c)
	}
	if mountsChanged {
		r.Changes = append(r.Changes, "set the layout's mount entries in "+p.host.ConfigPath(in.Name))
	}
	if changed {
		r.Backup = backup
	}
	if clearedAuto {
		r.Changes = append(r.Changes, "set lxc.start.auto = 0 (the agent starts it at boot, in its window)")
	}
	r.Changes = append(r.Changes, fixChanges...)
	r.Outcome = OutcomeUnchanged
	if len(r.Changes) > 0 {
		r.Outcome = OutcomeAdopted
		if in.State != lxcctl.StateStopped {
			r.Note = "running: the new mounts apply when it restarts"
		}
		p.log.Info("adopted locker", "container", in.Name, "backup", backup)
	}
	if autoStart {
		warn := "lxc.start.auto = 1: lxc.service starts it at boot before the agent (one at a time) and stops it one at a time at shutdown; adopt --clear-start-auto sets it to 0"
		if r.Note != "" {
			warn = r.Note + "; " + warn
		}
		r.Note = warn
		p.log.Warn("adopted locker keeps lxc.start.auto = 1", "container", in.Name)
	}
	if opts.Socket == SocketHeld {
		if _, held, _ := ReadHeldSpec(filepath.Dir(p.host.ConfigPath(in.Name))); !held {
			r.Note = strings.TrimPrefix(r.Note+"; "+NotHeldNote, "; ")
			p.log.Warn("adopted locker keeps binding its own port: adopt does not convert to held sockets", "container", in.Name)
		}
	}
	if port, err := strconv.Atoi(in.Env["PORT"]); err == nil {
		r.Port = port
	}
	return r
}

// writeBackup saves old next to the config file as
// config.lxcfleet-backup-<UTC time>, never over an existing file.
func writeBackup(configPath string, old []byte, now time.Time) (string, error) {
	base := configPath + backupSuffix + now.UTC().Format("20060102T150405Z")
	for i := 0; ; i++ {
		path := base
		if i > 0 {
			path = fmt.Sprintf("%s-%d", base, i)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
		if errors.Is(err, fs.ErrExist) && i < 100 {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("backing up %s: %w", configPath, err)
		}
		if _, err := f.Write(old); err != nil {
			f.Close()
			os.Remove(path)
			return "", fmt.Errorf("backing up %s: %w", configPath, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			os.Remove(path)
			return "", fmt.Errorf("backing up %s: %w", configPath, err)
		}
		return path, f.Close()
	}
}

// Check reports, for each named container (every container of the host
// when names is empty), how its mount entries, folders and their ownership
// deviate from the layout; a halt signal its app cannot handle; an empty
// network with its loopback down; a PORT on the host's network held by
// something other than its own app; for a running one also whether it
// runs without the code mount or from a deleted release. Config template drift is
// reported beside. Invalid or unknown names are an InvalidError.
func (p *Provisioner) Check(ctx context.Context, names []string) ([]CheckResult, error) {
	var infos []lxcctl.Info
	if len(names) == 0 {
		for _, n := range p.host.Names() {
			in, err := p.host.Info(ctx, n)
			if errors.Is(err, lxcctl.ErrNotFound) {
				continue
			}
			if err != nil && !errors.Is(err, lxcctl.ErrCannotLoad) { // reported below
				return nil, err
			}
			infos = append(infos, in)
		}
	} else {
		var err error
		if infos, err = p.existing(ctx, names); err != nil {
			return nil, err
		}
	}
	ls, err := hostListeners()
	if err != nil {
		return nil, err
	}
	out := make([]CheckResult, 0, len(infos))
	for _, in := range infos {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		out = append(out, p.checkOne(in, ls))
	}
	return out, nil
}

func (p *Provisioner) checkOne(in lxcctl.Info, ls listeners) CheckResult {
	r := CheckResult{Name: in.Name, State: string(in.State)}
	if in.Broken() {
		r.Deviations = append(r.Deviations, in.Error)
	}
	config, err := os.ReadFile(p.host.ConfigPath(in.Name))
	if err != nil {
		r.Deviations = append(r.Deviations, fmt.Sprintf("reading its config: %v", err))
	} else {
		r.Deviations = append(r.Deviations, mounts.DeviationsInConfig(config, p.layout, in.Name)...)
		r.Deviations = append(r.Deviations, haltDeviations(initFactsOf(config))...)
		r.Deviations = append(r.Deviations, netDeviations(config)...)
		// A held socket's port is the holder's (and its app's copy).
		if held, isHeld := heldDeviations(filepath.Dir(p.host.ConfigPath(in.Name)), ls); isHeld {
			r.Deviations = append(r.Deviations, held...)
		} else {
			r.Deviations = append(r.Deviations, portDeviations(in, config, ls)...)
		}
	}
	owner, err := p.ownerOf(in.Name)
	if err != nil && !errors.Is(err, lxcctl.ErrCannotLoad) { // said above
		r.Deviations = append(r.Deviations, err.Error())
	}
	folders := p.layout.CheckFolders(in.Name, owner)
	r.Deviations = append(r.Deviations, folders...)
	if p.layout.Templates != "" && len(folders) == 0 {
		drift, err := p.layout.ConfigDrift(in.Name)
		if err != nil {
			r.Deviations = append(r.Deviations, err.Error())
		}
		r.Drift = drift
	}
	if in.InitPID > 0 {
		rel, deleted, err := mounts.ReleaseOfPID(in.InitPID, p.layout)
		switch {
		case errors.Is(err, mounts.ErrNoAppMount):
			r.Deviations = append(r.Deviations, fmt.Sprintf("running without the code mount at /%s: restart it to apply the layout", strings.Trim(p.layout.AppPath, "/")))
		case err != nil:
			p.log.Debug("no release for running locker", "container", in.Name, "err", err)
		default:
			r.Release, r.ReleaseDeleted = rel, deleted
			if deleted {
				r.Deviations = append(r.Deviations, fmt.Sprintf("runs release %s, whose folder was deleted: restart it", rel))
			}
		}
	}
	return r
}
