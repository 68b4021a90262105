package codeupdate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// depFields are the package.json fields that decide what npm puts in
// node_modules.
var depFields = []string{
	"dependencies", "devDependencies", "optionalDependencies",
	"peerDependencies", "peerDependenciesMeta",
	"bundleDependencies", "bundledDependencies",
	"overrides", "workspaces",
}

// lockDepFields are the fields npm copies from package.json into the
// lockfile's root package (packages[""]).
var lockDepFields = []string{"dependencies", "devDependencies", "optionalDependencies", "peerDependencies"}

// rootScripts are the root package's own lifecycle scripts npm runs on
// install, in npm's order. Build runs them in the new release whether npm
// ran or not.
var rootScripts = []string{"preinstall", "install", "postinstall", "preprepare", "prepare", "postprepare"}

// pkgInfo is what a build needs from a release's package files.
type pkgInfo struct {
	lockName string // npm-shrinkwrap.json, package-lock.json or ""
	lockSum  string // sha256 of the lockfile, "" without one
	deps     bool   // package.json declares dependencies
	scripts  []string
	// key is the sha256 over everything that shapes node_modules: the
	// lockfile, package.json's dependency fields and root install scripts,
	// .npmrc, and the node and npm versions.
	key string
	pj  map[string]json.RawMessage
}

// readPkg reads package.json, the lockfile and .npmrc in dir and computes
// the modules key with the node and npm versions.
func readPkg(dir, node, npm string) (pkgInfo, error) {
	var p pkgInfo
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		return p, fmt.Errorf("reading package.json: %w", err)
	}
	if err := json.Unmarshal(b, &p.pj); err != nil {
		return p, fmt.Errorf("parsing package.json: %w", err)
	}
	p.lockName, p.lockSum, err = lockfile(dir)
	if err != nil {
		return p, err
	}
	p.deps = declaresDeps(p.pj)
	var scripts map[string]json.RawMessage
	if raw, ok := p.pj["scripts"]; ok {
		if err := json.Unmarshal(raw, &scripts); err != nil {
			return p, fmt.Errorf("parsing package.json scripts: %w", err)
		}
	}
	h := sha256.New()
	field := func(name string, v []byte) {
		fmt.Fprintf(h, "%s %d\n", name, len(v))
		h.Write(v)
		h.Write([]byte{'\n'})
	}
	field("node", []byte(node))
	field("npm", []byte(npm))
	field("lockfile", []byte(p.lockName+" "+p.lockSum))
	for _, f := range depFields {
		field("package.json "+f, compactJSON(p.pj[f]))
	}
	for _, s := range rootScripts {
		if raw, ok := scripts[s]; ok {
			p.scripts = append(p.scripts, s)
			field("script "+s, compactJSON(raw))
		}
	}
	npmrc, err := os.ReadFile(filepath.Join(dir, ".npmrc"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return p, fmt.Errorf("reading .npmrc: %w", err)
	}
	field(".npmrc", npmrc)
	p.key = hex.EncodeToString(h.Sum(nil))
	return p, nil
}

// compactJSON returns raw without insignificant white space (nil stays
// nil), so that reformatting package.json does not change the key.
func compactJSON(raw json.RawMessage) []byte {
	if raw == nil {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return raw
	}
	return buf.Bytes()
}

// declaresDeps reports whether a parsed package.json declares dependencies.
func declaresDeps(pj map[string]json.RawMessage) bool {
	for _, k := range []string{"dependencies", "devDependencies", "optionalDependencies", "peerDependencies", "bundleDependencies", "bundledDependencies"} {
		v := bytes.TrimSpace(pj[k])
		if len(v) > 0 && !bytes.Equal(v, []byte("{}")) && !bytes.Equal(v, []byte("[]")) && !bytes.Equal(v, []byte("null")) {
			return true
		}
	}
	return false
}

