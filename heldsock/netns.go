package heldsock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// NetNSDir is where iproute2 keeps named network namespaces.
const NetNSDir = "/run/netns"

// NetNSPath is the file of a named network namespace.
func NetNSPath(name string) string { return filepath.Join(NetNSDir, name) }

// EnsureNetNS makes the named network namespace with its loopback up
// (ip netns add NAME; ip -n NAME link set lo up) unless it exists. A
// locker joins it (lxc.namespace.share.net) instead of making a namespace
// at each start, so the socket held in it outlives the locker's restarts.
func EnsureNetNS(name string) error {
	if _, err := os.Stat(NetNSPath(name)); errors.Is(err, fs.ErrNotExist) {
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			return fmt.Errorf("making network namespace %q (ip netns add %s): %v: %s", name, name, err, strings.TrimSpace(string(out)))
		}
	}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("bringing loopback up in network namespace %q (ip -n %s link set lo up): %v: %s", name, name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// RemoveNetNS deletes a named network namespace (ip netns delete); one
// that does not exist is no error.
func RemoveNetNS(name string) error {
	if _, err := os.Stat(NetNSPath(name)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
		return fmt.Errorf("deleting network namespace %q (ip netns delete %s): %v: %s", name, name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
