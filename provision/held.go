package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"lxcfleet/heldsock"
	"lxcfleet/internal/atomicfile"
	"lxcfleet/internal/procsock"
	"lxcfleet/mounts"
)

// The ways a locker's app gets its listening socket (Options.Socket).
const (
	// SocketApp: the app binds its port itself at each start (the
	// default); a restart refuses connections until it listens again.
	SocketApp = "app"
	// SocketHeld: the host's socket holder makes the socket once and
	// keeps it for the locker's whole life; the app gets it at fd 3 with
	// LISTEN_FDS=1 (see package heldsock). A restart queues connections.
	SocketHeld = "held"
)

// DefaultListenFD is where the Debian package installs lxcfleet-listenfd.
const DefaultListenFD = "/usr/libexec/lxcfleet/lxcfleet-listenfd"

// DefaultSocketAddress is the address held sockets bind by default.
const DefaultSocketAddress = "127.0.0.1"

// Where a held-socket locker's pieces are: the helper bound read-only in
// the container, the holder's per-locker folder in the container's folder
// of the lxcpath (bound at heldTarget, where the helper looks by default),
// and the socket's spec beside it (not bound: the container cannot change
// what the holder makes).
const (
	listenFDTarget = "sbin/lxcfleet-listenfd"
	heldDirName    = "held"
	heldTarget     = "run/lxcfleet"
	heldSpecName   = "held.json"
)

// NetNSName is the named network namespace a held-socket locker with a
// network of its own joins (lxc.namespace.share.net): made once, it
// outlives the locker's restarts, and so does the socket held in it.
func NetNSName(locker string) string { return "lxcfleet-" + locker }

// heldSetup is how a locker gets its held socket.
type heldSetup struct {
	listenfd string // the host's lxcfleet-listenfd
	ctDir    string // the container's folder of the lxcpath
	spec     heldsock.Spec
}

// newHeldSetup returns the setup of a locker's held socket on port.
func newHeldSetup(opts Options, name, ctDir string, port int, owner mounts.Owner) heldSetup {
	addr := opts.SocketAddress
	if addr == "" {
		addr = DefaultSocketAddress
	}
	s := heldsock.Spec{Name: name, Dir: filepath.Join(ctDir, heldDirName), Address: addr, Port: port, UID: owner.UID, GID: owner.GID}
	if opts.Network == NetworkEmpty {
		s.NetNS = heldsock.NetNSPath(NetNSName(name))
	}
	return heldSetup{listenfd: opts.ListenFD, ctDir: ctDir, spec: s}
}

// cmd puts the helper in front of the app's command: it fetches the
// socket, sets LISTEN_FDS and execs app.
func (s heldSetup) cmd(app string) string { return "/" + listenFDTarget + " -- " + app }

// entries are the lxc.mount.entry values of the helper and the folder.
func (s heldSetup) entries() []string {
	return []string{
		s.listenfd + " " + listenFDTarget + " none bind,ro,create=file 0 0",
		s.spec.Dir + " " + heldTarget + " none bind,ro,create=dir 0 0",
	}
}

// ownsHeldTarget reports whether a mount target is one of the held
// socket's.
func ownsHeldTarget(target string) bool { return target == listenFDTarget || target == heldTarget }

// write makes the holder's folder (the container's root's, mode 0700) and
// the spec file, and the named network namespace when there is one.
func (s heldSetup) write() error {
	if err := os.MkdirAll(s.spec.Dir, 0o700); err != nil {
		return fmt.Errorf("making held socket folder %s: %w", s.spec.Dir, err)
	}
	if err := os.Chown(s.spec.Dir, s.spec.UID, s.spec.GID); err != nil {
		return fmt.Errorf("making held socket folder %s: %w", s.spec.Dir, err)
	}
	b, err := json.MarshalIndent(s.spec, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(s.ctDir, heldSpecName)
	if err := atomicfile.WriteFile(p, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing held socket spec %s: %w", p, err)
	}
	if s.spec.NetNS != "" {
		return heldsock.EnsureNetNS(filepath.Base(s.spec.NetNS))
	}
	return nil
}

// undo removes the named network namespace a failed provision made.
func (s heldSetup) undo() error {
	if s.spec.NetNS == "" {
		return nil
	}
	return heldsock.RemoveNetNS(filepath.Base(s.spec.NetNS))
}

// ReadHeldSpec reads the held socket spec in a container's folder of the
// lxcpath; ok is false for a locker without a held socket.
func ReadHeldSpec(ctDir string) (spec heldsock.Spec, ok bool, err error) {
	p := filepath.Join(ctDir, heldSpecName)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return spec, false, nil
	}
	if err != nil {
		return spec, false, fmt.Errorf("reading held socket spec %s: %w", p, err)
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return spec, false, fmt.Errorf("reading held socket spec %s: %w", p, err)
	}
	return spec, true, nil
}

