package mounts

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrNoAppMount is returned when a process has no mount at the layout's app
// path: it is not a locker, or not one that runs from a release.
var ErrNoAppMount = errors.New("no mount at the app path")

// deletedSuffix is what the kernel appends to a mount's root when the folder
// it was bound from has been deleted.
const deletedSuffix = "//deleted"

// mountInfo is one line of /proc/<pid>/mountinfo, with paths unescaped.
type mountInfo struct {
	dev   string // major:minor of the file system
	root  string // the mounted folder, inside its file system
	point string // the mount point, relative to the process's root
}

// parseMountinfo reads the proc(5) mountinfo format:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// id, parent id, major:minor, root, mount point, options, optional fields
// up to "-", then file system type, source and super options. Root and mount
// point escape blanks, newlines and backslashes as \NNN.
func parseMountinfo(r io.Reader) ([]mountInfo, error) {
	var out []mountInfo
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || !strings.Contains(f[2], ":") {
			return nil, fmt.Errorf("mountinfo line %d: malformed: %q", n, line)
		}
		out = append(out, mountInfo{dev: f[2], root: unescapeOctal(f[3]), point: unescapeOctal(f[4])})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	return out, nil
}

// appMount finds the mount at the app path: a mount point equal to
// /AppPath (as a container's init sees it) or ending in /AppPath (as a
// process that did not pivot_root sees it). An exact match wins; of several
// equal candidates the last one, the mount on top, wins.
func appMount(mounts []mountInfo, appPath string) (mountInfo, bool) {
	want := "/" + appPath
	var found mountInfo
	exact, ok := false, false
	for _, m := range mounts {
		switch {
		case m.point == want:
			found, exact, ok = m, true, true
		case !exact && strings.HasSuffix(m.point, want):
			found, ok = m, true
		}
	}
	return found, ok
}

// releaseBases returns the paths the releases folder may have inside the
// file system a mount comes from, most specific first, when the host's mount
// table is not known: the folder itself (the releases live on /) and each of
// its suffixes that still contains the releases folder's own name
// (/var is a file system: lib/lxcfleet/releases; the layout root is one:
// /releases). Both the path as configured and with symlinks resolved.
func releaseBases(releases string) []string {
	var out []string
	seen := map[string]bool{}
	paths := []string{releases}
	if real, err := filepath.EvalSymlinks(releases); err == nil && real != releases {
		paths = append(paths, real)
	}
	for _, p := range paths {
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		for i := range parts {
			b := "/" + strings.Join(parts[i:], "/")
			if !seen[b] {
				seen[b] = true
				out = append(out, b)
			}
		}
	}
	return out
}

// releaseIn returns the release a mount root refers to: the first path
// element below the first base it lies under.
func releaseIn(root string, bases []string) (string, bool) {
	for _, b := range bases {
		if b == "/" {
			continue
		}
		if rest, ok := strings.CutPrefix(root, b+"/"); ok && rest != "" {
			rel, _, _ := strings.Cut(rest, "/")
			return rel, true
		}
	}
	return "", false
}

// releaseOf finds the app mount among a process's mounts and names its
// release. host, when not nil, is the host's own mount table, used to map
// the releases folder into the app mount's file system exactly.
func releaseOf(mounts []mountInfo, l Layout, host []mountInfo) (string, bool, error) {
	l = l.clean()
	if l.AppPath == "" || l.Releases == "" {
		return "", false, errors.New("layout app path and releases folder must be set")
	}
	m, ok := appMount(mounts, l.AppPath)
	if !ok {
		return "", false, fmt.Errorf("%w /%s", ErrNoAppMount, l.AppPath)
	}
	root, deleted := strings.CutSuffix(m.root, deletedSuffix)
	if host != nil {
		switch b := hostBase(host, l.Releases, m.dev); {
		case b == "/": // the releases folder is the root of its file system
			if rel, _, _ := strings.Cut(strings.TrimPrefix(root, "/"), "/"); rel != "" {
				return rel, deleted, nil
			}
		case b != "":
			if rel, ok := releaseIn(root, []string{b}); ok {
				return rel, deleted, nil
			}
		}
	}
	if rel, ok := releaseIn(root, releaseBases(l.Releases)); ok {
		return rel, deleted, nil
	}
	return "", deleted, fmt.Errorf("the mount at /%s (%s on %s) is not a release in %s", l.AppPath, m.root, m.dev, l.Releases)
}

