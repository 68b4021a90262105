package mounts

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
)

// Marker is the comment line ApplyEntries puts once above the entries it
// manages.
const Marker = "# lxcfleet layout (managed; do not edit)"

const mountEntryKey = "lxc.mount.entry"

// mountEntryValue returns the value of a line that is an lxc.mount.entry.
func mountEntryValue(line string) (string, bool) {
	k, v, ok := ParseConfigLine(line)
	if !ok || k != mountEntryKey {
		return "", false
	}
	return v, true
}

// isMarker reports whether a line is the managed-section marker.
func isMarker(line string) bool { return strings.TrimSpace(line) == Marker }

// isBlank reports whether a line holds nothing but blanks.
func isBlank(line string) bool { return strings.TrimSpace(line) == "" }

// MountEntries returns the values of every lxc.mount.entry line of a config
// file, in file order.
func MountEntries(config []byte) []string {
	return ConfigValues(config, mountEntryKey)
}

// ApplyEntries puts a locker's mount entries into the text of its LXC config
// file. Every line that is not an lxc.mount.entry owned by the layout (see
// Layout.Owns) or the Marker is kept exactly as it was, in its order: the
// template's own binds, comments, blank lines. Owned entries are removed
// wherever they are, and the Marker and the rendered entries are appended at
// the end (after one blank line, unless the kept text already ends with
// one). Applying the result again gives the same bytes and changed=false.
func ApplyEntries(config []byte, l Layout, name string) (out []byte, changed bool, err error) {
	entries, err := l.Entries(name)
	if err != nil {
		return nil, false, err
	}
	var b bytes.Buffer
	b.Grow(len(config) + 512)
	lastBlank := true // nothing kept: no separator needed
	for _, line := range splitLines(config) {
		if isMarker(line) {
			continue
		}
		if v, ok := mountEntryValue(line); ok && l.Owns(v) {
			continue
		}
		b.WriteString(line)
		lastBlank = isBlank(line)
	}
	if b.Len() > 0 && !bytes.HasSuffix(b.Bytes(), []byte("\n")) {
		b.WriteByte('\n')
	}
	if !lastBlank {
		b.WriteByte('\n')
	}
	b.WriteString(Marker + "\n")
	for _, e := range entries {
		b.WriteString(mountEntryKey + " = " + e + "\n")
	}
	out = b.Bytes()
	return out, !bytes.Equal(out, config), nil
}

// DeviationsInConfig compares a config file's mount entries with the ones
// the layout renders for the locker and describes each difference for a
// human: a missing entry, a duplicate, a wrong source, a wrong option (for
// example rw where ro is expected), or an owned entry the layout no longer
// renders. It returns nil when the config matches.
func DeviationsInConfig(config []byte, l Layout, name string) []string {
	want, err := l.Entries(name)
	if err != nil {
		return []string{err.Error()}
	}
	var have []mountEntry
	var raw []string
	for _, v := range MountEntries(config) {
		if e, ok := parseEntry(v); ok {
			have = append(have, e)
			raw = append(raw, v)
		}
	}
	var out []string
	wantTargets := map[string]bool{}
	for _, w := range want {
		we, _ := parseEntry(w)
		target := cleanTarget(we.Target)
		wantTargets[target] = true
		var found []mountEntry
		for _, h := range have {
			if cleanTarget(h.Target) == target {
				found = append(found, h)
			}
		}
		switch {
		case len(found) == 0:
			out = append(out, fmt.Sprintf("missing mount entry for /%s (want %q)", target, w))
			continue
		case len(found) > 1:
			out = append(out, fmt.Sprintf("%d mount entries for /%s, want 1", len(found), target))
		}
		for _, h := range found {
			out = append(out, entryDiff(target, h, we)...)
		}
	}
	for i, h := range have {
		if !wantTargets[cleanTarget(h.Target)] && l.Owns(raw[i]) {
			out = append(out, fmt.Sprintf("unexpected managed mount entry %q", raw[i]))
		}
	}
	return out
}

// entryDiff describes how one entry differs from the wanted one.
func entryDiff(target string, have, want mountEntry) []string {
	var out []string
	if have.Source != want.Source {
		out = append(out, fmt.Sprintf("/%s mounts %s, want %s", target, have.Source, want.Source))
	}
	if have.FSType != want.FSType {
		out = append(out, fmt.Sprintf("/%s has file system type %q, want %q", target, have.FSType, want.FSType))
	}
	hro, wro := readOnly(have.Options), readOnly(want.Options)
	if hro != wro {
		out = append(out, fmt.Sprintf("/%s is mounted %s, want %s", target, rwName(hro), rwName(wro)))
	}
	if ho, wo := otherOptions(have.Options), otherOptions(want.Options); !slices.Equal(ho, wo) {
		out = append(out, fmt.Sprintf("/%s has options %q, want %q", target, have.Options, want.Options))
	}
	return out
}

// readOnly reports whether mount options end up read-only (the last of ro
// and rw wins, as with mount(8)).
func readOnly(opts string) bool {
	ro := false
	for o := range strings.SplitSeq(opts, ",") {
		switch o {
		case "ro":
			ro = true
		case "rw":
			ro = false
		}
	}
	return ro
}

func rwName(ro bool) string {
	if ro {
		return "read-only (ro)"
	}
	return "read-write (rw)"
}

// otherOptions returns the options other than ro and rw, sorted.
func otherOptions(opts string) []string {
	var out []string
	for o := range strings.SplitSeq(opts, ",") {
		if o != "" && o != "ro" && o != "rw" {
			out = append(out, o)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
