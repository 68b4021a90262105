package agent

import (
	"fmt"
	"os"
)

// MinTokenBytes is the shortest bearer token the agent accepts.
const MinTokenBytes = 32

// MakeTokenHint says how to make a token the agent accepts.
const MakeTokenHint = "make one with `install -m 600 /dev/null /etc/lxcfleet/token && head -c 32 /dev/urandom | base64 > /etc/lxcfleet/token` and set listen.token_file = \"/etc/lxcfleet/token\""

// CheckSecretFile refuses a file holding a secret (a token, a TLS key, a
// config with a token) that its group or others may read or write.
func CheckSecretFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("%s is readable or writable by group or others (mode %04o): run chmod 600 %s", path, m, path)
	}
	return nil
}
