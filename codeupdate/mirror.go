package codeupdate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"

	"lxcfleet/internal/atomicfile"
)

// mirrorRefSpecs mirror every branch and tag, forced (history rewrites on
// the origin are followed).
var mirrorRefSpecs = []config.RefSpec{
	"+refs/heads/*:refs/heads/*",
	"+refs/tags/*:refs/tags/*",
}

// corruptError marks a failure to read the mirror's own objects or refs.
type corruptError struct{ err error }

func (e *corruptError) Error() string { return e.err.Error() }
func (e *corruptError) Unwrap() error { return e.err }

// corrupt wraps a mirror read failure; context errors pass unchanged.
func corrupt(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &corruptError{err}
}

// withMirror fetches the mirror (creating it on first use) and runs fn on
// it, holding the mirror lock. A mirror that cannot be opened, whose refs
// point at missing objects, or whose objects fail to decode in fn (errors
// wrapped by corrupt) is re-cloned into a fresh folder once, and fn runs
// again on the new one. fn must therefore be safe to run twice.
func (m *Manager) withMirror(ctx context.Context, progress func(string), fn func(*git.Repository) error) error {
	m.mirrorMu.Lock()
	defer m.mirrorMu.Unlock()
	unbuild, err := m.buildLock(ctx)
	if err != nil {
		return err
	}
	defer unbuild()
	release, err := flockWait(ctx, filepath.Join(m.root, "repo.lock"))
	if err != nil {
		return err
	}
	defer release()

	progress("fetching " + m.origin)
	repo, err := m.openAndFetch(ctx)
	if err == nil {
		err = fn(repo)
	}
	var ce *corruptError
	if !errors.As(err, &ce) {
		return err
	}
	m.log.Warn("mirror is corrupt; re-cloning it from the origin", "mirror", m.mirrorDir(), "origin", m.origin, "err", err)
	progress("mirror is corrupt; re-cloning " + m.origin)
	repo, rerr := m.reclone(ctx)
	if rerr != nil {
		return fmt.Errorf("mirror %s is corrupt: %v; re-cloning it failed: %w (remove %s to re-clone)", m.mirrorDir(), err, rerr, m.mirrorDir())
	}
	m.log.Warn("mirror re-cloned", "mirror", m.mirrorDir())
	if err := fn(repo); err != nil {
		if errors.As(err, &ce) {
			return fmt.Errorf("mirror %s is corrupt even after a fresh clone (is the origin itself damaged?): %w", m.mirrorDir(), err)
		}
		return err
	}
	return nil
}

// openAndFetch opens (or on first use clones) the mirror and fetches it.
func (m *Manager) openAndFetch(ctx context.Context) (*git.Repository, error) {
	dir := m.mirrorDir()
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		m.log.Info("creating mirror", "mirror", dir, "origin", m.origin)
		return m.reclone(ctx)
	}
	repo, err := git.PlainOpen(dir)
	if err != nil {
		return nil, corrupt(fmt.Errorf("opening mirror: %w", err))
	}
	if err := m.fetch(ctx, repo, dir); err != nil {
		return nil, err
	}
	if err := verifyRefs(repo); err != nil {
		return nil, err
	}
	return m.maybeRepack(repo)
}

// reclone fetches the origin into a fresh folder and, only when that
// worked, puts it in place of the mirror.
func (m *Manager) reclone(ctx context.Context) (*git.Repository, error) {
	dir := m.mirrorDir()
	fresh := dir + ".new-" + randomSuffix()
	defer os.RemoveAll(fresh)
	repo, err := git.PlainInit(fresh, true)
	if err != nil {
		return nil, fmt.Errorf("creating mirror %s: %w", fresh, diskFull(err, m.root))
	}
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{m.origin}, Fetch: mirrorRefSpecs, Mirror: true}); err != nil {
		return nil, fmt.Errorf("configuring mirror %s: %w", fresh, err)
	}
	if err := m.fetch(ctx, repo, fresh); err != nil {
		var ce *corruptError
		if errors.As(err, &ce) {
			return nil, ce.err // a fresh folder cannot be corrupt: report the fetch error itself
		}
		return nil, err
	}
	if err := verifyRefs(repo); err != nil {
		return nil, err
	}
	old := dir + ".old-" + randomSuffix()
	if err := os.Rename(dir, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("moving the old mirror aside: %w", err)
	}
	if err := os.Rename(fresh, dir); err != nil {
		_ = os.Rename(old, dir)
		return nil, fmt.Errorf("putting the new mirror in place: %w", err)
	}
	if err := os.RemoveAll(old); err != nil {
		m.log.Warn("removing the old mirror", "path", old, "err", err)
	}
	_ = atomicfile.SyncDir(m.root)
	return git.PlainOpen(dir)
}

