package mounts

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// CheckFolders describes, for a human, what is wrong with a locker's
// folders: lockers/<name>, Me or Config missing, not a folder, a symlink,
// outside the layout root, Me or Config not owned by owner. For an
// unprivileged owner it also reports a folder on the way to the locker's
// folders or to the current release that the container's root cannot pass
// through (its bind mount would fail). It returns nil when all is well.
func (l Layout) CheckFolders(name string, owner Owner) []string {
	l = l.clean()
	if err := l.prepare(name); err != nil {
		return []string{err.Error()}
	}
	root, err := l.openRoot()
	if err != nil {
		return []string{err.Error()}
	}
	defer root.Close()
	var out []string
	locker := path.Join(l.rel(l.Lockers), name)
	for i, rel := range []string{locker, path.Join(locker, meDir), path.Join(locker, configDir)} {
		fi, err := root.Lstat(rel)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			out = append(out, fmt.Sprintf("%s is missing", l.abs(rel)))
		case err != nil:
			out = append(out, fmt.Sprintf("%s: %v", l.abs(rel), err))
		case fi.Mode()&fs.ModeSymlink != 0:
			out = append(out, fmt.Sprintf("%s is a symlink", l.abs(rel)))
		case !fi.IsDir():
			out = append(out, fmt.Sprintf("%s is not a directory", l.abs(rel)))
		case i > 0:
			if uid, gid, ok := fileOwner(fi); ok && (uid != owner.UID || gid != owner.GID) {
				out = append(out, fmt.Sprintf("%s is owned by %d:%d, want %d:%d", l.abs(rel), uid, gid, owner.UID, owner.GID))
			}
		}
		if err != nil || fi.Mode()&fs.ModeSymlink != 0 || !fi.IsDir() {
			if i == 0 {
				return out // nothing below it to check
			}
		}
	}
	if owner.UID != 0 {
		out = append(out, unsearchable(l.LockerDir(name), owner)...)
		if real, err := filepath.EvalSymlinks(l.Current); err == nil {
			out = append(out, unsearchable(filepath.Dir(real), owner)...)
		}
	}
	return out
}

// fileOwner returns the uid and gid of a file.
func fileOwner(fi fs.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}

// unsearchable lists the folders from / down to dir (resolved) that owner
// may not pass through. It looks at mode bits only (no ACLs, no
// supplementary groups): a container's root has no privilege over host
// folders owned by unmapped ids.
func unsearchable(dir string, owner Owner) []string {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil // reported elsewhere
	}
	var out []string
	p := "/"
	for _, part := range append([]string{""}, strings.Split(strings.TrimPrefix(real, "/"), "/")...) {
		p = filepath.Join(p, part)
		fi, err := os.Stat(p)
		if err != nil {
			return out
		}
		uid, gid, ok := fileOwner(fi)
		if !ok {
			return out
		}
		mode := fi.Mode().Perm()
		var can bool
		switch {
		case uid == owner.UID:
			can = mode&0o100 != 0
		case gid == owner.GID:
			can = mode&0o010 != 0
		default:
			can = mode&0o001 != 0
		}
		if !can {
			out = append(out, fmt.Sprintf("%s (%v, %d:%d) cannot be passed through by uid %d, the container's root: its bind mounts would fail", p, mode, uid, gid, owner.UID))
		}
	}
	return out
}