// ReleaseFromMountinfo reads a process's mountinfo (proc(5) format) and
// returns the release mounted at the layout's app path, and whether its
// folder has been deleted since (the kernel then appends "//deleted" to the
// mount's root). It returns ErrNoAppMount (wrapped) when nothing is mounted
// there.
//
// The root field of mountinfo is the mounted folder's path inside its file
// system, not on the host. Without the host's mount table this function
// accepts a root under the releases folder's full path (it is on /) or under
// any shorter suffix of it that still ends in the releases folder's name
// (an ancestor such as /var or the layout root is its own file system). A
// releases folder that is itself the root of a file system (or a bind
// mount) cannot be recognised this way; ReleaseOfPID resolves that case
// from the host's /proc/self/mountinfo.
func ReleaseFromMountinfo(r io.Reader, l Layout) (release string, deleted bool, err error) {
	mounts, err := parseMountinfo(r)
	if err != nil {
		return "", false, err
	}
	return releaseOf(mounts, l, nil)
}

// hostBase maps the releases folder to its path inside the file system dev,
// using the host's mount table: the host mount that contains the folder
// (the longest mount point above it, the last one of equals) must be of that
// file system; then the folder is that mount's root plus the rest of the
// path. It returns "" when the folder is not on dev.
func hostBase(host []mountInfo, releases, dev string) string {
	real, err := filepath.EvalSymlinks(releases)
	if err != nil {
		real = releases
	}
	var best mountInfo
	found := false
	for _, m := range host {
		if within(m.point, real) && (!found || len(m.point) >= len(best.point)) {
			best, found = m, true
		}
	}
	if !found || best.dev != dev || strings.HasSuffix(best.root, deletedSuffix) {
		return ""
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(real, best.point), "/")
	return filepath.Join(best.root, rest)
}

// readMountinfo reads /proc/<pid>/mountinfo ("self" for pid 0).
func readMountinfo(pid int) ([]mountInfo, error) {
	name := "self"
	if pid != 0 {
		name = strconv.Itoa(pid)
	}
	f, err := os.Open(filepath.Join("/proc", name, "mountinfo"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMountinfo(f)
}

// ReleaseOfPID returns the release that process pid (a locker's init) has
// mounted at the app path, and whether that release's folder has been
// deleted. It reads /proc/<pid>/mountinfo and, to map the mount's root from
// its file system to the host exactly, /proc/self/mountinfo; it falls back to
// the rules of ReleaseFromMountinfo. Reading another namespace's mountinfo
// needs root. A process that is gone gives an error matching
// fs.ErrNotExist.
func ReleaseOfPID(pid int, l Layout) (release string, deleted bool, err error) {
	host, err := readMountinfo(0)
	if err != nil {
		return "", false, fmt.Errorf("reading the host's mount table: %w", err)
	}
	return releaseOfPID(pid, l, host)
}

func releaseOfPID(pid int, l Layout, host []mountInfo) (string, bool, error) {
	if pid <= 0 {
		return "", false, fmt.Errorf("release of pid %d: not a process id", pid)
	}
	mounts, err := readMountinfo(pid)
	if err != nil {
		return "", false, fmt.Errorf("release of pid %d: %w", pid, err)
	}
	rel, deleted, err := releaseOf(mounts, l, host)
	if err != nil {
		return "", false, fmt.Errorf("release of pid %d: %w", pid, err)
	}
	return rel, deleted, nil
}

// ReleaseOfLocker is ReleaseOfPID as release accounting needs it: a pid <= 0
// (a stopped locker), a process that is gone and a process with nothing at
// the app path hold no release ("", false and no error). Releases whose
// folder is already deleted are still reported. Any other failure to tell
// the release is an error: release retention, which counts the releases in
// use from it (the agent's inventory), must then delete nothing, since a
// release a running locker uses must never be deleted.
func ReleaseOfLocker(pid int, l Layout) (release string, deleted bool, err error) {
	if pid <= 0 {
		return "", false, nil
	}
	rel, deleted, err := ReleaseOfPID(pid, l)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrNoAppMount) {
		return "", false, nil
	}
	return rel, deleted, err
}
