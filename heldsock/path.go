package heldsock

import (
	"fmt"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// maxSunPath is the room for a path in a sockaddr_un (108 with its NUL).
const maxSunPath = 107

// shortPath returns a path to p that fits a sockaddr_un: p itself when
// short enough, otherwise /proc/self/fd/N/BASE through a descriptor of p's
// folder, which done closes (after the bind or connect).
func shortPath(p string) (short string, done func(), err error) {
	if len(p) <= maxSunPath {
		return p, func() {}, nil
	}
	fd, err := unix.Open(filepath.Dir(p), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("opening the folder of %s: %w", p, err)
	}
	short = "/proc/self/fd/" + strconv.Itoa(fd) + "/" + filepath.Base(p)
	if len(short) > maxSunPath {
		unix.Close(fd)
		return "", nil, fmt.Errorf("unix socket path %s is too long (%d bytes)", p, len(p))
	}
	return short, func() { unix.Close(fd) }, nil
}
