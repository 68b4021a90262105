package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"lxcfleet/lxcctl"
)

// Target is one locker the prober watches.
type Target struct {
	Name string `json:"name"`
	Port int    `json:"port"`
}

// ProbeConfig is what the prober process is given (as a JSON file).
type ProbeConfig struct {
	Targets []Target `json:"targets"`
	// Events is the JSON-lines file the prober appends its events to.
	Events string `json:"events"`
	// Status is rewritten (atomically) every 100 ms with the count of
	// lockers answering each build, for the runner to wait on.
	Status string `json:"status"`
	// Interval between two probes of one locker (50ms: 20 Hz).
	Interval time.Duration `json:"interval"`
	// Timeout of one probe; a slower answer counts as no answer.
	Timeout time.Duration `json:"timeout"`
	// SampleEvery is the host pressure sampling period.
	SampleEvery time.Duration `json:"sample_every"`
	// Mode is ProbeAdaptive (the default) or ProbePoll (every locker over
	// HTTP every Interval: the 20 Hz prober of issue 7, kept as the
	// reference the adaptive one is checked against).
	Mode string `json:"mode,omitempty"`
	// Tick is the adaptive prober's scan period: each tick it lists the
	// listening TCP ports (one netlink dump) and the containers' cgroups
	// (one getdents), so both edges of a locker's unavailability are seen
	// to within Tick. Default 25ms.
	Tick time.Duration `json:"tick,omitempty"`
	// Serving is how often the adaptive prober asks a locker that serves
	// for its build over HTTP (default 2s): the only load it puts on the
	// lockers, and the fallback that catches an app that hangs with its
	// port open.
	Serving time.Duration `json:"serving,omitempty"`
	// ServingRate caps the serving lockers' probes at so many requests a
	// second in all (default 10): Serving grows to N / ServingRate, so
	// that the lockers' cost of answering does not grow with N.
	ServingRate float64 `json:"serving_rate,omitempty"`
	// CgroupParents are more parent cgroups the lockers' cgroups may be
	// in (the bench's own), beside the root and lxcfleet's default.
	CgroupParents []string `json:"cgroup_parents,omitempty"`
}

// The prober's modes.
const (
	ProbeAdaptive = "adaptive"
	ProbePoll     = "poll"
)

// Event is one line of the prober's output. Kind says which fields are set:
//
//	"h" health: locker L answered build B ("" = no answer or not 200) from T
//	    on; CPU, when > 0, is the CPU seconds its container had used when it
//	    first answered after its start (its start cost).
//	"c" container: locker L's cgroup appeared (Up) or disappeared at T.
//	"s" sample: host pressure at T.
type Event struct {
	T    int64   `json:"t"`
	Kind string  `json:"k"`
	L    int     `json:"l"`
	B    string  `json:"b,omitempty"`
	Up   bool    `json:"up,omitempty"`
	CPU  float64 `json:"cpu,omitempty"`
	Load float64 `json:"load,omitempty"`
	// CPUSome and MemSome are the PSI "some" stall percentages over the
	// last sample period (from the totals; -1 when the kernel has no PSI).
	CPUSome float64 `json:"cpu_some,omitempty"`
	MemSome float64 `json:"mem_some,omitempty"`
	IOSome  float64 `json:"io_some,omitempty"`
	// CPUAvg10, MemAvg10 and IOAvg10 are the kernel's own "some avg10"
	// figures at T (%).
	CPUAvg10 float64 `json:"cpu_avg10,omitempty"`
	MemAvg10 float64 `json:"mem_avg10,omitempty"`
	IOAvg10  float64 `json:"io_avg10,omitempty"`
	// MemUsed is MemTotal - MemAvailable in bytes.
	MemUsed int64 `json:"mem_used,omitempty"`
}

// Status is the prober's live summary.
type Status struct {
	T      int64          `json:"t"`
	Builds map[string]int `json:"builds"` // "" = not answering
	// Requests is the count of HTTP probes sent so far (what the lockers
	// had to answer); Scans the adaptive prober's scans.
	Requests int64 `json:"requests"`
	Scans    int64 `json:"scans,omitempty"`
}

// probeCounters are the prober's running totals, for its status.
type probeCounters struct{ requests, scans atomic.Int64 }

// lockerState is one locker's last observed state.
type lockerState struct {
	build atomic.Pointer[string]
	cgroupEdge
}

// cgroupEdge follows one locker's container cgroup from scan to scan, for
// both probers.
type cgroupEdge struct {
	up      bool
	ino     uint64 // inode of its cgroup folder: a new one is a new start
	healthy bool   // answered since its cgroup last appeared
}

