package agent

import (
	"os"
	"strings"

	"lxcfleet/lxcctl"
)

// The host's shutdown and boot path (as incus's `incus admin shutdown`
// from the ExecStop of incus-startup.service): the packaged
// lxcfleet-lockers.service, ordered after the agent's unit, runs
// `lxcfleet stop-all --host-shutdown` when the host shuts down, before
// systemd stops the agent, and `lxcfleet start-all --boot` when it boots.
//
// A host shutdown stops every locker gracefully and bounded, through the
// stop policy (stop_parallel at once, stop_timeout each, then a kill), and
// keeps every locker's desired state: what should run runs again after
// the boot. Until the host boots again (its boot id changes) or a boot
// start runs, supervision and the release watch hold still, so that
// nothing restarts the lockers the shutdown stopped. At boot the agent's
// recovery (the host booted) and then the boot start start only the
// lockers whose desired state is running, through the start policy (W and
// its pacing, each counted once healthy).

// hostShutdownMeta is the journal's meta key that holds the boot id of
// the host's shutdown in progress ("" when none).
const hostShutdownMeta = "host_shutdown"

// bootID is this boot's id ("" when the kernel does not say).
func bootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// hostShuttingDown reports whether a host shutdown stopped the lockers
// during this boot and no boot start has run since.
func (a *Agent) hostShuttingDown() bool {
	v, err := a.jr.Meta(hostShutdownMeta)
	return err == nil && v != "" && v == bootID()
}

// beginHostShutdown holds supervision and the release watch still until
// the next boot (or boot start).
func (a *Agent) beginHostShutdown() error {
	a.log.Warn("host shutdown: stopping every locker, desired states kept; supervision and the release watch hold still until the boot")
	return a.jr.SetMeta(hostShutdownMeta, bootID())
}

// endHostShutdown lets supervision and the release watch act again.
func (a *Agent) endHostShutdown() error {
	if v, err := a.jr.Meta(hostShutdownMeta); err != nil || v == "" {
		return err
	}
	return a.jr.SetMeta(hostShutdownMeta, "")
}

// desiredRunning keeps the lockers of infos whose desired state is
// running (a boot start starts no other).
func (a *Agent) desiredRunning(infos []lxcctl.Info) ([]lxcctl.Info, error) {
	desired, err := a.jr.Desired()
	if err != nil {
		return nil, err
	}
	var out []lxcctl.Info
	for _, in := range infos {
		if d, ok := desired[in.Name]; ok && d.Running {
			out = append(out, in)
		}
	}
	return out, nil
}
