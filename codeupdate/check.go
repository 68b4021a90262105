package codeupdate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// maxCommits is how many commits CheckUpdate lists.
const maxCommits = 50

// npmFiles are the files whose change means npm must run.
var npmFiles = []string{"package.json", "package-lock.json", "npm-shrinkwrap.json", ".npmrc"}

// checkPackage reads the npm files of a tree (package.json, lockfile,
// .npmrc) into a scratch folder and returns their modules key with this
// host's node and npm, and npm's own message when package.json and the
// lockfile disagree ("" when they agree). A tree without package.json
// gives a zero pkgInfo.
func (m *Manager) checkPackage(ctx context.Context, tree *object.Tree) (pkgInfo, string, error) {
	dir, err := os.MkdirTemp(m.releasesDir(), ".tmp-check-")
	if err != nil {
		return pkgInfo{}, "", fmt.Errorf("checking the npm files: %w", diskFull(err, m.root))
	}
	defer os.RemoveAll(dir)
	for _, n := range npmFiles {
		f, err := tree.File(n)
		if errors.Is(err, object.ErrFileNotFound) {
			if n == "package.json" {
				return pkgInfo{}, "", nil
			}
			continue
		}
		if err != nil {
			return pkgInfo{}, "", corrupt(fmt.Errorf("reading %s of tree %s: %w", n, tree.Hash, err))
		}
		body, err := f.Contents()
		if err != nil {
			return pkgInfo{}, "", corrupt(fmt.Errorf("reading %s of tree %s: %w", n, tree.Hash, err))
		}
		if err := os.WriteFile(filepath.Join(dir, n), []byte(body), 0o644); err != nil {
			return pkgInfo{}, "", fmt.Errorf("checking the npm files: %w", diskFull(err, m.root))
		}
	}
	node, err := m.toolVersion(ctx, m.node)
	if err != nil {
		return pkgInfo{}, "", fmt.Errorf("finding the node version: %w", err)
	}
	npmV, err := m.toolVersion(ctx, m.npm)
	if err != nil {
		return pkgInfo{}, "", fmt.Errorf("finding the npm version: %w", err)
	}
	pkg, err := readPkg(dir, node, npmV)
	if err != nil {
		return pkgInfo{}, "", nil // the build will say what is wrong
	}
	if pkg.lockName == "" || !pkg.deps {
		return pkg, "", nil
	}
	if agrees, ok := lockAgrees(dir, pkg); agrees && ok {
		return pkg, "", nil
	}
	ph, err := m.startPhase(ctx, dir)
	if err != nil {
		return pkg, "", err
	}
	defer ph.close()
	if err := ph.run("ci", "--dry-run", "--ignore-scripts"); err != nil {
		if ctx.Err() != nil {
			return pkg, "", ctx.Err()
		}
		if errors.Is(err, ErrRegistryUnreachable) {
			// npm could not tell whether they agree: say why, not a mismatch.
			return pkg, "", fmt.Errorf("checking package.json against %s: %w", pkg.lockName, err)
		}
		return pkg, err.Error(), nil
	}
	return pkg, "", nil
}

