package heldsock

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// This file is the first piece of sleeping lockers (issue 20, part 2): a
// stopped locker's held socket still takes connections into its queue, and
// the holder tells a watcher the moment one is pending, so that the agent
// starts the locker (through its start pacing) and the first request waits
// for the start instead of failing. Nothing is accepted: the connection
// stays queued for the app.

// Pending reports whether a connection waits in a listening socket's
// accept queue (poll(2) POLLIN, without waiting).
func Pending(f *os.File) (bool, error) {
	fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("polling %s: %w", f.Name(), err)
		}
		return n > 0 && fds[0].Revents&unix.POLLIN != 0, nil
	}
}

// watchRequest is the control request of Watch.
type watchRequest struct {
	Op    string   `json:"op"` // "watch"
	Names []string `json:"names"`
}

// Watch asks the holder to report each of names once a connection is
// pending on its socket: the names come on the returned channel, each
// once, as their connections arrive (a name already pending comes at
// once). The channel closes when ctx ends or the holder goes away. A name
// the holder does not hold is an error.
func (c *Client) Watch(ctx context.Context, names []string) (<-chan string, error) {
	path := filepath.Join(c.Dir, ControlFile)
	short, done, err := shortPath(path)
	if err != nil {
		return nil, fmt.Errorf("watching held sockets: %w", err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", short)
	done()
	if err != nil {
		return nil, fmt.Errorf("watching held sockets: %w at %s: %v", ErrNoHolder, path, err)
	}
	if err := json.NewEncoder(conn).Encode(watchRequest{Op: "watch", Names: names}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("watching held sockets: %w", err)
	}
	r := bufio.NewReader(conn)
	first, err := r.ReadString('\n')
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("watching held sockets: %w", err)
	}
	if first = strings.TrimSpace(first); first != "ok" {
		conn.Close()
		return nil, fmt.Errorf("watching held sockets: %s", first)
	}
	out := make(chan string, len(names))
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	go func() {
		defer close(out)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			out <- strings.TrimSpace(line)
		}
	}()
	return out, nil
}

// watch serves one watch request on c: it answers "ok" (or the error),
// then writes each name once a connection is pending on it, until every
// name was reported or c closes.
func (h *Holder) watch(c *net.UnixConn, names []string) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		fmt.Fprintf(c, "epoll: %v\n", err)
		return
	}
	defer unix.Close(ep)
	// The control connection itself: readable (EOF) when the watcher goes.
	connFile, err := c.File()
	if err != nil {
		fmt.Fprintf(c, "watching: %v\n", err)
		return
	}
	defer connFile.Close()
	const connTag = -1
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, int(connFile.Fd()), &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: connTag}); err != nil {
		fmt.Fprintf(c, "watching: %v\n", err)
		return
	}
	// Each socket is watched through a copy of its own, so that a release
	// meanwhile cannot close a descriptor epoll still names.
	var copies []*os.File
	defer func() {
		for _, f := range copies {
			f.Close()
		}
	}()
	h.mu.Lock()
	for i, n := range names {
		x := h.held[n]
		if x == nil || x.sock == nil {
			h.mu.Unlock()
			fmt.Fprintf(c, "the holder holds no socket of %q\n", n)
			return
		}
		fd, err := unix.FcntlInt(x.sock.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			h.mu.Unlock()
			fmt.Fprintf(c, "watching %q: %v\n", n, err)
			return
		}
		f := os.NewFile(uintptr(fd), n)
		copies = append(copies, f)
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}); err != nil {
			h.mu.Unlock()
			fmt.Fprintf(c, "watching %q: %v\n", n, err)
			return
		}
	}
	h.mu.Unlock()
	if _, err := fmt.Fprintln(c, "ok"); err != nil {
		return
	}
	left := len(names)
	evs := make([]unix.EpollEvent, 64)
	for left > 0 {
		n, err := unix.EpollWait(ep, evs, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			h.log.Warn("watching held sockets", "err", err)
			return
		}
		for _, ev := range evs[:n] {
			if ev.Fd == connTag {
				var b [64]byte
				n, _, err := unix.Recvfrom(int(connFile.Fd()), b[:], unix.MSG_DONTWAIT)
				if n == 0 || (err != nil && err != unix.EAGAIN && err != unix.EINTR) {
					return // the watcher went away
				}
				continue // stray bytes after the request: ignored
			}
			i := int(ev.Fd)
			_ = unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, int(copies[i].Fd()), nil)
			if _, err := fmt.Fprintln(c, names[i]); err != nil {
				return
			}
			left--
		}
	}
}
