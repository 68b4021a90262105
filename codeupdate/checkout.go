package codeupdate

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// ErrIncomplete means a commit holds something the checkout cannot
// reproduce (a submodule, a Git LFS pointer): the build fails rather than
// ship a release with an empty folder or a pointer in place of a file.
var ErrIncomplete = errors.New("commit cannot be checked out whole")

// lfsPointer starts every Git LFS pointer file.
const lfsPointer = "version https://git-lfs.github.com/spec/v1\n"

// checkout writes the tree of commit c into dir (which exists and is
// empty): regular files 0644, executables 0755, symlinks as symlinks,
// folders 0755. A submodule or a Git LFS pointer fails it with
// ErrIncomplete. Entry names that could escape dir or write into a .git
// folder are refused.
func (m *Manager) checkout(ctx context.Context, repo *git.Repository, c *object.Commit, dir string) error {
	tree, err := c.Tree()
	if err != nil {
		return corrupt(fmt.Errorf("reading the tree of %s: %w", c.Hash, err))
	}
	return m.writeTree(ctx, repo, tree, dir, "", 0)
}

func (m *Manager) writeTree(ctx context.Context, repo *git.Repository, tree *object.Tree, dir, rel string, depth int) error {
	if depth > 256 {
		return corrupt(fmt.Errorf("tree %s at %q is nested too deep", tree.Hash, rel))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, e := range tree.Entries {
		if !safeEntryName(e.Name) {
			return fmt.Errorf("refusing tree entry %q in %q: unsafe name", e.Name, rel)
		}
		name := e.Name
		if rel != "" {
			name = rel + "/" + e.Name
		}
		path := filepath.Join(dir, filepath.FromSlash(name))
		switch e.Mode {
		case filemode.Dir:
			sub, err := repo.TreeObject(e.Hash)
			if err != nil {
				return corrupt(fmt.Errorf("reading tree %s (%s): %w", e.Hash, name, err))
			}
			if err := os.Mkdir(path, 0o755); err != nil {
				return fmt.Errorf("creating folder %s: %w", name, err)
			}
			if err := m.writeTree(ctx, repo, sub, dir, name, depth+1); err != nil {
				return err
			}
		case filemode.Regular, filemode.Deprecated, filemode.Executable:
			perm := os.FileMode(0o644)
			if e.Mode == filemode.Executable {
				perm = 0o755
			}
			if err := writeBlob(repo, e, path, perm); err != nil {
				return fmt.Errorf("writing %s: %w", name, err)
			}
		case filemode.Symlink:
			b, err := repo.BlobObject(e.Hash)
			if err != nil {
				return corrupt(fmt.Errorf("reading symlink %s (%s): %w", name, e.Hash, err))
			}
			r, err := b.Reader()
			if err != nil {
				return corrupt(fmt.Errorf("reading symlink %s: %w", name, err))
			}
			target, err := io.ReadAll(io.LimitReader(r, 4096))
			r.Close()
			if err != nil {
				return corrupt(fmt.Errorf("reading symlink %s: %w", name, err))
			}
			if err := os.Symlink(string(target), path); err != nil {
				return fmt.Errorf("creating symlink %s: %w", name, err)
			}
		case filemode.Submodule:
			return fmt.Errorf("%w: %s is a git submodule (commit %s), which lxcfleet does not fetch; vendor it or make it an npm dependency", ErrIncomplete, name, e.Hash)
		default:
			return fmt.Errorf("tree entry %s has unsupported mode %s", name, e.Mode)
		}
	}
	return nil
}

// writeBlob writes a blob to a new file with perm (umask notwithstanding).
func writeBlob(repo *git.Repository, e object.TreeEntry, path string, perm os.FileMode) error {
	b, err := repo.BlobObject(e.Hash)
	if err != nil {
		return corrupt(fmt.Errorf("reading blob %s: %w", e.Hash, err))
	}
	r, err := b.Reader()
	if err != nil {
		return corrupt(fmt.Errorf("reading blob %s: %w", e.Hash, err))
	}
	defer r.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	er := &errReader{r: r}
	br := bufio.NewReader(er)
	if b.Size < 1024 {
		if head, _ := br.Peek(len(lfsPointer)); string(head) == lfsPointer {
			f.Close()
			return fmt.Errorf("%w: it is a Git LFS pointer, and lxcfleet does not fetch LFS objects; commit the file itself", ErrIncomplete)
		}
	}
	n, err := io.Copy(f, br)
	if err != nil {
		f.Close()
		if er.err != nil {
			return corrupt(fmt.Errorf("reading blob %s: %w", e.Hash, err))
		}
		return err
	}
	if n != b.Size {
		f.Close()
		return corrupt(fmt.Errorf("blob %s: read %d bytes, want %d", e.Hash, n, b.Size))
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// safeEntryName refuses names git itself would refuse to check out.
func safeEntryName(n string) bool {
	if n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/\x00") {
		return false
	}
	return !strings.EqualFold(n, ".git")
}

// errReader remembers a read error, so that a failed copy can be blamed on
// the mirror (read) or the disk (write).
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}
