package codeupdate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	git "github.com/go-git/go-git/v5"
	"golang.org/x/sys/unix"

	"lxcfleet/internal/atomicfile"
)

// Build makes the release for target (a branch, tag, or full or
// abbreviated commit id) and returns it without switching to it.
//
// It fetches the mirror, resolves target, and returns the existing release
// when that commit was built before (with State bad if it was marked bad:
// the caller decides whether to go on). Otherwise it checks the commit's
// tree out into releases/.tmp-<random>/, provides node_modules (hard links
// from the current release, or failing that the newest good release, whose
// package-lock.json is byte-identical and whose node version is the same;
// else `npm ci`, or `npm install` when there is no lockfile, or nothing
// when package.json declares no dependencies), writes BUILD.json and
// renames the folder to
// releases/<build>-<sha12>. On any failure the staging folder is removed;
// current and existing releases are never touched. progress, if not nil,
// is called with each step.
func (m *Manager) Build(ctx context.Context, targetName string, progress func(step string)) (Release, error) {
	if progress == nil {
		progress = func(string) {}
	}
	begin := time.Now()
	var (
		existing string
		tmp      string
		bi       buildInfo
	)
	cleanup := func() {
		if tmp != "" {
			if err := os.RemoveAll(tmp); err != nil {
				m.log.Warn("removing staging folder", "path", tmp, "err", err)
			}
			tmp = ""
		}
	}
	defer cleanup()

	err := m.withMirror(ctx, progress, func(repo *git.Repository) error {
		cleanup() // a retry after a re-clone starts over
		existing = ""
		t, err := m.resolve(repo, targetName)
		if err != nil {
			return err
		}
		anc, err := ancestors(ctx, repo, t.commit.Hash, nil)
		if err != nil {
			return err
		}
		sha := t.commit.Hash.String()
		bi = buildInfo{
			Name:       fmt.Sprintf("%d-%s", len(anc), sha[:12]),
			Build:      len(anc),
			SHA:        sha,
			Short:      sha[:12],
			Ref:        t.ref,
			Subject:    subject(t.commit.Message),
			CommitTime: t.commit.Committer.When.UTC(),
			Origin:     m.origin,
		}
		progress(fmt.Sprintf("resolved %s to %s (build %d)", targetName, bi.Short, bi.Build))
		if _, err := m.readRelease(bi.Name); err == nil {
			existing = bi.Name
			return nil
		} else if !errors.Is(err, ErrNoRelease) {
			return err
		}
		tmp, err = os.MkdirTemp(m.releasesDir(), ".tmp-")
		if err != nil {
			return fmt.Errorf("creating staging folder: %w", err)
		}
		if err := os.Chmod(tmp, 0o755); err != nil {
			return fmt.Errorf("creating staging folder: %w", err)
		}
		progress("checking out " + bi.Short)
		if err := m.checkout(ctx, repo, t.commit, tmp); err != nil {
			return fmt.Errorf("checking out %s: %w", bi.Short, err)
		}
		return nil
	})
	if err != nil {
		return Release{}, err
	}
	log := m.log.With("release", bi.Name)
	if existing != "" {
		progress("release " + existing + " is already built")
		return m.Release(existing)
	}

	if _, err := os.Stat(filepath.Join(tmp, "package.json")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Release{}, fmt.Errorf("commit %s (%s): release has no package.json", bi.Short, targetName)
		}
		return Release{}, fmt.Errorf("checking package.json: %w", err)
	}
	if err := m.provideModules(ctx, tmp, &bi, progress, log); err != nil {
		return Release{}, err
	}

	progress("writing BUILD.json")
	bi.BuildTime = time.Now().UTC()
	b, err := json.MarshalIndent(bi, "", "  ")
	if err != nil {
		return Release{}, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "BUILD.json"), append(b, '\n'), 0o644); err != nil {
		return Release{}, fmt.Errorf("writing BUILD.json: %w", err)
	}
	// Make every file durable before the folder gets its final name: a
	// complete-looking release must never hold empty files after a crash.
	if err := syncFS(tmp); err != nil {
		return Release{}, fmt.Errorf("syncing %s: %w", tmp, err)
	}
	final := m.releaseDir(bi.Name)
	if err := os.Rename(tmp, final); err != nil {
		if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
			// Built concurrently by someone else: theirs is as good.
			progress("release " + bi.Name + " was built concurrently")
			return m.Release(bi.Name)
		}
		return Release{}, fmt.Errorf("completing release %s: %w", bi.Name, err)
	}
	tmp = ""
	if err := atomicfile.SyncDir(m.releasesDir()); err != nil {
		return Release{}, fmt.Errorf("completing release %s: %w", bi.Name, err)
	}
	log.Info("release built", "npm", bi.Npm, "duration", time.Since(begin).Round(time.Millisecond))
	return m.Release(bi.Name)
}

