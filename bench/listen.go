package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// listenScanner lists the TCP ports something listens on in this network
// namespace, with one sock_diag netlink dump (the kernel walks only its
// listening sockets): the adaptive prober's way to see every locker's app
// open or close its port without sending the app anything. The lockers
// share the host's network (lxc.net.0.type = none), so their listening
// sockets are the host's.
type listenScanner struct {
	fd  int
	seq uint32
	buf []byte
}

func newListenScanner() (*listenScanner, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("opening a sock_diag socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding a sock_diag socket: %w", err)
	}
	return &listenScanner{fd: fd, buf: make([]byte, 1<<16)}, nil
}

func (s *listenScanner) Close() error { return unix.Close(s.fd) }

const (
	tcpListen         = 10 // TCP_LISTEN in the kernel's tcp_states.h
	sizeofNlMsghdr    = 16
	sizeofInetDiagReq = 56 // struct inet_diag_req_v2
	sizeofInetDiagMsg = 72 // struct inet_diag_msg
)

// scan returns the set of IPv4 TCP ports in LISTEN state (the lockers
// listen on 127.0.0.1). It reuses into (cleared first).
func (s *listenScanner) scan(into map[int]bool) error {
	clear(into)
	return s.dump(unix.AF_INET, into)
}

func (s *listenScanner) dump(family uint8, into map[int]bool) error {
	s.seq++
	req := make([]byte, sizeofNlMsghdr+sizeofInetDiagReq)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], s.seq)
	req[16] = family
	req[17] = unix.IPPROTO_TCP
	ne.PutUint32(req[20:], 1<<tcpListen) // states
	if err := unix.Sendto(s.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag request: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(s.fd, s.buf, 0)
		if err != nil {
			return fmt.Errorf("sock_diag answer: %w", err)
		}
		b := s.buf[:n]
		for len(b) >= sizeofNlMsghdr {
			l := int(ne.Uint32(b[0:]))
			typ := ne.Uint16(b[4:])
			seq := ne.Uint32(b[8:])
			if l < sizeofNlMsghdr || l > len(b) {
				return fmt.Errorf("sock_diag: bad message length %d", l)
			}
			if seq == s.seq {
				switch typ {
				case unix.NLMSG_DONE:
					return nil
				case unix.NLMSG_ERROR:
					if l >= sizeofNlMsghdr+4 {
						if e := int32(ne.Uint32(b[16:])); e != 0 {
							return fmt.Errorf("sock_diag: %w", unix.Errno(-e))
						}
					}
					return nil
				case unix.SOCK_DIAG_BY_FAMILY:
					if l >= sizeofNlMsghdr+sizeofInetDiagMsg {
						m := b[sizeofNlMsghdr:]
						// idiag_family, state, timer, retrans, then the
						// socket id: sport (big endian) first.
						into[int(binary.BigEndian.Uint16(m[4:6]))] = true
					}
				}
			}
			b = b[(l+3)&^3:]
		}
	}
}

// cgroupScanner lists the containers' cgroups (lxc.payload.NAME) with
// their inodes in one getdents pass over the CPU accounting hierarchy: a
// new inode under a known name is a new start.
type cgroupScanner struct {
	dirs []string
	buf  []byte
}

func newCgroupScanner(cg cgroupReader) *cgroupScanner {
	c := &cgroupScanner{buf: make([]byte, 1<<16)}
	for _, p := range cg.parents {
		c.dirs = append(c.dirs, filepath.Join(cg.dir, p))
	}
	return c
}

// scan fills into with name → inode for every lxc.payload.* folder at the
// root of the hierarchy or under one of the parents (a parent that does
// not exist yet holds none).
func (c *cgroupScanner) scan(into map[string]uint64) error {
	clear(into)
	for _, d := range c.dirs {
		if err := c.scanDir(d, into); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func (c *cgroupScanner) scanDir(dir string, into map[string]uint64) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	for {
		n, err := unix.Getdents(fd, c.buf)
		if err != nil {
			return fmt.Errorf("reading %s: %w", dir, err)
		}
		if n <= 0 {
			return nil
		}
		b := c.buf[:n]
		for len(b) >= 19 {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
			ino := binary.NativeEndian.Uint64(b[0:])
			reclen := int(binary.NativeEndian.Uint16(b[16:]))
			if reclen < 19 || reclen > len(b) {
				return fmt.Errorf("reading %s: bad dirent", dir)
			}
			name := b[19:reclen]
			if i := strings.IndexByte(string(name), 0); i >= 0 {
				name = name[:i]
			}
			if s, ok := strings.CutPrefix(string(name), "lxc.payload."); ok {
				into[s] = ino
			}
			b = b[reclen:]
		}
	}
}

// cpuTotalSeconds is the CPU time the named containers' cgroups have used.
func (c cgroupReader) cpuTotalSeconds(names []string) float64 {
	var s float64
	for _, n := range names {
		s += c.cpuSeconds(n)
	}
	return s
}

// procCPUSeconds is a process's user+system CPU time so far.
func procCPUSeconds(pid int) float64 {
	b, err := os.ReadFile(filepath.Join("/proc", fmt.Sprint(pid), "stat"))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	var utime, stime float64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	return (utime + stime) / 100 // USER_HZ
}
