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
	"strings"
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
// tree out into releases/.tmp-<random>/ and provides node_modules:
//
//   - reused from the current release (or the newest good one) when its
//     modules key is the same (the lockfile, package.json's dependency
//     fields and root install scripts, .npmrc, node and npm versions):
//     hard links, or independent reflinks/copies when root lifecycle
//     scripts will run in the new folder;
//   - else npm runs: a package.json that disagrees with its lockfile fails
//     the build with npm's own message (ErrLockMismatch); with a previous
//     release built with the same node, its node_modules is copied
//     (reflinks or copies, never links: the old release is never written)
//     and `npm install` updates the copy; otherwise `npm ci` (`npm install`
//     without a lockfile) starts from nothing;
//   - nothing when package.json declares no dependencies.
//
// The root package's own lifecycle scripts (preinstall, install,
// postinstall, preprepare, prepare, postprepare) run in the new folder in
// every case (npm runs them itself when it installs), all under
// Options.NpmTimeout. Build then takes the next host build number (see
// Release.Build), writes BUILD.json and renames the folder to
// releases/<build>-<sha12>. On any failure the staging folder is removed;
// current and existing releases are never touched. progress, if not nil,
// is called with each step.
func (m *Manager) Build(ctx context.Context, targetName string, progress func(step string)) (Release, error) {
	if progress == nil {
		progress = func(string) {}
	}
	begin := time.Now()
	unbuild, err := m.buildLock(ctx)
	if err != nil {
		return Release{}, err
	}
	defer unbuild()
	var (
		existing Release
		tmp      string
		bi       buildFile
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

	err = m.withMirror(ctx, progress, func(repo *git.Repository) error {
		cleanup() // a retry after a re-clone starts over
		existing = Release{}
		t, err := m.resolve(repo, targetName)
		if err != nil {
			return err
		}
		sha := t.commit.Hash.String()
		if r, ok, err := m.releaseBySHA(sha); err != nil {
			return err
		} else if ok {
			existing = r
			return nil
		}
		anc, err := ancestors(ctx, repo, t.commit.Hash, nil)
		if err != nil {
			return err
		}
		desc, err := describe(ctx, repo, t.commit)
		if err != nil {
			return err
		}
		bi = buildFile{Origin: m.origin, Release: Release{
			SHA:        sha,
			Short:      sha[:12],
			Ref:        t.ref,
			Subject:    subject(t.commit.Message),
			CommitTime: t.commit.Committer.When.UTC(),
			Commits:    len(anc),
			Describe:   desc,
		}}
		progress(fmt.Sprintf("resolved %s to %s (%s, %d commits)", targetName, bi.Short, desc, bi.Commits))
		tmp, err = os.MkdirTemp(m.releasesDir(), ".tmp-")
		if err != nil {
			return fmt.Errorf("creating staging folder: %w", diskFull(err, m.root))
		}
		if err := os.Chmod(tmp, 0o755); err != nil {
			return fmt.Errorf("creating staging folder: %w", err)
		}
		progress("checking out " + bi.Short)
		if err := m.checkout(ctx, repo, t.commit, tmp); err != nil {
			return fmt.Errorf("checking out %s: %w", bi.Short, diskFull(err, m.root))
		}
		return nil
	})
	if err != nil {
		return Release{}, err
	}
	if existing.Name != "" {
		progress("release " + existing.Name + " is already built")
		return existing, nil
	}

	if _, err := os.Stat(filepath.Join(tmp, "package.json")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Release{}, fmt.Errorf("commit %s (%s): release has no package.json", bi.Short, targetName)
		}
		return Release{}, fmt.Errorf("checking package.json: %w", err)
	}
	log := m.log.With("release", bi.Short)
	if err := m.provideModules(ctx, tmp, &bi, progress, log); err != nil {
		return Release{}, diskFull(err, m.root)
	}

	// Make every file durable before the folder gets its final name: a
	// complete-looking release must never hold empty files after a crash.
	if err := syncFS(tmp); err != nil {
		return Release{}, fmt.Errorf("syncing %s: %w", tmp, err)
	}
	rel, built, err := m.complete(tmp, &bi)
	if err != nil {
		return Release{}, diskFull(err, m.root)
	}
	tmp = ""
	if !built {
		progress("release " + rel.Name + " was built concurrently")
		return rel, nil
	}
	progress(fmt.Sprintf("release %s (build %d, %s)", bi.Name, bi.Build, bi.Describe))
	log.Info("release built", "release", bi.Name, "npm", bi.Npm, "duration", time.Since(begin).Round(time.Millisecond))
	return rel, nil
}

