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

	"lxcfleet/lxcctl"
)

// listenScanner lists the TCP ports something listens on in this network
// namespace with one sock_diag query (lxcctl.ListeningPorts; the kernel
// walks only its listening sockets): the adaptive prober's way to see every
// locker's app open or close its port without sending the app anything.
// The lockers share the host's network (lxc.net.0.type = none), so their
// listening sockets are the host's.
type listenScanner struct{}

func newListenScanner() (*listenScanner, error) {
	if err := lxcctl.ListeningPorts(map[int]bool{}); err != nil {
		return nil, err
	}
	return &listenScanner{}, nil
}

func (s *listenScanner) Close() error { return nil }

// scan fills into (cleared first) with the ports in LISTEN state.
func (s *listenScanner) scan(into map[int]bool) error { return lxcctl.ListeningPorts(into) }

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
