// Command lxcfleet-listenfd passes a host-held listening socket to a
// locker's app (see package heldsock). It is a small static binary
// (CGO_ENABLED=0) with two roles:
//
//	lxcfleet-listenfd hold -dir DIR
//
// runs the host's socket holder: it keeps every held locker's listening
// socket and serves each over a Unix socket, controlled through
// DIR/control.sock. It runs as a process of its own (the agent starts it in
// a session of its own when none answers, or systemd runs it as
// lxcfleet-holder.service), so the agent's restart or crash closes no
// socket.
//
//	lxcfleet-listenfd [-socket PATH] [-wait D] -- APP [ARGS...]
//
// runs inside a locker (bound read-only at /sbin/lxcfleet-listenfd, in
// front of the app in lxc.init.cmd): it fetches the listening socket from
// PATH (default /run/lxcfleet/listen.sock, the holder's folder bound into
// the container), puts it at fd 3, sets LISTEN_FDS=1 and LISTEN_PID
// (systemd's convention) and execs the app.
package main
