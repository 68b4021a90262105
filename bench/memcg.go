package bench

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"lxcfleet/lxcctl"
)

// memCgroup is the memory side of the lockers' cgroup parent: a limit on
// all of them together, so that a storm's out-of-memory kills happen in
// that cgroup, not on the (shared) host, and the counters that say what
// happened in it.
type memCgroup struct {
	// Path is the parent, relative to the cgroup root; dir its folder in
	// the memory controller.
	Path  string
	dir   string
	v2    bool
	Limit int64
}

// MemFigures is what happened in the lockers' memory cgroup during one
// scenario (after its reset): its peak use, how often the limit was hit,
// the out-of-memory kills in it (from the kernel's log) and on the whole
// host (/proc/vmstat).
type MemFigures struct {
	LimitMiB float64 `json:"limit_mib"`
	PeakMiB  float64 `json:"peak_mib"`
	// LimitHits is the memory.failcnt delta (cgroup v1; v2: memory.events
	// max).
	LimitHits int64 `json:"limit_hits"`
	// OOMKills are the kernel's oom-kill records whose oom_memcg is the
	// parent or under it; Killed the lockers they named.
	OOMKills int      `json:"oom_kills"`
	Killed   []string `json:"killed,omitempty"`
	// HostOOMKills is the host's oom_kill counter's delta: every OOM kill
	// on the machine, ours included.
	HostOOMKills int64  `json:"host_oom_kills"`
	Err          string `json:"error,omitempty"`
}

// newMemCgroup creates the parent in the memory controller with its limit
// (bytes). It does not touch any other cgroup.
func newMemCgroup(path string, limit int64) (*memCgroup, error) {
	p := lxcctl.CgroupParent{Path: path}
	if err := p.Validate(); err != nil || path == "" {
		return nil, fmt.Errorf("memory cgroup %q: %v", path, err)
	}
	m := &memCgroup{Path: path, v2: lxcctl.CgroupV2(), Limit: limit}
	file, value := "memory.limit_in_bytes", strconv.FormatInt(limit, 10)
	if m.v2 {
		m.dir = filepath.Join(lxcctl.CgroupRoot, path)
		file = "memory.max"
	} else {
		m.dir = filepath.Join(lxcctl.CgroupRoot, "memory", path)
	}
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating memory cgroup %s: %w", m.dir, err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, file), []byte(value), 0o644); err != nil {
		return nil, fmt.Errorf("setting %s of %s to %s: %w", file, m.dir, value, err)
	}
	return m, nil
}

// memMark is the counters when a scenario began, and the reader of the
// kernel's log from then on.
type memMark struct {
	failcnt, hostOOM int64
	kmsg             int // /dev/kmsg, at its end when marked; -1: none
	stop             chan struct{}
	done             chan struct{}
	kills            []string
	lost             bool
}

// mark resets the peak and notes the counters; since reads what happened
// after it. The kernel's log is read from its end on, every 100 ms while
// the scenario runs: an OOM kill's report (the task list of the cgroup)
// is long, and a storm's reports overflow the log's ring within seconds.
func (m *memCgroup) mark() *memMark {
	if !m.v2 {
		_ = os.WriteFile(filepath.Join(m.dir, "memory.max_usage_in_bytes"), []byte("0"), 0o644)
	}
	k := &memMark{failcnt: m.failcnt(), hostOOM: hostOOMKills(), kmsg: -1, stop: make(chan struct{}), done: make(chan struct{})}
	// A raw descriptor: an os.File would wait in the poller for the next
	// record where the log ends, instead of returning EAGAIN.
	if fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
		if _, err := unix.Seek(fd, 0, 2); err == nil {
			k.kmsg = fd
		} else {
			unix.Close(fd)
		}
	}
	if k.kmsg < 0 {
		close(k.done)
		return k
	}
	go func() {
		defer close(k.done)
		defer unix.Close(k.kmsg)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		buf := make([]byte, 8192)
		for {
			m.drain(k, buf)
			select {
			case <-k.stop:
				m.drain(k, buf)
				return
			case <-tick.C:
			}
		}
	}()
	return k
}

// drain reads the kernel's log to its end, counting this cgroup's kills.
func (m *memCgroup) drain(k *memMark, buf []byte) {
	for {
		n, err := unix.Read(k.kmsg, buf)
		if errors.Is(err, unix.EPIPE) {
			k.lost = true // records overwritten before they were read
			continue
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			return // EAGAIN: the log's end
		}
		if name, ok := m.oomKill(string(buf[:n])); ok {
			k.kills = append(k.kills, name)
		}
	}
}

