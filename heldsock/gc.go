package heldsock

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// gcInterval is how often the holder looks for lockers that are gone.
const gcInterval = 30 * time.Second

// gone reports whether the locker of s was destroyed: its container's
// folder (the parent of s.Dir, in the lxcpath) has no config any more.
// lxc-destroy, not lxcfleet, destroys lockers, so the holder looks.
func (s Spec) gone() bool {
	_, err := os.Stat(filepath.Join(filepath.Dir(s.Dir), "config"))
	return errors.Is(err, fs.ErrNotExist)
}

// gc releases the sockets of destroyed lockers, and removes their named
// network namespaces: the port is free again for a new locker.
func (h *Holder) gc() {
	h.mu.Lock()
	var gone []Spec
	for _, x := range h.held {
		if x.spec.gone() {
			gone = append(gone, x.spec)
		}
	}
	h.mu.Unlock()
	for _, s := range gone {
		h.log.Info("locker destroyed: releasing its socket", "container", s.Name, "addr", s.addr())
		h.Release(s.Name)
		if s.NetNS != "" {
			if err := RemoveNetNS(filepath.Base(s.NetNS)); err != nil {
				h.log.Warn("removing a destroyed locker's network namespace", "container", s.Name, "err", err)
			}
		}
	}
}

// gcLoop runs gc every gcInterval until ctx ends.
func (h *Holder) gcLoop(ctx context.Context) {
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.gc()
		}
	}
}