// ErrFetchStalled means the origin sent nothing (no pack data, no
// progress message) for Options.FetchStallTimeout.
var ErrFetchStalled = errors.New("fetch stalled")

// ErrFetchTimeout means a fetch took longer than Options.FetchTimeout.
var ErrFetchTimeout = errors.New("fetch timed out")

// fetch force-fetches every branch and tag of the origin into repo (whose
// folder is dir), pruning refs the origin no longer has, in bounded time:
// it ends with ErrFetchStalled when no byte arrives for the stall timeout
// and with ErrFetchTimeout after the overall timeout. A full disk is
// reported as ErrDiskFull with the free space. Any other error it cannot
// blame on the origin (the origin answers a listing) is reported as mirror
// corruption. A failed fetch's temporary pack files are removed.
func (m *Manager) fetch(ctx context.Context, repo *git.Repository, dir string) error {
	if err := m.ensureRemote(repo); err != nil {
		return corrupt(err)
	}
	packDir := filepath.Join(dir, "objects", "pack")
	meter := &byteMeter{}
	fctx, cancel := context.WithTimeoutCause(ctx, m.fetchMax, fmt.Errorf("%w after %s", ErrFetchTimeout, m.fetchMax))
	defer cancel()
	fctx, stop := m.watchdog(withMeter(fctx, meter), packDir, meter)
	defer stop()
	err := repo.FetchContext(fctx, &git.FetchOptions{
		RemoteName: "origin",
		RemoteURL:  m.origin,
		RefSpecs:   mirrorRefSpecs,
		Tags:       git.NoTags,
		Force:      true,
		Prune:      true,
		Progress:   meter,
	})
	if err == nil || errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	derr := diskFull(err, dir) // the free space when it failed
	m.removeTmpPacks(packDir)
	if ctx.Err() != nil {
		return fmt.Errorf("fetching %s: %w", m.origin, ctx.Err())
	}
	if cause := context.Cause(fctx); fctx.Err() != nil && cause != nil {
		return fmt.Errorf("fetching %s: %w", m.origin, cause)
	}
	if errors.Is(derr, ErrDiskFull) {
		return fmt.Errorf("fetching %s into %s (partial pack removed): %w", m.origin, dir, derr)
	}
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return fmt.Errorf("fetching %s: the origin has no commits: %w", m.origin, err)
	}
	// Is it the origin or us?
	lctx, lcancel := context.WithTimeout(ctx, m.stall)
	defer lcancel()
	if lerr := m.listOrigin(lctx); lerr != nil {
		return fmt.Errorf("fetching %s: origin unreachable: %w", m.origin, lerr)
	}
	return corrupt(fmt.Errorf("fetching %s into %s: %w", m.origin, dir, err))
}

// watchdog returns a context that is cancelled with ErrFetchStalled when
// neither the meter nor the temporary pack files in packDir grow for the
// stall timeout. stop ends the watch.
func (m *Manager) watchdog(ctx context.Context, packDir string, meter *byteMeter) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(max(10*time.Millisecond, min(m.stall/5, time.Second)))
		defer tick.Stop()
		last, since := int64(-1), time.Now()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-tick.C:
				n := meter.n.Load() + dirBytes(packDir, "tmp_*")
				if n != last {
					last, since = n, now
					continue
				}
				if now.Sub(since) >= m.stall {
					m.log.Warn("fetch stalled; giving up", "origin", m.origin, "stall_timeout", m.stall, "bytes", n)
					cancel(fmt.Errorf("%w: no data from the origin for %s", ErrFetchStalled, m.stall))
					return
				}
			}
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

