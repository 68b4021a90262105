package heldsock

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"golang.org/x/sys/unix"
)

// ControlFile is the holder's control socket in its folder (root only).
const ControlFile = "control.sock"

// PIDFile holds the holder's process id in its folder.
const PIDFile = "holder.pid"

// Status is one held socket, as List reports it.
type Status struct {
	Spec
	// Inode is the listening socket's inode (see Inode).
	Inode uint64 `json:"inode"`
	// Fetches counts the times a locker's init fetched it.
	Fetches int `json:"fetches"`
}

// held is one socket the holder keeps, and the Unix socket serving it.
type held struct {
	spec    Spec
	sock    *os.File
	inode   uint64
	serve   *net.UnixListener
	fetches int
}

// Holder keeps listening sockets and serves each over its Unix socket.
// Run it in a process of its own (lxcfleet-listenfd hold): the sockets
// live as long as it does, whatever happens to the agent.
type Holder struct {
	dir string
	log *slog.Logger

	mu   sync.Mutex
	held map[string]*held
}

// NewHolder returns a holder whose control socket and pid file are in dir.
func NewHolder(dir string, log *slog.Logger) *Holder {
	if log == nil {
		log = slog.Default()
	}
	return &Holder{dir: dir, log: log, held: map[string]*held{}}
}

// Run holds again what an earlier holder in dir held (see recover.go),
// then serves the control socket until ctx ends, and closes every held
// socket (its specs stay: a holder started later takes the sockets back
// from the apps still holding them).
func (h *Holder) Run(ctx context.Context) error {
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return fmt.Errorf("making the holder's folder %s: %w", h.dir, err)
	}
	path := filepath.Join(h.dir, ControlFile)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the old control socket %s: %w", path, err)
	}
	short, done, err := shortPath(path)
	if err != nil {
		return fmt.Errorf("listening on the holder's control socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: short, Net: "unix"})
	done()
	if err != nil {
		return fmt.Errorf("listening on the holder's control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("listening on the holder's control socket: %w", err)
	}
	pidPath := filepath.Join(h.dir, PIDFile)
	if err := os.WriteFile(pidPath, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("writing %s: %w", pidPath, err)
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	// What an earlier holder held: hold it again, taking each socket back
	// from the app that still holds it.
	for _, s := range h.savedSpecs() {
		if s.gone() {
			h.forgetSpec(s.Name)
			continue
		}
		if _, err := listenerInode(s); err != nil {
			// No process holds it (a sleeping or stopped locker has no
			// app): it went with the earlier holder and is made anew;
			// connections in between were refused.
			h.log.Warn("a saved socket no process holds any more: making it anew", "container", s.Name, "addr", s.addr())
		}
		if _, err := h.Hold(s); err != nil {
			h.log.Warn("holding a saved socket again", "container", s.Name, "err", err)
		}
	}
	go h.gcLoop(ctx)
	h.log.Info("socket holder serving", "socket", path, "pid", os.Getpid())
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				h.closeAll()
				return nil
			}
			return fmt.Errorf("accepting on the holder's control socket: %w", err)
		}
		go h.control(c)
	}
}

// closeAll closes every held socket.
func (h *Holder) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, x := range h.held {
		x.close()
		delete(h.held, name)
	}
}

// request is one control request: "hold" a spec, "release" a name, "list".
type request struct {
	Op   string `json:"op"`
	Spec Spec   `json:"spec"`
}

// response answers a request.
type response struct {
	Error string   `json:"error,omitempty"`
	Held  []Status `json:"held,omitempty"`
}

// control answers one request on c.
func (h *Holder) control(c *net.UnixConn) {
	defer c.Close()
	var req struct {
		request
		Names []string `json:"names"`
	}
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&req); err != nil {
		_ = json.NewEncoder(c).Encode(response{Error: "reading request: " + err.Error()})
		return
	}
	if req.Op == "watch" {
		h.watch(c, req.Names)
		return
	}
	var resp response
	switch req.Op {
	case "hold":
		st, err := h.Hold(req.Spec)
		if err != nil {
			resp.Error = err.Error()
		} else {
			resp.Held = []Status{st}
		}
	case "release":
		h.Release(req.Spec.Name)
	case "list":
		resp.Held = h.List()
	default:
		resp.Error = fmt.Sprintf("unknown request %q", req.Op)
	}
	_ = json.NewEncoder(c).Encode(resp)
}

