package lxcctl

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"

	"lxcfleet/internal/procsock"
)

// listener is one listening TCP socket: its local address and port and its
// inode (the number in an fd's "socket:[N]" link).
type listener struct {
	ip    net.IP
	port  int
	inode uint64
}

// ListeningPorts fills into (cleared first) with the TCP ports something
// listens on in the caller's network namespace, IPv4 and IPv6, from one
// kernel query (see netlinkListeners): the benchmark's prober scans it 40
// times a second to see lockers open and close their ports without
// sending them anything.
func ListeningPorts(into map[int]bool) error {
	clear(into)
	ls, err := netlinkListeners(0)
	if err != nil {
		return err
	}
	for _, l := range ls {
		into[l.port] = true
	}
	return nil
}

// portFilter is the sock_diag request attribute that keeps the sockets
// whose local port is port (none for port 0): an INET_DIAG_REQ_BYTECODE
// attribute of two port comparisons, local port ≥ port and ≤ port (the
// operations every kernel since 2.6 has; S_EQ came later). Each
// comparison is an op {code, yes, no} followed by an op holding the port
// in its "no" field; a "no" jump of the bytecode's remaining length + 4
// rejects the socket, reaching its end exactly accepts it
// (inet_diag_bc_run and inet_diag_bc_audit in net/ipv4/inet_diag.c).
func portFilter(port int) []byte {
	if port <= 0 || port > 0xffff {
		return nil
	}
	const (
		bcSGE = 2 // INET_DIAG_BC_S_GE
		bcSLE = 3 // INET_DIAG_BC_S_LE
		// INET_DIAG_REQ_BYTECODE
		reqBytecode = 1
	)
	op := func(code uint8, yes uint8, no uint16) []byte {
		b := []byte{code, yes, 0, 0}
		binary.NativeEndian.PutUint16(b[2:], no)
		return b
	}
	var bc []byte
	bc = append(bc, op(bcSGE, 8, 16+4)...)     // 16 bytes left: no jumps past the end
	bc = append(bc, op(0, 0, uint16(port))...) // the port compared
	bc = append(bc, op(bcSLE, 8, 8+4)...)      // 8 bytes left
	bc = append(bc, op(0, 0, uint16(port))...)
	attr := make([]byte, 4, 4+len(bc))
	binary.NativeEndian.PutUint16(attr[0:], uint16(4+len(bc)))
	binary.NativeEndian.PutUint16(attr[2:], reqBytecode)
	return append(attr, bc...)
}

// Sizes of the sock_diag structures (linux/inet_diag.h).
const (
	nlmsgHdrLen     = 16
	inetDiagReqLen  = 56 // struct inet_diag_req_v2
	inetDiagMsgLen  = 72 // struct inet_diag_msg
	tcpfListen      = 1 << procsock.StateListen
	diagInodeOffset = 68
)

// netlinkListeners returns the listening TCP sockets (IPv4 and IPv6) of
// the caller's network namespace through NETLINK_SOCK_DIAG, asking for
// the LISTEN state only. Measured on the 2-core test VM: a whole owner
// match (listeners, then the container's processes' fds) takes 0.4 ms this
// way; reading /proc/net/tcp and tcp6 alone took 12-17 ms (for those files
// the kernel walks every bucket of its established-connections table,
// large on a host with much memory), which a background check of 300
// lockers every 15 s would pay 300 times.
//
// Why not a library: vishvananda/netlink v1.3.1 (the well-kept one) has
// no state filter in its dump: SocketDiagTCP took 11.6 ms per call with
// 284 TCP sockets on the test VM, and SocketGet 8.0 ms for one socket and
// it does not find wildcard listeners (measured 2026-11-30). This request
// asks the kernel for LISTEN sockets only (0.4 ms).
//
// With port > 0 it asks for the listeners on that port only, through the
// request's bytecode filter (INET_DIAG_REQ_BYTECODE, as ss's "sport = :P"
// does): the kernel then sends one or two records, not every listener of
// the host (300 and more with a fleet), which each health check of each
// locker used to parse. Port 0 lists them all.
func netlinkListeners(port int) ([]listener, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("opening a sock_diag netlink socket: %w", err)
	}
	defer unix.Close(fd)
	var out []listener
	buf := make([]byte, 64<<10)
	filter := portFilter(port)
	for seq, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := append(make([]byte, nlmsgHdrLen+inetDiagReqLen), filter...)
		binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
		binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
		binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
		binary.NativeEndian.PutUint32(req[8:], uint32(seq+1))
		req[16], req[17] = family, unix.IPPROTO_TCP
		binary.NativeEndian.PutUint32(req[20:], tcpfListen)
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return nil, fmt.Errorf("asking sock_diag for listening sockets: %w", err)
		}
	recv:
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("reading sock_diag's answer: %w", err)
			}
			msgs, err := syscall.ParseNetlinkMessage(buf[:n])
			if err != nil {
				return nil, fmt.Errorf("parsing sock_diag's answer: %w", err)
			}
			for _, m := range msgs {
				switch m.Header.Type {
				case unix.NLMSG_DONE:
					break recv
				case unix.NLMSG_ERROR:
					if len(m.Data) >= 4 {
						if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
							return nil, fmt.Errorf("sock_diag: %w", syscall.Errno(-errno))
						}
					}
					break recv
				}
				d := m.Data
				if len(d) < inetDiagMsgLen || d[1] != procsock.StateListen {
					continue
				}
				ip := net.IP(append([]byte(nil), d[8:24]...))
				if d[0] == unix.AF_INET {
					ip = net.IPv4(d[8], d[9], d[10], d[11])
				}
				out = append(out, listener{
					ip:    ip,
					port:  int(binary.BigEndian.Uint16(d[4:6])),
					inode: uint64(binary.NativeEndian.Uint32(d[diagInodeOffset:])),
				})
			}
		}
	}
	return out, nil
}
