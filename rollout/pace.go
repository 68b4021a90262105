package rollout

import (
	"fmt"
	"slices"
	"time"
)

// Pacing is how the executor sets W, the most lockers starting at once.
type Pacing string

const (
	// Adaptive sets W between 1 and its cap with the AIMD controller
	// (Pacer); the default.
	Adaptive Pacing = "adaptive"
	// Fixed keeps W at Policy.MaxStarting (or K), as before.
	Fixed Pacing = "fixed"
)

// ParsePacing accepts "", "adaptive" and "fixed" ("" is adaptive).
func ParsePacing(s string) (Pacing, error) {
	switch Pacing(s) {
	case "", Adaptive:
		return Adaptive, nil
	case Fixed:
		return Fixed, nil
	}
	return "", fmt.Errorf("unknown pacing %q (want adaptive or fixed)", s)
}

// Pressure is the share of recent wall time (0..1) in which some task
// stalled on CPU, memory or IO: the "some" lines of Linux PSI
// (/proc/pressure or a cgroup v2 group's *.pressure files), as a rate over
// the last sampling period, not the kernel's 10 s average.
type Pressure struct {
	CPU, Memory, IO float64
}

// Gauge reads pressure. The agent's reads /proc/pressure (or the lockers'
// parent cgroup on cgroup v2); nil in Env means no pressure signal.
type Gauge interface {
	Pressure() (Pressure, error)
}

// PaceTargets are the pressure levels over which the pacer halves W, and
// how much slower than the baseline start a start may be before it
// counts as a congestion signal.
type PaceTargets struct {
	// CPU, Memory and IO are "some" shares (0..1); 0 disables that signal.
	CPU    float64 `json:"cpu,omitempty"`
	Memory float64 `json:"memory,omitempty"`
	IO     float64 `json:"io,omitempty"`
	// SlowFactor: a start taking more than SlowFactor × the baseline (the
	// 4th fastest healthy start of the run) and slowMargin more halves W.
	SlowFactor float64 `json:"slow_factor,omitempty"`
}

// DefaultPaceTargets: memory stalls are the earliest sign of a box about
// to thrash (oomd and senpai act on them at 10-20 %); IO at 40 %. CPU
// pressure is off (0): the gauge reads the system-wide figure (cgroup v1
// has no other), which other work on a shared box keeps at 50-96 % before
// anything starts (LXC-NOTES; the benchmark saw W pinned at 1 for 150 s by
// it), so it says nothing about the lockers. Start latency is the CPU
// signal instead: a start 3× slower than the baseline is queueing,
// not working (TCP Vegas' view of a growing RTT). Set CPU where the gauge
// reads the lockers' own cgroup (v2's cpu.pressure).
func DefaultPaceTargets() PaceTargets {
	return PaceTargets{Memory: 0.1, IO: 0.4, SlowFactor: 3}
}

const (
	// baselineRank: the baseline is the 4th fastest healthy start of the
	// run (the slowest while fewer are known). Of the whole run, as TCP
	// Vegas' base RTT is the minimum over the connection: a window of
	// recent starts follows the load up (measured at N=300: a 32-start
	// window let the baseline climb from 2.1 s to 15 s while W grew to 25,
	// and no start was ever "slow"). The 4th, not the first, so that one
	// lucky start on a quiet moment does not set it (measured: a 0.57 s
	// start made 2.3 s ones halve W again and again).
	baselineRank = 4
	// slowMargin keeps jitter on very fast starts from counting as slow.
	slowMargin = 500 * time.Millisecond
)

