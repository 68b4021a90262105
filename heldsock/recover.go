package heldsock

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// This file lets a holder that restarts take the sockets back. The holder
// writes each spec it holds into its folder (specsDir, on /run: it
// survives the holder, not a reboot). A new holder holds them again at
// its start; where the port is taken (EADDRINUSE) because a locker's app
// still holds its copy of the old socket, the holder takes that socket
// from the app (pidfd_getfd(2)): the same socket, with the connections in
// its queue, so a restart of the holder refuses nothing either.

// specsDir is the folder of the holder's specs, in its folder.
const specsDir = "held"

// saveSpec writes s into the holder's folder.
func (h *Holder) saveSpec(s Spec) error {
	dir := filepath.Join(h.dir, specsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("saving the held socket spec of %q: %w", s.Name, err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	p := filepath.Join(dir, s.Name+".json")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("saving the held socket spec of %q: %w", s.Name, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("saving the held socket spec of %q: %w", s.Name, err)
	}
	return nil
}

// forgetSpec removes a released locker's spec.
func (h *Holder) forgetSpec(name string) {
	_ = os.Remove(filepath.Join(h.dir, specsDir, name+".json"))
}

// savedSpecs reads the specs an earlier holder saved.
func (h *Holder) savedSpecs() []Spec {
	ents, err := os.ReadDir(filepath.Join(h.dir, specsDir))
	if err != nil {
		return nil
	}
	var out []Spec
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(h.dir, specsDir, e.Name()))
		var s Spec
		if err == nil {
			err = json.Unmarshal(b, &s)
		}
		if err != nil {
			h.log.Warn("skipping a saved held socket spec", "file", e.Name(), "err", err)
			continue
		}
		out = append(out, s)
	}
	return out
}

// listenOrTake makes s's socket, or takes it from the process that still
// holds it when its port is taken.
func listenOrTake(s Spec) (f *os.File, taken bool, err error) {
	f, err = Listen(s)
	if err == nil || !errors.Is(err, unix.EADDRINUSE) {
		return f, false, err
	}
	f, terr := Take(s)
	if terr != nil {
		return nil, false, fmt.Errorf("%w; taking it from its holder: %w", err, terr)
	}
	return f, true, nil
}

// Take finds the listening socket on s's address and port in s's network
// namespace and returns a copy of it taken from a process that holds it
// (pidfd_getfd: root, or ptrace rights over that process).
func Take(s Spec) (*os.File, error) {
	ino, err := listenerInode(s)
	if err != nil {
		return nil, err
	}
	pid, fd, err := holderOf(ino)
	if err != nil {
		return nil, err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("taking socket %d from pid %d: %w", ino, pid, err)
	}
	defer unix.Close(pidfd)
	nfd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, fmt.Errorf("taking socket %d from pid %d (fd %d): %w", ino, pid, fd, err)
	}
	f := os.NewFile(uintptr(nfd), "tcp-listen:"+s.addr())
	if got, _ := Inode(f); got != ino {
		f.Close()
		return nil, fmt.Errorf("taking socket %d from pid %d: fd %d is another socket now", ino, pid, fd)
	}
	return f, nil
}

// listenerInode returns the inode of the listening socket on s's address
// and port, read from /proc/thread-self/net/tcp{,6} in s's namespace.
func listenerInode(s Spec) (uint64, error) {
	var ino uint64
	err := InNetNS(s.NetNS, func() error {
		runtime.LockOSThread() // /proc/thread-self is this thread's
		defer runtime.UnlockOSThread()
		want := net.ParseIP(s.Address)
		for _, file := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
			i, err := findListener(file, want, s.Port)
			if err != nil || i != 0 {
				ino = i
				return err
			}
		}
		return fmt.Errorf("no socket listens on %s", s.addr())
	})
	return ino, err
}

// findListener scans a /proc/net/tcp file for a LISTEN socket on ip:port.
func findListener(file string, ip net.IP, port int) (uint64, error) {
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || fs[3] != "0A" {
			continue
		}
		hexIP, hexPort, ok := strings.Cut(fs[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil || int(p) != port || !procIP(hexIP).Equal(ip) {
			continue
		}
		return strconv.ParseUint(fs[9], 10, 64)
	}
	return 0, sc.Err()
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

// holderOf finds a process and descriptor holding socket inode ino.
func holderOf(ino uint64) (pid, fd int, err error) {
	want := "socket:[" + strconv.FormatUint(ino, 10) + "]"
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, err
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		dir := "/proc/" + p.Name() + "/fd"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, f := range fds {
			if l, err := os.Readlink(dir + "/" + f.Name()); err == nil && l == want {
				n, _ := strconv.Atoi(f.Name())
				return pid, n, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("no process holds socket %d", ino)
}
