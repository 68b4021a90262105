package config

import (
	"context"
	"path/filepath"

	"lxcfleet/heldsock"
	"lxcfleet/lxcctl"
	"lxcfleet/provision"
)

// DefaultHolderDir is the socket holder's folder: its control socket,
// pid file and log (provision.holder_dir).
const DefaultHolderDir = "/run/lxcfleet-holder"

// Holder returns the client of the host's socket holder: it starts the
// holder (provision.listenfd hold) in a session of its own when none runs.
func (c File) Holder() *heldsock.Client {
	dir := c.Provision.HolderDir
	if dir == "" {
		dir = DefaultHolderDir
	}
	return &heldsock.Client{Dir: dir, Binary: c.Provision.ListenFD}
}

// holdSocket returns the hook every start of a container runs first: a
// locker with a held socket has it held (provision.HoldSocket), others
// are left alone. *h is the host, set once it is made.
func (c File) holdSocket(h **lxcctl.Host) func(ctx context.Context, name string) error {
	holder := c.Holder()
	return func(ctx context.Context, name string) error {
		return provision.HoldSocket(ctx, holder, filepath.Dir((*h).ConfigPath(name)))
	}
}

// heldSockets is the agent's view of the host's held sockets (sleeping
// lockers): each locker's spec from its container folder, and the
// holder's watch.
type heldSockets struct {
	host   *lxcctl.Host
	holder *heldsock.Client
}

// Specs reads the held socket spec of every container that has one.
func (h heldSockets) Specs() (map[string]heldsock.Spec, error) {
	out := map[string]heldsock.Spec{}
	for _, n := range h.host.Names() {
		s, ok, err := provision.ReadHeldSpec(filepath.Dir(h.host.ConfigPath(n)))
		if err != nil {
			return nil, err
		}
		if ok {
			out[n] = s
		}
	}
	return out, nil
}

// Watch reports sleeping lockers' pending connections (the holder's).
func (h heldSockets) Watch(ctx context.Context, names []string) (<-chan string, error) {
	return h.holder.Watch(ctx, names)
}