// dirBytes sums the sizes of the files matching glob in dir.
func dirBytes(dir, glob string) int64 {
	paths, _ := filepath.Glob(filepath.Join(dir, glob))
	var n int64
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// removeTmpPacks removes the temporary pack files a failed fetch left.
// go-git keeps a failed pack's files open (its PackWriter returns before
// closing them when the pack does not parse), so removing them would not
// give the space back: they are first emptied through this process's
// /proc/self/fd links (the descriptors stay with go-git).
func (m *Manager) removeTmpPacks(packDir string) {
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, fd := range fds {
		l, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(l, filepath.Join(packDir, "tmp_")) {
			continue
		}
		if err := os.Truncate(fd, 0); err != nil {
			m.log.Warn("emptying a failed fetch's temporary pack", "path", l, "err", err)
		}
	}
	paths, _ := filepath.Glob(filepath.Join(packDir, "tmp_*"))
	for _, p := range paths {
		if err := os.Remove(p); err != nil {
			m.log.Warn("removing a failed fetch's temporary pack", "path", p, "err", err)
		}
	}
}

// maybeRepack repacks the mirror into one pack once it holds more than
// Options.MaxPacks packs (every fetch adds one), and returns the mirror
// opened again.
func (m *Manager) maybeRepack(repo *git.Repository) (*git.Repository, error) {
	packs, _ := filepath.Glob(filepath.Join(m.mirrorDir(), "objects", "pack", "pack-*.pack"))
	if len(packs) <= m.maxPacks {
		return repo, nil
	}
	begin := time.Now()
	if err := repo.RepackObjects(&git.RepackConfig{}); err != nil {
		m.removeTmpPacks(filepath.Join(m.mirrorDir(), "objects", "pack"))
		if derr := diskFull(err, m.mirrorDir()); errors.Is(derr, ErrDiskFull) {
			return nil, fmt.Errorf("repacking mirror %s: %w", m.mirrorDir(), derr)
		}
		return nil, corrupt(fmt.Errorf("repacking mirror %s: %w", m.mirrorDir(), err))
	}
	after, _ := filepath.Glob(filepath.Join(m.mirrorDir(), "objects", "pack", "pack-*.pack"))
	m.log.Info("mirror repacked", "mirror", m.mirrorDir(), "packs_before", len(packs), "packs_after", len(after), "duration", time.Since(begin).Round(time.Millisecond))
	repo, err := git.PlainOpen(m.mirrorDir())
	if err != nil {
		return nil, corrupt(fmt.Errorf("opening mirror after repacking: %w", err))
	}
	return repo, nil
}

// listOrigin asks the origin for its refs (git ls-remote) without touching
// the mirror.
func (m *Manager) listOrigin(ctx context.Context) error {
	r := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{m.origin}})
	_, err := r.ListContext(ctx, &git.ListOptions{})
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return nil
	}
	return err
}

// ensureRemote keeps the mirror's origin remote pointing at m.origin, so
// that `git --git-dir repo.git remote -v` tells an operator the truth.
func (m *Manager) ensureRemote(repo *git.Repository) error {
	r, err := repo.Remote("origin")
	if err == nil && len(r.Config().URLs) == 1 && r.Config().URLs[0] == m.origin {
		return nil
	}
	if err == nil {
		if err := repo.DeleteRemote("origin"); err != nil {
			return fmt.Errorf("updating the mirror's origin: %w", err)
		}
	} else if !errors.Is(err, git.ErrRemoteNotFound) {
		return fmt.Errorf("reading the mirror's config: %w", err)
	}
	_, err = repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{m.origin}, Fetch: mirrorRefSpecs, Mirror: true})
	if err != nil {
		return fmt.Errorf("configuring the mirror's origin: %w", err)
	}
	return nil
}

// verifyRefs checks that every branch and tag points at an object the
// mirror has, and that every branch's commit and root tree decode.
func verifyRefs(repo *git.Repository) error {
	iter, err := repo.References()
	if err != nil {
		return corrupt(fmt.Errorf("listing the mirror's refs: %w", err))
	}
	defer iter.Close()
	return iter.ForEach(func(ref *plumbing.Reference) error {
		if ref.Type() != plumbing.HashReference {
			return nil
		}
		name := ref.Name()
		switch {
		case name.IsBranch():
			c, err := repo.CommitObject(ref.Hash())
			if err != nil {
				return corrupt(fmt.Errorf("reading commit %s of %s: %w", ref.Hash(), name, err))
			}
			if _, err := c.Tree(); err != nil {
				return corrupt(fmt.Errorf("reading the tree of %s: %w", name, err))
			}
		case name.IsTag():
			if _, err := repo.Storer.EncodedObject(plumbing.AnyObject, ref.Hash()); err != nil {
				return corrupt(fmt.Errorf("reading %s (%s): %w", name, ref.Hash(), err))
			}
		}
		return nil
	})
}

// target is a resolved target.
type target struct {
	commit *object.Commit
	ref    string // branch or tag name; "" for a commit
}

