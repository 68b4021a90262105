package lxcctl

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"time"

	"lxcfleet/heldsock"
)

// holderComm is the command name (/proc/PID/comm, 15 bytes at most) of
// lxcfleet's socket holder (lxcfleet-listenfd hold).
const holderComm = "lxcfleet-listen"

// heldNote explains an owner mismatch on a host-held socket. A held
// socket is the holder's and, once the locker's app has fetched it, also
// the app's (the same socket at its fd 3): the owner match passes then, as
// for any socket the container holds. Held by the holder alone, the app
// has no copy of it yet (it is starting, or it binds a socket of its own
// instead of using LISTEN_FDS): a probe's connection only waits in the
// queue, so the check rightly fails, and this says why.
func heldNote(owners []string) string {
	if len(owners) == 0 {
		return ""
	}
	for _, o := range owners {
		if !strings.HasSuffix(o, "("+holderComm+")") {
			return ""
		}
	}
	return " (a socket held by lxcfleet's socket holder: the container's app has no copy of it yet; it gets it at fd 3 with LISTEN_FDS=1 when it starts)"
}

// dialProbe dials a health probe's connection. To an IPv4 loopback address
// it dials from heldsock.ProbeSource (127.0.0.2, loopback too), so that the
// agent's own probes never count as a held-socket locker's traffic (see
// heldsock.Activity: they would keep an idle locker awake for ever); where
// that address cannot be bound, from the default one.
func dialProbe(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.To4() != nil && ip.IsLoopback() {
			pd := d
			pd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(heldsock.ProbeSource)}
			if c, err := pd.DialContext(ctx, network, addr); err == nil || !isBindError(err) {
				return c, err
			}
		}
	}
	return d.DialContext(ctx, network, addr)
}

// isBindError reports an error of binding the probe's source address.
func isBindError(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EADDRINUSE)
}
