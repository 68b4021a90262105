package mounts

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unicode"
)

// DefaultRoot is the folder that holds the layout unless configured
// otherwise.
const DefaultRoot = "/var/lib/lxcfleet"

// The host folder names inside lockers/<name>/. Only the paths inside the
// container (Layout.MePath, Layout.ConfigPath) are configurable.
const (
	meDir     = "Me"
	configDir = "Config"
)

// Layout describes where the shared code and the lockers' folders live on the
// host and where they appear inside a container. Host paths are absolute;
// Current, Releases and Lockers must lie inside Root. Container paths
// (AppPath, MePath, ConfigPath) are relative to the container's rootfs, as
// lxc.mount.entry targets are; a leading "/" is accepted and ignored.
type Layout struct {
	// Root holds everything else (default /var/lib/lxcfleet).
	Root string
	// Current is the symlink to the release new lockers start on
	// (default Root/current).
	Current string
	// Releases holds one folder per release (default Root/releases).
	Releases string
	// Lockers holds lockers/<name>/Me and lockers/<name>/Config
	// (default Root/lockers).
	Lockers string
	// Templates is the folder of config templates copied into a new
	// locker's Config; optional, and may lie outside Root (it is only read).
	Templates string
	// AppPath is where Current is mounted inside a container
	// (default opt/app).
	AppPath string
	// MePath is where the locker's Me folder is mounted (default Me).
	MePath string
	// ConfigPath is where the locker's Config folder is mounted
	// (default Config).
	ConfigPath string
	// ConfigReadOnly mounts Config read-only (the default in
	// DefaultLayout and LayoutAt).
	ConfigReadOnly bool
}

// DefaultLayout returns the README's host layout under DefaultRoot.
func DefaultLayout() Layout { return LayoutAt(DefaultRoot) }

// LayoutAt returns the default layout under another root folder.
func LayoutAt(root string) Layout {
	return Layout{
		Root:           root,
		Current:        filepath.Join(root, "current"),
		Releases:       filepath.Join(root, "releases"),
		Lockers:        filepath.Join(root, "lockers"),
		AppPath:        "opt/app",
		MePath:         "Me",
		ConfigPath:     "Config",
		ConfigReadOnly: true,
	}
}

// LockerDir returns the host folder of one locker, lockers/<name>. The name
// is not checked; see ValidName.
func (l Layout) LockerDir(name string) string {
	return filepath.Join(filepath.Clean(l.Lockers), name)
}

// MeDir returns the host folder of a locker's owner data.
func (l Layout) MeDir(name string) string { return filepath.Join(l.LockerDir(name), meDir) }

// ConfigDir returns the host folder of a locker's config.
func (l Layout) ConfigDir(name string) string {
	return filepath.Join(l.LockerDir(name), configDir)
}

// clean returns the layout with host paths cleaned and container paths made
// relative and cleaned, so that comparisons are lexical.
func (l Layout) clean() Layout {
	for _, p := range []*string{&l.Root, &l.Current, &l.Releases, &l.Lockers, &l.Templates} {
		if *p != "" {
			*p = filepath.Clean(*p)
		}
	}
	for _, p := range []*string{&l.AppPath, &l.MePath, &l.ConfigPath} {
		*p = cleanTarget(*p)
	}
	return l
}

// cleanTarget normalises a container path: relative, cleaned, "" if empty.
func cleanTarget(p string) string {
	p = strings.TrimLeft(p, "/")
	if p == "" {
		return ""
	}
	return path.Clean(p)
}