// resolve turns a branch, tag, full or abbreviated commit id, or git
// revision expression (main~2) into a commit of the mirror.
func (m *Manager) resolve(repo *git.Repository, name string) (target, error) {
	unknown := func() error {
		return fmt.Errorf("%w %q: not a branch, tag or commit of %s", ErrUnknownTarget, name, m.origin)
	}
	name = strings.TrimSpace(name)
	if name == "" {
		return target{}, fmt.Errorf("%w: empty target (give a branch, tag or commit)", ErrUnknownTarget)
	}
	short := strings.TrimPrefix(name, "origin/")
	candidates := []struct {
		ref   plumbing.ReferenceName
		label string
	}{
		{plumbing.NewBranchReferenceName(short), short},
		{plumbing.NewTagReferenceName(name), name},
	}
	if strings.HasPrefix(name, "refs/") {
		candidates = append(candidates, struct {
			ref   plumbing.ReferenceName
			label string
		}{plumbing.ReferenceName(name), plumbing.ReferenceName(name).Short()})
	}
	for _, c := range candidates {
		ref, err := repo.Reference(c.ref, true)
		if errors.Is(err, plumbing.ErrReferenceNotFound) {
			continue
		}
		if err != nil {
			return target{}, corrupt(fmt.Errorf("reading %s: %w", c.ref, err))
		}
		commit, err := peel(repo, ref.Hash())
		if err != nil {
			return target{}, fmt.Errorf("resolving %s: %w", c.ref, err)
		}
		return target{commit: commit, ref: c.label}, nil
	}
	if isHex(name) && len(name) >= 4 && len(name) <= 40 {
		hashes, err := hashesWithPrefix(repo, strings.ToLower(name))
		if err != nil {
			return target{}, corrupt(fmt.Errorf("looking up commit %s: %w", name, err))
		}
		var commits []*object.Commit
		for _, h := range hashes {
			if c, err := repo.CommitObject(h); err == nil {
				commits = append(commits, c)
			}
		}
		switch len(commits) {
		case 1:
			return target{commit: commits[0]}, nil
		case 0:
			return target{}, unknown()
		default:
			return target{}, fmt.Errorf("%w %q: ambiguous, %d commits of %s start with it; give more digits", ErrUnknownTarget, name, len(commits), m.origin)
		}
	}
	if strings.ContainsAny(name, "~^@{") {
		h, err := repo.ResolveRevision(plumbing.Revision(name))
		if err == nil {
			c, err := repo.CommitObject(*h)
			if err == nil {
				return target{commit: c}, nil
			}
		}
	}
	return target{}, unknown()
}

// peel follows annotated tags to a commit.
func peel(repo *git.Repository, h plumbing.Hash) (*object.Commit, error) {
	for range 10 {
		obj, err := repo.Object(plumbing.AnyObject, h)
		if err != nil {
			return nil, corrupt(fmt.Errorf("reading object %s: %w", h, err))
		}
		switch o := obj.(type) {
		case *object.Commit:
			return o, nil
		case *object.Tag:
			h = o.Target
		default:
			return nil, fmt.Errorf("%s is a %s, not a commit", h, obj.Type())
		}
	}
	return nil, fmt.Errorf("tag chain at %s is too long", h)
}

// hashesWithPrefix returns the objects whose id starts with the hex prefix.
func hashesWithPrefix(repo *git.Repository, prefix string) ([]plumbing.Hash, error) {
	if len(prefix) == 40 {
		return []plumbing.Hash{plumbing.NewHash(prefix)}, nil
	}
	even := prefix[:len(prefix)&^1]
	b, err := hex.DecodeString(even)
	if err != nil {
		return nil, err
	}
	type prefixer interface {
		HashesWithPrefix(prefix []byte) ([]plumbing.Hash, error)
	}
	var hs []plumbing.Hash
	if p, ok := repo.Storer.(prefixer); ok {
		hs, err = p.HashesWithPrefix(b)
		if err != nil {
			return nil, err
		}
	} else {
		iter, err := repo.CommitObjects()
		if err != nil {
			return nil, err
		}
		err = iter.ForEach(func(c *object.Commit) error {
			hs = append(hs, c.Hash)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	var out []plumbing.Hash
	for _, h := range hs {
		if strings.HasPrefix(h.String(), prefix) {
			out = append(out, h)
		}
	}
	return out, nil
}

func isHex(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
			return false
		}
	}
	return s != ""
}

// ancestors returns every commit reachable from h (h included): its size is
// `git rev-list --count h`.
func ancestors(ctx context.Context, repo *git.Repository, h plumbing.Hash, stop map[plumbing.Hash]bool) (map[plumbing.Hash]*object.Commit, error) {
	seen := map[plumbing.Hash]*object.Commit{}
	queue := []plumbing.Hash{h}
	for len(queue) > 0 {
		if len(seen)%1024 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		cur := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if _, ok := seen[cur]; ok || stop[cur] {
			continue
		}
		c, err := repo.CommitObject(cur)
		if err != nil {
			return nil, corrupt(fmt.Errorf("reading commit %s: %w", cur, err))
		}
		seen[cur] = c
		queue = append(queue, c.ParentHashes...)
	}
	return seen, nil
}

// hashSet returns the keys of a commit map as a set.
func hashSet(cs map[plumbing.Hash]*object.Commit) map[plumbing.Hash]bool {
	out := make(map[plumbing.Hash]bool, len(cs))
	for h := range cs {
		out[h] = true
	}
	return out
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// subject is the first line of a commit message.
func subject(msg string) string {
	s, _, _ := strings.Cut(strings.TrimSpace(msg), "\n")
	return strings.TrimSpace(s)
}
