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
