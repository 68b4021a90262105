package fleet

import (
	"fmt"
	"strings"
	"time"
)

// DefaultPrefix is the etcd key prefix of every lxcfleet key.
const DefaultPrefix = "/lxcfleet"

// keys builds the etcd keys of one group (see the package doc).
type keys struct{ base string } // "<prefix>/<group>/"

func newKeys(prefix, group string) keys {
	return keys{base: strings.TrimRight(prefix, "/") + "/" + group + "/"}
}

func (k keys) hosts() string           { return k.base + "hosts/" }
func (k keys) host(id string) string   { return k.hosts() + id }
func (k keys) channel() string         { return k.base + "channel" }
func (k keys) sem() string             { return k.base + "sem/" }
func (k keys) slots() string           { return k.sem() + "slot/" }
func (k keys) slot(i int) string       { return fmt.Sprintf("%s%04d", k.slots(), i) }
func (k keys) starts() string          { return k.sem() + "start/" }
func (k keys) results(c string) string { return k.base + "results/" + c + "/" }
func (k keys) result(c, host string) string {
	return k.results(c) + host
}

// start is a start key; it sorts by time: "<sem>/start/<UTC RFC 3339 nano, fixed width>-<host>".
func (k keys) start(at time.Time, host string) string {
	return k.starts() + at.UTC().Format(startTimeFormat) + "-" + host
}

// startTimeFormat has a fixed width, so keys sort by time.
const startTimeFormat = "20060102T150405.000000000Z"

// ValidID reports whether s may be a host id or a group name: 1-64 of
// [A-Za-z0-9._-], not starting with a dot (it becomes one etcd key segment).
func ValidID(s string) error {
	if s == "" || len(s) > 64 || s[0] == '.' {
		return fmt.Errorf("invalid id %q: want 1-64 of A-Z a-z 0-9 . _ -, not starting with a dot", s)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("invalid id %q: want 1-64 of A-Z a-z 0-9 . _ -, not starting with a dot", s)
		}
	}
	return nil
}
