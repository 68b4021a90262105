package provision

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/procfs"

	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
)

// ephemeralRangeFile holds the kernel's range of source ports for outgoing
// connections (net.ipv4.ip_local_port_range, for IPv6 too).
const ephemeralRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// tcpListen is the state of a listening socket in /proc/net/tcp{,6}.
const tcpListen = 0x0A

// ephemeralRange returns the kernel's ephemeral port range. A port in it
// can be taken, before a locker binds it, as the source port of any
// outgoing connection (the health checks' own among them).
func ephemeralRange() (lo, hi int, err error) {
	b, err := os.ReadFile(ephemeralRangeFile)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the ephemeral port range: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("reading the ephemeral port range: %s holds %q, want two ports", ephemeralRangeFile, b)
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || lo > hi {
		return 0, 0, fmt.Errorf("reading the ephemeral port range: %s holds %q, want two ports", ephemeralRangeFile, b)
	}
	return lo, hi, nil
}

// listeners are the host's listening TCP sockets (IPv4 and IPv6, of the
// host's network namespace): port -> socket inodes.
type listeners map[int][]uint64

// hostListeners reads /proc/net/tcp and /proc/net/tcp6.
func hostListeners() (listeners, error) {
	pfs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil, fmt.Errorf("reading listening sockets: %w", err)
	}
	out := listeners{}
	for _, read := range []func() (procfs.NetTCP, error){pfs.NetTCP, pfs.NetTCP6} {
		lines, err := read()
		if errors.Is(err, fs.ErrNotExist) { // no IPv6
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading listening sockets: %w", err)
		}
		for _, l := range lines {
			if l.St == tcpListen {
				out[int(l.LocalPort)] = append(out[int(l.LocalPort)], l.Inode)
			}
		}
	}
	return out, nil
}

// socketOwner is a process holding a socket.
type socketOwner struct {
	pid  int
	comm string
}

// socketOwners maps socket inodes to the processes holding them, for the
// inodes asked for only (it walks every process's fds once).
func socketOwners(inodes map[uint64]bool) map[uint64][]socketOwner {
	out := map[uint64][]socketOwner{}
	pfs, err := procfs.NewDefaultFS()
	if err != nil {
		return out
	}
	procs, err := pfs.AllProcs()
	if err != nil {
		return out
	}
	for _, p := range procs {
		targets, err := p.FileDescriptorTargets()
		if err != nil {
			continue // gone, or a kernel thread
		}
		for _, t := range targets {
			s, ok := strings.CutPrefix(t, "socket:[")
			if !ok {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
			if err != nil || !inodes[ino] {
				continue
			}
			comm, _ := p.Comm()
			out[ino] = append(out[ino], socketOwner{pid: p.PID, comm: comm})
		}
	}
	return out
}

// samePIDNamespace reports whether two processes share a pid namespace.
func samePIDNamespace(a, b int) bool {
	na, err1 := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", a))
	nb, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", b))
	return err1 == nil && err2 == nil && na == nb
}

// sharesHostNetwork reports whether a config puts the container on the
// host's network (lxc.net.0.type = none), where its PORT is a host port.
func sharesHostNetwork(config []byte) bool {
	return mounts.LastConfigValue(config, "lxc.net.0.type") == NetworkNone
}

// portDeviations reports a locker on the host's network whose PORT is
// held by a listening socket of something other than its own app.
func portDeviations(in lxcctl.Info, config []byte, ls listeners) []string {
	port, err := strconv.Atoi(in.Env["PORT"])
	if err != nil || !sharesHostNetwork(config) || len(ls[port]) == 0 {
		return nil
	}
	inodes := map[uint64]bool{}
	for _, ino := range ls[port] {
		inodes[ino] = true
	}
	var others []string
	own := false
	for _, owners := range socketOwners(inodes) {
		for _, o := range owners {
			if in.InitPID > 0 && samePIDNamespace(o.pid, in.InitPID) {
				own = true
				continue
			}
			others = append(others, fmt.Sprintf("pid %d (%s)", o.pid, o.comm))
		}
	}
	if own && len(others) == 0 {
		return nil
	}
	who := "a process lxcfleet cannot see"
	if len(others) > 0 {
		who = strings.Join(others, ", ")
	}
	return []string{fmt.Sprintf("port %d is held by %s, not by its app: the app fails with EADDRINUSE while that process answers its health check", port, who)}
}