// lockAgrees reports whether the lockfile's root package (packages[""])
// records the same dependency specs as package.json. ok is false when the
// lockfile cannot tell (lockfile version 1, no root package): npm must be
// asked.
func lockAgrees(dir string, p pkgInfo) (agrees, ok bool) {
	b, err := os.ReadFile(filepath.Join(dir, p.lockName))
	if err != nil {
		return false, false
	}
	var lock struct {
		Packages map[string]map[string]json.RawMessage `json:"packages"`
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		return false, false
	}
	rootPkg, found := lock.Packages[""]
	if !found {
		return false, false
	}
	for _, f := range lockDepFields {
		a, b := normDeps(p.pj[f]), normDeps(rootPkg[f])
		if !bytes.Equal(a, b) {
			return false, true
		}
	}
	return true, true
}

// normDeps re-encodes a dependency object with sorted keys; empty and
// missing are the same.
func normDeps(raw json.RawMessage) []byte {
	var m map[string]any
	if len(raw) == 0 || json.Unmarshal(raw, &m) != nil || len(m) == 0 {
		return nil
	}
	b, _ := json.Marshal(m) // map keys are sorted
	return b
}

// copyMode is how copyTree makes files.
type copyMode int

const (
	// copyLink hard-links every file: fast, but the copy shares inodes
	// with the source. Only for a tree nothing will write into.
	copyLink copyMode = iota
	// copyIndependent gives every file its own inode: a reflink
	// (FICLONE, copy on write) where the file system has them, else a
	// byte copy. Writing into the copy never changes the source.
	copyIndependent
)

// copyStats counts what copyTree did.
type copyStats struct {
	Files, Linked, Reflinked, Copied int
	Bytes                            int64
}

// method names the way most files were made: "hardlink", "reflink" or
// "copy".
func (s copyStats) method() string {
	switch {
	case s.Linked > 0:
		return "hardlink"
	case s.Copied > s.Reflinked:
		return "copy"
	default:
		return "reflink"
	}
}

// copyTree recreates the folder src at dst (which must not exist):
// folders with their modes, symlinks as symlinks, regular files as mode
// says. src and dst must be on one file system for copyLink.
func copyTree(ctx context.Context, src, dst string, mode copyMode) (copyStats, error) {
	var st copyStats
	reflinkOK := true
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			if err := ctx.Err(); err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			if err := os.Mkdir(to, 0o755); err != nil {
				return err
			}
			return os.Chmod(to, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(t, to)
		case d.Type().IsRegular():
			st.Files++
			if mode == copyLink {
				st.Linked++
				return os.Link(path, to)
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			st.Bytes += info.Size()
			cloned, err := copyFile(path, to, info.Mode().Perm(), &reflinkOK)
			if err != nil {
				return err
			}
			if cloned {
				st.Reflinked++
			} else {
				st.Copied++
			}
			return nil
		default:
			return nil // sockets, fifos: not part of a node_modules tree
		}
	})
	return st, err
}

// copyFile makes dst a new file with src's content: a reflink when
// *reflinkOK and the file system supports it (then cloned is true), else a
// byte copy (copy_file_range through io.Copy). A file system that refuses
// one reflink is not asked again.
func copyFile(src, dst string, perm os.FileMode, reflinkOK *bool) (cloned bool, err error) {
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return false, err
	}
	if *reflinkOK {
		err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
		if err == nil {
			return true, closeChmod(out, perm)
		}
		var errno unix.Errno
		if !errors.As(err, &errno) || !slices.Contains([]unix.Errno{unix.EOPNOTSUPP, unix.ENOTTY, unix.EINVAL, unix.EXDEV, unix.ENOSYS, unix.EBADF}, errno) {
			out.Close()
			return false, fmt.Errorf("cloning %s: %w", src, err)
		}
		*reflinkOK = false
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return false, err
	}
	return false, closeChmod(out, perm)
}

func closeChmod(f *os.File, perm os.FileMode) error {
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