// observe records the cgroup as seen at now (ino, up) and writes its edges
// ("c" events of locker i); first writes the state as it is.
func (c *cgroupEdge) observe(w *eventWriter, i int, now time.Time, ino uint64, up, first bool) {
	if up && c.up && ino != c.ino {
		// A new cgroup under the same name: the container was stopped and
		// started again between two scans.
		w.write(Event{T: now.UnixNano() - 1, Kind: "c", L: i, Up: false})
		c.up = false
	}
	if up != c.up || first {
		w.write(Event{T: now.UnixNano(), Kind: "c", L: i, Up: up})
		if up != c.up {
			c.healthy = false
		}
		c.up = up
	}
	c.ino = ino
}

// RunProber polls every target until ctx ends, then flushes its events.
func RunProber(ctx context.Context, cfg ProbeConfig) error {
	if cfg.Interval <= 0 {
		cfg.Interval = 50 * time.Millisecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.SampleEvery <= 0 {
		cfg.SampleEvery = 500 * time.Millisecond
	}
	f, err := os.Create(cfg.Events)
	if err != nil {
		return fmt.Errorf("creating prober events: %w", err)
	}
	defer f.Close()
	w := &eventWriter{bw: bufio.NewWriterSize(f, 1<<20)}
	cg := detectCgroup(cfg.CgroupParents...)

	if cfg.Mode == "" {
		cfg.Mode = ProbeAdaptive
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 25 * time.Millisecond
	}
	if cfg.Serving <= 0 {
		cfg.Serving = 2 * time.Second
	}
	if cfg.ServingRate <= 0 {
		cfg.ServingRate = 10
	}
	cfg.Serving = max(cfg.Serving, time.Duration(float64(len(cfg.Targets))/cfg.ServingRate*float64(time.Second)))
	states := make([]*lockerState, len(cfg.Targets))
	for i := range cfg.Targets {
		st := &lockerState{}
		empty := ""
		st.build.Store(&empty)
		states[i] = st
	}
	var cnt probeCounters
	var wg sync.WaitGroup
	var perr error
	switch cfg.Mode {
	case ProbePoll:
		for i, tg := range cfg.Targets {
			wg.Go(func() { probeLocker(ctx, cfg, cg, w, i, tg, states[i], &cnt) })
		}
	case ProbeAdaptive:
		ls, err := newListenScanner()
		if err != nil {
			return err
		}
		defer ls.Close()
		wg.Go(func() { perr = runAdaptive(ctx, cfg, cg, ls, w, states, &cnt) })
	default:
		return fmt.Errorf("unknown prober mode %q", cfg.Mode)
	}
	wg.Go(func() { sampleHost(ctx, cfg.SampleEvery, w) })
	wg.Go(func() { writeStatus(ctx, cfg.Status, states, &cnt) })
	wg.Wait()
	if err := w.flush(); err != nil {
		return err
	}
	return perr
}

// eventWriter serialises events from many goroutines.
type eventWriter struct {
	mu sync.Mutex
	bw *bufio.Writer
}

func (w *eventWriter) write(e Event) {
	b, _ := json.Marshal(e)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bw.Write(b)
	w.bw.WriteByte('\n')
}

func (w *eventWriter) flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bw.Flush()
}