// Hold makes s's listening socket unless it already holds it (same
// address, port and namespace), and serves it at s.Dir/SocketFile,
// making that Unix socket again when it is gone. A held socket of the
// same locker that listens elsewhere is closed first.
func (h *Holder) Hold(s Spec) (Status, error) {
	if err := s.check(); err != nil {
		return Status{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	x := h.held[s.Name]
	if x != nil && !x.spec.sameListen(s) {
		h.log.Info("held socket moves", "container", s.Name, "from", x.spec.addr(), "to", s.addr())
		x.close()
		delete(h.held, s.Name)
		x = nil
	}
	if x == nil {
		sock, taken, err := listenOrTake(s)
		if err != nil {
			return Status{}, err
		}
		if taken {
			h.log.Info("took the socket back from the app holding it", "container", s.Name, "addr", s.addr())
		}
		ino, err := Inode(sock)
		if err != nil {
			sock.Close()
			return Status{}, err
		}
		x = &held{spec: s, sock: sock, inode: ino}
		h.held[s.Name] = x
		h.log.Info("holding socket", "container", s.Name, "addr", s.addr(), "netns", s.NetNS, "inode", ino)
	}
	if err := h.serve(x, s); err != nil {
		return Status{}, err
	}
	if err := h.saveSpec(s); err != nil {
		return Status{}, err
	}
	return x.status(), nil
}

// serve (re)makes the Unix socket that hands x's socket out, unless it
// serves already at the spec's path.
func (h *Holder) serve(x *held, s Spec) error {
	path := filepath.Join(s.Dir, SocketFile)
	if x.serve != nil && x.spec.Dir == s.Dir && x.spec.UID == s.UID && x.spec.GID == s.GID {
		if _, err := os.Lstat(path); err == nil {
			return nil
		}
	}
	if x.serve != nil {
		x.serve.Close()
		x.serve = nil
	}
	x.spec = s
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("serving the held socket of %q: %w", s.Name, err)
	}
	if err := os.Chown(s.Dir, s.UID, s.GID); err != nil {
		return fmt.Errorf("serving the held socket of %q: %w", s.Name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("serving the held socket of %q: %w", s.Name, err)
	}
	short, done, err := shortPath(path)
	if err != nil {
		return fmt.Errorf("serving the held socket of %q: %w", s.Name, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: short, Net: "unix"})
	done()
	if err != nil {
		return fmt.Errorf("serving the held socket of %q: %w", s.Name, err)
	}
	ln.SetUnlinkOnClose(false) // a newer serve may own the path by then
	// Only the container's root reaches it: the folder is its, mode 0700.
	if err := os.Chown(path, s.UID, s.GID); err != nil {
		ln.Close()
		return fmt.Errorf("serving the held socket of %q: %w", s.Name, err)
	}
	x.serve = ln
	go h.handOut(x, ln)
	return nil
}

// handOut sends x's socket to every connection on ln until ln closes.
func (h *Holder) handOut(x *held, ln *net.UnixListener) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		h.mu.Lock()
		var err2 error
		if x.sock == nil {
			_, err2 = c.Write([]byte("released"))
		} else {
			_, _, err2 = c.WriteMsgUnix([]byte(x.spec.Name), unix.UnixRights(int(x.sock.Fd())), nil)
			x.fetches++
		}
		h.mu.Unlock()
		if err2 != nil {
			h.log.Warn("handing out a held socket", "container", x.spec.Name, "err", err2)
		}
		c.Close()
	}
}

// Release closes the locker's held socket and its Unix socket.
func (h *Holder) Release(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if x := h.held[name]; x != nil {
		x.close()
		_ = os.Remove(filepath.Join(x.spec.Dir, SocketFile))
		delete(h.held, name)
		h.forgetSpec(name)
		h.log.Info("released socket", "container", name)
	}
}

// List returns the held sockets by name.
func (h *Holder) List() []Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Status, 0, len(h.held))
	for _, x := range h.held {
		out = append(out, x.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (x *held) status() Status { return Status{Spec: x.spec, Inode: x.inode, Fetches: x.fetches} }

// close closes the Unix socket and the held socket (caller holds the
// holder's lock).
func (x *held) close() {
	if x.serve != nil {
		x.serve.Close()
		x.serve = nil
	}
	if x.sock != nil {
		x.sock.Close()
		x.sock = nil
	}
}
