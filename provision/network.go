package provision

import (
	"bytes"
	"strings"
)

// netDeviations reports a locker in a network namespace of its own
// (lxc.net.0.type = empty) whose loopback stays down: its app cannot be
// reached even from inside, so it never passes a health check.
func netDeviations(config []byte) []string {
	if loopbackDown(config) {
		return []string{"lxc.net.0.type = empty without lxc.net.0.flags = up: its loopback is down, so nothing (not even its own health check) reaches its app: add lxc.net.0.flags = up (adopt does)"}
	}
	return nil
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
	if !loopbackDown(config) {
		return config, nil
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
	return b.Bytes(), []string{"set lxc.net.0.flags = up (its empty network's loopback was down)"}
}
