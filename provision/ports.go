package provision

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"lxcfleet/internal/procsock"
	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
)

// ephemeralRangeFile holds the kernel's range of source ports for outgoing
// connections (net.ipv4.ip_local_port_range, for IPv6 too).
const ephemeralRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

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

// hostListeners reads the host's listening sockets (procsock).
func hostListeners() (listeners, error) {
	ls, err := procsock.Listeners("/proc/self")
	if err != nil {
		return nil, err
	}
	out := listeners{}
	for _, l := range ls {
		out[l.Port] = append(out[l.Port], l.Inode)
	}
	return out, nil
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
	for _, holders := range procsock.Holders(inodes, 0) {
		for _, h := range holders {
			if in.InitPID > 0 && procsock.SameNamespace("pid", h.PID, in.InitPID) {
				own = true
				continue
			}
			others = append(others, h.String())
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
