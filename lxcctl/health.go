package lxcctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// HealthKind is how a container's health is checked.
type HealthKind string

// The health checks lxcfleet knows.
const (
	HealthNone HealthKind = "none" // healthy once RUNNING
	HealthHTTP HealthKind = "http" // GET returns 2xx, answered by the container
	HealthTCP  HealthKind = "tcp"  // a TCP connect succeeds, answered by the container
	HealthExec HealthKind = "exec" // a command inside the container exits 0
)

// HealthCheck describes a health check for every container of a bulk start.
// Target is a template: {name} is replaced by the container's name and
// {port} (or {env:KEY}) by the value of lxc.environment PORT (or KEY), so
// one check serves a fleet whose lockers each listen on their own port, e.g.
// "http://127.0.0.1:{port}/healthz". For HealthExec, Target is the command
// (split on spaces) run inside the container.
//
// An HTTP or TCP attempt passes only when the listening socket that took
// its connection is held by a process of the container (its init or a
// descendant; see ErrForeignListener): another process of the host
// answering on the locker's port (its app died of EADDRINUSE, or it is
// stopped) never makes it healthy. A check through a proxy of the host
// therefore never passes: probe the app's own port. An exec check of a
// container on the host's network (which reaches the host's sockets from
// inside) also fails when the container's PORT is held only by processes
// outside it.
type HealthCheck struct {
	Kind     HealthKind    `json:"kind"`
	Target   string        `json:"target,omitempty"`
	Interval time.Duration `json:"interval,omitempty"` // between attempts of a start's wait; default: the host's shared budget (pollInterval)
	Timeout  time.Duration `json:"timeout,omitempty"`  // per attempt; default 2s
}

// ParseHealthCheck parses "http:URL", "tcp:HOST:PORT", "exec:CMD ARGS" or
// "none" into a HealthCheck.
func ParseHealthCheck(s string) (HealthCheck, error) {
	if s == "" || s == "none" {
		return HealthCheck{Kind: HealthNone}, nil
	}
	kind, target, ok := strings.Cut(s, ":")
	if !ok || strings.TrimSpace(target) == "" {
		return HealthCheck{}, fmt.Errorf("parsing health check %q: want none, http:URL, tcp:HOST:PORT or exec:COMMAND", s)
	}
	hc := HealthCheck{Kind: HealthKind(kind), Target: target}
	switch hc.Kind {
	case HealthHTTP:
		if !strings.HasPrefix(target, "//") {
			return HealthCheck{}, fmt.Errorf("parsing health check %q: want http://HOST:PORT/PATH", s)
		}
		hc.Target = "http:" + target
		u, err := url.Parse(placeheld(hc.Target))
		if err != nil {
			return HealthCheck{}, fmt.Errorf("parsing health check %q: want http://HOST:PORT/PATH: %w", s, err)
		}
		if u.Hostname() == "" {
			return HealthCheck{}, fmt.Errorf("parsing health check %q: no host: want http://HOST:PORT/PATH", s)
		}
	case HealthTCP:
		host, port, err := net.SplitHostPort(placeheld(target))
		if err != nil {
			return HealthCheck{}, fmt.Errorf("parsing health check %q: want tcp:HOST:PORT (e.g. tcp:127.0.0.1:{port}): %w", s, err)
		}
		if host == "" || port == "" {
			return HealthCheck{}, fmt.Errorf("parsing health check %q: want tcp:HOST:PORT with both a host and a port", s)
		}
	case HealthExec:
	default:
		return HealthCheck{}, fmt.Errorf("parsing health check %q: unknown kind %q (want http, tcp, exec or none)", s, kind)
	}
	return hc, nil
}

// placeheld is a check's target with every placeholder ({name}, {port},
// {env:KEY}) replaced by a stand-in value, so that its syntax can be
// checked before any container's values are known.
func placeheld(t string) string {
	t = strings.ReplaceAll(t, "{name}", "x")
	t = strings.ReplaceAll(t, "{port}", "1")
	for {
		i := strings.Index(t, "{env:")
		if i < 0 {
			return t
		}
		j := strings.Index(t[i:], "}")
		if j < 0 {
			return t // Expand names the unterminated placeholder
		}
		t = t[:i] + "1" + t[i+j+1:]
	}
}

