package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// journal is a Member's own record on the host (Config.StateFile), written
// before etcd is told anything, so that neither an etcd outage nor an
// agent restart forgets it:
//   - Lease: the last session lease, adopted by the next session (of this
//     process or, after a crash, of the next agent) while etcd still holds
//     it, so the host is not locked out of its own registry entry and slot;
//   - Pending: outcomes of updates not yet written to etcd (with the pause
//     they imply), written before the host decides anything else;
//   - Failed: the releases this host failed on (the newest maxOwnFailures):
//     it never takes them again, whatever etcd says.
//
// Without a StateFile the journal lives in memory only (tests, and hosts
// whose agent has no state folder).
type journal struct {
	path string
	mu   sync.Mutex
	st   journalState
}

type journalState struct {
	Lease string `json:"lease,omitempty"`
	// LeaseOf is "<prefix>/<group>/<host id>" of the session that had
	// Lease: a lease is adopted only by the same identity (after a config
	// change the old one is revoked, or its registry entry and slot would
	// live on under the new identity's keep-alives).
	LeaseOf string          `json:"lease_of,omitempty"`
	Pending []pendingReport `json:"pending,omitempty"`
	Failed  []ownFailure    `json:"failed,omitempty"`
}

// pendingReport is an update's outcome waiting to be written to etcd.
type pendingReport struct {
	Holder  Holder  `json:"holder"`
	Release Release `json:"release"`
	Result  Result  `json:"result"`
	// ChannelRev is the channel's mod revision when the update began: the
	// pause a failure implies is fenced on the slot, or, once the slot is
	// gone (its lease expired during an outage), on the channel being
	// unchanged since then (no operator acted on it).
	ChannelRev int64 `json:"channel_rev"`
}

// ownFailure is this host's failure on a release.
type ownFailure struct {
	Commit string `json:"commit"`
	Result Result `json:"result"`
}

const maxOwnFailures = 20

// openJournal reads the journal at path. A file that cannot be parsed is
// moved aside (path + ".corrupt") and the journal starts empty: lost is
// then the reason, for the caller to log (the host's lockers matter more
// than the fleet's memory; etcd still has what was written to it).
func openJournal(path string) (j *journal, lost error, err error) {
	j = &journal{path: path}
	if path == "" {
		return j, nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return j, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading the fleet journal %s: %w", path, err)
	}
	if perr := json.Unmarshal(b, &j.st); perr != nil {
		j.st = journalState{}
		if err := os.Rename(path, path+".corrupt"); err != nil {
			return nil, nil, fmt.Errorf("moving the unreadable fleet journal %s aside: %w", path, err)
		}
		return j, fmt.Errorf("the fleet journal %s could not be read (moved to %s.corrupt): %w", path, path, perr), nil
	}
	return j, nil, nil
}

// snapshot returns a copy of the state.
func (j *journal) snapshot() journalState {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := j.st
	st.Pending = append([]pendingReport(nil), j.st.Pending...)
	st.Failed = append([]ownFailure(nil), j.st.Failed...)
	return st
}

// change applies fn and writes the file (a temporary file, fsynced, then
// renamed over it).
func (j *journal) change(fn func(*journalState)) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	fn(&j.st)
	if j.path == "" {
		return nil
	}
	b, _ := json.MarshalIndent(j.st, "", "  ")
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("writing the fleet journal %s: %w", j.path, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, j.path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing the fleet journal %s: %w", j.path, err)
	}
	if d, err := os.Open(filepath.Dir(j.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// failedOn returns this host's failure on commit, if any.
func (st journalState) failedOn(commit string) (Result, bool) {
	for _, f := range st.Failed {
		if f.Commit == commit {
			return f.Result, true
		}
	}
	return Result{}, false
}
