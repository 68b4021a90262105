package downtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Holder answers on ports of stopped lockers with the maintenance page.
// A locker on host ports (lxc.net.0.type = none) that is down refuses
// connections; held, its port answers 503 with Retry-After and the
// expected end instead. The zero Holder holds ports on 127.0.0.1.
type Holder struct {
	// Addr is the address to bind (default 127.0.0.1): the one the lockers
	// listen on.
	Addr string
	// Page tunes what the page says (Until is set per port).
	Page PageInfo
	// Log receives a line per failed hold; default slog.Default().
	Log *slog.Logger
	// RetryEvery is how often a hold retries while the locker still has
	// the port; default 10ms.
	RetryEvery time.Duration
	// GiveUp is how long a hold waits for the port; default 10 minutes.
	GiveUp time.Duration

	mu   sync.Mutex
	held map[int]*hold
}

// hold is one port: pending (waiting for the locker to let go) or bound.
type hold struct {
	until  time.Time
	cancel context.CancelFunc
	done   chan struct{} // closed when the holding goroutine has exited
	srv    *http.Server  // set once bound
	bound  chan struct{} // closed once bound
}

// Hold starts answering on port with the page, saying the maintenance
// ends at until (zero: unknown). While the locker still listens on the
// port (a stop in progress), Hold keeps trying in the background until
// the port is free, Release is called or GiveUp passes; so it can be
// called as the locker begins to stop. Holding a held port updates until.
// It returns an error only for a port out of range.
func (h *Holder) Hold(port int, until time.Time) error {
	if port <= 0 || port > 65535 {
		return fmt.Errorf("holding port %d: out of range", port)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held == nil {
		h.held = map[int]*hold{}
	}
	if x, ok := h.held[port]; ok {
		x.until = until
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	x := &hold{until: until, cancel: cancel, done: make(chan struct{}), bound: make(chan struct{})}
	h.held[port] = x
	go h.run(ctx, port, x)
	return nil
}

// run binds the port, retrying while it is in use, and serves the page.
func (h *Holder) run(ctx context.Context, port int, x *hold) {
	defer close(x.done)
	addr := net.JoinHostPort(h.addr(), strconv.Itoa(port))
	every := h.RetryEvery
	if every <= 0 {
		every = 10 * time.Millisecond
	}
	giveUp := h.GiveUp
	if giveUp <= 0 {
		giveUp = 10 * time.Minute
	}
	deadline := time.Now().Add(giveUp)
	var ln net.Listener
	for {
		var err error
		ln, err = net.Listen("tcp", addr)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			h.log().Warn("cannot hold a locker's port with the maintenance page", "port", port, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := h.Page
			h.mu.Lock()
			p.Until = x.until
			h.mu.Unlock()
			w.Header().Set("Connection", "close") // nobody stays on the old socket
			ServePage(w, r, p)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	srv.SetKeepAlivesEnabled(false)
	h.mu.Lock()
	if ctx.Err() != nil { // released while binding
		h.mu.Unlock()
		ln.Close()
		return
	}
	x.srv = srv
	close(x.bound)
	h.mu.Unlock()
	_ = srv.Serve(ln)
}

// Release stops holding port, so that the locker can bind it again; it
// returns once the port is free. Releasing a port not held is a no-op.
func (h *Holder) Release(port int) {
	h.mu.Lock()
	x, ok := h.held[port]
	delete(h.held, port)
	h.mu.Unlock()
	if !ok {
		return
	}
	x.cancel()
	h.mu.Lock()
	srv := x.srv
	h.mu.Unlock()
	if srv != nil {
		_ = srv.Close() // closes the listener and every connection
	}
	<-x.done
}

// ReleaseAll releases every held port.
func (h *Holder) ReleaseAll() {
	for _, p := range h.Ports() {
		h.Release(p)
	}
}

// Ports returns the ports being held (bound or waiting for the port).
func (h *Holder) Ports() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]int, 0, len(h.held))
	for p := range h.held {
		out = append(out, p)
	}
	return out
}

// Bound reports whether port is held and answering with the page.
func (h *Holder) Bound(port int) bool {
	h.mu.Lock()
	x, ok := h.held[port]
	h.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case <-x.bound:
		return true
	default:
		return false
	}
}

// WaitBound waits until port is bound, or ctx ends.
func (h *Holder) WaitBound(ctx context.Context, port int) error {
	h.mu.Lock()
	x, ok := h.held[port]
	h.mu.Unlock()
	if !ok {
		return fmt.Errorf("port %d is not held", port)
	}
	select {
	case <-x.bound:
		return nil
	case <-x.done:
		return fmt.Errorf("port %d: the hold gave up", port)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *Holder) addr() string {
	if h.Addr == "" {
		return "127.0.0.1"
	}
	return h.Addr
}

func (h *Holder) log() *slog.Logger {
	if h.Log == nil {
		return slog.Default()
	}
	return h.Log
}