// String renders the check the way ParseHealthCheck reads it.
func (hc HealthCheck) String() string {
	switch hc.Kind {
	case "", HealthNone:
		return "none"
	case HealthHTTP:
		return hc.Target
	}
	return string(hc.Kind) + ":" + hc.Target
}

// Expand fills in the template placeholders for one container.
func (hc HealthCheck) Expand(in Info) (string, error) {
	t := strings.ReplaceAll(hc.Target, "{name}", in.Name)
	if strings.Contains(t, "{port}") {
		p, ok := in.Env["PORT"]
		if !ok {
			return "", fmt.Errorf("health check %q of container %q: no PORT in lxc.environment", hc.Target, in.Name)
		}
		t = strings.ReplaceAll(t, "{port}", p)
	}
	for strings.Contains(t, "{env:") {
		i := strings.Index(t, "{env:")
		j := strings.Index(t[i:], "}")
		if j < 0 {
			return "", fmt.Errorf("health check %q: unterminated {env:", hc.Target)
		}
		key := t[i+5 : i+j]
		v, ok := in.Env[key]
		if !ok {
			return "", fmt.Errorf("health check %q of container %q: no %s in lxc.environment", hc.Target, in.Name, key)
		}
		t = t[:i] + v + t[i+j+1:]
	}
	return t, nil
}

// checker runs one container's health check attempts.
type checker struct {
	host   *Host
	client *http.Client
	// waiting counts the health waits running on the host (starts
	// waiting for their locker to answer): they share one budget of
	// attempts (pollInterval).
	waiting atomic.Int64
}

// The shared budget of a start's HTTP or TCP health attempts, when the
// check sets no interval: each of n waits running at once tries every n ×
// pollPerWaiter, within [pollMin, pollMax]. One start alone is seen within
// 10 ms of its app answering, where a fixed 100 ms held its place in W 50
// ms on average after its app answered (a fifth of a light app's
// restart), and a pacer comparing W 1 with W 2 measured that lag more
// than the box (issue 19). Up to 20 waits the host makes at most 200
// attempts a second in all (an attempt on a port nobody listens on takes
// 50–130 µs: BenchmarkAttemptRefused); past 20, each wait is as before (100 ms), so a start is
// never seen later than with the fixed interval and the pacer's
// throughput at a high W is not cut by a lag that grows with W. An exec
// check (an lxc-attach per attempt) keeps 100 ms.
const (
	pollPerWaiter = 5 * time.Millisecond
	pollMin       = 10 * time.Millisecond
	pollMax       = 100 * time.Millisecond
)

// pollInterval is the time between two attempts of a wait for hc while
// waiters waits run on the host (itself included): hc.Interval when set,
// else the shared budget above for HTTP and TCP checks, else pollMax.
func pollInterval(hc HealthCheck, waiters int64) time.Duration {
	switch {
	case hc.Interval > 0:
		return hc.Interval
	case hc.Kind != HealthHTTP && hc.Kind != HealthTCP:
		return pollMax
	}
	return min(max(time.Duration(waiters)*pollPerWaiter, pollMin), pollMax)
}

func newChecker(h *Host) *checker {
	tr := &http.Transport{
		DisableKeepAlives: true,
		Proxy:             nil,       // health checks go straight to the locker
		DialContext:       dialProbe, // from heldsock.ProbeSource to loopback
	}
	return &checker{host: h, client: &http.Client{Transport: tr}}
}