// HoldSocket makes sure the holder holds the socket of the locker whose
// container folder is ctDir: its named network namespace first (after a
// reboot /run/netns is empty), then the holder's Hold (idempotent; it
// starts the holder when none runs). A locker without a held socket is
// left alone. It is what a Host with held sockets runs before each start
// (lxcctl.Options.BeforeStart).
func HoldSocket(ctx context.Context, c *heldsock.Client, ctDir string) error {
	spec, ok, err := ReadHeldSpec(ctDir)
	if err != nil || !ok {
		return err
	}
	if spec.NetNS != "" {
		if err := heldsock.EnsureNetNS(filepath.Base(spec.NetNS)); err != nil {
			return err
		}
	}
	_, err = c.Hold(ctx, spec)
	return err
}

// heldDeviations reports, for a held-socket locker (held false for
// another), a socket the holder does not serve (no holder, or it lost the
// socket: the next start holds it again, but until then a connection is
// refused), one on another port than its spec's, and, on the host's
// network, another socket listening on its port beside the held one.
func heldDeviations(ctDir string, ls listeners) (out []string, held bool) {
	spec, ok, err := ReadHeldSpec(ctDir)
	if err != nil {
		return []string{err.Error()}, true
	}
	if !ok {
		return nil, false
	}
	f, err := heldsock.Fetch(filepath.Join(spec.Dir, heldsock.SocketFile))
	if err != nil {
		return []string{fmt.Sprintf("held socket missing: %v (connections to port %d are refused until the socket holder holds it again: start or restart the locker)", err, spec.Port)}, true
	}
	defer f.Close()
	port, listening, err := heldsock.Describe(f)
	if err != nil {
		return []string{fmt.Sprintf("held socket: %v", err)}, true
	}
	if !listening || port != spec.Port {
		return []string{fmt.Sprintf("held socket: the holder serves a socket on port %d (listening: %v), its spec says %d", port, listening, spec.Port)}, true
	}
	ino, err := heldsock.Inode(f)
	if err != nil || spec.NetNS != "" {
		return nil, true
	}
	others := map[uint64]bool{}
	for _, i := range ls[spec.Port] {
		if i != ino {
			others[i] = true
		}
	}
	if len(others) == 0 {
		return nil, true
	}
	var who []string
	for _, holders := range procsock.Holders(others, 0) {
		for _, h := range holders {
			who = append(who, h.String())
		}
	}
	if len(who) == 0 {
		who = []string{"a process lxcfleet cannot see"}
	}
	return []string{fmt.Sprintf("port %d: besides its held socket, another socket listens there, held by %s (SO_REUSEPORT: it takes a share of the connections)", spec.Port, strings.Join(who, ", "))}, true
}

// checkHeldOptions validates the held socket options.
func checkHeldOptions(o Options) error {
	switch o.Socket {
	case "", SocketApp:
		return nil
	case SocketHeld:
	default:
		return invalidf("socket %q: want %s or %s", o.Socket, SocketApp, SocketHeld)
	}
	switch {
	case o.Network == NetworkTemplate:
		return invalidf("socket %q needs network %s or %s (the template's network is made anew at each start, and a socket held in it would not outlive it)", SocketHeld, NetworkNone, NetworkEmpty)
	case o.Tini == "" || o.Init == "":
		return invalidf("socket %q needs tini and an init command (the helper runs in front of the app under tini)", SocketHeld)
	case o.SocketPort < 0 || o.SocketPort > 65535:
		return invalidf("socket port %d: want 1-65535, or 0 for the locker's PORT", o.SocketPort)
	case o.SocketAddress != "" && net.ParseIP(o.SocketAddress) == nil:
		return invalidf("socket address %q is not an IP address (e.g. 127.0.0.1, 0.0.0.0, ::)", o.SocketAddress)
	}
	if o.ListenFD == "" {
		return invalidf("socket %q needs lxcfleet-listenfd on this host (listenfd, default %s)", SocketHeld, DefaultListenFD)
	}
	return checkHostFile("listenfd", o.ListenFD)
}
