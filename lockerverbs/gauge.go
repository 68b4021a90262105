package lockerverbs

import (
	"fmt"
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
// cgroup v1 hosts (this project's test VM) have only the system-wide
// files; on cgroup v2 the lockers' parent group's cpu.pressure etc. would
// isolate the lockers from the rest of the host (not read yet).
type PSIGauge struct {
	fs    procfs.FS
	clock rollout.Clock // the wall clock; a test's fake

	mu     sync.Mutex
	at     time.Time
	totals [3]uint64
	last   rollout.Pressure
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
	if !g.at.IsZero() {
		wall := float64(now.Sub(g.at).Microseconds())
		for i := range totals {
			share[i] = min(1, float64(totals[i]-min(totals[i], g.totals[i]))/wall)
		}
	}
	g.at, g.totals = now, totals
	g.last = rollout.Pressure{CPU: share[0], Memory: share[1], IO: share[2]}
	return g.last, nil
}
