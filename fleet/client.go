package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Config is the [fleet] section of the agent's config. A host without
// Endpoints is not in a fleet: nothing here runs and no etcd is needed.
type Config struct {
	// Endpoints are the etcd client URLs ("https://10.0.0.1:2379").
	Endpoints []string
	// Group names the channel the host follows (default "default").
	Group string
	// HostID names the host in the registry (default: the hostname).
	HostID string
	// TTL is the session lease's time to live: a host that dies (or hangs,
	// or loses etcd) leaves the registry and frees its slot that long
	// after its last keep-alive (default DefaultTTL; etcd's minimum 5s
	// does not apply to tests' members).
	TTL time.Duration
	// Prefix is the key prefix (default DefaultPrefix).
	Prefix string
	// CA, Cert and Key are PEM files for TLS to etcd: CA alone verifies
	// the server; Cert and Key add a client certificate.
	CA, Cert, Key string
	// DialTimeout bounds connecting (default 5s).
	DialTimeout time.Duration
	// StateFile is the member's journal on the host (the agent's
	// <state_dir>/fleet.json): its last session lease, the outcomes of its
	// updates not yet written to etcd, and the releases it failed on.
	// Empty: kept in memory only (lost when the agent restarts).
	StateFile string
}

// DefaultTTL is the session lease TTL when the config has none: a dead
// host's slot frees within 30 s (kured's --lock-ttl is off by default, so
// its locks outlive their nodes; ours never do).
const DefaultTTL = 30 * time.Second

// DefaultGroup is the group of a host whose config names none.
const DefaultGroup = "default"

// Enabled reports whether the host is in a fleet.
func (c Config) Enabled() bool { return len(c.Endpoints) > 0 }

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.HostID == "" {
		c.HostID, _ = os.Hostname()
	}
	if c.TTL <= 0 {
		c.TTL = DefaultTTL
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	return c
}

// Validate names the first bad key (as fleet.KEY of the config file).
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	for _, e := range c.Endpoints {
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			return fmt.Errorf("fleet.endpoints: %q is not an http:// or https:// URL", e)
		}
	}
	if c.Group != "" {
		if err := ValidID(c.Group); err != nil {
			return fmt.Errorf("fleet.group: %w", err)
		}
	}
	if c.HostID != "" {
		if err := ValidID(c.HostID); err != nil {
			return fmt.Errorf("fleet.host_id: %w", err)
		}
	}
	if c.TTL < 0 || (c.TTL > 0 && c.TTL < time.Second) {
		return fmt.Errorf("fleet.ttl must be at least 1s, got %s", c.TTL)
	}
	if (c.Cert == "") != (c.Key == "") {
		return errors.New("fleet.cert and fleet.key go together")
	}
	return nil
}

// tlsConfig is the client TLS of c (nil without ca and cert).
func tlsConfig(c Config) (*tls.Config, error) {
	if c.CA == "" && c.Cert == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("reading fleet.ca %s: %w", c.CA, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading fleet.ca %s: no PEM certificate in it", c.CA)
		}
		tc.RootCAs = pool
	}
	if c.Cert != "" {
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("loading fleet.cert %s and fleet.key %s: %w", c.Cert, c.Key, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Probe says what is wrong with each endpoint of c that etcd's client
// only reports as a deadline: nothing listening (the dial's error), or a
// TLS handshake that fails (an https endpoint with a wrong or missing ca,
// a client certificate the server refuses, or an http:// endpoint on a
// TLS server). nil: every endpoint accepts a connection (and its TLS).
func Probe(ctx context.Context, c Config) error {
	tc, err := tlsConfig(c)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range c.Endpoints {
		u, err := url.Parse(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("etcd endpoint %s: %w", e, err))
			continue
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			errs = append(errs, fmt.Errorf("etcd endpoint %s: unreachable: %w", e, err))
			continue
		}
		dl, ok := ctx.Deadline()
		if !ok {
			dl = time.Now().Add(3 * time.Second)
		}
		_ = conn.SetDeadline(dl)
		switch u.Scheme {
		case "https":
			cfg := &tls.Config{MinVersion: tls.VersionTLS12}
			if tc != nil {
				cfg = tc.Clone()
			}
			cfg.ServerName = u.Hostname()
			cfg.NextProtos = []string{"h2"}
			tconn := tls.Client(conn, cfg)
			if err := tconn.HandshakeContext(ctx); err != nil {
				errs = append(errs, fmt.Errorf("etcd endpoint %s: TLS handshake failed (check fleet.ca, fleet.cert, fleet.key): %w", e, err))
			} else if err := probeRead(tconn); err != nil {
				// TLS 1.3 reports a refused client certificate on the
				// first read.
				errs = append(errs, fmt.Errorf("etcd endpoint %s: TLS handshake failed (check fleet.cert, fleet.key): %w", e, err))
			}
		default:
			// etcd without TLS answers HTTP/2's preface; a TLS server
			// closes the connection: it completes a TLS handshake instead.
			_, _ = conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
			if n, _ := conn.Read(make([]byte, 9)); n == 0 && speaksTLS(ctx, u.Host, tc) {
				errs = append(errs, fmt.Errorf("etcd endpoint %s: the server speaks TLS: use https:// (and fleet.ca)", e))
			}
		}
		conn.Close()
	}
	return errors.Join(errs...)
}

// speaksTLS reports whether addr completes a TLS handshake far enough to
// show its certificate (verified or not).
func speaksTLS(ctx context.Context, addr string, tc *tls.Config) bool {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if tc != nil {
		cfg = tc.Clone()
	}
	cfg.ServerName, _, _ = net.SplitHostPort(addr)
	err = tls.Client(conn, cfg).HandshakeContext(ctx)
	var cv *tls.CertificateVerificationError
	return err == nil || errors.As(err, &cv)
}

// probeRead reads briefly after a handshake: a refused client certificate
// (TLS 1.3) arrives as an alert; a timeout means the server waits for us.
func probeRead(c *tls.Conn) error {
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return err
}

// Dial connects to etcd. It does not wait for a member to answer: the
// first request does (so a host whose etcd is down still starts).
func Dial(c Config) (*clientv3.Client, error) {
	c = c.WithDefaults()
	cc := clientv3.Config{
		Endpoints:            c.Endpoints,
		DialTimeout:          c.DialTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zap.NewNop(), // errors reach the caller; the member loop logs them
		// Redial a member every second at most while it is down (gRPC's
		// default backoff grows to 2 minutes): a host follows the channel
		// again within about a second of etcd answering, after an outage
		// of any length (a quorum loss took 4.5-4.9 s with the default).
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
	}
	tc, err := tlsConfig(c)
	if err != nil {
		return nil, err
	}
	cc.TLS = tc
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd %s: %w", strings.Join(c.Endpoints, ","), err)
	}
	return cli, nil
}
