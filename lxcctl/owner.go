package lxcctl

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"

	"lxcfleet/internal/procsock"
)

// This file matches the socket that answered a health probe to the
// container it was meant for. A probe of 127.0.0.1:PORT is answered by
// whatever listens there: after a locker's app died with EADDRINUSE, or
// while the locker is stopped, another process of the host holding the port
// answers it, and the dead locker would count as healthy. So an HTTP or TCP
// check passes only when a listening socket that takes the probe's
// connection is held by a process of the container (its init or one of
// the init's descendants), and an exec check of a container on the host's
// network only when its PORT is not held by others alone.

// ErrForeignListener is wrapped by a health check error when the socket
// answering the probe is not held by a process of the container.
var ErrForeignListener = errors.New("answered by a process outside the container")

// checkAnswerOwner checks that the listening socket that accepts TCP
// connections to remote (the address a probe connected to, IP and port) is
// held by a process of the container whose init is initPID. The socket is
// looked for in the network namespace the connection went to: the caller's
// own when the container shares it or remote is a loopback address,
// otherwise the container's first. It returns nil when a process of the
// container holds it, and an error wrapping ErrForeignListener naming the
// holders (pid and command) when it is held by others, or by no process
// the caller can see. initPID 0 (a container not running) never passes.
func checkAnswerOwner(name string, initPID int, remote net.Addr) error {
	ta, ok := remote.(*net.TCPAddr)
	if !ok || ta == nil {
		return fmt.Errorf("matching the answer of container %q's health check to its owner: %v is not a TCP address", name, remote)
	}
	inodes, err := answeringListeners(initPID, ta)
	if err != nil {
		return fmt.Errorf("matching the answer of container %q's health check on %s to its owner: %w", name, ta, err)
	}
	if len(inodes) == 0 {
		return fmt.Errorf("health check of container %q on %s: no listening socket takes it any more: %w", name, ta, ErrForeignListener)
	}
	if initPID > 0 && ownerCache.proven(initPID, inodes) {
		return nil
	}
	if initPID > 0 {
		if h, ok := procsock.FindHolder(procsock.Descendants(initPID), inodes); ok {
			ownerCache.remember(initPID, h)
			return nil
		}
	}
	who := "no process lxcfleet can see"
	owners := socketHolders(inodes)
	if len(owners) > 0 {
		who = strings.Join(owners, ", ")
	}
	note := heldNote(owners)
	if initPID <= 0 {
		note = " (the container is not running)"
	}
	return fmt.Errorf("health check of container %q: port %d (%s) is held by %s, not by the container's app%s: %w", name, ta.Port, ta.IP, who, note, ErrForeignListener)
}

// ownerProofs remembers, per container init, the process and descriptor
// found holding the listening socket that answered its last check: a
// locker's health is checked every 500 ms through its monitor window, and
// the whole proof (the init's descendants, then every descriptor of each)
// was most of the agent's CPU in an offline update of 300 lockers (perf,
// 2026-12-06: the owner check 52 % of the agent's samples). A later check
// answered by the same socket (the same inode, which the kernel never gives
// two live sockets) passes when that process's descriptor is still that
// socket: one readlink. Any other answer, or a holder gone (the app died:
// a socket still held by the host's holder alone does not pass), takes the
// whole proof again.
type ownerProofs struct {
	mu sync.Mutex
	by map[int]procsock.Holder // init pid -> holder of the socket that answered
}

// ownerCache is the host-wide cache of proofs (a package variable: the checks
// of every Host in the process share one /proc).
var ownerCache = &ownerProofs{by: map[int]procsock.Holder{}}

// maxOwnerProofs bounds the cache: an init pid whose container restarted
// is never asked again, so the cache is cleared when it grows past this.
const maxOwnerProofs = 4096

// proven reports whether the proof remembered for initPID still holds for
// a socket among inodes.
func (o *ownerProofs) proven(initPID int, inodes map[uint64]bool) bool {
	o.mu.Lock()
	h, ok := o.by[initPID]
	o.mu.Unlock()
	if !ok || !inodes[h.Inode] {
		return false
	}
	if procsock.StillHolds(h) {
		return true
	}
	o.mu.Lock()
	delete(o.by, initPID)
	o.mu.Unlock()
	return false
}

