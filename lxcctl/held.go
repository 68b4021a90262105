package lxcctl

import "strings"

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
