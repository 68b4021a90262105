package packaging

import (
	_ "embed"
	"strings"
)

// Unit is the systemd unit the .deb installs (lxcfleet.service); `lxcfleet
// service install` writes the same one (see UnitFor).
//
//go:embed lxcfleet.service
var Unit string

// The binary and config the packaged unit names.
const (
	UnitBinary = "/usr/bin/lxcfleet"
	UnitConfig = "/etc/lxcfleet/lxcfleet.toml"
)

// UnitFor returns Unit for a binary and a config at other paths (the same
// unit when they are UnitBinary and UnitConfig).
func UnitFor(binary, config string) string {
	return strings.Replace(Unit, "ExecStart="+UnitBinary+" agent --config "+UnitConfig, "ExecStart="+binary+" agent --config "+config, 1)
}

// HolderUnit is the socket holder's systemd unit the .deb installs
// (lxcfleet-holder.service); `lxcfleet service install` writes the same
// one (see HolderUnitFor).
//
//go:embed lxcfleet-holder.service
var HolderUnit string

// The helper and the holder's folder the packaged holder unit names.
const (
	HolderBinary = "/usr/libexec/lxcfleet/lxcfleet-listenfd"
	HolderDir    = "/run/lxcfleet-holder"
)

// HolderUnitFor returns HolderUnit for a helper at another path (the same
// unit for HolderBinary). The folder is the unit's RuntimeDirectory, so it
// stays HolderDir.
func HolderUnitFor(listenfd string) string {
	return strings.Replace(HolderUnit, "ExecStart="+HolderBinary+" hold", "ExecStart="+listenfd+" hold", 1)
}

// LockersUnit is the lockers' boot and shutdown unit the .deb installs
// (lxcfleet-lockers.service: `start-all --boot` at boot, `stop-all
// --host-shutdown` at shutdown); `lxcfleet service install` writes the
// same one (see LockersUnitFor).
//
//go:embed lxcfleet-lockers.service
var LockersUnit string

// LockersUnitFor returns LockersUnit for a binary and a config at other
// paths (the same unit for UnitBinary and UnitConfig): both its commands
// change, nothing else.
func LockersUnitFor(binary, config string) string {
	u := strings.ReplaceAll(LockersUnit, "/usr/bin/lxcfleet start-all --boot --config "+UnitConfig, binary+" start-all --boot --config "+config)
	return strings.ReplaceAll(u, "/usr/bin/lxcfleet stop-all --host-shutdown --config "+UnitConfig, binary+" stop-all --host-shutdown --config "+config)
}