// within reports whether p is dir or lies below it (both cleaned).
func within(dir, p string) bool {
	if dir == "/" {
		return strings.HasPrefix(p, "/")
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// badPathChar returns the first character that cannot appear in a path of
// an lxc.mount.entry without escaping (LXC reads the entry as an fstab line),
// or -1.
func badPathChar(p string) rune {
	for _, r := range p {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == '\\' || r == '#' {
			return r
		}
	}
	return -1
}

// lexicalCheck validates what can be validated without the filesystem. It
// expects a cleaned layout.
func (l Layout) lexicalCheck() error {
	var errs []error
	host := []struct{ key, p string }{
		{"root", l.Root}, {"current", l.Current}, {"releases", l.Releases}, {"lockers", l.Lockers},
	}
	if l.Templates != "" {
		host = append(host, struct{ key, p string }{"templates", l.Templates})
	}
	for _, h := range host {
		switch {
		case h.p == "":
			errs = append(errs, fmt.Errorf("layout %s is not set", h.key))
		case !filepath.IsAbs(h.p):
			errs = append(errs, fmt.Errorf("layout %s %q is not an absolute path", h.key, h.p))
		case badPathChar(h.p) >= 0:
			errs = append(errs, fmt.Errorf("layout %s %q contains %q", h.key, h.p, badPathChar(h.p)))
		}
	}
	if l.Root == "/" {
		errs = append(errs, errors.New("layout root must not be /"))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	inside := host[1:4]
	for i, h := range inside {
		if !within(l.Root, h.p) || h.p == l.Root {
			errs = append(errs, fmt.Errorf("layout %s %s is not inside the layout root %s", h.key, h.p, l.Root))
			continue
		}
		for _, o := range inside[i+1:] {
			if within(h.p, o.p) || within(o.p, h.p) {
				errs = append(errs, fmt.Errorf("layout %s %s and %s %s overlap", h.key, h.p, o.key, o.p))
			}
		}
	}
	targets := []struct{ key, p string }{
		{"app_path", l.AppPath}, {"me_path", l.MePath}, {"config_path", l.ConfigPath},
	}
	for i, t := range targets {
		switch {
		case t.p == "" || t.p == ".":
			errs = append(errs, fmt.Errorf("layout %s is not set", t.key))
			continue
		case t.p == ".." || strings.HasPrefix(t.p, "../"):
			errs = append(errs, fmt.Errorf("layout %s %q leaves the container's rootfs", t.key, t.p))
			continue
		case badPathChar(t.p) >= 0:
			errs = append(errs, fmt.Errorf("layout %s %q contains %q", t.key, t.p, badPathChar(t.p)))
			continue
		}
		for _, o := range targets[i+1:] {
			if o.p != "" && (within(t.p, o.p) || within(o.p, t.p)) {
				errs = append(errs, fmt.Errorf("layout %s %q and %s %q overlap", t.key, t.p, o.key, o.p))
			}
		}
	}
	return errors.Join(errs...)
}

// Validate checks the layout: absolute host paths, Current, Releases and
// Lockers inside Root, container paths that do not overlap, the root exists,
// and no path (once its symlinks are resolved) leads out of the root.
// Current is a symlink by design; it must resolve into Releases. Paths that
// do not exist yet are fine (they are created later), but the part of them
// that exists is resolved and checked. Templates, when set, may lie anywhere.
func (l Layout) Validate() error {
	l = l.clean()
	if err := l.lexicalCheck(); err != nil {
		return err
	}
	realRoot, err := l.realRoot()
	if err != nil {
		return err
	}
	var errs []error
	check := func(key, p, dir string) string {
		real, err := resolveExisting(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("layout %s %s: %w", key, p, err))
			return ""
		}
		if !within(dir, real) {
			errs = append(errs, fmt.Errorf("layout %s %s resolves to %s, outside %s", key, p, real, dir))
			return ""
		}
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			errs = append(errs, fmt.Errorf("layout %s %s is not a directory", key, p))
		}
		return real
	}
	realReleases := check("releases", l.Releases, realRoot)
	check("lockers", l.Lockers, realRoot)
	if fi, err := os.Lstat(l.Current); err == nil && fi.Mode()&fs.ModeSymlink != 0 && realReleases != "" {
		real, err := filepath.EvalSymlinks(l.Current)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			target, _ := os.Readlink(l.Current)
			errs = append(errs, fmt.Errorf("layout current %s points to %s, which does not exist", l.Current, target))
		case err != nil:
			errs = append(errs, fmt.Errorf("layout current %s: %w", l.Current, err))
		case !within(realReleases, real) || real == realReleases:
			errs = append(errs, fmt.Errorf("layout current %s resolves to %s, not a release in %s", l.Current, real, l.Releases))
		}
	} else {
		check("current", l.Current, realRoot)
	}
	if l.Templates != "" {
		if fi, err := os.Stat(l.Templates); err == nil && !fi.IsDir() {
			errs = append(errs, fmt.Errorf("layout templates %s is not a directory", l.Templates))
		}
	}
	return errors.Join(errs...)
}

// realRoot resolves the layout root, which must exist and be a directory.
func (l Layout) realRoot() (string, error) {
	fi, err := os.Stat(l.Root)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("layout root %s does not exist", l.Root)
	}
	if err != nil {
		return "", fmt.Errorf("layout root %s: %w", l.Root, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("layout root %s is not a directory", l.Root)
	}
	real, err := filepath.EvalSymlinks(l.Root)
	if err != nil {
		return "", fmt.Errorf("layout root %s: %w", l.Root, err)
	}
	return real, nil
}

// resolveExisting resolves the symlinks of the longest existing prefix of p
// and appends the rest, so that a path that does not exist yet is checked
// where it would be created. A dangling symlink on the way is an error.
func resolveExisting(p string) (string, error) {
	rest := ""
	for cur := p; ; {
		if _, err := os.Lstat(cur); err == nil {
			real, err := filepath.EvalSymlinks(cur)
			if errors.Is(err, fs.ErrNotExist) {
				return "", fmt.Errorf("%s is a dangling symlink", cur)
			}
			if err != nil {
				return "", err
			}
			return filepath.Join(real, rest), nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p, nil
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// openRoot opens the layout root as an os.Root; every folder operation of
// this package goes through it, so that no path escapes the root.
func (l Layout) openRoot() (*os.Root, error) {
	if _, err := l.realRoot(); err != nil {
		return nil, err
	}
	r, err := os.OpenRoot(l.Root)
	if err != nil {
		return nil, fmt.Errorf("opening layout root: %w", err)
	}
	return r, nil
}

// rel returns p relative to the root of a cleaned layout that passed
// lexicalCheck (so p lies inside the root).
func (l Layout) rel(p string) string {
	if p == l.Root {
		return "."
	}
	return strings.TrimPrefix(p, l.Root+"/")
}