// complete gives the staged release in tmp the next build number, writes
// its BUILD.json and renames it into place, all under Root/releases.lock
// so that one commit gets one release and one number. When another build
// finished the same commit first, tmp is removed and theirs returned
// (built false).
func (m *Manager) complete(tmp string, bi *buildFile) (rel Release, built bool, err error) {
	unlock, err := flockWait(context.Background(), filepath.Join(m.root, "releases.lock"))
	if err != nil {
		return Release{}, false, err
	}
	defer unlock()
	if r, ok, err := m.releaseBySHA(bi.SHA); err != nil {
		return Release{}, false, err
	} else if ok {
		if err := os.RemoveAll(tmp); err != nil {
			m.log.Warn("removing staging folder", "path", tmp, "err", err)
		}
		return r, false, nil
	}
	n, err := m.nextBuild()
	if err != nil {
		return Release{}, false, err
	}
	bi.Build = n
	bi.Name = fmt.Sprintf("%d-%s", n, bi.Short)
	bi.BuildTime = time.Now().UTC()
	b, err := json.MarshalIndent(bi, "", "  ")
	if err != nil {
		return Release{}, false, err
	}
	if err := atomicfile.WriteFile(filepath.Join(tmp, "BUILD.json"), append(b, '\n'), 0o644); err != nil {
		return Release{}, false, fmt.Errorf("writing BUILD.json: %w", err)
	}
	final := m.releaseDir(bi.Name)
	if err := os.Rename(tmp, final); err != nil {
		return Release{}, false, fmt.Errorf("completing release %s: %w", bi.Name, err)
	}
	if err := atomicfile.SyncDir(m.releasesDir()); err != nil {
		return Release{}, false, fmt.Errorf("completing release %s: %w", bi.Name, err)
	}
	r, err := m.Release(bi.Name)
	return r, true, err
}

