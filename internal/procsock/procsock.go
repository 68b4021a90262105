package procsock

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

// StateListen is the kernel's TCP_LISTEN, the state of a listening socket
// as /proc/net/tcp{,6} and sock_diag give it.
const StateListen = 0x0A

// Listener is a listening TCP socket: its address, port and inode.
type Listener struct {
	IP    net.IP
	Port  int
	Inode uint64
}

// Listeners returns the listening TCP sockets (IPv4 and IPv6) of the
// network namespace that dir's net/tcp{,6} show: dir is a proc directory
// such as "/proc/self", "/proc/thread-self" (the calling thread's
// namespace, after a setns) or "/proc/PID". A kernel without IPv6 gives
// the IPv4 ones. Errors name dir.
func Listeners(dir string) ([]Listener, error) {
	pfs, err := procfs.NewFS(dir)
	if err != nil {
		return nil, fmt.Errorf("reading listening sockets in %s: %w", dir, err)
	}
	var out []Listener
	for _, read := range []func() (procfs.NetTCP, error){pfs.NetTCP, pfs.NetTCP6} {
		lines, err := read()
		if errors.Is(err, fs.ErrNotExist) { // no IPv6
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading listening sockets in %s: %w", dir, err)
		}
		for _, l := range lines {
			if l.St == StateListen {
				out = append(out, Listener{IP: l.LocalAddr, Port: int(l.LocalPort), Inode: l.Inode})
			}
		}
	}
	return out, nil
}

// Holder is a process holding a socket: its pid, the descriptor number in
// it, and its command name (/proc/PID/comm).
type Holder struct {
	PID  int
	FD   int
	Comm string
	// Inode is the socket held (set by FindHolder).
	Inode uint64
}

// String is "pid N (comm)", as error messages name a holder.
func (h Holder) String() string { return fmt.Sprintf("pid %d (%s)", h.PID, h.Comm) }

// Holders maps each of inodes to the processes holding it, walking every
// process's descriptors once; a process with no permission to read, or
// gone meanwhile, is skipped. With limit > 0 it stops after finding that
// many holders in all.
func Holders(inodes map[uint64]bool, limit int) map[uint64][]Holder {
	out := map[uint64][]Holder{}
	procs, err := procfs.AllProcs()
	if err != nil {
		return out
	}
	found := 0
	for _, p := range procs {
		for fd, ino := range socketFDs(p.PID) {
			if !inodes[ino] {
				continue
			}
			comm, _ := p.Comm()
			out[ino] = append(out[ino], Holder{PID: p.PID, FD: fd, Comm: comm})
			if found++; limit > 0 && found >= limit {
				return out
			}
		}
	}
	return out
}

// HoldsAny reports whether one of pids holds one of inodes.
func HoldsAny(pids []int, inodes map[uint64]bool) bool {
	_, ok := FindHolder(pids, inodes)
	return ok
}

// FindHolder returns the first of pids found holding one of inodes: its
// pid, the descriptor and the socket's inode (Holder.Comm is left empty).
func FindHolder(pids []int, inodes map[uint64]bool) (Holder, bool) {
	for _, pid := range pids {
		for fd, ino := range socketFDs(pid) {
			if inodes[ino] {
				return Holder{PID: pid, FD: fd, Inode: ino}, true
			}
		}
	}
	return Holder{}, false
}

// StillHolds reports whether h.PID's descriptor h.FD is still the socket
// h.Inode: one readlink, where FindHolder reads every descriptor of every
// process it is given.
func StillHolds(h Holder) bool {
	t, err := os.Readlink("/proc/" + strconv.Itoa(h.PID) + "/fd/" + strconv.Itoa(h.FD))
	return err == nil && t == "socket:["+strconv.FormatUint(h.Inode, 10)+"]"
}

// socketFDs maps pid's descriptors that are sockets to their inodes
// (nil for a process gone, or a kernel thread).
func socketFDs(pid int) map[int]uint64 {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return nil
	}
	fds, err := p.FileDescriptors()
	if err != nil {
		return nil
	}
	var out map[int]uint64
	for _, fd := range fds {
		t, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + strconv.Itoa(int(fd)))
		if err != nil {
			continue
		}
		s, ok := strings.CutPrefix(t, "socket:[")
		if !ok {
			continue
		}
		if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
			if out == nil {
				out = map[int]uint64{}
			}
			out[int(fd)] = ino
		}
	}
	return out
}

// SameNamespace reports whether processes a and b share their namespace
// of kind ("net", "pid", as /proc/PID/ns names them); pid 0 is the
// caller. It is false when either cannot be read.
func SameNamespace(kind string, a, b int) bool {
	na, err1 := namespace(kind, a)
	nb, err2 := namespace(kind, b)
	return err1 == nil && err2 == nil && na == nb
}

func namespace(kind string, pid int) (uint32, error) {
	var p procfs.Proc
	var err error
	if pid == 0 {
		p, err = procfs.Self()
	} else {
		p, err = procfs.NewProc(pid)
	}
	if err != nil {
		return 0, err
	}
	ns, err := p.Namespaces()
	if err != nil {
		return 0, err
	}
	n, ok := ns[kind]
	if !ok {
		return 0, fmt.Errorf("reading the %s namespace of pid %d: not listed", kind, pid)
	}
	return n.Inode, nil
}

// Descendants returns pid and every process descended from it, read
// from /proc/PID/task/TID/children: a few reads for a container's few
// processes, where the parent pids of every process's stat would be
// hundreds on a host of lockers (procfs has no reader for the children
// files). Where the kernel has no children files it returns every process
// in pid's pid namespace, which for a container's init is the same set.
func Descendants(pid int) []int {
	pids := []int{pid}
	seen := map[int]bool{pid: true}
	for i := 0; i < len(pids); i++ {
		tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pids[i]) + "/task")
		if err != nil {
			continue // gone
		}
		for _, t := range tasks {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(pids[i]) + "/task/" + t.Name() + "/children")
			if errors.Is(err, fs.ErrNotExist) {
				return namespaceMembers("pid", pid)
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

// namespaceMembers returns the processes sharing pid's namespace of kind.
func namespaceMembers(kind string, pid int) []int {
	want, err := namespace(kind, pid)
	if err != nil {
		return nil
	}
	procs, err := procfs.AllProcs()
	if err != nil {
		return nil
	}
	var out []int
	for _, p := range procs {
		if ns, err := p.Namespaces(); err == nil && ns[kind].Inode == want {
			out = append(out, p.PID)
		}
	}
	return out
}
