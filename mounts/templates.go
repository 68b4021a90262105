package mounts

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// DriftKind says how a locker's config differs from the templates.
type DriftKind string

// The kinds of Drift.
const (
	// DriftMissing: a template file has no copy in the locker's Config.
	DriftMissing DriftKind = "missing"
	// DriftTemplateNewer: the template changed after the locker's copy was
	// last written, and their contents differ.
	DriftTemplateNewer DriftKind = "template-newer"
	// DriftNotFile: the locker's Config has something other than a regular
	// file (a folder, a symlink) where the template has a file.
	DriftNotFile DriftKind = "not-a-file"
)

// Drift is one difference between the config templates and a locker's
// Config. File is slash-separated and relative to both folders.
type Drift struct {
	File string    `json:"file"`
	Kind DriftKind `json:"kind"`
}

// templateFile is one entry of the template folder.
type templateFile struct {
	rel  string // slash-separated, relative to the template folder
	info fs.FileInfo
}

// templateFiles lists the template folder (folders first, in lexical order)
// following symlinks to regular files only.
func (l Layout) templateFiles() ([]templateFile, error) {
	if l.Templates == "" {
		return nil, errors.New("the layout has no config template folder")
	}
	fi, err := os.Stat(l.Templates)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("config template folder %s does not exist", l.Templates)
	}
	if err != nil {
		return nil, fmt.Errorf("config template folder: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("config template folder %s is not a directory", l.Templates)
	}
	var out []templateFile
	err = filepath.WalkDir(l.Templates, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == l.Templates {
			return nil
		}
		rel, _ := filepath.Rel(l.Templates, p)
		info, err := os.Stat(p) // a symlink counts as what it points to
		if err != nil {
			return fmt.Errorf("config template %s: %w", p, err)
		}
		switch {
		case d.IsDir():
		case info.Mode().IsRegular():
		default:
			return fmt.Errorf("config template %s is not a regular file or a folder", p)
		}
		out = append(out, templateFile{rel: filepath.ToSlash(rel), info: info})
		return nil
	})
	return out, err
}

// openConfig opens a provisioned locker's Config folder as an os.Root.
func (l Layout) openConfig(root *os.Root, name string) (*os.Root, error) {
	rel := path.Join(l.rel(l.Lockers), name, configDir)
	for _, p := range []string{path.Dir(rel), rel} {
		fi, err := root.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%s does not exist: provision the locker first", l.abs(p))
		case err != nil:
			return nil, err
		case fi.Mode()&fs.ModeSymlink != 0:
			return nil, fmt.Errorf("%s is a symlink; refusing to follow it", l.abs(p))
		case !fi.IsDir():
			return nil, fmt.Errorf("%s is not a directory", l.abs(p))
		}
	}
	return root.OpenRoot(rel)
}

// SeedConfig copies the config templates (the Templates folder, recursively,
// keeping file modes and modification times) into a locker's Config, owned
// by owner. A file is copied only if nothing exists at its destination (it
// is created with O_EXCL): an operator's edited file is never overwritten,
// and a symlink at the destination is never written through. It returns the
// files it copied, slash-separated and relative to Config. A missing
// template folder is an error; the locker must be provisioned. If a copy
// fails, the files and folders this call created are removed.
func (l Layout) SeedConfig(name string, owner Owner) (copied []string, err error) {
	l = l.clean()
	if err := l.prepare(name); err != nil {
		return nil, err
	}
	tmpls, err := l.templateFiles()
	if err != nil {
		return nil, fmt.Errorf("seeding the config of locker %q: %w", name, err)
	}
	root, err := l.openRoot()
	if err != nil {
		return nil, fmt.Errorf("seeding the config of locker %q: %w", name, err)
	}
	defer root.Close()
	cfg, err := l.openConfig(root, name)
	if err != nil {
		return nil, fmt.Errorf("seeding the config of locker %q: %w", name, err)
	}
	defer cfg.Close()

	var made []string // created files and folders, in order
	defer func() {
		if err != nil {
			for _, p := range slices.Backward(made) {
				_ = cfg.Remove(p)
			}
			copied = nil
		}
	}()
	dst := func(rel string) string { return filepath.Join(l.ConfigDir(name), filepath.FromSlash(rel)) }
	for _, t := range tmpls {
		perm := t.info.Mode().Perm()
		if t.info.IsDir() {
			fi, err := cfg.Lstat(t.rel)
			switch {
			case err == nil && fi.IsDir():
				continue
			case err == nil:
				return nil, fmt.Errorf("seeding the config of locker %q: %s is not a folder", name, dst(t.rel))
			case !errors.Is(err, fs.ErrNotExist):
				return nil, fmt.Errorf("seeding the config of locker %q: %w", name, err)
			}
			if err := cfg.Mkdir(t.rel, perm); err != nil {
				return nil, fmt.Errorf("seeding the config of locker %q: %w", name, err)
			}
			made = append(made, t.rel)
			if err := setMeta(cfg, t.rel, perm, owner, nil); err != nil {
				return nil, fmt.Errorf("seeding the config of locker %q: %s: %w", name, dst(t.rel), err)
			}
			continue
		}
		ok, err := copyNew(cfg, t.rel, filepath.Join(l.Templates, filepath.FromSlash(t.rel)), perm)
		if ok {
			made = append(made, t.rel)
		}
		if err == nil && ok {
			mtime := t.info.ModTime()
			err = setMeta(cfg, t.rel, perm, owner, &mtime)
		}
		if err != nil {
			return nil, fmt.Errorf("seeding the config of locker %q: copying %s to %s: %w", name, t.rel, dst(t.rel), err)
		}
		if ok {
			copied = append(copied, t.rel)
		}
	}
	return copied, nil
}