// Pacer is the AIMD controller of W (additive increase, multiplicative
// decrease, the shape of TCP congestion avoidance and of Netflix
// concurrency-limits' AIMD limit). W starts at Initial and stays between 1
// and Cap:
//
//   - W healthy starts in a row, with pressure under its targets and none
//     slow, add one to W (one per window of healthy starts; starts
//     launched before the last decrease do not count);
//   - a start failure, a start slower than SlowFactor × the baseline (the
//     4th fastest healthy start of the run) and 500 ms more, or
//     pressure over a target halves W (rounded down, at least 1);
//   - W is halved at most once per window: signals from starts launched
//     before the last decrease are ignored (TCP's once per round trip),
//     since they were launched under the old W.
//
// A Pacer is not safe for concurrent use; the executor holds its lock.
type Pacer struct {
	targets  PaceTargets
	cap      int
	w        int
	acks     int             // healthy starts since W last changed
	launched int             // sequence number of the last launch
	cutAt    int             // launches before the last decrease
	best     []time.Duration // the baselineRank fastest healthy starts, ascending
	// Last is the reason of the last change of W ("" before any).
	Last string
}

// NewPacer returns a pacer with W = initial, capped to [1, cap].
func NewPacer(initial, cap int, t PaceTargets) *Pacer {
	cap = max(cap, 1)
	return &Pacer{targets: t, cap: cap, w: min(max(initial, 1), cap)}
}

// W is the current most starting at once.
func (p *Pacer) W() int { return p.w }

// Cap is the most W can reach.
func (p *Pacer) Cap() int { return p.cap }

// Launch records a start's launch and returns its sequence number, which
// its Done call passes back.
func (p *Pacer) Launch() int {
	p.launched++
	return p.launched
}

// Done feeds one finished start: seq from Launch, ok when it became
// healthy, took its time from start to first healthy check, pr the
// pressure read then (nil: none). It returns true when W changed.
func (p *Pacer) Done(seq int, ok bool, took time.Duration, pr *Pressure) bool {
	before := p.W()
	why := ""
	switch {
	case !ok:
		why = "a start failed"
	case pr != nil && over(pr.Memory, p.targets.Memory):
		why = fmt.Sprintf("memory pressure %.0f%% over %.0f%%", pr.Memory*100, p.targets.Memory*100)
	case pr != nil && over(pr.IO, p.targets.IO):
		why = fmt.Sprintf("IO pressure %.0f%% over %.0f%%", pr.IO*100, p.targets.IO*100)
	case pr != nil && over(pr.CPU, p.targets.CPU):
		why = fmt.Sprintf("CPU pressure %.0f%% over %.0f%%", pr.CPU*100, p.targets.CPU*100)
	case p.slow(took):
		why = fmt.Sprintf("a start took %v, over %g× the baseline (%v)", took.Round(time.Millisecond), p.targets.SlowFactor, p.fastest().Round(time.Millisecond))
	}
	if ok {
		i, _ := slices.BinarySearch(p.best, took)
		if p.best = slices.Insert(p.best, i, took); len(p.best) > baselineRank {
			p.best = p.best[:baselineRank]
		}
	}
	if why != "" {
		if seq <= p.cutAt {
			return false // launched under the old W
		}
		p.w = max(1, p.w/2)
		p.acks = 0
		p.cutAt = p.launched
		p.Last = why
		return p.w != before
	}
	if p.launchedBefore(seq) {
		// A healthy start launched under the old W is no ack of the
		// new one: only starts launched since the cut make its window.
		return false
	}
	if p.acks++; p.acks < p.w || p.w == p.cap {
		return false
	}
	p.w++
	p.acks = 0
	p.Last = fmt.Sprintf("a window of healthy starts (baseline %v)", p.fastest().Round(time.Millisecond))
	return true
}

// launchedBefore reports whether the start with seq was launched before
// the last decrease of W (under the old W).
func (p *Pacer) launchedBefore(seq int) bool { return seq <= p.cutAt }

func over(v, target float64) bool { return target > 0 && v > target }

// fastest is the baseline: the baselineRank-th fastest healthy start of
// the run (the slowest known while fewer are known).
func (p *Pacer) fastest() time.Duration {
	if len(p.best) == 0 {
		return 0
	}
	return p.best[len(p.best)-1]
}

// slow: took is over SlowFactor × the baseline, and
// slowMargin more; never before a baseline exists.
func (p *Pacer) slow(took time.Duration) bool {
	f := p.fastest()
	if f <= 0 || p.targets.SlowFactor <= 0 {
		return false
	}
	return float64(took) > p.targets.SlowFactor*float64(f) && took-f > slowMargin
}