// provideModules fills dir/node_modules and sets bi's Npm, NpmFrom,
// NpmVersion, Node and LockHash.
func (m *Manager) provideModules(ctx context.Context, dir string, bi *buildInfo, progress func(string), log *slog.Logger) error {
	node, err := m.toolVersion(ctx, m.node)
	if err != nil {
		return fmt.Errorf("finding the node version: %w", err)
	}
	bi.Node = node
	lockName, sum, err := lockfile(dir)
	if err != nil {
		return err
	}
	bi.LockHash = sum
	if sum != "" {
		if src, ok := m.reuseSource(sum, lockName, node); ok {
			progress("reusing node_modules from " + src.Name)
			_, err := linkTree(ctx, filepath.Join(src.Path, "node_modules"), filepath.Join(dir, "node_modules"))
			if err == nil {
				bi.Npm, bi.NpmFrom, bi.NpmVersion = NpmReused, src.Name, src.NpmVersion
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Warn("linking node_modules failed; running npm instead", "from", src.Name, "err", err)
			if err := os.RemoveAll(filepath.Join(dir, "node_modules")); err != nil {
				return fmt.Errorf("removing partial node_modules: %w", err)
			}
		}
	}
	var args []string
	switch deps, err := hasDependencies(dir); {
	case sum != "":
		args = []string{"ci"}
	case err != nil:
		return err
	case deps:
		args = []string{"install"}
	default:
		progress("no dependencies: npm not needed")
		bi.Npm = NpmNone
		return nil
	}
	progress("npm " + args[0])
	if err := m.runNpm(ctx, dir, args...); err != nil {
		kept := filepath.Join(m.releasesDir(), ".failed-"+bi.Short+".npm.log")
		if rerr := os.Rename(filepath.Join(dir, npmLogPath), kept); rerr == nil {
			return fmt.Errorf("%w\n(npm log kept in %s)", err, kept)
		}
		return err
	}
	_ = os.Remove(filepath.Join(m.releasesDir(), ".failed-"+bi.Short+".npm.log"))
	v, err := m.toolVersion(ctx, m.npm)
	if err != nil {
		return fmt.Errorf("finding the npm version: %w", err)
	}
	bi.Npm, bi.NpmVersion = NpmRan, v
	return nil
}

// reuseSource finds a release whose node_modules a new release with this
// lockfile can link: the current release first, else the newest good one,
// with a byte-identical lockfile (checked on disk), the same node version
// (native modules are built for one ABI) and a node_modules folder.
func (m *Manager) reuseSource(sum, lockName, node string) (Release, bool) {
	rels, err := m.Releases()
	if err != nil {
		return Release{}, false
	}
	var order []Release
	for _, r := range rels {
		if r.Current {
			order = append([]Release{r}, order...)
		} else if r.Good() {
			order = append(order, r)
		}
	}
	for _, r := range order {
		if r.LockHash != sum || r.Node != node || r.Npm == NpmNone {
			continue
		}
		n, s, err := lockfile(r.Path)
		if err != nil || n != lockName || s != sum {
			continue
		}
		if fi, err := os.Stat(filepath.Join(r.Path, "node_modules")); err != nil || !fi.IsDir() {
			continue
		}
		return r, true
	}
	return Release{}, false
}

// syncFS flushes the file system holding dir (syncfs(2)).
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