// provideModules fills dir/node_modules, runs the root lifecycle scripts
// and sets bi's Npm, NpmFrom, NpmVersion, Node, LockHash, ModulesKey,
// ModulesCopy and Scripts. Everything it runs shares one deadline,
// Options.NpmTimeout.
func (m *Manager) provideModules(ctx context.Context, dir string, bi *buildFile, progress func(string), log *slog.Logger) error {
	node, err := m.toolVersion(ctx, m.node)
	if err != nil {
		return fmt.Errorf("finding the node version: %w", err)
	}
	npmV, err := m.toolVersion(ctx, m.npm)
	if err != nil {
		return fmt.Errorf("finding the npm version: %w", err)
	}
	pkg, err := readPkg(dir, node, npmV)
	if err != nil {
		return err
	}
	bi.Node, bi.LockHash, bi.ModulesKey = node, pkg.lockSum, pkg.key
	ph, err := m.startPhase(ctx, dir)
	if err != nil {
		return err
	}
	defer ph.close()
	failed := func(err error) error {
		ph.close()
		kept := filepath.Join(m.releasesDir(), ".failed-"+bi.Short+".npm.log")
		if rerr := os.Rename(ph.logPath, kept); rerr == nil {
			return fmt.Errorf("%w\n(npm log kept in %s)", err, kept)
		}
		return err
	}

	if pkg.deps {
		if src, ok := m.modulesSource(func(r Release) bool { return r.ModulesKey == pkg.key }); ok {
			mode, how := copyLink, "hard links"
			if len(pkg.scripts) > 0 {
				mode, how = copyIndependent, "an independent copy (root install scripts will run)"
			}
			progress("reusing node_modules from " + src.Name + " as " + how)
			st, err := copyTree(ph.ctx, filepath.Join(src.Path, "node_modules"), filepath.Join(dir, "node_modules"), mode)
			if err == nil {
				bi.Npm, bi.NpmFrom, bi.NpmVersion, bi.ModulesCopy = NpmReused, src.Name, npmV, st.method()
				return m.rootScripts(ph, pkg, bi, progress, failed)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Warn("copying node_modules failed; running npm instead", "from", src.Name, "err", err)
			if err := os.RemoveAll(filepath.Join(dir, "node_modules")); err != nil {
				return fmt.Errorf("removing partial node_modules: %w", err)
			}
		}
	} else {
		progress("no dependencies: npm not needed")
		bi.Npm, bi.NpmVersion = NpmNone, npmV
		return m.rootScripts(ph, pkg, bi, progress, failed)
	}

	if pkg.lockName != "" {
		if agrees, ok := lockAgrees(dir, pkg); !agrees || !ok {
			progress("checking that package.json and " + pkg.lockName + " agree")
			if err := ph.run("ci", "--dry-run", "--ignore-scripts"); err != nil {
				if ph.ctx.Err() != nil || errors.Is(err, ErrRegistryUnreachable) {
					return failed(err)
				}
				return failed(fmt.Errorf("%w: %s is out of date (update it with npm install and commit it): %w", ErrLockMismatch, pkg.lockName, err))
			}
		}
	}
	args := []string{"ci"}
	if pkg.lockName == "" {
		args = []string{"install"}
	}
	if src, ok := m.modulesSource(func(r Release) bool { return r.Node == node && r.Npm != NpmNone }); ok {
		progress("copying node_modules from " + src.Name + " for an incremental install")
		st, err := copyTree(ph.ctx, filepath.Join(src.Path, "node_modules"), filepath.Join(dir, "node_modules"), copyIndependent)
		if err == nil {
			bi.NpmFrom, bi.ModulesCopy = src.Name, st.method()
			args = []string{"install"}
			if pkg.lockName != "" {
				args = append(args, "--no-save") // the release's lockfile stays the commit's
			}
		} else {
			if ph.ctx.Err() != nil {
				return failed(fmt.Errorf("copying node_modules from %s: %w", src.Name, ph.ctx.Err()))
			}
			log.Warn("copying node_modules failed; installing from nothing", "from", src.Name, "err", err)
			if err := os.RemoveAll(filepath.Join(dir, "node_modules")); err != nil {
				return fmt.Errorf("removing partial node_modules: %w", err)
			}
		}
	}
	progress("npm " + strings.Join(args, " "))
	if err := ph.run(args...); err != nil {
		return failed(err)
	}
	_ = os.Remove(filepath.Join(m.releasesDir(), ".failed-"+bi.Short+".npm.log"))
	bi.Npm, bi.NpmVersion, bi.Scripts = NpmRan, npmV, pkg.scripts
	return nil
}

// rootScripts runs the root package's lifecycle scripts in the phase's
// folder, each alone (`npm run-script --ignore-scripts NAME`, so that npm
// adds no pre/post script of its own), in npm's order.
func (m *Manager) rootScripts(ph *phase, pkg pkgInfo, bi *buildFile, progress func(string), failed func(error) error) error {
	for _, s := range pkg.scripts {
		progress("running the " + s + " script")
		if err := ph.run("run-script", "--ignore-scripts", s); err != nil {
			return failed(fmt.Errorf("running the root %s script: %w", s, err))
		}
	}
	if len(pkg.scripts) == 0 {
		ph.discardLog()
	}
	bi.Scripts = pkg.scripts
	return nil
}

// modulesSource finds the release whose node_modules a new release can
// start from: the current release first, else the newest good one, that
// passes ok and has a node_modules folder.
func (m *Manager) modulesSource(ok func(Release) bool) (Release, bool) {
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
		if !ok(r) {
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
