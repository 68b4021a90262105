package heldsock

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// ProbeSource is the address the agent's health probes to a loopback
// address come from (lxcctl dials them from it): Activity does not count
// them, or they would keep an idle locker awake.
const ProbeSource = "127.0.0.2"

// timeWait is how long Linux keeps a closed connection in TIME_WAIT.
const timeWait = 60 * time.Second

// Activity returns, by port, how long ago the most recent connection of a
// network namespace (netns a file such as /run/netns/NAME; "" for the
// caller's) was active on it: 0 for a connection open now, and for a
// connection in TIME_WAIT the time since it closed (60 s minus what its
// timer has left). A port shows under its local port and, for
// connections made on this host (loopback clients, a proxy on the host),
// under its remote port too. Connections from ProbeSource (the agent's
// own health probes) do not count.
//
// It is how the agent tells a locker idle for sleeping lockers (issue 20,
// part 2): a sample every few seconds sees each connection while it is
// open and for 60 s after the side that closed first left it in
// TIME_WAIT (the app, for HTTP/1.0 and idle keep-alive connections; a
// client on this host otherwise), so short requests between two samples
// are seen too, with the time they ended. A client elsewhere that closes
// first leaves no TIME_WAIT here: its requests are seen only when a
// sample finds them open.
//
// It reads /proc/thread-self/net/tcp{,6} in the namespace: the kernel
// walks its whole connection table for each read (12-17 ms on the test
// VM), once per namespace and sample.
func Activity(netns string) (map[int]time.Duration, error) {
	m := map[int]time.Duration{}
	err := InNetNS(netns, func() error {
		runtime.LockOSThread() // /proc/thread-self is this thread's
		defer runtime.UnlockOSThread()
		for _, file := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
			if err := readConnections(file, m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("counting connections: %w", err)
	}
	return m, nil
}

// userHZ is the unit of /proc/net/tcp's timers (clock ticks).
const userHZ = 100

// readConnections adds the non-listening sockets of one /proc/net/tcp
// file to m (see Activity).
func readConnections(file string, m map[int]time.Duration) error {
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("counting connections: %w", err)
	}
	defer f.Close()
	probe := net.ParseIP(ProbeSource)
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || fs[3] == "0A" {
			continue
		}
		age := time.Duration(0)
		if fs[3] == "06" { // TIME_WAIT: since it closed
			if _, when, ok := strings.Cut(fs[5], ":"); ok {
				if left, err := strconv.ParseUint(when, 16, 64); err == nil {
					age = max(timeWait-time.Duration(left)*time.Second/userHZ, 0)
				}
			}
		}
		var ports []int
		fromProbe := false
		for _, addr := range fs[1:3] {
			hexIP, hexPort, ok := strings.Cut(addr, ":")
			if !ok {
				continue
			}
			if procIP(hexIP).Equal(probe) {
				fromProbe = true
			}
			if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil {
				ports = append(ports, int(p))
			}
		}
		if fromProbe {
			continue
		}
		for _, p := range ports {
			if old, ok := m[p]; !ok || age < old {
				m[p] = age
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("counting connections in %s: %w", file, err)
	}
	return nil
}

// procIP decodes an address of /proc/net/tcp{,6}: 32-bit words in host
// (little-endian) order.
func procIP(s string) net.IP {
	b, err := hex.DecodeString(s)
	if err != nil || len(b)%4 != 0 {
		return nil
	}
	for i := 0; i < len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return net.IP(b)
}
