package codeupdate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"lxcfleet/internal/atomicfile"
)

// seqFile is Root/build-seq: one line, the last build number given out.
func (m *Manager) seqFile() string { return filepath.Join(m.root, "build-seq") }

// nextBuild gives out the next host build number: one more than the
// larger of Root/build-seq and every release's build number (so a host
// whose releases were numbered by commit count goes on above them), and
// records it. The caller holds Root/releases.lock.
func (m *Manager) nextBuild() (int, error) {
	last := 0
	b, err := os.ReadFile(m.seqFile())
	switch {
	case err == nil:
		last, err = strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return 0, fmt.Errorf("reading %s: %w", m.seqFile(), err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return 0, fmt.Errorf("reading %s: %w", m.seqFile(), err)
	}
	last = max(last, m.maxBuild())
	n := last + 1
	if err := atomicfile.WriteFile(m.seqFile(), []byte(strconv.Itoa(n)+"\n"), 0o644); err != nil {
		return 0, fmt.Errorf("recording build number %d: %w", n, err)
	}
	return n, nil
}

// maxBuild is the highest build number of the releases on disk (0 when
// there are none).
func (m *Manager) maxBuild() int {
	rels, err := m.Releases()
	if err != nil {
		return 0
	}
	n := 0
	for _, r := range rels {
		n = max(n, r.Build)
	}
	return n
}

// peekBuild is the number the next build would get now.
func (m *Manager) peekBuild() int {
	last := 0
	if b, err := os.ReadFile(m.seqFile()); err == nil {
		last, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	return max(last, m.maxBuild()) + 1
}

// releaseBySHA returns the complete release of commit sha, if any (the
// newest when there are several).
func (m *Manager) releaseBySHA(sha string) (Release, bool, error) {
	rels, err := m.Releases()
	if err != nil {
		return Release{}, false, err
	}
	for _, r := range rels {
		if r.SHA == sha {
			return r, true, nil
		}
	}
	return Release{}, false, nil
}

// isBuildNumber reports whether s is a build number in decimal.
func isBuildNumber(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && strconv.Itoa(n) == s
}

// releaseByBuild returns the complete release numbered s.
func (m *Manager) releaseByBuild(s string) (Release, error) {
	n, _ := strconv.Atoi(s)
	rels, err := m.Releases()
	if err != nil {
		return Release{}, err
	}
	for _, r := range rels {
		if r.Build == n {
			return r, nil
		}
	}
	return Release{}, fmt.Errorf("build %d: %w", n, ErrNoRelease)
}

// describe returns `git describe --tags --always --abbrev=7` for c: the
// nearest tag (lightweight or annotated) reachable from c, with the number
// of commits since it and the abbreviated id ("v1-2-gabcdef1"), the tag
// alone when c is tagged, or the abbreviated id without any tag.
func describe(ctx context.Context, repo *git.Repository, c *object.Commit) (string, error) {
	tags := map[plumbing.Hash][]string{}
	iter, err := repo.Tags()
	if err != nil {
		return "", corrupt(fmt.Errorf("listing tags: %w", err))
	}
	err = iter.ForEach(func(ref *plumbing.Reference) error {
		tc, err := peel(repo, ref.Hash())
		if err != nil {
			return nil // a tag of a tree or blob names no commit
		}
		tags[tc.Hash] = append(tags[tc.Hash], ref.Name().Short())
		return nil
	})
	if err != nil {
		return "", err
	}
	abbrev := c.Hash.String()[:7]
	if len(tags) == 0 {
		return abbrev, nil
	}
	// Breadth first from c: the first tagged commit met is the nearest.
	seen := map[plumbing.Hash]bool{c.Hash: true}
	queue := []*object.Commit{c}
	for len(queue) > 0 {
		if len(seen)%1024 == 0 && ctx.Err() != nil {
			return "", ctx.Err()
		}
		cur := queue[0]
		queue = queue[1:]
		if names := tags[cur.Hash]; len(names) > 0 {
			name := names[0]
			for _, n := range names[1:] {
				name = min(name, n)
			}
			if cur.Hash == c.Hash {
				return name, nil
			}
			tagAnc, err := ancestors(ctx, repo, cur.Hash, nil)
			if err != nil {
				return "", err
			}
			since, err := ancestors(ctx, repo, c.Hash, hashSet(tagAnc))
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("%s-%d-g%s", name, len(since), abbrev), nil
		}
		for _, p := range cur.ParentHashes {
			if seen[p] {
				continue
			}
			seen[p] = true
			pc, err := repo.CommitObject(p)
			if err != nil {
				return "", corrupt(fmt.Errorf("reading commit %s: %w", p, err))
			}
			queue = append(queue, pc)
		}
	}
	return abbrev, nil
}
