package fleet

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("90s"), as the agent's API does.
type Duration time.Duration

// D returns the duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string; a bare number is refused.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// Release is what a channel asks its hosts to run: an origin ref and the
// commit it resolved to when it was published (hosts build the commit, so
// every host builds the same code whatever the ref does later).
type Release struct {
	Ref    string `json:"ref"`
	Commit string `json:"commit"`
}

// Short is the commit's first 12 hex digits.
func (r Release) Short() string {
	if len(r.Commit) > 12 {
		return r.Commit[:12]
	}
	return r.Commit
}

// String is "ref@sha12".
func (r Release) String() string { return r.Ref + "@" + r.Short() }

// Policy is how a channel rolls its release out across hosts. The zero
// value of a field means its default (see Defaults).
type Policy struct {
	// MaxHosts (K) is the most hosts updating at once: the number of slot
	// keys of the semaphore (FleetLock's slot count; Nebraska's max
	// concurrent updates). Default 1. Changeable at run time: a lower K
	// lets the current holders finish and takes no new slot until fewer
	// than K are held.
	MaxHosts int `json:"max_hosts"`
	// MaxPerPeriod is the most updates started per Period, across hosts
	// and releases (Nebraska's "max updates per period"); 0: no limit.
	MaxPerPeriod int      `json:"max_per_period,omitempty"`
	Period       Duration `json:"period,omitempty"`
	// PhaseStart and PhaseDuration make a phased rollout (Fedora CoreOS):
	// the throttling value rises linearly from PhaseStart (0..1) at
	// publication to 1 after PhaseDuration, and a host takes the release
	// once hash(host id, commit) <= throttling. PhaseDuration 0: no
	// phasing (every host is eligible at once).
	PhaseStart    float64  `json:"phase_start,omitempty"`
	PhaseDuration Duration `json:"phase_duration,omitempty"`
	// SafeMode makes the first host of a release update alone (a canary):
	// no second slot is taken until one host succeeded on it (Nebraska's
	// safe mode).
	SafeMode bool `json:"safe_mode,omitempty"`
	// MaxFailedHosts is how many hosts failing on a release pause the
	// channel (default 1): a paused channel starts no update anywhere
	// until an operator resumes it.
	MaxFailedHosts int `json:"max_failed_hosts"`
	// Windows, when set, are the update windows: a host takes a slot only
	// within WindowDuration (default DefaultWindowDuration) after one of
	// these 5-field cron times, read in TimeZone (an IANA name; default
	// UTC). An update begun inside a window finishes past its end.
	Windows        []string `json:"windows,omitempty"`
	WindowDuration Duration `json:"window_duration,omitempty"`
	TimeZone       string   `json:"time_zone,omitempty"`
	// UpdateTimeout, when set, bounds a host's update: past it the update
	// counts as failed (the result is written, the slot marked failed and
	// the channel paused as for any failure) and the job is cancelled
	// (Nebraska counts an update that does not report in time as failed).
	UpdateTimeout Duration `json:"update_timeout,omitempty"`
}

// Policy defaults.
const (
	DefaultMaxHosts       = 1
	DefaultPeriod         = time.Hour
	DefaultMaxFailedHosts = 1
	DefaultWindowDuration = time.Hour
)

// Defaults returns p with zero fields set to their defaults.
func (p Policy) Defaults() Policy {
	if p.MaxHosts <= 0 {
		p.MaxHosts = DefaultMaxHosts
	}
	if p.Period <= 0 {
		p.Period = Duration(DefaultPeriod)
	}
	if p.MaxFailedHosts <= 0 {
		p.MaxFailedHosts = DefaultMaxFailedHosts
	}
	return p
}

// Validate names the first bad field.
func (p Policy) Validate() error {
	switch {
	case p.MaxHosts < 0 || p.MaxHosts > MaxSlots:
		return fmt.Errorf("max_hosts must be between 1 and %d, got %d", MaxSlots, p.MaxHosts)
	case p.MaxPerPeriod < 0:
		return fmt.Errorf("max_per_period must not be negative, got %d", p.MaxPerPeriod)
	case p.Period < 0 || p.PhaseDuration < 0:
		return fmt.Errorf("period and phase_duration must not be negative")
	case p.PhaseStart < 0 || p.PhaseStart > 1:
		return fmt.Errorf("phase_start must be between 0 and 1, got %g", p.PhaseStart)
	case p.MaxFailedHosts < 0:
		return fmt.Errorf("max_failed_hosts must not be negative, got %d", p.MaxFailedHosts)
	case p.WindowDuration < 0 || p.UpdateTimeout < 0:
		return fmt.Errorf("window_duration and update_timeout must not be negative")
	}
	if _, err := windowLocation(p); err != nil {
		return err
	}
	if _, _, err := InWindow(p, time.Now()); err != nil {
		return err
	}
	return nil
}

