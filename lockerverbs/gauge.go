package lockerverbs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/procfs"

	"lxcfleet/rollout"
)

// PSIGauge is rollout.Gauge over the host's Linux pressure stall
// information (/proc/pressure/{cpu,memory,io}, read with prometheus/procfs).
// Each read turns the "some" counters (µs stalled) into the share of wall
// time stalled since the previous read, so the pacer sees the last second
// or so rather than the kernel's 10 s average; reads closer together than
// minSample return the previous figures. The first read returns avg10.
//
// With Lockers, the memory figure is the worst of the host's and the
// lockers' parent cgroup's (memoryOf): a memory limit on the parent is
// hit long before the host feels anything (the benchmark's storm sat at
// its cgroup's limit, OOM killing lockers).
type PSIGauge struct {
	fs    procfs.FS
	clock rollout.Clock // the wall clock; a test's fake
	// cgroupRoot and parent locate the lockers' parent cgroup ("" parent:
	// the host's figures only).
	cgroupRoot, parent string

	mu      sync.Mutex
	at      time.Time
	totals  [3]uint64
	memPSI  uint64 // the parent's memory.pressure "some" total (v2 or hybrid)
	failcnt uint64 // the parent's memory.failcnt (v1)
	last    rollout.Pressure
}

// Lockers makes the gauge read the lockers' parent cgroup (parent,
// relative to cgroupRoot, e.g. /sys/fs/cgroup and lxcfleet.lockers) for
// memory, as well as the host.
func (g *PSIGauge) Lockers(cgroupRoot, parent string) *PSIGauge {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cgroupRoot, g.parent = cgroupRoot, parent
	g.memPSI, _ = readSome(g.memoryPressureFile())
	g.failcnt, _ = readUint(filepath.Join(g.cgroupRoot, "memory", g.parent, "memory.failcnt"))
	return g
}

// memoryPressureFile is the parent's memory.pressure: in the cgroup v2
// hierarchy (at the root on a v2 host; under unified/ on a hybrid one,
// where PSI is kept per cgroup of that hierarchy whatever controllers it
// has, so the lockers' stalls show there even with the memory controller
// on v1).
func (g *PSIGauge) memoryPressureFile() string {
	if _, err := os.Stat(filepath.Join(g.cgroupRoot, "cgroup.controllers")); err == nil {
		return filepath.Join(g.cgroupRoot, g.parent, "memory.pressure")
	}
	return filepath.Join(g.cgroupRoot, "unified", g.parent, "memory.pressure")
}

// workingSetShare is where the memory signal starts: a parent whose
// working set is over this share of its limit reads as pressure, rising
// linearly to 1 at the limit (the default target, 10 %, is then 91 % of
// the limit).
const workingSetShare = 0.9

// memoryOf reads the lockers' parent cgroup's memory distress as a share
// (0..1), from whichever of its sources exist:
//   - memory.pressure "some" (cgroup v2, or the unified hierarchy of a
//     hybrid host): the stalled share of the wall time since the last read;
//   - cgroup v1's memory controller: 1 when memory.failcnt rose since the
//     last read (the group hit its limit: the kernel reclaimed, or killed);
//     else the working set (usage less inactive file pages, as the
//     kubelet counts it) against memory.limit_in_bytes, 0 below
//     workingSetShare of it, rising to 1 at the limit. No limit, no signal.
//
// Called with mu held; wall is the time since the last read (0: first).
func (g *PSIGauge) memoryOf(wall time.Duration) float64 {
	worst := 0.0
	if total, err := readSome(g.memoryPressureFile()); err == nil {
		if wall > 0 {
			worst = min(1, float64(total-min(total, g.memPSI))/float64(wall.Microseconds()))
		}
		g.memPSI = total
	}
	v1 := filepath.Join(g.cgroupRoot, "memory", g.parent)
	if fc, err := readUint(filepath.Join(v1, "memory.failcnt")); err == nil {
		if fc > g.failcnt {
			worst = 1
		}
		g.failcnt = fc
	}
	limit, lerr := readUint(filepath.Join(v1, "memory.limit_in_bytes"))
	usage, uerr := readUint(filepath.Join(v1, "memory.usage_in_bytes"))
	if lerr != nil || uerr != nil || limit == 0 || limit >= 1<<62 {
		return worst
	}
	inactive := uint64(0)
	if b, err := os.ReadFile(filepath.Join(v1, "memory.stat")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "total_inactive_file "); ok {
				inactive, _ = strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			}
		}
	}
	ws := float64(usage-min(usage, inactive)) / float64(limit)
	return max(worst, min(1, max(0, (ws-workingSetShare)/(1-workingSetShare))))
}

// readSome reads the "some" total (µs) of a PSI file.
func readSome(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, "total="); ok {
			return strconv.ParseUint(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("reading %s: no \"some\" total", path)
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// minSample is the shortest period a rate is computed over.
const minSample = 250 * time.Millisecond

var _ rollout.Gauge = (*PSIGauge)(nil)

var psiResources = [3]string{"cpu", "memory", "io"}

// NewPSIGauge opens procRoot ("" is /proc) and reads it once; an error
// (no /proc/pressure: a kernel without PSI, or psi=0) means no gauge.
func NewPSIGauge(procRoot string) (*PSIGauge, error) {
	if procRoot == "" {
		procRoot = procfs.DefaultMountPoint
	}
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, fmt.Errorf("opening %s for pressure: %w", procRoot, err)
	}
	g := &PSIGauge{fs: fs, clock: rollout.RealClock{}}
	if _, err := g.Pressure(); err != nil {
		return nil, err
	}
	return g, nil
}

// Pressure returns the share (0..1) of recent wall time some task stalled
// on CPU, memory and IO.
func (g *PSIGauge) Pressure() (rollout.Pressure, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.clock.Now()
	if !g.at.IsZero() && now.Sub(g.at) < minSample {
		return g.last, nil
	}
	var totals [3]uint64
	var avg10 [3]float64
	for i, r := range psiResources {
		st, err := g.fs.PSIStatsForResource(r)
		if err != nil {
			return rollout.Pressure{}, fmt.Errorf("reading %s pressure: %w", r, err)
		}
		if st.Some == nil {
			return rollout.Pressure{}, fmt.Errorf("reading %s pressure: no \"some\" line", r)
		}
		totals[i], avg10[i] = st.Some.Total, st.Some.Avg10/100
	}
	share := avg10
	var since time.Duration
	if !g.at.IsZero() {
		since = now.Sub(g.at)
		wall := float64(since.Microseconds())
		for i := range totals {
			share[i] = min(1, float64(totals[i]-min(totals[i], g.totals[i]))/wall)
		}
	}
	if g.parent != "" {
		share[1] = max(share[1], g.memoryOf(since))
	}
	g.at, g.totals = now, totals
	g.last = rollout.Pressure{CPU: share[0], Memory: share[1], IO: share[2]}
	return g.last, nil
}
