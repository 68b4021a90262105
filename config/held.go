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