// probeLocker is one locker's 20 Hz loop (ProbePoll).
func probeLocker(ctx context.Context, cfg ProbeConfig, cg cgroupReader, w *eventWriter, i int, tg Target, st *lockerState, cnt *probeCounters) {
	client := &http.Client{
		Timeout: cfg.Timeout,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 1,
			DisableCompression:  true,
			Proxy:               nil,
		},
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", tg.Port)
	// Spread the lockers' probes over the interval.
	offset := time.Duration(int64(cfg.Interval) * int64(i) / int64(max(1, len(cfg.Targets))))
	select {
	case <-ctx.Done():
		return
	case <-time.After(offset):
	}
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	first := true
	for {
		now := time.Now()
		ino, up := cg.exists(tg.Name)
		st.observe(w, i, now, ino, up, first)
		cnt.requests.Add(1)
		b := probe(ctx, client, url)
		if ctx.Err() != nil {
			return
		}
		e := Event{T: now.UnixNano(), Kind: "h", L: i, B: b}
		changed := b != *st.build.Load() || first
		if first {
			st.healthy = b != ""
		} else if st.up && b != "" && !st.healthy {
			st.healthy = true
			e.CPU = cg.cpuSeconds(tg.Name)
			changed = true
		}
		if changed {
			st.build.Store(&b)
			w.write(e)
		}
		first = false
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// probe returns the build a locker answers, or "".
func probe(ctx context.Context, c *http.Client, url string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ""
	}
	resp, err := c.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil || resp.StatusCode != http.StatusOK {
		return ""
	}
	var h struct {
		Build string `json:"build"`
	}
	if json.Unmarshal(body, &h) != nil {
		return ""
	}
	return h.Build
}

// writeStatus rewrites the status file every 100ms.
func writeStatus(ctx context.Context, path string, states []*lockerState, cnt *probeCounters) {
	if path == "" {
		return
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		s := Status{T: time.Now().UnixNano(), Builds: map[string]int{}, Requests: cnt.requests.Load(), Scans: cnt.scans.Load()}
		for _, st := range states {
			s.Builds[*st.build.Load()]++
		}
		b, _ := json.Marshal(s)
		tmp := path + ".tmp"
		if os.WriteFile(tmp, b, 0o644) == nil {
			_ = os.Rename(tmp, path)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// ReadStatus reads the prober's status file.
func ReadStatus(path string) (Status, error) {
	var s Status
	b, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

// sampleHost writes a host pressure sample every period.
func sampleHost(ctx context.Context, every time.Duration, w *eventWriter) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	prevT := time.Now()
	files := [3]string{"/proc/pressure/cpu", "/proc/pressure/memory", "/proc/pressure/io"}
	var prev [3]int64
	var okPrev [3]bool
	for i, f := range files {
		prev[i], _, okPrev[i] = psiRead(f)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		dt := float64(now.Sub(prevT).Microseconds())
		e := Event{T: now.UnixNano(), Kind: "s", Load: loadavg1(), MemUsed: memUsed(), CPUSome: -1, MemSome: -1, IOSome: -1}
		some := [3]*float64{&e.CPUSome, &e.MemSome, &e.IOSome}
		avg := [3]*float64{&e.CPUAvg10, &e.MemAvg10, &e.IOAvg10}
		for i, f := range files {
			t, a10, ok := psiRead(f)
			if ok && okPrev[i] && dt > 0 {
				*some[i] = 100 * float64(t-prev[i]) / dt
				*avg[i] = a10
				prev[i] = t
			}
		}
		prevT = now
		w.write(e)
	}
}

// psiRead returns the "some" line's total (µs) and avg10 (%) of a PSI
// file.
func psiRead(path string) (total int64, avg10 float64, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "some ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, found := strings.CutPrefix(f, "avg10="); found {
				avg10, _ = strconv.ParseFloat(v, 64)
			}
			if v, found := strings.CutPrefix(f, "total="); found {
				total, err = strconv.ParseInt(v, 10, 64)
				ok = err == nil
			}
		}
		return total, avg10, ok
	}
	return 0, 0, false
}

func loadavg1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func memUsed() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var total, avail int64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "MemTotal:":
			total = v
		case "MemAvailable:":
			avail = v
		}
	}
	return (total - avail) * 1024
}

// cgroupReader finds a container's cgroup and its CPU use. LXC puts a
// container named NAME into lxc.payload.NAME (cgroup v1: in every
// hierarchy; v2: in the unified tree), at the root, or under the parent
// cgroup lxcfleet starts its lockers in (lxcctl.DefaultCgroupParent, issue
// 13): lockers started by the LXC tools or the bench land at the root,
// those lxcfleet starts under the parent.
type cgroupReader struct {
	dir     string   // the hierarchy holding the CPU accounting
	parents []string // where to look, relative to dir ("" = dir itself)
	v2      bool
}

// detectCgroup is where to look for the lockers' cgroups: the root,
// lxcfleet's default parent and the extra parents (the bench's own).
func detectCgroup(extra ...string) cgroupReader {
	parents := []string{"", lxcctl.DefaultCgroupParent}
	for _, p := range extra {
		if p != "" {
			parents = append(parents, p)
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/cpuacct/cpuacct.usage"); err == nil {
		return cgroupReader{dir: "/sys/fs/cgroup/cpuacct", parents: parents}
	}
	return cgroupReader{dir: "/sys/fs/cgroup", parents: parents, v2: true}
}

// path is the container's cgroup folder: the first parent holding it (the
// root's when none does).
func (c cgroupReader) path(name string) string {
	for _, p := range c.parents {
		d := filepath.Join(c.dir, p, "lxc.payload."+name)
		if _, err := os.Stat(d); err == nil {
			return d
		}
	}
	return filepath.Join(c.dir, "lxc.payload."+name)
}

// exists reports whether the container's cgroup exists, with its inode.
func (c cgroupReader) exists(name string) (uint64, bool) {
	fi, err := os.Stat(c.path(name))
	if err != nil {
		return 0, false
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino, true
	}
	return 0, true
}

// cpuSeconds is the CPU time the container's cgroup has used since it was
// made (0 when it cannot be read).
func (c cgroupReader) cpuSeconds(name string) float64 {
	if !c.v2 {
		b, err := os.ReadFile(filepath.Join(c.path(name), "cpuacct.usage"))
		if err != nil {
			return 0
		}
		ns, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return float64(ns) / 1e9
	}
	b, err := os.ReadFile(filepath.Join(c.path(name), "cpu.stat"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return float64(us) / 1e6
		}
	}
	return 0
}