// remember records h as the holder proven for initPID.
func (o *ownerProofs) remember(initPID int, h procsock.Holder) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.by) >= maxOwnerProofs {
		clear(o.by)
	}
	o.by[initPID] = h
}

// checkPortOwner checks, for a container on the caller's network
// namespace (the host's network) with a PORT, that the sockets listening on
// that port, if any, include one a process of the container holds: an exec
// check run inside such a container reaches the host's sockets, so a
// squatter on its PORT would answer it. No listener at all passes (the
// exec check decides); listeners held only by others give an error
// wrapping ErrForeignListener naming them. A container with a network
// namespace of its own, or without a PORT, passes.
func checkPortOwner(name string, initPID int, env map[string]string) error {
	port, err := strconv.Atoi(env["PORT"])
	if err != nil || port <= 0 || initPID <= 0 || !sameNetNS(initPID) {
		return nil
	}
	ls, err := netlinkListeners(port)
	if err != nil {
		if ls, err = procListeners("/proc/self"); err != nil {
			return fmt.Errorf("matching the PORT %d of container %q to its owner: %w", port, name, err)
		}
	}
	inodes := map[uint64]bool{}
	for _, l := range ls {
		if l.port == port {
			inodes[l.inode] = true
		}
	}
	if len(inodes) == 0 || procsock.HoldsAny(procsock.Descendants(initPID), inodes) {
		return nil
	}
	who := "no process lxcfleet can see"
	if owners := socketHolders(inodes); len(owners) > 0 {
		who = strings.Join(owners, ", ")
	}
	return fmt.Errorf("health check of container %q: its PORT %d (host network) is held by %s, not by the container's app: %w", name, port, who, ErrForeignListener)
}

// answeringListeners returns the inodes of the listening sockets that take
// connections to ta: those bound to ta's address exactly or, when there are
// none, those bound to the wildcard address, in the network namespace the
// connection reached (the caller's own through sock_diag, the container's
// through /proc/PID/net/tcp{,6}).
func answeringListeners(initPID int, ta *net.TCPAddr) (map[uint64]bool, error) {
	var spaces []func() ([]listener, error)
	if initPID > 0 && !ta.IP.IsLoopback() && !sameNetNS(initPID) {
		// A container in a network namespace of its own, probed on an
		// address of its own (a veth): its listeners first.
		spaces = append(spaces, func() ([]listener, error) { return procListeners("/proc/" + strconv.Itoa(initPID)) })
	}
	spaces = append(spaces, func() ([]listener, error) {
		ls, err := netlinkListeners(ta.Port)
		if err != nil { // no sock_diag in this kernel: the slow way
			return procListeners("/proc/self")
		}
		return ls, nil
	})
	for _, read := range spaces {
		ls, err := read()
		if err != nil {
			return nil, err
		}
		exact, wild := map[uint64]bool{}, map[uint64]bool{}
		for _, l := range ls {
			switch {
			case l.port != ta.Port:
			case l.ip.Equal(ta.IP):
				exact[l.inode] = true
			case l.ip.IsUnspecified():
				wild[l.inode] = true
			}
		}
		if len(exact) > 0 {
			return exact, nil
		}
		if len(wild) > 0 {
			return wild, nil
		}
	}
	return nil, nil
}

// procListeners reads the listening sockets of a process's network
// namespace (dir is /proc/PID or /proc/self).
func procListeners(dir string) ([]listener, error) {
	ls, err := procsock.Listeners(dir)
	if err != nil {
		return nil, err
	}
	out := make([]listener, len(ls))
	for i, l := range ls {
		out[i] = listener{ip: l.IP, port: l.Port, inode: l.Inode}
	}
	return out, nil
}

// sameNetNS reports whether the process initPID shares the caller's
// network namespace (a locker on the host network).
func sameNetNS(initPID int) bool { return procsock.SameNamespace("net", 0, initPID) }

// socketHolders names the processes holding one of inodes ("pid N
// (comm)"), at most 5; it reads every process's open files.
func socketHolders(inodes map[uint64]bool) []string {
	var out []string
	for _, hs := range procsock.Holders(inodes, 5) {
		for _, h := range hs {
			out = append(out, h.String())
		}
	}
	sort.Strings(out)
	return out
}
