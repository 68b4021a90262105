package mounts

import (
	"iter"
	"slices"
	"strings"
)

// This file is the project's one reader of LXC config lines: provision,
// lxcctl, the test fleet and the benchmark parse and edit container configs
// through it, so a form liblxc accepts (blanks around "=", a quoted value,
// a "#" comment) reads the same everywhere.

// ParseConfigLine splits one line of an LXC config file the way liblxc's
// parse_line does: blanks before the key and around "=" are ignored, a line
// whose first non-blank is "#" is a comment, and a value in matching single
// or double quotes loses them. A trailing "\n" or "\r\n" is ignored. It
// reports ok=false for comments, blank lines and lines without "=".
func ParseConfigLine(line string) (key, value string, ok bool) {
	t := strings.TrimLeft(line, " \t")
	if t == "" || t[0] == '#' {
		return "", "", false
	}
	i := strings.IndexByte(t, '=')
	if i < 0 {
		return "", "", false
	}
	key = strings.TrimRight(t[:i], " \t")
	value = strings.Trim(t[i+1:], " \t\r\n")
	if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
		value = value[1 : len(value)-1]
	}
	return key, value, true
}

// ConfigItems yields the KEY = VALUE items of an LXC config file's text,
// in file order (see ParseConfigLine); a key set twice is yielded twice.
func ConfigItems(config []byte) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for _, line := range splitLines(config) {
			if k, v, ok := ParseConfigLine(line); ok && !yield(k, v) {
				return
			}
		}
	}
}

// ConfigValues returns the values of every item with key in an LXC config
// file's text, in file order.
func ConfigValues(config []byte, key string) []string {
	var out []string
	for k, v := range ConfigItems(config) {
		if k == key {
			out = append(out, v)
		}
	}
	return out
}

// LastConfigValue returns the value of the last item with key (the one
// liblxc keeps for a single-valued key), or "" when there is none.
func LastConfigValue(config []byte, key string) string {
	v := ConfigValues(config, key)
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// EditConfig returns an LXC config file's text with every KEY = VALUE line
// replaced by what edit returns for it: the line itself (with its "\n")
// keeps it, "" drops it, other text takes its place. Comments, blank lines
// and lines edit keeps stay byte for byte, in their order.
func EditConfig(config []byte, edit func(key, value, line string) string) []byte {
	var b strings.Builder
	b.Grow(len(config))
	for _, line := range splitLines(config) {
		if k, v, ok := ParseConfigLine(line); ok {
			line = edit(k, v, line)
		}
		b.WriteString(line)
	}
	return []byte(b.String())
}

// DropConfig returns an LXC config file's text without the KEY = VALUE
// lines for which drop reports true; every other line stays byte for byte.
func DropConfig(config []byte, drop func(key, value string) bool) []byte {
	return EditConfig(config, func(k, v, line string) string {
		if drop(k, v) {
			return ""
		}
		return line
	})
}

// DropConfigKeys returns an LXC config file's text without the KEY = VALUE
// lines whose key starts with one of prefixes ("lxc.net." drops every
// network key, "lxc.signal.halt" that key).
func DropConfigKeys(config []byte, prefixes ...string) []byte {
	return DropConfig(config, func(k, _ string) bool {
		return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(k, p) })
	})
}

// AppendConfig returns an LXC config file's text with lines appended, each
// ending in "\n" (a last line without its "\n" gets one first).
func AppendConfig(config []byte, lines ...string) []byte {
	out := slices.Clip(config)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	for _, l := range lines {
		out = append(append(out, l...), '\n')
	}
	return out
}

// EntryTarget returns the target of an lxc.mount.entry value (an fstab
// line, \NNN escapes decoded), relative to the rootfs and cleaned, as
// "usr/bin/node" for both "usr/bin/node" and "/usr/bin/node/"; "" when the
// value has no target.
func EntryTarget(value string) string {
	e, ok := parseEntry(value)
	if !ok {
		return ""
	}
	return cleanTarget(e.Target)
}

// splitLines splits config text into lines, each with its "\n" (the last may
// have none).
func splitLines(config []byte) []string {
	if len(config) == 0 {
		return nil
	}
	lines := strings.SplitAfter(string(config), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}
