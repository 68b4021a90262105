package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"
)

// DefaultSocket is where the agent serves its API to local clients.
const DefaultSocket = "/run/lxcfleet.sock"

// Listener timeouts used when Listen leaves them zero.
const (
	DefaultReadTimeout = 30 * time.Second
	DefaultIdleTimeout = 60 * time.Second
)

// Listen says where the agent serves.
type Listen struct {
	// Socket is the Unix socket path (root only); default DefaultSocket.
	Socket string
	// TCP, when set ("127.0.0.1:8080", ":8443"), also serves the API and the
	// console over TCP; every request then needs the bearer Token.
	TCP   string
	Token string
	// TLSCert and TLSKey, when both set, make the TCP listener serve TLS.
	TLSCert string
	TLSKey  string
	// ReadTimeout bounds reading a request (its headers and body; an event
	// stream clears it); default DefaultReadTimeout.
	ReadTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle that long; default
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Console, when set, is served at / on the TCP listener (the login page
	// and its assets are open; the API behind it needs the token).
	Console http.Handler
}

// Run serves the API, keeps the locker inventory, runs the schedules,
// recovers lockers after a crash or a boot, and returns when ctx ends (after
// a graceful shutdown of the listeners and the running job).
func (a *Agent) Run(ctx context.Context) error {
	lis, err := a.listen()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.addrs = a.addrs[:0]
	for _, l := range lis {
		a.addrs = append(a.addrs, l.ln.Addr())
	}
	a.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { a.inv.run(gctx, a.cfg.HealthInterval); return nil })
	a.sched.c.Start()
	defer a.sched.c.Stop()

	a.recoverIfNeeded(ctx)
	a.sup.ready.Store(true) // after the recovery, which comes first
	// Ready (READY=1 under systemd) once the listeners are bound and the
	// recovery, when one is needed, is a job: whoever waits for it sees
	// that job in /v1/jobs. Connections made meanwhile wait in the backlog.
	close(a.ready)
	g.Go(func() error { a.runFleet(gctx); return nil })
	g.Go(func() error { a.watch.run(gctx); return nil })
	g.Go(func() error { a.sleep.run(gctx); return nil })

	api := a.Handler()
	var servers []*http.Server
	for _, l := range lis {
		h := api
		if l.tcp {
			h = a.tcpHandler(api)
		}
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       orDefault(a.cfg.Listen.ReadTimeout, DefaultReadTimeout),
			IdleTimeout:       orDefault(a.cfg.Listen.IdleTimeout, DefaultIdleTimeout),
			MaxHeaderBytes:    64 << 10,
			BaseContext:       func(net.Listener) context.Context { return ctx },
		}
		servers = append(servers, srv)
		g.Go(func() error {
			var err error
			if l.tls != nil {
				srv.TLSConfig = l.tls
				err = srv.ServeTLS(l.ln, "", "")
			} else {
				err = srv.Serve(l.ln)
			}
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("serving on %s: %w", l.ln.Addr(), err)
		})
		a.log.Info("serving the API", "addr", l.ln.Addr().String(), "tls", l.tls != nil)
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		for _, s := range servers {
			_ = s.Shutdown(sctx)
		}
		return nil
	})
	err = g.Wait()
	if a.cfg.Listen.Socket != "" {
		_ = os.Remove(a.cfg.Listen.Socket)
	}
	return err
}

// recoverIfNeeded starts a recovery job after a crash, a host boot or a
// lost journal. A lost journal is remembered until a recovery succeeds.
func (a *Agent) recoverIfNeeded(ctx context.Context) {
	need, why, err := a.NeedsRecovery()
	if err != nil {
		a.log.Error("checking for recovery", "err", err)
		return
	}
	lost, err := a.jr.LostPending()
	if err != nil {
		a.log.Error("checking for a lost journal", "err", err)
	}
	if lost != "" {
		need, why = true, "the journal was lost"
	}
	if !need {
		return
	}
	a.log.Warn("driving lockers back to their desired state", "reason", why)
	job, err := a.Submit(Request{Kind: KindRecover, Trigger: "recovery: " + why})
	if err != nil {
		a.log.Error("starting recovery", "err", err)
		return
	}
	a.log.Info("recovery job started", "job", job.ID)
	if lost == "" {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		j, err := a.Wait(a.base, job.ID)
		if err != nil || j.State != JobSucceeded {
			a.log.Warn("recovery after a lost journal did not succeed; it runs again at the next start", "job", job.ID, "state", j.State)
			return
		}
		if err := a.jr.ClearLost(); err != nil {
			a.log.Error("recording the recovery of a lost journal", "err", err)
		}
	}()
}