// MaxSlots bounds K (the slot keys are numbered 0000..MaxSlots-1).
const MaxSlots = 1000

// Channel is a group's desired release and rollout policy, one etcd key
// (see the package doc for the layout).
type Channel struct {
	Release     Release   `json:"release"`
	PublishedAt time.Time `json:"published_at"`
	PublishedBy string    `json:"published_by,omitempty"`
	Policy      Policy    `json:"policy"`
	Paused      bool      `json:"paused"`
	PausedAt    time.Time `json:"paused_at,omitzero"`
	// PausedReason says who or what paused it ("host h1 failed release
	// main@abc: ...", "operator").
	PausedReason string `json:"paused_reason,omitempty"`
}

// HostState is what a host's agent says about itself in the registry.
type HostState struct {
	// Version is the lxcfleet version the agent runs.
	Version string `json:"version"`
	// Build, ReleaseName and Commit are the host's current release.
	Build       int    `json:"build,omitempty"`
	ReleaseName string `json:"release_name,omitempty"`
	Commit      string `json:"commit,omitempty"`
	// Lockers counts the host's lockers by LXC state (RUNNING, STOPPED).
	Lockers map[string]int `json:"lockers"`
	// LastJob is the host's newest job.
	LastJob *JobRef `json:"last_job,omitempty"`
}

// JobRef names a host's job and how it ended.
type JobRef struct {
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`
	State    string    `json:"state"`
	Error    string    `json:"error,omitempty"`
	Trigger  string    `json:"trigger,omitempty"`
	Created  time.Time `json:"created,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
}

// Host states in the registry.
const (
	StateIdle     = "idle"     // on the channel's release, or nothing to do
	StateWaiting  = "waiting"  // behind the channel, waiting for a slot or the policy
	StateUpdating = "updating" // holds a slot and runs the update job
	StateFailed   = "failed"   // its update to the channel's release failed; it keeps its slot
)

// HostRecord is a host's registry entry, bound to its session lease: it
// vanishes TTL after the host dies.
type HostRecord struct {
	ID    string `json:"id"`
	Group string `json:"group"`
	HostState
	// State is one of StateIdle, StateWaiting, StateUpdating, StateFailed;
	// Note says why (the last rollout decision).
	State   string    `json:"state"`
	Note    string    `json:"note,omitempty"`
	Lease   string    `json:"lease"`
	Updated time.Time `json:"updated"`
}

// Holder is the value of a taken slot key.
type Holder struct {
	// Slot is the slot's number (0..K-1); Host the holder's id; Lease its
	// session lease (hex): the slot frees when it expires.
	Slot    int       `json:"slot"`
	Host    string    `json:"host"`
	Lease   string    `json:"lease"`
	Release Release   `json:"release"`
	Since   time.Time `json:"since"`
	// Failed is set when the holder's update failed: it keeps the slot
	// (host dead is not release bad) until an operator unlocks it or a new
	// release is published.
	Failed string `json:"failed,omitempty"`
	// CreateRevision is the etcd revision that created the key: the
	// holder's fencing token.
	CreateRevision int64 `json:"create_revision"`
}

// Result is a host's outcome on one release, kept (without a lease) under
// the release's commit.
type Result struct {
	Host  string    `json:"host"`
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
	Job   string    `json:"job,omitempty"`
	Begin time.Time `json:"begin"`
	End   time.Time `json:"end"`
}

// Start records one update start, for MaxPerPeriod (only while a limit is
// set). It lives under its own lease of TTL (the channel's period when it
// was made): etcd deletes it once the period has passed, by etcd's clock,
// so the count of starts in the last period is the count of start keys,
// whatever the hosts' clocks say. At is the taker's clock, for display
// only. A record without TTL (written by an older version) counts while At
// is within the period. A period shortened at run time applies to starts
// made after the change (earlier ones count until their own period ends:
// never more starts than the limit).
type Start struct {
	Host   string    `json:"host"`
	Commit string    `json:"commit"`
	At     time.Time `json:"at"`
	TTL    Duration  `json:"ttl,omitempty"`
}
