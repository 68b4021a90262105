package mounts

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/prometheus/procfs"
)

// ReleaseCache is ReleaseOfLocker with its answers kept per process: the
// agent's inventory asks it of every running locker every 5 s, and reading
// two mount tables a locker was a tenth of the agent's CPU through an
// offline update of 300 lockers (profiled, issue 19).
//
// An answer is kept only while nothing it rests on can have changed: the
// same process (its pid and its start time, /proc/PID/stat: a reused pid
// is another process) and the same release folder on the host (its device,
// inode and change time: a folder deleted, renamed, or deleted and built
// again under its name is another one, even on a reused inode). lxcfleet
// never changes what is mounted at a running locker's app path; a locker
// restarts to move. Anything else (an error, a deleted release, a process
// or folder that changed) reads the mount tables again, as ReleaseOfLocker
// does at every call. It is safe for concurrent use.
type ReleaseCache struct {
	l  Layout
	mu sync.Mutex
	m  map[int]releaseAnswer
	// reads counts the calls that read the mount tables (for tests).
	reads int
}

// releaseAnswer is one kept answer: the release of the process that
// started at start, with its folder's identity then.
type releaseAnswer struct {
	start   uint64
	release string
	dir     dirID
}

// dirID is what tells a folder from another of the same name.
type dirID struct {
	dev, ino          uint64
	ctimeS, ctimeNano int64
}

// maxReleaseAnswers bounds the cache: past it (answers of processes gone
// since) it starts empty again.
const maxReleaseAnswers = 4096

// NewReleaseCache returns an empty cache for the layout l.
func NewReleaseCache(l Layout) *ReleaseCache {
	return &ReleaseCache{l: l, m: map[int]releaseAnswer{}}
}

// ReleaseOfLocker answers as the function ReleaseOfLocker does (a release
// name, whether its folder is deleted, or an error retention must not
// guess past), from the kept answer when it still holds.
func (c *ReleaseCache) ReleaseOfLocker(pid int) (string, bool, error) {
	if pid <= 0 {
		return "", false, nil
	}
	start, okStart := procStart(pid)
	if okStart {
		c.mu.Lock()
		a, ok := c.m[pid]
		c.mu.Unlock()
		if ok && a.start == start {
			if id, ok := c.dirOf(a.release); ok && id == a.dir {
				return a.release, false, nil
			}
		}
	}
	rel, deleted, err := c.read(pid)
	if err != nil || deleted || rel == "" || !okStart {
		c.forget(pid)
		return rel, deleted, err
	}
	id, ok := c.dirOf(rel)
	if !ok {
		c.forget(pid)
		return rel, deleted, nil
	}
	// The folder's identity was taken after the mount table was read: a
	// folder replaced in between would be kept as the process's. The
	// table is read once more: when it still names rel, not deleted, the
	// mounted folder was at its path on both sides of the identity read,
	// and the identity is its own (or another's, which only makes the
	// next call miss). The process must be the same one too (a pid reused
	// meanwhile is another process).
	rel2, deleted2, err2 := c.read(pid)
	again, okAgain := procStart(pid)
	if err2 != nil || deleted2 || rel2 != rel || !okAgain || again != start {
		c.forget(pid)
		return rel2, deleted2, err2
	}
	c.mu.Lock()
	if len(c.m) >= maxReleaseAnswers {
		clear(c.m)
	}
	c.m[pid] = releaseAnswer{start: start, release: rel, dir: id}
	c.mu.Unlock()
	return rel, deleted, nil
}

// read is ReleaseOfLocker, counted.
func (c *ReleaseCache) read(pid int) (string, bool, error) {
	c.mu.Lock()
	c.reads++
	c.mu.Unlock()
	return ReleaseOfLocker(pid, c.l)
}

// forget drops pid's kept answer.
func (c *ReleaseCache) forget(pid int) {
	c.mu.Lock()
	delete(c.m, pid)
	c.mu.Unlock()
}

// dirOf is the identity of release's folder on the host.
func (c *ReleaseCache) dirOf(release string) (dirID, bool) {
	fi, err := os.Stat(filepath.Join(c.l.Releases, release))
	if err != nil || !fi.IsDir() {
		return dirID{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return dirID{}, false
	}
	return dirID{dev: st.Dev, ino: st.Ino, ctimeS: st.Ctim.Sec, ctimeNano: st.Ctim.Nsec}, true
}

// procStart is a process's start time in clock ticks since boot
// (/proc/PID/stat, through procfs).
func procStart(pid int) (uint64, bool) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, false
	}
	st, err := p.Stat()
	if err != nil {
		return 0, false
	}
	return st.Starttime, true
}
