package heldsock

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// AsleepFile, in a locker's container folder (beside its held socket's
// folder), says the locker sleeps: the agent stopped it for want of
// connections and starts it when one is pending. It is the one record of
// it: the agent reads it back after a restart, and `lxcfleet status` shows
// the locker SLEEPING from it without asking the agent.
const AsleepFile = "sleeping.json"

// Asleep is how a locker went to sleep.
type Asleep struct {
	// Job is the agent's job that stopped it; another job that sets its
	// desired state afterwards ends the sleep.
	Job string    `json:"job"`
	At  time.Time `json:"at"`
}

// asleepPath is the AsleepFile of the locker whose socket spec is s.
func (s Spec) asleepPath() string { return filepath.Join(filepath.Dir(s.Dir), AsleepFile) }

// MarkAsleep records that the locker of s sleeps.
func MarkAsleep(s Spec, a Asleep) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	p := s.asleepPath()
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("marking %q asleep: %w", s.Name, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("marking %q asleep: %w", s.Name, err)
	}
	return nil
}

// Awake removes the record of the locker's sleep (none is no error).
func Awake(s Spec) error {
	if err := os.Remove(s.asleepPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("marking %q awake: %w", s.Name, err)
	}
	return nil
}

// AsleepIn reads the sleep record in a container folder; ok is false when
// the locker does not sleep.
func AsleepIn(ctDir string) (a Asleep, ok bool) {
	b, err := os.ReadFile(filepath.Join(ctDir, AsleepFile))
	if err != nil || json.Unmarshal(b, &a) != nil {
		return Asleep{}, false
	}
	return a, true
}