// copyNew copies src to rel inside root unless something exists at rel. It
// reports whether it created rel (true also when the copy then failed, so
// that the caller removes it).
func copyNew(root *os.Root, rel, src string, perm fs.FileMode) (bool, error) {
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	out, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return true, err
	}
	return true, out.Close()
}

// setMeta gives a freshly created file or folder its exact mode (without the
// umask), its owner and, if set, its modification time.
func setMeta(root *os.Root, rel string, perm fs.FileMode, owner Owner, mtime *time.Time) error {
	if err := root.Chmod(rel, perm); err != nil {
		return err
	}
	if err := root.Lchown(rel, owner.UID, owner.GID); err != nil {
		return err
	}
	if mtime != nil {
		return root.Chtimes(rel, *mtime, *mtime)
	}
	return nil
}

// lstatNoFollow is Lstat of a slash-separated path inside root that also
// refuses to pass through a symlink or a non-folder on the way: it reports
// ok=false when a parent is not a plain folder.
func lstatNoFollow(root *os.Root, rel string) (fi fs.FileInfo, ok bool, err error) {
	dir := ""
	for _, part := range strings.Split(path.Dir(rel), "/") {
		if part == "." {
			break
		}
		dir = path.Join(dir, part)
		pfi, err := root.Lstat(dir)
		if err != nil {
			return nil, false, err
		}
		if !pfi.IsDir() {
			return nil, false, nil
		}
	}
	fi, err = root.Lstat(rel)
	return fi, err == nil, err
}

// ConfigDrift compares the config templates with a locker's Config: template
// files with no copy (DriftMissing), template files changed after the copy
// and differing from it (DriftTemplateNewer), and template files whose
// destination is not a regular file (DriftNotFile). Files only the locker
// has are not drift. The result is sorted by file.
func (l Layout) ConfigDrift(name string) ([]Drift, error) {
	l = l.clean()
	if err := l.prepare(name); err != nil {
		return nil, err
	}
	tmpls, err := l.templateFiles()
	if err != nil {
		return nil, fmt.Errorf("checking the config of locker %q: %w", name, err)
	}
	root, err := l.openRoot()
	if err != nil {
		return nil, fmt.Errorf("checking the config of locker %q: %w", name, err)
	}
	defer root.Close()
	cfg, err := l.openConfig(root, name)
	if err != nil {
		return nil, fmt.Errorf("checking the config of locker %q: %w", name, err)
	}
	defer cfg.Close()
	var out []Drift
	for _, t := range tmpls {
		if t.info.IsDir() {
			continue
		}
		fi, ok, err := lstatNoFollow(cfg, t.rel)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			out = append(out, Drift{File: t.rel, Kind: DriftMissing})
			continue
		case err != nil:
			return nil, fmt.Errorf("checking the config of locker %q: %w", name, err)
		case !ok || !fi.Mode().IsRegular():
			out = append(out, Drift{File: t.rel, Kind: DriftNotFile})
			continue
		case !t.info.ModTime().After(fi.ModTime()):
			continue
		}
		want, err := os.ReadFile(filepath.Join(l.Templates, filepath.FromSlash(t.rel)))
		if err != nil {
			return nil, fmt.Errorf("checking the config of locker %q: %w", name, err)
		}
		have, err := cfg.ReadFile(t.rel)
		if err != nil {
			return nil, fmt.Errorf("checking the config of locker %q: %w", name, err)
		}
		if !bytes.Equal(have, want) {
			out = append(out, Drift{File: t.rel, Kind: DriftTemplateNewer})
		}
	}
	slices.SortFunc(out, func(a, b Drift) int { return strings.Compare(a.File, b.File) })
	return out, nil
}
