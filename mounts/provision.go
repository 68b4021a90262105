package mounts

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Folder modes of what Provision creates. lockers/ lets containers' roots
// pass through without listing the other lockers; each locker's folders are
// private to its owner.
const (
	lockersPerm = 0o711
	lockerPerm  = 0o750
)

// prepare checks a name and a cleaned layout before a folder operation.
func (l Layout) prepare(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	return l.lexicalCheck()
}

// abs names a root-relative path for messages.
func (l Layout) abs(rel string) string { return filepath.Join(l.Root, rel) }

// Provision creates the folders of a locker, lockers/<name>/Me and
// lockers/<name>/Config (and lockers/ itself if missing), and returns the
// host paths it created, parents first. Me, Config and lockers/<name> are
// created with mode 0750 and owned by owner (see OwnerFromIdmap), so that
// an unprivileged container's root can reach and use them. Folders that
// already exist are kept as they are (CheckFolders reports a wrong owner).
//
// Everything happens through an os.Root at the layout root: no path can
// escape it, and lockers/<name>, Me or Config being a symlink is refused,
// never followed. If any step fails, the folders this call created are
// removed again.
func (l Layout) Provision(name string, owner Owner) (created []string, err error) {
	l = l.clean()
	if err := l.prepare(name); err != nil {
		return nil, err
	}
	if owner.UID < 0 || owner.GID < 0 {
		return nil, fmt.Errorf("provisioning locker %q: invalid owner %d:%d", name, owner.UID, owner.GID)
	}
	root, err := l.openRoot()
	if err != nil {
		return nil, fmt.Errorf("provisioning locker %q: %w", name, err)
	}
	defer root.Close()

	var made []string // root-relative, in creation order
	defer func() {
		if err != nil {
			for _, rel := range slices.Backward(made) {
				_ = root.Remove(rel)
			}
			created = nil
		}
	}()
	// mkdir creates one folder unless it exists. follow allows the path to
	// be a symlink (inside the root: os.Root refuses escapes).
	mkdir := func(rel string, perm fs.FileMode, own *Owner, follow bool) error {
		stat := root.Lstat
		if follow {
			stat = root.Stat
		}
		fi, err := stat(rel)
		switch {
		case err == nil && fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s is a symlink; refusing to follow it", l.abs(rel))
		case err == nil && !fi.IsDir():
			return fmt.Errorf("%s exists and is not a directory", l.abs(rel))
		case err == nil:
			return nil
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("checking %s: %w", l.abs(rel), err)
		}
		if err := root.Mkdir(rel, perm); err != nil {
			// Another provision running at the same time made it between
			// our stat and our mkdir: take it if it is a real folder.
			if errors.Is(err, fs.ErrExist) {
				if fi, serr := stat(rel); serr == nil && fi.IsDir() && fi.Mode()&fs.ModeSymlink == 0 {
					return nil
				}
			}
			return fmt.Errorf("creating %s: %w", l.abs(rel), err)
		}
		made = append(made, rel)
		if err := root.Chmod(rel, perm); err != nil {
			return fmt.Errorf("setting the mode of %s: %w", l.abs(rel), err)
		}
		if own != nil {
			if err := root.Lchown(rel, own.UID, own.GID); err != nil {
				return fmt.Errorf("setting the owner of %s: %w", l.abs(rel), err)
			}
		}
		return nil
	}

	lockers := l.rel(l.Lockers)
	parts := strings.Split(lockers, "/")
	for i := range parts {
		if err := mkdir(path.Join(parts[:i+1]...), lockersPerm, nil, true); err != nil {
			return nil, fmt.Errorf("provisioning locker %q: %w", name, err)
		}
	}
	locker := path.Join(lockers, name)
	for _, rel := range []string{locker, path.Join(locker, meDir), path.Join(locker, configDir)} {
		if err := mkdir(rel, lockerPerm, &owner, false); err != nil {
			return nil, fmt.Errorf("provisioning locker %q: %w", name, err)
		}
	}
	for _, rel := range made {
		created = append(created, l.abs(rel))
	}
	return created, nil
}

// Remove deletes a locker's folders, to roll back a provision that failed
// later on (for example when the container could not be created). It only
// deletes what Provision and SeedConfig make: lockers/<name> holding nothing
// but an empty Me and a Config whose files are all identical to their
// templates. Anything else (owner data in Me, an edited or extra config
// file, a symlink, another entry) makes it refuse with an error naming the
// path, and then it deletes nothing. A locker folder that does not exist is
// not an error. Like Provision it never leaves the layout root.
func (l Layout) Remove(name string) error {
	l = l.clean()
	if err := l.prepare(name); err != nil {
		return err
	}
	root, err := l.openRoot()
	if err != nil {
		return fmt.Errorf("removing locker %q: %w", name, err)
	}
	defer root.Close()
	locker := path.Join(l.rel(l.Lockers), name)
	fi, err := root.Lstat(locker)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("removing locker %q: %w", name, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("removing locker %q: %s is a symlink; refusing to follow it", name, l.abs(locker))
	case !fi.IsDir():
		return fmt.Errorf("removing locker %q: %s is not a directory", name, l.abs(locker))
	}
	var files, dirs []string
	refuse := func(rel, why string) error {
		return fmt.Errorf("removing locker %q: %s %s; refusing to delete anything", name, l.abs(rel), why)
	}
	err = fs.WalkDir(root.FS(), locker, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		sub := strings.TrimPrefix(strings.TrimPrefix(p, locker), "/")
		top, rest, _ := strings.Cut(sub, "/")
		switch {
		case sub == "":
			dirs = append(dirs, p)
		case d.Type()&fs.ModeSymlink != 0:
			return refuse(p, "is a symlink")
		case top != meDir && top != configDir:
			return refuse(p, "is not a folder lxcfleet makes")
		case rest == "" && !d.IsDir():
			return refuse(p, "is not a directory")
		case top == meDir && rest != "":
			return refuse(p, "is owner data")
		case d.IsDir():
			dirs = append(dirs, p)
		case !d.Type().IsRegular():
			return refuse(p, "is not a regular file")
		default:
			same, err := l.sameAsTemplate(root, p, rest)
			if err != nil {
				return fmt.Errorf("removing locker %q: %w", name, err)
			}
			if !same {
				return refuse(p, "differs from its template")
			}
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, p := range files {
		if err := root.Remove(p); err != nil {
			return fmt.Errorf("removing locker %q: %w", name, err)
		}
	}
	for _, p := range slices.Backward(dirs) {
		if err := root.Remove(p); err != nil {
			return fmt.Errorf("removing locker %q: %w", name, err)
		}
	}
	return nil
}

// sameAsTemplate reports whether the root-relative file p holds the same
// bytes as the template file at rel in the template folder.
func (l Layout) sameAsTemplate(root *os.Root, p, rel string) (bool, error) {
	if l.Templates == "" {
		return false, nil
	}
	tmpl := filepath.Join(l.Templates, filepath.FromSlash(rel))
	if fi, err := os.Stat(tmpl); err != nil || !fi.Mode().IsRegular() {
		return false, nil
	}
	want, err := os.ReadFile(tmpl)
	if err != nil {
		return false, err
	}
	have, err := root.ReadFile(p)
	if err != nil {
		return false, err
	}
	return string(have) == string(want), nil
}
