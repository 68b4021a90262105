package heldsock

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Spec is one locker's held socket: where it listens.
type Spec struct {
	// Name is the locker's name.
	Name string `json:"name"`
	// Dir is the folder the holder serves the socket in (SocketFile), the
	// one bind-mounted into the container.
	Dir string `json:"dir"`
	// Address is the IP the socket binds ("127.0.0.1", "0.0.0.0", "::").
	Address string `json:"address"`
	// Port is the TCP port it listens on.
	Port int `json:"port"`
	// NetNS, when set, is a network namespace file (/run/netns/NAME) the
	// socket is made in; empty is the holder's own (the host's) network.
	NetNS string `json:"netns,omitempty"`
	// UID and GID own the served Unix socket (the container's root).
	UID int `json:"uid"`
	GID int `json:"gid"`
}

// SocketFile is the name of the Unix socket in Spec.Dir that serves the
// listening socket.
const SocketFile = "listen.sock"

// Backlog is the accept queue the held sockets are made with: what queues
// while a locker restarts (the kernel caps it at net.core.somaxconn).
const Backlog = 4096

// sameListen reports whether a and b listen on the same socket.
func (s Spec) sameListen(o Spec) bool {
	return s.Address == o.Address && s.Port == o.Port && s.NetNS == o.NetNS
}

// check validates a spec.
func (s Spec) check() error {
	switch {
	case s.Name == "":
		return fmt.Errorf("held socket: no locker name")
	case s.Dir == "" || s.Dir[0] != '/':
		return fmt.Errorf("held socket of %q: folder %q is not an absolute path", s.Name, s.Dir)
	case s.Port <= 0 || s.Port > 65535:
		return fmt.Errorf("held socket of %q: port %d is not a port", s.Name, s.Port)
	case net.ParseIP(s.Address) == nil:
		return fmt.Errorf("held socket of %q: address %q is not an IP", s.Name, s.Address)
	}
	return nil
}

// addr is the spec's address and port, for messages.
func (s Spec) addr() string { return net.JoinHostPort(s.Address, strconv.Itoa(s.Port)) }

// Listen makes the spec's listening socket: in the network namespace
// s.NetNS when set (on a thread of its own that joins it and then ends),
// otherwise in the caller's. The socket is not SO_REUSEPORT: an app that
// ignores LISTEN_FDS and binds the port itself fails with EADDRINUSE
// instead of silently sharing the port with a queue nobody accepts from.
func Listen(s Spec) (*os.File, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var f *os.File
	err := InNetNS(s.NetNS, func() error {
		var err error
		f, err = listenHere(s)
		return err
	})
	if err != nil && f == nil && s.NetNS != "" {
		return nil, fmt.Errorf("listening on %s for %q: %w", s.addr(), s.Name, err)
	}
	return f, err
}

// listenHere makes the listening socket in the calling thread's network
// namespace.
func listenHere(s Spec) (*os.File, error) {
	ip := net.ParseIP(s.Address)
	family := unix.AF_INET6
	var sa unix.Sockaddr
	if ip4 := ip.To4(); ip4 != nil {
		family = unix.AF_INET
		sa4 := &unix.SockaddrInet4{Port: s.Port}
		copy(sa4.Addr[:], ip4)
		sa = sa4
	} else {
		sa6 := &unix.SockaddrInet6{Port: s.Port}
		copy(sa6.Addr[:], ip.To16())
		sa = sa6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listening on %s for %q: %w", s.addr(), s.Name, err)
	}
	fail := func(what string, err error) (*os.File, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("listening on %s for %q: %s: %w", s.addr(), s.Name, what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, Backlog); err != nil {
		return fail("listen", err)
	}
	return os.NewFile(uintptr(fd), "tcp-listen:"+s.addr()), nil
}

// Inode returns the inode of a socket (the N of its "socket:[N]" link in
// /proc/PID/fd), the identity the health check's owner match compares.
func Inode(f *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("reading the inode of %s: %w", f.Name(), err)
	}
	return st.Ino, nil
}

// Describe returns a listening socket's bound port and whether it listens
// (SO_ACCEPTCONN).
func Describe(f *os.File) (port int, listening bool, err error) {
	fd := int(f.Fd())
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return 0, false, fmt.Errorf("reading the state of %s: %w", f.Name(), err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, false, fmt.Errorf("reading the address of %s: %w", f.Name(), err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	return port, acc == 1, nil
}
