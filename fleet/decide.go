package fleet

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// View is what one host reads from etcd at one revision before deciding:
// the channel, the slots' holders, the update starts and the results on
// the channel's release.
type View struct {
	Channel  *Channel // nil: no channel published
	Holders  []Holder
	Starts   []Start
	Results  []Result // on Channel.Release.Commit
	Revision int64
	// ChannelRev is the channel key's mod revision (0: no channel).
	ChannelRev int64
}

// Action is what a host does after a decision.
type Action int

// The actions.
const (
	// Wait: nothing to do now (up to date, paused, not yet eligible, no
	// slot free); Decision.Why says which.
	Wait Action = iota
	// Take: take slot Decision.Slot and update.
	Take
	// Update: the host already holds a slot (re-entrant) and updates.
	Update
	// Free: the host holds a slot it no longer needs.
	Free
	// Hold: the host failed on the release and keeps its slot.
	Hold
)

// Decision is the outcome of Decide.
type Decision struct {
	Action Action
	Slot   int     // for Take
	Held   *Holder // the host's own slot, if it holds one
	Why    string
	State  string // the host's registry state (StateIdle, ...)
}

// Decide is the rollout rule of one host, a pure function of what it read
// (v), its id, the commit it runs and the time. The rules, in order:
//   - no channel, or the host runs the release: release a slot it holds
//     (unless its update failed there), otherwise nothing to do;
//   - the host failed on this release: keep its slot, nothing to do (an
//     operator unlocks it, or publishes another release);
//   - the channel is paused, or MaxFailedHosts hosts failed on the
//     release: nothing starts;
//   - the host holds a slot (re-entrant: a taken slot of the same host id,
//     from this or an earlier session): update with it;
//   - update windows: wait outside them (kured, zincati, Nebraska);
//   - phased: wait until hash(host, commit) <= throttling(now) (FCOS);
//   - MaxPerPeriod starts in the last Period: wait (Nebraska); the starts
//     expire with their own leases, by etcd's clock (see Start);
//   - safe mode and no host succeeded on the release: K is 1 (canary);
//   - fewer than K slots held: take the lowest free slot below K.
func Decide(v View, host, commit string, now time.Time) Decision {
	var mine *Holder
	held := 0
	taken := map[int]bool{}
	for i := range v.Holders {
		h := v.Holders[i]
		taken[h.Slot] = true
		held++
		if h.Host == host {
			mine = &v.Holders[i]
		}
	}
	d := Decision{Held: mine, State: StateWaiting}
	ch := v.Channel
	if ch == nil || ch.Release.Commit == "" {
		d.State, d.Why = StateIdle, "no release published"
		if mine != nil && mine.Failed == "" {
			d.Action = Free
		}
		return d
	}
	rel := ch.Release
	if commit == rel.Commit {
		d.State, d.Why = StateIdle, "on the channel's release "+rel.String()
		if mine != nil {
			d.Action = Free
		}
		return d
	}
	failed := 0
	for _, r := range v.Results {
		if r.OK {
			continue
		}
		failed++
		if r.Host == host {
			d.State, d.Why = StateFailed, fmt.Sprintf("the update to %s failed here (%s); waiting for an operator", rel, r.Error)
			if mine != nil {
				d.Action = Hold
			}
			return d
		}
	}
	if mine != nil && mine.Failed != "" && mine.Release.Commit != rel.Commit {
		// Failed on an earlier release; a new one is published: go on with
		// the slot held (the operator's new release is the fix).
		mine.Failed = ""
	}
	p := ch.Policy.Defaults()
	if ch.Paused {
		d.Why = "the channel is paused: " + ch.PausedReason
		return d
	}
	if failed >= p.MaxFailedHosts {
		d.Why = fmt.Sprintf("%d %s failed on %s (max_failed_hosts %d)", failed, pluralHosts(failed), rel, p.MaxFailedHosts)
		return d
	}
	if mine != nil {
		d.Action, d.State, d.Why = Update, StateUpdating, fmt.Sprintf("holds slot %d", mine.Slot)
		return d
	}
	if in, next, err := InWindow(p, now); err != nil || !in {
		d.Why = fmt.Sprintf("outside the update windows (next opens %s)", next.Format(time.RFC3339))
		if err != nil {
			d.Why = "the channel's update windows cannot be read: " + err.Error()
		}
		return d
	}
	if th := Throttle(p, ch.PublishedAt, now); HashFraction(host, rel.Commit) > th {
		d.Why = fmt.Sprintf("phased rollout: throttling at %.3f, this host's share %.3f", th, HashFraction(host, rel.Commit))
		return d
	}
	if p.MaxPerPeriod > 0 {
		n := 0
		for _, s := range v.Starts {
			if s.TTL > 0 || now.Sub(s.At) < p.Period.D() {
				n++ // a leased start exists only within its period
			}
		}
		if n >= p.MaxPerPeriod {
			d.Why = fmt.Sprintf("%d updates started in the last %s (max_per_period %d)", n, p.Period.D(), p.MaxPerPeriod)
			return d
		}
	}
	k := p.MaxHosts
	if p.SafeMode {
		ok := 0
		for _, r := range v.Results {
			if r.OK {
				ok++
			}
		}
		if ok == 0 {
			k = 1
		}
	}
	if held >= k {
		d.Why = fmt.Sprintf("%d of %d slots held", held, k)
		if k < p.MaxHosts {
			d.Why += " (safe mode: the canary updates alone)"
		}
		return d
	}
	for i := 0; i < k; i++ {
		if !taken[i] {
			d.Action, d.Slot, d.Why = Take, i, fmt.Sprintf("slot %d of %d free", i, k)
			return d
		}
	}
	d.Why = fmt.Sprintf("no free slot below %d", k)
	return d
}

// Throttle is the phased-rollout throttling value at now: it rises
// linearly from p.PhaseStart at publication to 1 after p.PhaseDuration
// (Fedora CoreOS's Cincinnati "rollout" fields); 1 without phasing.
func Throttle(p Policy, published, now time.Time) float64 {
	if p.PhaseDuration <= 0 {
		return 1
	}
	f := float64(now.Sub(published)) / float64(p.PhaseDuration)
	switch {
	case f <= 0:
		return p.PhaseStart
	case f >= 1:
		return 1
	}
	return p.PhaseStart + (1-p.PhaseStart)*f
}

// HashFraction maps (host, commit) to [0, 1), uniformly: the host's place
// in a phased rollout of that release (FCOS: a node takes an update when
// its hash is at most the throttling value; no coordination needed).
func HashFraction(host, commit string) float64 {
	s := sha256.Sum256([]byte(host + "\x00" + commit))
	return float64(binary.BigEndian.Uint64(s[:8])>>11) / float64(uint64(1)<<53)
}

func pluralHosts(n int) string {
	if n == 1 {
		return "host"
	}
	return "hosts"
}
