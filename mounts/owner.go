package mounts

import (
	"fmt"
	"strconv"
	"strings"
)

// Owner is the host uid and gid that own a locker's folders: the ids that
// root inside the container maps to. Owner{0, 0} for a privileged container.
type Owner struct {
	UID, GID int
}

// OwnerFromIdmap returns the host uid and gid that root inside a container
// maps to, from the values of its lxc.idmap lines, such as
// "u 0 100000 65536" and "g 0 100000 65536" ("b" maps both). A full
// "lxc.idmap = ..." line is accepted too. No idmap at all means a privileged
// container: Owner{0, 0}. An idmap that does not map container uid 0 or gid
// 0 is an error.
func OwnerFromIdmap(idmapLines []string) (Owner, error) {
	if len(idmapLines) == 0 {
		return Owner{}, nil
	}
	uid, gid := -1, -1
	for _, line := range idmapLines {
		v := line
		if k, val, ok := ParseConfigLine(line); ok {
			if k != "lxc.idmap" {
				return Owner{}, fmt.Errorf("idmap %q: not an lxc.idmap value", line)
			}
			v = val
		}
		f := strings.Fields(v)
		if len(f) != 4 {
			return Owner{}, fmt.Errorf("idmap %q: want 4 fields (type nsid hostid range)", line)
		}
		var n [3]int64
		for i, s := range f[1:] {
			x, err := strconv.ParseInt(s, 10, 64)
			if err != nil || x < 0 || x > 1<<32-1 {
				return Owner{}, fmt.Errorf("idmap %q: %q is not an id", line, s)
			}
			n[i] = x
		}
		nsid, hostid, count := n[0], n[1], n[2]
		if count == 0 {
			return Owner{}, fmt.Errorf("idmap %q: empty range", line)
		}
		if f[0] != "u" && f[0] != "g" && f[0] != "b" {
			return Owner{}, fmt.Errorf("idmap %q: type %q is not u, g or b", line, f[0])
		}
		if nsid != 0 { // maps other ids than root's
			continue
		}
		if f[0] != "g" {
			uid = int(hostid)
		}
		if f[0] != "u" {
			gid = int(hostid)
		}
	}
	switch {
	case uid < 0:
		return Owner{}, fmt.Errorf("idmap %q does not map container uid 0", idmapLines)
	case gid < 0:
		return Owner{}, fmt.Errorf("idmap %q does not map container gid 0", idmapLines)
	}
	return Owner{UID: uid, GID: gid}, nil
}
