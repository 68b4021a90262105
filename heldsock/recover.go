package heldsock

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"lxcfleet/internal/procsock"
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
		ls, err := procsock.Listeners("/proc/thread-self")
		if err != nil {
			return err
		}
		want := net.ParseIP(s.Address)
		for _, l := range ls {
			if l.Port == s.Port && l.IP.Equal(want) {
				ino = l.Inode
				return nil
			}
		}
		return fmt.Errorf("no socket listens on %s", s.addr())
	})
	return ino, err
}

// holderOf finds a process and descriptor holding socket inode ino.
func holderOf(ino uint64) (pid, fd int, err error) {
	for _, h := range procsock.Holders(map[uint64]bool{ino: true}, 1)[ino] {
		return h.PID, h.FD, nil
	}
	return 0, 0, fmt.Errorf("no process holds socket %d", ino)
}
