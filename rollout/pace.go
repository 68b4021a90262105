package rollout

import (
	"fmt"
	"time"
)

// Pacing is how the executor sets W, the most lockers starting at once.
type Pacing string

const (
	// Adaptive sets W between 1 and its cap with the Pacer (slow start,
	// then the throughput knee; cuts on distress); the default.
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
// how near the start deadline a start may come before it halves W.
type PaceTargets struct {
	// CPU, Memory and IO are "some" shares (0..1); 0 disables that signal.
	CPU    float64 `json:"cpu,omitempty"`
	Memory float64 `json:"memory,omitempty"`
	IO     float64 `json:"io,omitempty"`
	// SlowFactor is the deadline's risk: a start that took more than
	// Policy.Deadline ÷ SlowFactor (2: half the deadline) halves W, as
	// one that failed does; 0 disables it. (It used to compare a start
	// with the fastest ones; a start merely slower than others, because
	// the CPU is shared, is no sign of distress, and no longer a signal.)
	SlowFactor float64 `json:"slow_factor,omitempty"`
}

// DefaultPaceTargets: memory stalls are the earliest sign of a box about
// to thrash (oomd and senpai act on them at 10-20 %); IO at 40 %. CPU
// pressure is off (0): the gauge reads the system-wide figure where the
// lockers' cgroup has none (cgroup v1), which other work on a shared box
// keeps at 50-96 % before anything starts (LXC-NOTES; the benchmark saw W
// pinned at 1 for 150 s by it), so it says nothing about the lockers; a
// CPU that is merely busy shows in the throughput instead (the hold). A
// start past half its deadline is at risk of failing it.
func DefaultPaceTargets() PaceTargets {
	return PaceTargets{Memory: 0.1, IO: 0.4, SlowFactor: 2}
}

// riseShare is the share of its own size a step of W must raise the
// healthy starts per second by for the pacer to keep growing (a doubling
// +50 %, a step from 8 to 9 +6.25 %: half of what the step brings on a box
// with room): less, and the step goes back and W holds (the throughput
// knee).
const riseShare = 0.5

// holdWindows is how many windows W holds at the knee before it probes
// one more (BBR's bandwidth probe): a knee found on a noisy box, or
// before other work on it ended, is not kept for the rest of the run.
const holdWindows = 4

// maxHoldWindows bounds the hold's growth: a probe that did not earn its
// step doubles the hold before the next one (4, 8, 16 windows), as a
// retry that failed backs off. Measured at N=300 (a rolling update of
// light lockers, K=4): W held at 2 and probed 3 fourteen times, and not
// one probe earned its step; the run's 15 slowest starts were among the
// 68 of those probes (p50 0.49 s against 0.37 s at W 2), so they made its
// p99 unavailability. A probe that earned its step, a cut, or a
// new knee starts the hold at holdWindows again.
const maxHoldWindows = 16

// pacePhase is how W grows after a window of healthy starts.
type pacePhase uint8

const (
	slowStart pacePhase = iota // double (TCP's slow start)
	probe                      // +1 (after a cut: congestion avoidance)
	hold                       // stay: more W brought no more throughput
)

// Pacer sets W, the most lockers starting at once, between 1 and Cap. It
// aims at the box's throughput (healthy starts per second, as TCP Vegas
// and BBR aim at the bottleneck's rate, not at one packet's delay), and
// backs off on real distress only:
//
//   - slow start: W grows by one per healthy start, so it doubles per
//     window of healthy starts (the W starts launched since the window
//     began, all healthy), until the first cut or the knee;
//   - the throughput target: each window's rate is compared with the
//     previous window's, at the lower W. A start's rate sample is the
//     healthy starts that ended between its launch and its own end, over
//     that time (TCP BBR's delivery rate: what the box got through while
//     this start was in it); a window's rate is the highest sample of its
//     starts (BBR's max filter: a window's first starts share the box
//     with the old W's last ones, and would make any step look like no
//     gain; measured: W 8 at 3.8/s against W 4 at 4.5/s). A step that did not raise it by half its own size (riseShare:
//     a doubling +50 %, 8 to 9 +6.25 %) ends the growth: W holds where
//     the power, rate ÷ a start's time, was highest (the higher W of a
//     doubling that raised the rate by more than √2, else the previous
//     W: Kleinrock's operating point) for holdWindows windows before it probes one
//     more (and goes back again if that did not earn its step over the
//     best window of the hold: BBR's bandwidth is a windowed max); each
//     probe that went back doubles the next hold, up to maxHoldWindows;
//   - cuts: a failed start, pressure over a target (memory, IO, CPU when
//     set) or a start past Deadline ÷ SlowFactor halves W (at least 1),
//     at most once per window: signals from starts launched before the
//     last cut are ignored (TCP's once per round trip); after a cut W
//     grows by one per window (with the same throughput check), not by
//     doubling. A start merely slower than others is no signal.
//
// A Pacer is not safe for concurrent use: the run's loop owns it.
type Pacer struct {
	targets  PaceTargets
	deadline time.Duration
	cap      int
	w        int
	phase    pacePhase
	launched int // sequence number of the last launch
	cutAt    int // launches before the last cut
	// The window: starts launched since W took its value (seq > winSeq);
	// acks of them healthy so far, rate the highest of their samples.
	// healthy counts every healthy start of the run; inFlight is each
	// start's launch (time, healthy then) by seq; held the windows W held
	// at the knee.
	winSeq   int
	winW     int // W when the window began
	acks     int
	rate     float64
	healthy  int
	inFlight map[int]launch
	held     int
	holdFor  int  // windows to hold at the knee before the next probe
	probing  bool // W is one over the knee, out of a hold
	// The previous window's W and rate (healthy starts per second; 0:
	// none since the last cut).
	prevW    int
	prevRate float64
	// holdRate is the best window's rate of the hold so far (the knee's
	// W; a new hold starts from none, so a rate the box no longer gets
	// does not bar every probe after it).
	holdRate float64
	// Last is the reason of the last change of W ("" before any).
	Last string
}

// NewPacer returns a pacer with W = initial, capped to [1, cap], for
// starts whose deadline is deadline (0: no deadline signal).
func NewPacer(initial, cap int, t PaceTargets, deadline time.Duration) *Pacer {
	cap = max(cap, 1)
	p := &Pacer{targets: t, deadline: deadline, cap: cap, w: min(max(initial, 1), cap)}
	p.window()
	return p
}

// W is the current most starting at once.
func (p *Pacer) W() int { return p.w }

// Cap is the most W can reach.
func (p *Pacer) Cap() int { return p.cap }

// launch is what the pacer keeps of a start in flight.
type launch struct {
	at      time.Time
	healthy int // healthy starts ended before it was launched
}

// Launch records a start's launch at now and returns its sequence
// number, which its Done call passes back.
func (p *Pacer) Launch(now time.Time) int {
	p.launched++
	if p.inFlight == nil {
		p.inFlight = map[int]launch{}
	}
	p.inFlight[p.launched] = launch{now, p.healthy}
	return p.launched
}

// Done feeds one finished start at now: seq from Launch, ok when it
// became healthy, took its time from start to first healthy check, pr
// the pressure read then (nil: none). It returns true when W changed.
func (p *Pacer) Done(seq int, ok bool, took time.Duration, pr *Pressure, now time.Time) bool {
	before := p.w
	l, known := p.inFlight[seq]
	delete(p.inFlight, seq)
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
	case p.atRisk(took):
		why = fmt.Sprintf("a start took %v, over 1/%g of its deadline %v", took.Round(time.Millisecond), p.targets.SlowFactor, p.deadline)
	}
	if why != "" {
		if seq <= p.cutAt {
			return false // launched under the old W
		}
		p.w = max(1, p.w/2)
		p.cutAt = p.launched
		p.phase, p.prevW, p.prevRate, p.probing = probe, 0, 0, false
		p.window()
		p.Last = why
		return p.w != before
	}
	p.healthy++
	if p.launchedBefore(seq) {
		// A healthy start launched under an older W is no ack of this
		// one: only starts launched since W took its value make its
		// window.
		return false
	}
	if d := now.Sub(l.at); known && d > 0 {
		p.rate = max(p.rate, float64(p.healthy-l.healthy)/d.Seconds())
	}
	p.acks++
	if p.phase == slowStart && p.w < p.cap {
		// One more per healthy start (TCP's slow start: W doubles per
		// window, and the launches it allows follow the starts that
		// ended, so a pressure signal cuts before a whole doubling is
		// in flight: measured, a doubling at once from 8 to 16 heavy
		// starts peaked at 3,760 of a 3,774 MiB limit).
		p.w++
		p.Last = "slow start: a healthy start"
	}
	if p.acks < p.winW {
		return p.w != before
	}
	rate := p.rate // 0: unknown (starts of no time: a test's frozen clock)
	switch {
	case p.phase == hold && p.held < p.holdFor-1:
		p.held++
		p.holdRate = max(p.holdRate, rate)
		p.window()
		return false
	case p.phase == hold && p.w < p.cap:
		// Probe one more: the knee may have moved. The probe must beat
		// the best rate of the hold (BBR's bottleneck bandwidth is a max
		// over ten round trips, not the last one): against the last
		// window's alone, one slow sample at W 1 (0.96-2.38 starts/s over
		// the hold windows of one run) let noise pass for a gain, and W
		// climbed to K under a client at every locker.
		rate = max(p.holdRate, rate)
		p.prevW, p.prevRate, p.phase, p.held, p.probing = p.w, rate, probe, 0, true
		p.w++
		p.Last = fmt.Sprintf("held %d windows at up to %s healthy starts/s: probing one more", p.holdFor, perSecond(rate))
		p.window()
		return true
	case p.phase == hold:
		// Held at the cap: nothing more to probe.
		p.window()
		return p.w != before
	case p.prevRate > 0 && rate > 0 && rate < p.prevRate*(1+riseShare*float64(p.winW-p.prevW)/float64(p.prevW)):
		// The knee. After a doubling in slow start, W holds at the one of
		// the two Ws with the higher power, throughput ÷ delay (Kleinrock's optimal operating point,
		// the one BBR aims at: the bottleneck's rate with no queue). With
		// W starts in flight, a start takes W ÷ rate (Little's law), so
		// the power is rate² ÷ W: a doubling holds at the higher W only if
		// it raised the rate by more than √2 (41 %; past half its size,
		// +50 %, slow start goes on). Below that the higher W bought
		// less throughput than it added to every locker's time down.
		// Measured at N=300 (light app, 2026-12-06): a rolling update that
		// held W 4 for 5.1 starts/s against 4.2 at W 2 (+21 %) took 70.9 s
		// with p99 unavailability 1.17 s; the run before, held at W 2,
		// 69.3 s and 0.60 s. An offline update that held W 8 (5.47 against
		// 4.21 at W 4, +30 %) took 65.1 s with p50 unavailability 1.60 s;
		// the run before, at W 4-5, 62.3 s and 0.90 s. A doubling that
		// raised nothing, or a step of one (a probe, or growth after a
		// cut) that did not earn its step, goes back.
		knee := p.prevW
		if p.phase == slowStart && rate*rate/float64(p.winW) > p.prevRate*p.prevRate/float64(p.prevW) {
			knee = p.winW
		}
		p.Last = fmt.Sprintf("%s healthy starts/s at W %d, %s at W %d: W %d is the throughput knee, held", perSecond(rate), p.winW, perSecond(p.prevRate), p.prevW, knee)
		if p.probing {
			// A probe out of a hold that did not earn its step: the next
			// one waits twice as long (maxHoldWindows).
			p.holdFor = min(2*p.holdFor, maxHoldWindows)
		} else {
			p.holdFor = holdWindows
		}
		p.w, p.phase, p.held, p.holdRate, p.probing = knee, hold, 0, 0, false
		p.window()
		return p.w != before
	}
	// Here the step earned its size, or there was none to judge. A
	// window at the cap is judged as any other (a doubling that reached
	// the cap and earned nothing goes back, as one below it does: until
	// Dec 2026 it was not judged, and a rolling update under a client at
	// every locker kept W at K = 4 after a step from 2 that was never
	// weighed); once it earned its step W stays at the cap.
	p.prevW, p.prevRate = p.winW, rate
	p.probing = false // a probe that earned its step
	if p.phase == slowStart {
		p.Last = fmt.Sprintf("slow start: a window of healthy starts, %s/s", perSecond(rate))
	} else {
		p.w = min(p.cap, p.w+1)
		p.Last = fmt.Sprintf("a window of healthy starts, %s/s", perSecond(rate))
	}
	p.window()
	return p.w != before
}

// window begins W's window: starts launched from here on make it.
func (p *Pacer) window() {
	p.winSeq, p.winW, p.acks, p.rate = p.launched, p.w, 0, 0
}

// launchedBefore reports whether the start with seq was launched before
// W took its value (under an older W).
func (p *Pacer) launchedBefore(seq int) bool { return seq <= p.winSeq }

func over(v, target float64) bool { return target > 0 && v > target }

// atRisk: took is past the deadline's share (Deadline ÷ SlowFactor).
func (p *Pacer) atRisk(took time.Duration) bool {
	if p.deadline <= 0 || p.targets.SlowFactor <= 0 {
		return false
	}
	return float64(took) > float64(p.deadline)/p.targets.SlowFactor
}

func perSecond(r float64) string {
	if r <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.2f", r)
}
