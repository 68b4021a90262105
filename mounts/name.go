package mounts

import (
	"errors"
	"fmt"
	"unicode"
)

// MaxNameLen is the longest locker name ValidName accepts: the busybox and
// download templates use the name as the container's hostname, and Linux
// hostnames are at most 64 bytes.
const MaxNameLen = 64

// ValidName checks that name is a valid LXC container name that is also safe
// as a folder name under lockers/: 1 to MaxNameLen characters from
// [A-Za-z0-9._-], not starting with "-" or "." (which rules out "." and "..").
// The error names the bad name and says why.
func ValidName(name string) error {
	if name == "" {
		return errors.New("invalid container name: empty")
	}
	bad := func(why string, args ...any) error {
		return fmt.Errorf("invalid container name %q: %s", name, fmt.Sprintf(why, args...))
	}
	if name == "." || name == ".." {
		return bad("not a folder name")
	}
	if len(name) > MaxNameLen {
		return bad("%d bytes long, at most %d allowed", len(name), MaxNameLen)
	}
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
		case r == '.' || r == '-':
			if i == 0 {
				return bad("must not start with %q", r)
			}
		case r == '/':
			return bad("contains a slash")
		case r == 0:
			return bad("contains a NUL byte")
		case r == unicode.ReplacementChar:
			return bad("not valid UTF-8 or contains %q", r)
		case unicode.IsSpace(r):
			return bad("contains white space %q", r)
		case unicode.IsControl(r):
			return bad("contains control character %q", r)
		default:
			return bad("character %q not allowed (only A-Z a-z 0-9 . _ -)", r)
		}
	}
	return nil
}
