package provision

import (
	"strings"
)

// netDeviations reports a locker in a network namespace of its own
// (lxc.net.0.type = empty) whose loopback stays down: its app cannot be
// reached even from inside, so it never passes a health check.
func netDeviations(config []byte) []string {
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
	if typ == NetworkEmpty && flags != "up" {
		return []string{"lxc.net.0.type = empty without lxc.net.0.flags = up: its loopback is down, so nothing (not even its own health check) reaches its app: add lxc.net.0.flags = up"}
	}
	return nil
}