// since is what happened in the cgroup since k.
func (m *memCgroup) since(k *memMark) *MemFigures {
	close(k.stop)
	<-k.done
	f := &MemFigures{LimitMiB: float64(m.Limit) / (1 << 20), LimitHits: m.failcnt() - k.failcnt, HostOOMKills: hostOOMKills() - k.hostOOM}
	peak := "memory.max_usage_in_bytes"
	if m.v2 {
		peak = "memory.peak"
	}
	f.PeakMiB = float64(readInt(filepath.Join(m.dir, peak))) / (1 << 20)
	f.OOMKills, f.Killed = len(k.kills), k.kills
	switch {
	case k.kmsg < 0:
		f.Err = "/dev/kmsg cannot be read: OOM kills in the cgroup not counted"
	case k.lost:
		f.Err = "the kernel's log overwrote records before they were read: OOM kills in the cgroup undercounted (the host's counter is exact)"
	}
	return f
}

// oomKill reads one kernel log record: whether it is an oom-kill in this
// cgroup, and the container (lxc.payload.NAME) or cgroup it killed in.
func (m *memCgroup) oomKill(rec string) (string, bool) {
	_, msg, ok := strings.Cut(rec, ";")
	if !ok || !strings.HasPrefix(msg, "oom-kill:") {
		return "", false
	}
	var memcg, task string
	for _, kv := range strings.Split(strings.TrimSpace(strings.TrimPrefix(msg, "oom-kill:")), ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "oom_memcg":
			memcg = v
		case "task_memcg":
			task = v
		}
	}
	root := "/" + m.Path
	if memcg != root && !strings.HasPrefix(memcg, root+"/") && !strings.HasPrefix(task, root+"/") {
		return "", false
	}
	name := strings.TrimPrefix(task, root+"/")
	if c, _, _ := strings.Cut(name, "/"); strings.HasPrefix(c, "lxc.payload.") {
		name = strings.TrimPrefix(c, "lxc.payload.")
	}
	return name, true
}

// usage is the cgroup's memory use now (bytes, page cache included).
func (m *memCgroup) usage() int64 {
	if m.v2 {
		return readInt(filepath.Join(m.dir, "memory.current"))
	}
	return readInt(filepath.Join(m.dir, "memory.usage_in_bytes"))
}

func (m *memCgroup) failcnt() int64 {
	if !m.v2 {
		return readInt(filepath.Join(m.dir, "memory.failcnt"))
	}
	return keyedInt(filepath.Join(m.dir, "memory.events"), "max")
}

// hostOOMKills is the host's count of OOM kills so far.
func hostOOMKills() int64 { return keyedInt("/proc/vmstat", "oom_kill") }

// remove removes the parent from every controller once its containers
// are gone (LXC leaves empty lxc.payload.* and lxc.pivot folders in it),
// retrying for a few seconds while the last ones go.
func removeCgroupParent(path string) error {
	if path == "" {
		return nil
	}
	dirs, _ := filepath.Glob(filepath.Join(lxcctl.CgroupRoot, "*", path))
	if lxcctl.CgroupV2() {
		dirs = []string{filepath.Join(lxcctl.CgroupRoot, path)}
	}
	var errs []error
	for _, d := range dirs {
		deadline := time.Now().Add(10 * time.Second)
		for {
			subs, _ := filepath.Glob(filepath.Join(d, "*", "cgroup.procs"))
			for _, s := range subs {
				_ = os.Remove(filepath.Dir(s))
			}
			err := os.Remove(d)
			if err == nil || os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

func readInt(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v
}

// keyedInt reads the number after key in a file of "key value [unit]"
// lines (memory.events, /proc/vmstat, /proc/meminfo, /proc/PID/status).
func keyedInt(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == key {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// killPayloads sends SIGKILL to every process of the lockers' payload
// cgroups under the parent (lxc.payload.NAME, and any cgroup below one;
// never an LXC monitor, which cleans up after its container's init is
// gone), by PID, and returns how many it signalled. It is the storm's
// bound: a storm that has not served the fleet by its deadline (the heavy
// app at N=300 kept the cgroup at its limit, memory pressure "full" at
// 94 %, for 14 minutes, until its node processes were killed) must not
// keep the box stuck for the scenarios after it.
func (m *memCgroup) killPayloads() (int, error) {
	killed := 0
	err := filepath.WalkDir(m.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == m.dir {
				return err
			}
			return nil // a cgroup removed meanwhile
		}
		rel, _ := filepath.Rel(m.dir, path)
		if d.IsDir() || d.Name() != "cgroup.procs" || !strings.HasPrefix(rel, "lxc.payload.") {
			return nil
		}
		b, rerr := os.ReadFile(path)
		if rerr != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, perr := strconv.Atoi(f); perr == nil && pid > 1 && killIfUnder(pid, m.Path) {
				killed++
			}
		}
		return nil
	})
	if err != nil {
		return killed, fmt.Errorf("killing the lockers' processes under %s: %w", m.dir, err)
	}
	return killed, nil
}

// killIfUnder sends SIGKILL to pid through a pidfd, once its cgroup (read
// after the pidfd pins the process) is still under the parent: a pid read
// from cgroup.procs may have ended and been reused by then.
func killIfUnder(pid int, parent string) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil || !strings.Contains(string(b), "/"+parent+"/lxc.payload.") {
		return false
	}
	return unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil
}
