// Package testfleet makes real test lockers for lxcfleet's tests: busybox
// LXC containers in a private lxcpath running a real Node.js app (the
// fixture in app/, its dependency installed by a real npm) that listens on
// its own 127.0.0.1 port (lxc.net.0.type = none), answers /healthz, and
// exits on the halt signal (SIGTERM). Variants: stubborn (ignores the halt
// signal), broken (never healthy) and crash (exits at once).
//
// Names carry a random prefix; every container is stopped and destroyed in
// t.Cleanup. Tests that need root or LXC skip with a reason when run by hand
// without them and fail when CI=true (RequireLXC).
package testfleet
