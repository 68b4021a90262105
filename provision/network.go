package provision

import (
	"bytes"
	"fmt"
	"strings"
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
	idmapped := false
	for _, line := range strings.Split(string(config), "\n") {
		if m := keyRe.FindStringSubmatch(line); m != nil && m[1] == "lxc.idmap" && m[2] != "" {
			idmapped = true
		}
	}
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
	for _, line := range strings.Split(string(config), "\n") {
		m := keyRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		switch m[1] {
		case "lxc.net.0.type":
			typ = m[2]
		case "lxc.net.0.flags":
			flags = m[2]
		case "lxc.net":
			if m[2] == "" { // "lxc.net =" clears every network
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
	for _, line := range strings.SplitAfter(string(config), "\n") {
		if m := keyRe.FindStringSubmatch(strings.TrimRight(line, "\n")); m != nil && m[1] == "lxc.net.0.flags" {
			continue
		}
		b.WriteString(line)
	}
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
	for _, line := range strings.SplitAfter(string(config), "\n") {
		if m := keyRe.FindStringSubmatch(strings.TrimRight(line, "\n")); m != nil && m[1] == "lxc.mount.auto" {
			continue
		}
		b.WriteString(line)
	}
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
