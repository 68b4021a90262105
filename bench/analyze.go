package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"time"
)

// ReadEvents reads the prober's JSON-lines file, ordered by time.
func ReadEvents(path string) ([]Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].T < out[j].T })
	return out, nil
}

// Figures are one scenario's measured results.
type Figures struct {
	Mark
	// WindowSeconds: command start → the last locker answering the target
	// build (as the prober saw it).
	WindowSeconds float64 `json:"window_seconds"`
	// CommandSeconds: command start → the command returned.
	CommandSeconds float64 `json:"command_seconds"`
	// FirstDownSeconds: command start → the first locker stopped answering
	// (for lxcfleet: the build step, done while every locker serves).
	FirstDownSeconds *float64 `json:"first_down_seconds,omitempty"`
	// Unavailability per locker: total time it did not answer with the
	// old or the new build during the window (seconds).
	UnavailP50 float64 `json:"unavail_p50"`
	UnavailP99 float64 `json:"unavail_p99"`
	UnavailMax float64 `json:"unavail_max"`
	// MaxUnavailable is the most lockers unavailable at once.
	MaxUnavailable int `json:"max_unavailable"`
	// MaxStarting is the most lockers starting at once: container running
	// (its cgroup exists) but not yet answering.
	MaxStarting int `json:"max_starting"`
	// Starts counts container starts seen; FailedStarts = starts that ended
	// without ever answering + lockers not on the target at the end +
	// non-zero exits of the start/stop commands.
	Starts       int `json:"starts"`
	DiedStarting int `json:"died_starting"`
	NotOnTarget  int `json:"not_on_target"`
	FailedStarts int `json:"failed_starts"`
	// Host pressure during the window.
	PeakLoad1   float64 `json:"peak_load1"`
	PeakCPUSome float64 `json:"peak_psi_cpu_some_pct"`
	PeakMemSome float64 `json:"peak_psi_mem_some_pct"`
	PeakIOSome  float64 `json:"peak_psi_io_some_pct"`
	// The peaks of the kernel's own "some avg10" (%).
	PeakCPUAvg10 float64 `json:"peak_psi_cpu_avg10"`
	PeakMemAvg10 float64 `json:"peak_psi_mem_avg10"`
	PeakIOAvg10  float64 `json:"peak_psi_io_avg10"`
	PeakMemUsed  float64 `json:"peak_mem_used_gib"`
	// StartCPUSeconds is the sum of the CPU each start used until it
	// answered (from its container's cgroup); StartCPUMedian per start.
	StartCPUSeconds float64 `json:"start_cpu_seconds"`
	StartCPUMedian  float64 `json:"start_cpu_median"`
	// CPUFloorSeconds = StartCPUSeconds / cores: no plan can restart the
	// fleet faster on this machine. FloorRatio = window / floor;
	// RestartRatio = (window - first down) / floor, the restart phase alone.
	CPUFloorSeconds float64  `json:"cpu_floor_seconds"`
	FloorRatio      float64  `json:"window_floor_ratio"`
	RestartRatio    *float64 `json:"restart_floor_ratio,omitempty"`
	// Healthy is the count of lockers answering (old or new build) every
	// 100 ms from T0, for the chart.
	Healthy []int `json:"healthy_every_100ms,omitempty"`
}

type span struct{ a, b int64 }