// CheckUpdate fetches the mirror and compares target with the current
// release without building anything: whether they differ, how many commits
// target has that current lacks (with the newest 50 subjects), how many
// files differ, and whether package.json or the lockfile changed (npm
// needed) or only app files (a restart is enough). Before the first
// release, Available and NpmNeeded are true.
func (m *Manager) CheckUpdate(ctx context.Context, targetName string) (UpdateInfo, error) {
	cur, err := m.Current()
	haveCur := err == nil
	if err != nil && !errors.Is(err, ErrNoCurrent) {
		return UpdateInfo{}, err
	}
	var info UpdateInfo
	err = m.withMirror(ctx, func(string) {}, func(repo *git.Repository) error {
		info = UpdateInfo{Target: targetName}
		t, err := m.resolve(repo, targetName)
		if err != nil {
			return err
		}
		sha := t.commit.Hash.String()
		info.TargetSHA = sha
		tgtAnc, err := ancestors(ctx, repo, t.commit.Hash, nil)
		if err != nil {
			return err
		}
		if info.TargetDescribe, err = describe(ctx, repo, t.commit); err != nil {
			return err
		}
		if r, ok, err := m.releaseBySHA(sha); err != nil {
			return err
		} else if ok {
			info.TargetBuild, info.TargetRelease = r.Build, r.Name
			info.TargetBuilt = true
			info.TargetBad = r.State == StateBad
		} else {
			info.TargetBuild = m.peekBuild()
			info.TargetRelease = fmt.Sprintf("%d-%s", info.TargetBuild, sha[:12])
		}
		tgtTree, err := t.commit.Tree()
		if err != nil {
			return corrupt(fmt.Errorf("reading the tree of %s: %w", sha, err))
		}
		pkg, mismatch, err := m.checkPackage(ctx, tgtTree)
		if err != nil {
			return err
		}
		info.LockMismatch = mismatch
		defer func() {
			// What shapes node_modules decides, when both keys are known.
			if haveCur && cur.ModulesKey != "" && pkg.key != "" && cur.SHA != sha {
				info.NpmNeeded = pkg.deps && pkg.key != cur.ModulesKey
			}
			if info.LockMismatch != "" {
				info.NpmNeeded = true
			}
		}()
		if !haveCur {
			info.Available, info.NpmNeeded = true, true
			info.Behind = len(tgtAnc)
			info.Commits = newest(tgtAnc, nil)
			info.ChangedFiles, err = countFiles(tgtTree)
			return err
		}
		info.CurrentRelease, info.CurrentSHA = cur.Name, cur.SHA
		if cur.SHA == sha {
			return nil
		}
		info.Available = true
		curCommit, err := repo.CommitObject(plumbing.NewHash(cur.SHA))
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			// The origin rewrote history and the mirror was re-cloned since:
			// no common ground, so compare with the release on disk.
			m.log.Warn("current release's commit is not in the mirror", "release", cur.Name)
			info.Behind = len(tgtAnc)
			info.Commits = newest(tgtAnc, nil)
			if info.ChangedFiles, err = countFiles(tgtTree); err != nil {
				return err
			}
			info.NpmNeeded, err = npmFilesDifferOnDisk(tgtTree, cur.Path)
			return err
		}
		if err != nil {
			return corrupt(fmt.Errorf("reading commit %s of %s: %w", cur.SHA, cur.Name, err))
		}
		curAnc, err := ancestors(ctx, repo, curCommit.Hash, nil)
		if err != nil {
			return err
		}
		stop := hashSet(curAnc)
		info.Commits = newest(tgtAnc, stop)
		for h := range tgtAnc {
			if !stop[h] {
				info.Behind++
			}
		}
		curTree, err := curCommit.Tree()
		if err != nil {
			return corrupt(fmt.Errorf("reading the tree of %s: %w", cur.SHA, err))
		}
		changes, err := object.DiffTreeWithOptions(ctx, curTree, tgtTree, nil)
		if err != nil {
			return corrupt(fmt.Errorf("comparing %s with %s: %w", cur.Short, sha[:12], err))
		}
		info.ChangedFiles = len(changes)
		for _, c := range changes {
			for _, n := range []string{c.From.Name, c.To.Name} {
				for _, f := range npmFiles {
					if n == f {
						info.NpmNeeded = true
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return UpdateInfo{}, err
	}
	return info, nil
}

// newest returns up to maxCommits commits of cs not in skip, newest first
// in `git rev-list --date-order` order: no commit before one of its
// children, otherwise by committer time (commits made within one second
// keep their ancestry order).
func newest(cs map[plumbing.Hash]*object.Commit, skip map[plumbing.Hash]bool) []Commit {
	children := map[plumbing.Hash]int{}
	for h, c := range cs {
		if skip[h] {
			continue
		}
		for _, p := range c.ParentHashes {
			if _, ok := cs[p]; ok && !skip[p] {
				children[p]++
			}
		}
	}
	var ready []*object.Commit
	for h, c := range cs {
		if !skip[h] && children[h] == 0 {
			ready = append(ready, c)
		}
	}
	var out []Commit
	for len(ready) > 0 && len(out) < maxCommits {
		best := 0
		for i, c := range ready {
			a, b := c.Committer.When, ready[best].Committer.When
			if a.After(b) || a.Equal(b) && c.Hash.String() < ready[best].Hash.String() {
				best = i
			}
		}
		c := ready[best]
		ready = append(ready[:best], ready[best+1:]...)
		out = append(out, Commit{SHA: c.Hash.String(), Subject: subject(c.Message), Author: c.Author.Name, Time: c.Committer.When.UTC()})
		for _, p := range c.ParentHashes {
			pc, ok := cs[p]
			if !ok || skip[p] {
				continue
			}
			children[p]--
			if children[p] == 0 {
				ready = append(ready, pc)
			}
		}
	}
	return out
}

// countFiles counts the files of a tree.
func countFiles(t *object.Tree) (int, error) {
	n := 0
	err := t.Files().ForEach(func(*object.File) error { n++; return nil })
	if err != nil {
		return 0, corrupt(fmt.Errorf("listing tree %s: %w", t.Hash, err))
	}
	return n, nil
}

// npmFilesDifferOnDisk compares the npm files of a tree with a release
// folder.
func npmFilesDifferOnDisk(t *object.Tree, dir string) (bool, error) {
	for _, n := range npmFiles {
		disk, derr := os.ReadFile(filepath.Join(dir, n))
		f, ferr := t.File(n)
		if derr != nil || ferr != nil {
			if (derr == nil) != (ferr == nil) {
				return true, nil
			}
			continue
		}
		r, err := f.Reader()
		if err != nil {
			return false, corrupt(err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			return false, corrupt(err)
		}
		if !bytes.Equal(b, disk) {
			return true, nil
		}
	}
	return false, nil
}