// once runs a single attempt of hc against the container.
func (k *checker) once(ctx context.Context, hc HealthCheck, in Info) error {
	timeout := hc.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch hc.Kind {
	case "", HealthNone:
		st, err := k.host.State(ctx, in.Name)
		if err != nil {
			return err
		}
		if st != StateRunning {
			return fmt.Errorf("state %s", st)
		}
		return nil
	case HealthHTTP:
		url, err := hc.Expand(in)
		if err != nil {
			return err
		}
		var remote net.Addr
		trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) { remote = ci.Conn.RemoteAddr() }}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("health check of container %q: %w", in.Name, err)
		}
		resp, err := k.client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return k.answeredByOwn(ctx, in, remote)
	case HealthTCP:
		addr, err := hc.Expand(in)
		if err != nil {
			return err
		}
		conn, err := dialProbe(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		remote := conn.RemoteAddr()
		if err := conn.Close(); err != nil {
			return err
		}
		return k.answeredByOwn(ctx, in, remote)
	case HealthExec:
		cmd, err := hc.Expand(in)
		if err != nil {
			return err
		}
		res, err := k.host.Exec(ctx, in.Name, strings.Fields(cmd)...)
		if err != nil {
			return err
		}
		if res.ExitCode != 0 {
			return fmt.Errorf("%s exited %d: %s", cmd, res.ExitCode, strings.TrimSpace(string(res.Stderr)))
		}
		pid := in.InitPID
		if pid <= 0 {
			now, err := k.host.Info(ctx, in.Name)
			if err != nil {
				return err
			}
			pid = now.InitPID
		}
		return checkPortOwner(in.Name, pid, in.Env)
	}
	return fmt.Errorf("unknown health check kind %q", hc.Kind)
}

// answeredByOwn checks that the socket that answered a probe of the
// container on remote is held by a process of the container (see
// checkAnswerOwner); in.InitPID is read again when it is not known (the
// Info of a container taken before its start).
func (k *checker) answeredByOwn(ctx context.Context, in Info, remote net.Addr) error {
	pid := in.InitPID
	if pid <= 0 {
		now, err := k.host.Info(ctx, in.Name)
		if err != nil {
			return err
		}
		pid = now.InitPID
	}
	return checkAnswerOwner(in.Name, pid, remote)
}

// CheckHealth runs one attempt of hc against a running container.
func (h *Host) CheckHealth(ctx context.Context, in Info, hc HealthCheck) error {
	return h.healthChecker().once(ctx, hc, in)
}

// healthChecker returns the host's shared checker (its HTTP client keeps
// no connections, so sharing it is only about allocation).
func (h *Host) healthChecker() *checker {
	h.checkOnce.Do(func() { h.check = newChecker(h) })
	return h.check
}

// errUnhealthy marks a container that did not pass its check in time.
var errUnhealthy = errors.New("not healthy before the deadline")

// waitHealthy retries hc until it passes, the container stops running, or
// deadline passes.
func (k *checker) waitHealthy(ctx context.Context, hc HealthCheck, in Info, deadline time.Time) error {
	k.waiting.Add(1)
	defer k.waiting.Add(-1)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var last error
	// A container whose init died will never become healthy: stop early.
	// Its state is read every 5 intervals of wall time (500 ms on the
	// shared budget), not every 5 attempts: with a socket held by the
	// host a probe of a dead app is accepted by the kernel and hangs
	// until its timeout, so 5 attempts would be 5 timeouts (10 s by
	// default) before a crash is seen.
	stateEvery := 500 * time.Millisecond
	if hc.Interval > 0 {
		stateEvery = 5 * hc.Interval
	}
	stateAt := time.Now().Add(stateEvery)
	for {
		err := k.once(ctx, hc, in)
		if err == nil {
			return nil
		}
		if last == nil || ctx.Err() == nil {
			// An attempt cut by the wait's own deadline says only that
			// (context deadline exceeded): the one before it says why
			// (a squatter named by the owner check, a 503).
			last = err
		}
		if now := time.Now(); !now.Before(stateAt) {
			stateAt = now.Add(stateEvery)
			st, serr := k.host.State(context.Background(), in.Name)
			if serr == nil && st == StateStopped {
				return fmt.Errorf("container %q stopped while starting (last check: %v)", in.Name, last)
			}
			if errors.Is(serr, ErrNotFound) {
				// Destroyed meanwhile (lxc-destroy -f): it never will be.
				return fmt.Errorf("container %q was destroyed while starting (last check: %v): %w", in.Name, last, serr)
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("container %q %w (last check: %v)", in.Name, errUnhealthy, last)
			}
			return ctx.Err()
		case <-time.After(pollInterval(hc, k.waiting.Load())):
		}
	}
}
