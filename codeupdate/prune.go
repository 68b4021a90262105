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

// Prune removes the oldest releases beyond the newest keep, except the
// current release, the previous good one (the rollback target) and any
// with inUse[name] > 0 (running lockers still mount it). It returns the
// names it removed, oldest first. A release is first renamed out of
// releases/ so that it disappears atomically, then deleted. Prune also
// removes staging folders left by crashed builds.
func (m *Manager) Prune(ctx context.Context, keep int, inUse map[string]int) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("pruning releases: keep must be at least 1, got %d", keep)
	}
	rels, err := m.Releases()
	if err != nil {
		return nil, fmt.Errorf("pruning releases: %w", err)
	}
	protect := map[string]string{}
	for _, r := range rels {
		if r.Current {
			protect[r.Name] = "current"
		}
	}
	if pg, err := m.PreviousGood(); err == nil {
		protect[pg.Name] = "previous good"
	}
	for name, n := range inUse {
		if n > 0 {
			protect[name] = fmt.Sprintf("in use by %d lockers", n)
		}
	}
	var removed []string
	for i := len(rels) - 1; i >= keep; i-- {
		r := rels[i]
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		if why, ok := protect[r.Name]; ok {
			m.log.Info("keeping old release", "release", r.Name, "because", why)
			continue
		}
		trash := filepath.Join(m.releasesDir(), ".trash-"+r.Name+"-"+randomSuffix())
		if err := os.Rename(r.Path, trash); err != nil {
			return removed, fmt.Errorf("removing release %s: %w", r.Name, err)
		}
		if err := os.RemoveAll(trash); err != nil {
			return removed, fmt.Errorf("removing release %s (now %s): %w", r.Name, trash, err)
		}
		m.log.Info("release removed", "release", r.Name)
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
