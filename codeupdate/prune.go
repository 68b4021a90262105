package codeupdate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// staleAfter is how old a staging or trash folder must be before Prune
// removes it (a younger one may belong to a build running right now).
const staleAfter = time.Hour

// Prune keeps at most keep releases (keep >= 1) and removes the others,
// bad ones first. It never removes:
//   - the last keep GOOD releases, counted in the order a rollback wants
//     them: the current release, the newest good release of the
//     configured target (Options.Target), the releases that were current
//     before, newest first (the previous good ones), then the newest good
//     builds;
//   - the current release, the previous good one (the rollback target)
//     and any with inUse[name] > 0 (running lockers still mount it), even
//     beyond keep.
//
// Places left under keep are filled with the newest other releases (bad
// ones). It returns the names it removed, bad ones first, each group
// oldest first. A release is first renamed out of releases/ so that it
// disappears atomically, then deleted. Prune also removes staging folders
// left by crashed builds.
func (m *Manager) Prune(ctx context.Context, keep int, inUse map[string]int) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("pruning releases: keep must be at least 1, got %d", keep)
	}
	rels, err := m.Releases()
	if err != nil {
		return nil, fmt.Errorf("pruning releases: %w", err)
	}
	hist, err := m.readHistory()
	if err != nil {
		return nil, fmt.Errorf("pruning releases: %w", err)
	}
	byName := map[string]Release{}
	for _, r := range rels {
		byName[r.Name] = r
	}
	kept := map[string]string{}
	for _, r := range rels {
		if r.Current {
			kept[r.Name] = "current"
		}
	}
	if pg, err := m.PreviousGood(); err == nil {
		kept[pg.Name] = "previous good"
	}
	for name, n := range inUse {
		if n > 0 {
			kept[name] = fmt.Sprintf("in use by %d lockers", n)
		}
	}
	// The good releases in the order a rollback wants them.
	var good []string
	seen := map[string]bool{}
	addGood := func(name string) {
		if r, ok := byName[name]; ok && r.Good() && !seen[name] {
			seen[name] = true
			good = append(good, name)
		}
	}
	for _, r := range rels {
		if r.Current {
			addGood(r.Name)
		}
	}
	if m.target != "" {
		for _, r := range rels {
			if r.Ref == m.target && r.Good() {
				addGood(r.Name)
				break
			}
		}
	}
	for i := len(hist) - 1; i >= 0; i-- {
		addGood(hist[i].To)
		addGood(hist[i].From)
	}
	for _, r := range rels {
		addGood(r.Name)
	}
	for _, name := range good[:min(keep, len(good))] {
		if _, ok := kept[name]; !ok {
			kept[name] = "one of the last good releases"
		}
	}
	for _, r := range rels { // newest first: fill up with the newest others
		if len(kept) >= keep {
			break
		}
		if _, ok := kept[r.Name]; !ok {
			kept[r.Name] = "within keep_releases"
		}
	}
	var bad, old []Release
	for i := len(rels) - 1; i >= 0; i-- {
		r := rels[i]
		if why, ok := kept[r.Name]; ok {
			if i >= keep {
				m.log.Info("keeping old release", "release", r.Name, "because", why)
			}
			continue
		}
		if r.State == StateBad {
			bad = append(bad, r)
		} else {
			old = append(old, r)
		}
	}
	var removed []string
	for _, r := range append(bad, old...) {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		trash := filepath.Join(m.releasesDir(), ".trash-"+r.Name+"-"+randomSuffix())
		if err := os.Rename(r.Path, trash); err != nil {
			return removed, fmt.Errorf("removing release %s: %w", r.Name, err)
		}
		if err := os.RemoveAll(trash); err != nil {
			return removed, fmt.Errorf("removing release %s (now %s): %w", r.Name, trash, err)
		}
		m.log.Info("release removed", "release", r.Name, "state", r.State)
		removed = append(removed, r.Name)
	}
	m.removeStale()
	return removed, nil
}

// removeStale deletes staging and trash folders older than staleAfter.
func (m *Manager) removeStale() {
	entries, err := os.ReadDir(m.releasesDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if !e.IsDir() || !(strings.HasPrefix(n, ".tmp-") || strings.HasPrefix(n, ".trash-")) {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < staleAfter {
			continue
		}
		p := filepath.Join(m.releasesDir(), n)
		if err := os.RemoveAll(p); err != nil {
			m.log.Warn("removing stale folder", "path", p, "err", err)
		}
	}
}