// analyze computes every mark's figures from the events.
func (rep *Report) analyze(evs []Event, marks []Mark, targets []Target) {
	n := len(targets)
	byLocker := make([][]Event, n)
	var samples []Event
	for _, e := range evs {
		switch e.Kind {
		case "h", "c":
			if e.L >= 0 && e.L < n {
				byLocker[e.L] = append(byLocker[e.L], e)
			}
		case "s":
			samples = append(samples, e)
		}
	}
	cores := float64(rep.Machine.Cores)
	var alone []float64
	for _, m := range marks {
		if m.Skipped != "" || m.T0.IsZero() {
			rep.Scenarios = append(rep.Scenarios, Figures{Mark: m})
			continue
		}
		f := Figures{Mark: m}
		t0, done := m.T0.UnixNano(), m.Done.UnixNano()
		// Done is when the prober's status showed every locker on To;
		// the runner waits a moment before it touches the fleet again.
		end := done
		expect := map[string]bool{m.From: true, m.To: true}
		var unavail []float64
		var downSpans, startSpans []span
		var firstDown int64 = math.MaxInt64
		lastTo := t0
		var cpus []float64
		lockers := []int{}
		if m.ID == "alone" {
			lockers = append(lockers, m.Locker)
		} else {
			for i := range n {
				lockers = append(lockers, i)
			}
		}
		for _, i := range lockers {
			tl := byLocker[i]
			// State at t0.
			build, up := "", false
			startAt := int64(-1)
			for _, e := range tl {
				if e.T > t0 {
					break
				}
				if e.Kind == "h" {
					build = e.B
				} else {
					up = e.Up
				}
			}
			ok := expect[build]
			var downSince int64 = -1
			if !ok {
				downSince = t0
			}
			total := 0.0
			onTo := build == m.To
			toSince := t0
			for _, e := range tl {
				if e.T <= t0 || e.T > end {
					continue
				}
				switch e.Kind {
				case "c":
					if e.Up && !up {
						startAt = e.T
						f.Starts++
					}
					if !e.Up && up && startAt >= 0 {
						// Stopped before it ever answered.
						startSpans = append(startSpans, span{startAt, e.T})
						f.DiedStarting++
						startAt = -1
					}
					up = e.Up
				case "h":
					if e.B != "" && startAt >= 0 {
						startSpans = append(startSpans, span{startAt, e.T})
						startAt = -1
						if e.CPU > 0 {
							cpus = append(cpus, e.CPU)
						}
					}
					nowOK := expect[e.B]
					if ok && !nowOK {
						downSince = e.T
						firstDown = min(firstDown, e.T)
					}
					if !ok && nowOK && downSince >= 0 {
						total += float64(e.T-downSince) / 1e9
						downSpans = append(downSpans, span{downSince, e.T})
						downSince = -1
					}
					ok = nowOK
					if e.B == m.To && !onTo {
						toSince = e.T
					}
					onTo = e.B == m.To
				}
			}
			if downSince >= 0 {
				total += float64(end-downSince) / 1e9
				downSpans = append(downSpans, span{downSince, end})
			}
			if startAt >= 0 {
				startSpans = append(startSpans, span{startAt, end})
			}
			if !onTo {
				f.NotOnTarget++
			} else if toSince > lastTo {
				lastTo = toSince
			}
			unavail = append(unavail, total)
		}
		f.CommandSeconds = m.CmdEnd.Sub(m.T0).Seconds()
		f.WindowSeconds = float64(lastTo-t0) / 1e9
		if m.TimedOut {
			f.WindowSeconds = float64(done-t0) / 1e9
		}
		if firstDown != math.MaxInt64 {
			v := float64(firstDown-t0) / 1e9
			f.FirstDownSeconds = &v
		}
		f.UnavailP50 = quantile(unavail, 0.50)
		f.UnavailP99 = quantile(unavail, 0.99)
		f.UnavailMax = quantile(unavail, 1)
		f.MaxUnavailable = maxOverlap(downSpans)
		f.MaxStarting = maxOverlap(startSpans)
		f.FailedStarts = f.DiedStarting + f.NotOnTarget + m.CmdFailures
		for _, c := range cpus {
			f.StartCPUSeconds += c
		}
		f.StartCPUMedian = quantile(cpus, 0.5)
		if cores > 0 {
			f.CPUFloorSeconds = f.StartCPUSeconds / cores
		}
		if f.CPUFloorSeconds > 0 {
			f.FloorRatio = f.WindowSeconds / f.CPUFloorSeconds
			if f.FirstDownSeconds != nil {
				v := (f.WindowSeconds - *f.FirstDownSeconds) / f.CPUFloorSeconds
				f.RestartRatio = &v
			}
		}
		for _, s := range samples {
			if s.T < t0 || s.T > end {
				continue
			}
			f.PeakLoad1 = max(f.PeakLoad1, s.Load)
			f.PeakCPUSome = max(f.PeakCPUSome, s.CPUSome)
			f.PeakMemSome = max(f.PeakMemSome, s.MemSome)
			f.PeakIOSome = max(f.PeakIOSome, s.IOSome)
			f.PeakCPUAvg10 = max(f.PeakCPUAvg10, s.CPUAvg10)
			f.PeakMemAvg10 = max(f.PeakMemAvg10, s.MemAvg10)
			f.PeakIOAvg10 = max(f.PeakIOAvg10, s.IOAvg10)
			f.PeakMemUsed = max(f.PeakMemUsed, float64(s.MemUsed)/(1<<30))
		}
		if m.ID == "alone" {
			alone = append(alone, f.UnavailMax)
			rep.Alone = append(rep.Alone, f)
			continue
		}
		f.Healthy = healthySeries(byLocker, expect, t0, end)
		rep.Scenarios = append(rep.Scenarios, f)
	}
	rep.AloneRestartSeconds = quantile(alone, 0.5)
	rep.targets()
}

// healthySeries counts lockers answering an expected build every 100 ms.
func healthySeries(byLocker [][]Event, expect map[string]bool, t0, end int64) []int {
	step := int64(100 * time.Millisecond)
	nSteps := int((end-t0)/step) + 1
	out := make([]int, nSteps)
	for _, tl := range byLocker {
		j := 0
		ok := false
		for k := range nSteps {
			t := t0 + int64(k)*step
			for j < len(tl) && tl[j].T <= t {
				if tl[j].Kind == "h" {
					ok = expect[tl[j].B]
				}
				j++
			}
			if ok {
				out[k]++
			}
		}
	}
	return out
}

// maxOverlap is the most spans covering one instant.
func maxOverlap(spans []span) int {
	type pt struct {
		t int64
		d int
	}
	var pts []pt
	for _, s := range spans {
		pts = append(pts, pt{s.a, 1}, pt{s.b, -1})
	}
	sort.Slice(pts, func(i, j int) bool {
		if pts[i].t != pts[j].t {
			return pts[i].t < pts[j].t
		}
		return pts[i].d < pts[j].d // ends before starts at the same instant
	})
	cur, best := 0, 0
	for _, p := range pts {
		cur += p.d
		best = max(best, cur)
	}
	return best
}

// quantile is the nearest-rank quantile (q=1: the maximum); 0 when empty.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	idx := int(math.Ceil(q*float64(len(s)))) - 1
	idx = max(0, min(idx, len(s)-1))
	return s[idx]
}
