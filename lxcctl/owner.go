package lxcctl

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/procfs"
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

// tcpStateListen is the state of a listening socket in /proc/net/tcp{,6}.
const tcpStateListen = 0x0A

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
	if initPID > 0 && holdsAny(containerPIDs(initPID), inodes) {
		return nil
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
	ls, err := netlinkListeners()
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
	if len(inodes) == 0 || holdsAny(containerPIDs(initPID), inodes) {
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
	if initPID > 0 && !sameNetNS(initPID) && !ta.IP.IsLoopback() {
		// A container in a network namespace of its own, probed on an
		// address of its own (a veth): its listeners first.
		spaces = append(spaces, func() ([]listener, error) { return procListeners("/proc/" + strconv.Itoa(initPID)) })
	}
	spaces = append(spaces, func() ([]listener, error) {
		ls, err := netlinkListeners()
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
// namespace from dir/net/tcp and dir/net/tcp6 (dir is /proc/PID).
func procListeners(dir string) ([]listener, error) {
	pfs, err := procfs.NewFS(dir)
	if err != nil {
		return nil, fmt.Errorf("reading listening sockets in %s: %w", dir, err)
	}
	var out []listener
	for _, read := range []func() (procfs.NetTCP, error){pfs.NetTCP, pfs.NetTCP6} {
		lines, err := read()
		if errors.Is(err, fs.ErrNotExist) { // no IPv6
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading listening sockets in %s: %w", dir, err)
		}
		for _, l := range lines {
			if l.St == tcpStateListen {
				out = append(out, listener{ip: l.LocalAddr, port: int(l.LocalPort), inode: l.Inode})
			}
		}
	}
	return out, nil
}

// sameNetNS reports whether the process initPID shares the caller's
// network namespace (a locker on the host network).
func sameNetNS(initPID int) bool {
	a, err1 := os.Readlink("/proc/self/ns/net")
	b, err2 := os.Readlink("/proc/" + strconv.Itoa(initPID) + "/ns/net")
	return err1 == nil && err2 == nil && a == b
}

// containerPIDs returns the container's init and every descendant of it,
// read from /proc/PID/task/TID/children. Where the kernel has no children
// files, it falls back to every process in the init's pid namespace.
func containerPIDs(initPID int) []int {
	pids := []int{initPID}
	seen := map[int]bool{initPID: true}
	for i := 0; i < len(pids); i++ {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pids[i]))
		if err != nil {
			continue // gone
		}
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pids[i], t.Name()))
			if errors.Is(err, fs.ErrNotExist) {
				return pidNamespaceMembers(initPID)
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil && !seen[c] {
					seen[c] = true
					pids = append(pids, c)
				}
			}
		}
	}
	return pids
}

// pidNamespaceMembers returns the processes in initPID's pid namespace.
func pidNamespaceMembers(initPID int) []int {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", initPID))
	if err != nil {
		return nil
	}
	var out []int
	for _, pid := range allPIDs() {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && l == ns {
			out = append(out, pid)
		}
	}
	return out
}

// allPIDs lists the processes of /proc.
func allPIDs() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// socketInodesOf returns the socket inodes among pid's open files.
func socketInodesOf(pid int) []uint64 {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil // gone, or a kernel thread
	}
	var out []uint64
	for _, e := range ents {
		t, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		s, ok := strings.CutPrefix(t, "socket:[")
		if !ok {
			continue
		}
		if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
			out = append(out, ino)
		}
	}
	return out
}

// holdsAny reports whether one of pids holds one of inodes.
func holdsAny(pids []int, inodes map[uint64]bool) bool {
	for _, pid := range pids {
		for _, ino := range socketInodesOf(pid) {
			if inodes[ino] {
				return true
			}
		}
	}
	return false
}

// socketHolders names the processes holding one of inodes ("pid N
// (comm)"), at most 5; it reads every process's open files.
func socketHolders(inodes map[uint64]bool) []string {
	var out []string
	for _, pid := range allPIDs() {
		for _, ino := range socketInodesOf(pid) {
			if !inodes[ino] {
				continue
			}
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			out = append(out, fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(string(comm))))
			break
		}
		if len(out) == 5 {
			break
		}
	}
	return out
}
