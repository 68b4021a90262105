// Package heldsock keeps lockers' listening sockets on the host, so that a
// locker's restart queues connections in the kernel instead of refusing
// them (systemd's socket activation, for LXC containers).
//
// A Holder is a small process of its own (lxcfleet-listenfd hold): it
// creates each locker's listening TCP socket (on the host's network, or
// inside a named network namespace the locker joins) and keeps it for the
// locker's whole life, across restarts of the locker and of the agent. For
// each locker it serves the socket over a Unix socket in a folder that is
// bind-mounted into the container. LXC closes every inherited descriptor at
// start, so the locker's init fetches the socket there (SCM_RIGHTS), puts it
// at fd 3 with LISTEN_FDS=1 and LISTEN_PID (sd_listen_fds(3)) and execs the
// app (Exec, run by lxcfleet-listenfd inside the container).
//
// The agent talks to the holder through a Client over the holder's control
// socket: Hold (idempotent; the start of a held locker calls it first),
// Release and List. EnsureHolder starts the holder when none answers.
//
// This package uses only the standard library and golang.org/x/sys: the
// in-container side is built into a static binary (CGO_ENABLED=0).
package heldsock
