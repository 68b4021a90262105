package codeupdate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"lxcfleet/internal/atomicfile"
)

// Switched is one switch of current: a line of Root/history.
type Switched struct {
	Time   time.Time `json:"time"`
	From   string    `json:"from,omitempty"`
	To     string    `json:"to"`
	Reason string    `json:"reason,omitempty"`
}

// Switch points current at rel atomically (a new symlink renamed over the
// old one, then an fsync of Root), appends the switch to Root/history and
// rewrites Root/BUILD. It returns the release that was current before
// (zero when there was none). Running lockers keep the release they
// started on; lockers started afterwards get rel. Switching to the
// release that is already current changes nothing and records nothing.
func (m *Manager) Switch(ctx context.Context, rel Release, reason string) (Release, error) {
	if err := ctx.Err(); err != nil {
		return Release{}, err
	}
	target, err := m.Release(rel.Name)
	if err != nil {
		return Release{}, fmt.Errorf("switching to %s: %w", rel.Name, err)
	}
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	from, err := m.currentName()
	if err != nil {
		m.log.Warn("current link is unreadable; replacing it", "err", err)
	}
	prev, err := m.Current()
	if err != nil && !errors.Is(err, ErrNoCurrent) {
		m.log.Warn("current points at no complete release; replacing it", "from", from, "err", err)
		prev = Release{Name: from}
	}
	if from == target.Name && prev.Path != "" {
		return prev, m.writeBuildLine(target)
	}
	link := m.currentLink()
	tmp := filepath.Join(m.root, ".current-"+randomSuffix())
	if err := os.Symlink(filepath.Join("releases", target.Name), tmp); err != nil {
		return Release{}, fmt.Errorf("switching to %s: %w", target.Name, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return Release{}, fmt.Errorf("switching to %s: %w", target.Name, err)
	}
	if err := atomicfile.SyncDir(m.root); err != nil {
		return Release{}, fmt.Errorf("switching to %s: syncing %s: %w", target.Name, m.root, err)
	}
	rec := Switched{Time: time.Now().UTC(), From: prev.Name, To: target.Name, Reason: reason}
	if err := appendJSONLine(m.historyFile(), rec); err != nil {
		return prev, fmt.Errorf("switched to %s but recording it in %s failed: %w", target.Name, m.historyFile(), err)
	}
	if err := m.writeBuildLine(target); err != nil {
		return prev, fmt.Errorf("switched to %s but writing %s failed: %w", target.Name, m.buildLine(), err)
	}
	m.log.Info("switched current", "release", target.Name, "from", prev.Name, "reason", reason)
	prev.Current = false
	return prev, nil
}

// writeBuildLine rewrites Root/BUILD:
// "<build> <sha12> <ref or -> <commit time, RFC 3339 UTC> <git describe>"
// (the describe field is left out for releases built without one).
func (m *Manager) writeBuildLine(r Release) error {
	ref := r.Ref
	if ref == "" {
		ref = "-"
	}
	line := fmt.Sprintf("%d %s %s %s", r.Build, r.Short, ref, r.CommitTime.UTC().Format(time.RFC3339))
	if r.Describe != "" {
		line += " " + r.Describe
	}
	line += "\n"
	return atomicfile.WriteFile(m.buildLine(), []byte(line), 0o644)
}

// History returns every recorded switch of current, oldest first.
func (m *Manager) History() ([]Switched, error) { return m.readHistory() }

func (m *Manager) readHistory() ([]Switched, error) {
	var out []Switched
	err := readJSONLines(m.historyFile(), func(line []byte) error {
		var r Switched
		if err := json.Unmarshal(line, &r); err != nil {
			return err
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// PreviousGood returns the newest release that was current before the
// present one and is still complete and not marked bad, walking the switch
// history backwards. After the present release is marked bad and left, a
// second call goes one release further back. The error wraps
// ErrNoPreviousGood when there is none.
func (m *Manager) PreviousGood() (Release, error) {
	cur, err := m.currentName()
	if err != nil {
		return Release{}, err
	}
	hist, err := m.readHistory()
	if err != nil {
		return Release{}, err
	}
	marks, err := m.readMarks()
	if err != nil {
		return Release{}, err
	}
	tried := map[string]bool{cur: true, "": true}
	for i := len(hist) - 1; i >= 0; i-- {
		for _, name := range []string{hist[i].To, hist[i].From} {
			if tried[name] {
				continue
			}
			tried[name] = true
			if mk, ok := marks[name]; ok && mk.State == StateBad {
				continue
			}
			r, err := m.readRelease(name)
			if err != nil {
				continue // pruned or never complete
			}
			decorate(&r, marks, cur)
			return r, nil
		}
	}
	if cur == "" {
		return Release{}, fmt.Errorf("%w: %w", ErrNoPreviousGood, ErrNoCurrent)
	}
	return Release{}, fmt.Errorf("%w before %s", ErrNoPreviousGood, cur)
}
