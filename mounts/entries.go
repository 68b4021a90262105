package mounts

import (
	"path/filepath"
	"strings"
)

// mountEntry is one lxc.mount.entry value, an fstab line.
type mountEntry struct {
	Source, Target, FSType, Options string
}

// parseEntry splits an lxc.mount.entry value into its fields. LXC reads the
// value with getmntent, so fields are separated by blanks and \NNN octal
// escapes are decoded. It needs at least a source and a target.
func parseEntry(value string) (mountEntry, bool) {
	f := strings.Fields(value)
	if len(f) < 2 {
		return mountEntry{}, false
	}
	e := mountEntry{Source: unescapeOctal(f[0]), Target: unescapeOctal(f[1])}
	if len(f) > 2 {
		e.FSType = f[2]
	}
	if len(f) > 3 {
		e.Options = f[3]
	}
	return e, true
}

// unescapeOctal decodes the \NNN escapes that fstab and mountinfo use for
// blanks, newlines and backslashes.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			v := (s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0')
			b.WriteByte(v)
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// Entries returns the three lxc.mount.entry values of a locker, in this
// order: the current release read-only at AppPath, the locker's Me
// read-write at MePath, its Config at ConfigPath (read-only when
// ConfigReadOnly). For example:
//
//	/var/lib/lxcfleet/current opt/app none bind,ro,create=dir 0 0
//	/var/lib/lxcfleet/lockers/NAME/Me Me none bind,create=dir 0 0
//	/var/lib/lxcfleet/lockers/NAME/Config Config none bind,ro,create=dir 0 0
func (l Layout) Entries(name string) ([]string, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	l = l.clean()
	if err := l.lexicalCheck(); err != nil {
		return nil, err
	}
	cfg := "bind,create=dir"
	if l.ConfigReadOnly {
		cfg = "bind,ro,create=dir"
	}
	return []string{
		l.Current + " " + l.AppPath + " none bind,ro,create=dir 0 0",
		l.MeDir(name) + " " + l.MePath + " none bind,create=dir 0 0",
		l.ConfigDir(name) + " " + l.ConfigPath + " none " + cfg + " 0 0",
	}, nil
}

// Owns reports whether an lxc.mount.entry value is one this layout manages:
// its source is current, or lies inside the releases or lockers folders of
// the layout, or its target is AppPath, MePath
// or ConfigPath. ApplyEntries replaces owned entries, so that re-rendering
// with changed settings (read-write Config, another root) leaves no stale
// entry behind. Other binds from under the root are not owned: an lxcpath
// kept inside the root holds each locker's init wrapper and app log, bound
// by provision (the demo keeps its lxcpath there).
func (l Layout) Owns(entryValue string) bool {
	e, ok := parseEntry(entryValue)
	if !ok {
		return false
	}
	l = l.clean()
	// Sources the layout renders or rendered: current, a release, a
	// locker's folders. Other files under the root (an lxcpath kept inside
	// it, with a locker's init wrapper and app log) are not the layout's.
	if src := filepath.Clean(e.Source); filepath.IsAbs(src) {
		for _, own := range []string{l.Current, l.Releases, l.Lockers} {
			if own != "" && own != "/" && (src == own || within(own, src)) {
				return true
			}
		}
	}
	t := cleanTarget(e.Target)
	for _, want := range []string{l.AppPath, l.MePath, l.ConfigPath} {
		if want != "" && t == want {
			return true
		}
	}
	return false
}
