// Package procsock answers, from /proc, the questions lxcfleet asks about
// the host's TCP sockets: which sockets listen in a network namespace,
// which processes hold a socket, and whether two processes share a
// namespace. It is the one reader of those /proc files (lxcctl's health
// checks, heldsock's takeback of a holder's sockets and provision's port
// checks use it); the files are parsed by prometheus/procfs.
//
// Two /proc reads here are not procfs's: a descriptor's link
// (/proc/PID/fd/N), since procfs lists a process's descriptors and their
// targets but not as pairs and the takeback needs the pair; and a task's
// children file, which procfs does not read. heldsock's
// connection counter reads /proc/net/tcp itself: it needs the TIME_WAIT
// timers, which procfs's socket lines leave out.
package procsock