// Ready is closed once Run listens (see Addrs) and has submitted the
// recovery job, when one is needed.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Addrs returns the addresses Run listens on (the socket first), once
// Ready is closed.
func (a *Agent) Addrs() []net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]net.Addr(nil), a.addrs...)
}

// tcpHandler puts the console at / and the token in front of the API.
func (a *Agent) tcpHandler(api http.Handler) http.Handler {
	mux := http.NewServeMux()
	guarded := a.logFailedLogins(RequireToken(a.cfg.Listen.Token, api))
	mux.Handle("/v1/", guarded)
	mux.Handle("/metrics", guarded)
	mux.Handle("/healthz", api)
	if a.cfg.Listen.Console != nil {
		mux.Handle("/", a.cfg.Listen.Console)
	}
	return mux
}

// logFailedLogins logs every request the token check refuses (a security
// event: who tried, what, from where).
func (a *Agent) logFailedLogins(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.code == http.StatusUnauthorized {
			a.log.Warn("refused a request with a missing or wrong bearer token", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "token_given", r.Header.Get("Authorization") != "")
		}
	})
}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes and
// deadlines of event streams).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

type listener struct {
	ln  net.Listener
	tcp bool
	tls *tls.Config
}

// listen opens the Unix socket (0600, root only) and the TCP listener.
func (a *Agent) listen() ([]listener, error) {
	var out []listener
	sock := a.cfg.Listen.Socket
	if sock != "" {
		if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
			return nil, fmt.Errorf("creating socket folder: %w", err)
		}
		if c, err := net.DialTimeout("unix", sock, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("listening on %s: another agent is serving there", sock)
		}
		_ = os.Remove(sock) // a stale socket of a dead agent
		ln, err := net.Listen("unix", sock)
		if err != nil {
			return nil, fmt.Errorf("listening on %s: %w", sock, err)
		}
		if err := os.Chmod(sock, 0o600); err != nil {
			ln.Close()
			return nil, fmt.Errorf("restricting %s to root: %w", sock, err)
		}
		out = append(out, listener{ln: ln})
	}
	if addr := a.cfg.Listen.TCP; addr != "" {
		if a.cfg.Listen.Token == "" {
			closeAll(out)
			return nil, fmt.Errorf("listening on %s: a TCP listener needs a token (listen.token_file): %s", addr, MakeTokenHint)
		}
		if n := len(a.cfg.Listen.Token); n < MinTokenBytes {
			closeAll(out)
			return nil, fmt.Errorf("listening on %s: the token is %d bytes, want at least %d: %s", addr, n, MinTokenBytes, MakeTokenHint)
		}
		var tc *tls.Config
		if a.cfg.Listen.TLSCert != "" || a.cfg.Listen.TLSKey != "" {
			if err := CheckSecretFile(a.cfg.Listen.TLSKey); err != nil {
				closeAll(out)
				return nil, fmt.Errorf("loading TLS key: %w", err)
			}
			cert, err := tls.LoadX509KeyPair(a.cfg.Listen.TLSCert, a.cfg.Listen.TLSKey)
			if err != nil {
				closeAll(out)
				return nil, fmt.Errorf("loading TLS certificate %s: %w", a.cfg.Listen.TLSCert, err)
			}
			tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		out = append(out, listener{ln: ln, tcp: true, tls: tc})
	}
	if len(out) == 0 {
		return nil, errors.New("nothing to listen on: set listen.socket or listen.tcp")
	}
	return out, nil
}

func closeAll(ls []listener) {
	for _, l := range ls {
		l.ln.Close()
	}
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
