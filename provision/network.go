package provision

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"lxcfleet/mounts"
)

// netDeviations reports a locker in a network namespace of its own
// (lxc.net.0.type = empty) whose loopback stays down: its app cannot be
// reached even from inside, so it never passes a health check.
func netDeviations(config []byte) []string {
	var out []string
	if loopbackDown(config) {
		out = append(out, "lxc.net.0.type = empty without lxc.net.0.flags = up: its loopback is down, so nothing (not even its own health check) reaches its app: add lxc.net.0.flags = up (adopt does)")
	}
	if sysfsRefused(config) {
		out = append(out, "unprivileged (lxc.idmap) on the host's network (lxc.net.0.type = none) with sys in lxc.mount.auto: the kernel refuses it sysfs there, so it never starts: drop sys from lxc.mount.auto (adopt does)")
	}
	return out
}

// sysfsRefused reports an unprivileged container on the host's network
// whose lxc.mount.auto mounts sys: LXC fails its start ("Failed to mount
// sysfs"), as a user namespace may mount sysfs only in a network namespace
// it owns.
func sysfsRefused(config []byte) bool {
	idmapped := slices.ContainsFunc(mounts.ConfigValues(config, "lxc.idmap"), func(v string) bool { return v != "" })
	if !idmapped || !sharesHostNetwork(config) {
		return false
	}
	for _, f := range strings.Fields(mountAutoOf(config)) {
		if f == "sys" || strings.HasPrefix(f, "sys:") {
			return true
		}
	}
	return false
}

// loopbackDown reports an empty network without lxc.net.0.flags = up.
func loopbackDown(config []byte) bool {
	var typ, flags string
	for k, v := range mounts.ConfigItems(config) {
		switch k {
		case "lxc.net.0.type":
			typ = v
		case "lxc.net.0.flags":
			flags = v
		case "lxc.net":
			if v == "" { // "lxc.net =" clears every network
				typ, flags = "", ""
			}
		}
	}
	return typ == NetworkEmpty && flags != "up"
}

// fixNet brings the loopback of an empty network up, for Adopt: it
// replaces any lxc.net.0.flags line by lxc.net.0.flags = up.
func fixNet(config []byte) ([]byte, []string) {
	config, changes := fixSysfs(config)
	if !loopbackDown(config) {
		return config, changes
	}
	var b bytes.Buffer
	b.Write(mounts.DropConfig(config, func(k, _ string) bool { return k == "lxc.net.0.flags" }))
	if b.Len() > 0 && !bytes.HasSuffix(b.Bytes(), []byte("\n")) {
		b.WriteByte('\n')
	}
	b.WriteString("# lxcfleet adopt: loopback up in its own network namespace\nlxc.net.0.flags = up\n")
	return b.Bytes(), append(changes, "set lxc.net.0.flags = up (its empty network's loopback was down)")
}

// fixSysfs drops sys from the lxc.mount.auto of an unprivileged container
// on the host's network, for Adopt: its lxc.mount.auto lines are replaced by
// one without sys.
func fixSysfs(config []byte) ([]byte, []string) {
	if !sysfsRefused(config) {
		return config, nil
	}
	var b bytes.Buffer
	b.Write(mounts.DropConfig(config, func(k, _ string) bool { return k == "lxc.mount.auto" }))
	if b.Len() > 0 && !bytes.HasSuffix(b.Bytes(), []byte("\n")) {
		b.WriteByte('\n')
	}
	auto := mountAutoWithoutSys(config)
	b.WriteString("# lxcfleet adopt: no sysfs for an unprivileged locker on the host's network\n")
	if auto != "" {
		b.WriteString("lxc.mount.auto = " + auto + "\n")
	}
	return b.Bytes(), []string{fmt.Sprintf("set lxc.mount.auto = %s (was %s: an unprivileged locker on the host's network cannot mount sysfs)", auto, mountAutoOf(config))}
}
