// Package lxcctl is lxcfleet's one adapter to LXC: it is the only package that
// imports github.com/lxc/go-lxc.
//
// A Host is an lxcpath (default /var/lib/lxc). It lists containers with their
// state, start order and groups; starts a container through a re-exec of the
// running binary (see forkstart.go: starting from the long-running process
// would move it into the container's monitor cgroups and leak them); stops a
// container gracefully (halt signal, a wait on the init's pidfd with
// sub-second precision, then a kill); runs commands inside a container; and
// reads and edits container configuration.
//
// lockerverbs.StopAll and StartAll run those operations over many
// containers in bounded parallel: at most P stopping at once, and a window of at most K
// starting at once, where a container holds its slot until its health check
// passes or its deadline expires.
//
// A health check counts only what the container itself answers (owner.go):
// the listening socket that took an HTTP or TCP probe must be held by the
// container's init or a descendant (found through NETLINK_SOCK_DIAG and
// /proc/PID/fd), so a host process squatting a locker's port never makes it
// healthy.
//
// go-lxc pitfalls this package designs around (measured; the README's
// "How containers are started and stopped" has the numbers):
// Shutdown/Wait truncate timeouts to whole seconds, Shutdown does not kill,
// one Container object holds one lock for a whole Wait, and errors are
// formatted with %s so errors.Is does not work on them. Every operation
// therefore uses its own short-lived Container object and branches on
// Defined()/Running(), never on go-lxc's error values.
package lxcctl
