package rollout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"time"
)

// Policy is how a plan moves lockers: its limits, its health over time and
// its failure policy. It is the one shape of the policy from the flag to
// the executor: the config's [defaults] decode over DefaultPolicy, an API
// request's "policy" object and the CLI's flags are a Patch of it (the same
// names: flag --max-unavailable is key max_unavailable), and the job record
// holds it in its plan. In JSON, durations are Go duration strings ("10s",
// Duration), as nomad's api.UpdateStrategy writes them.
type Policy struct {
	// MaxUnavailable is K, the most lockers down because of the job at
	// once, from a locker's stop until it passed the monitor window
	// (Kubernetes' maxUnavailable, Swarm's parallelism); > 0.
	// JSON max_unavailable.
	MaxUnavailable int
	// MaxStarting is W ≤ K, the most lockers starting at once (from their
	// stop, for a replace, to their first healthy check); 0, or more than
	// K, means K, except in plans whose lockers are all down anyway
	// (Plan.allDown: start plans, offline updates, a boot's recovery),
	// whose K is all lockers: there W may be above the configured K
	// (startingAllDown). With adaptive pacing it is W's first value (0:
	// W starts at 1, the pacer's slow start, where serving capacity is at
	// stake, and at K for offline and start plans), and W moves between 1
	// and K (all lockers for offline and start plans).
	// JSON max_starting.
	MaxStarting int
	// Pacing: Adaptive (DefaultPolicy) or Fixed; empty is Fixed, as plans
	// journaled before pacing existed ran.
	Pacing Pacing
	// Pace are the adaptive pacer's targets; zero fields disable a signal.
	Pace PaceTargets
	// StopParallel is the most lockers stopping at once in a stop phase
	// (stop-all; an update stops each locker just before its start, W
	// bounds those); 0 means K.
	StopParallel int
	// StopTimeout is each locker's grace period before it is killed.
	StopTimeout time.Duration
	// Deadline bounds a locker's start to its first healthy check
	// (Nomad's healthy_deadline).
	Deadline time.Duration
	// Delay is waited between two launches (lxc.start.delay's role).
	Delay time.Duration
	// Health is the health check, in lxcctl.ParseHealthCheck's syntax
	// ("none", "http://127.0.0.1:{port}/healthz", "tcp:...", "exec:...");
	// "" is none. The executor does not read it: the agent builds the
	// Host's check from it, so a journaled plan resumes with its own check.
	Health string
	// Monitor is the monitor window: how long a locker must stay healthy
	// after its first healthy check to count as moved (Swarm's monitor,
	// Nomad's min_healthy_time); 0 counts it at the first check.
	Monitor time.Duration
	// MonitorHolds is which lockers hold their place in K through their
	// monitor window: MonitorUntilProven (DefaultPolicy) or MonitorAll;
	// empty is MonitorAll, as plans journaled before the knob ran.
	MonitorHolds MonitorHolds
	// Interval is the time between two checks in the monitor window and the
	// soak; default 500ms. A window in the background checks every
	// BackgroundInterval.
	Interval time.Duration
	// Canary lockers move first, alone, then stay healthy for Soak before
	// the rest moves; any canary failure trips the policy.
	Canary int
	Soak   time.Duration
	// MaxFailureRatio trips the failure policy when more than this share of
	// the plan's lockers, or of the last K finished ones, failed (Swarm's
	// max_failure_ratio); 0 trips on the first failure.
	MaxFailureRatio float64
	// FailureAction is what a tripped policy does (Swarm's failure_action).
	FailureAction Action
	// ReleaseWatch is how long, after an update that proved its release,
	// the agent still watches the lockers on it: more than the failure
	// ratio of them (and at least two) crashed or unhealthy within it
	// trips the failure action as a failed update would; 0 watches not.
	// JSON release_watch.
	ReleaseWatch time.Duration
}

// DefaultPolicy is the one table of defaults, documented in the package
// doc; the config's [defaults] decode over it.
func DefaultPolicy() Policy {
	return Policy{
		MaxUnavailable:  4,
		StopParallel:    8,
		StopTimeout:     10 * time.Second,
		Deadline:        60 * time.Second,
		Health:          "none",
		Monitor:         10 * time.Second,
		MonitorHolds:    MonitorUntilProven,
		Interval:        500 * time.Millisecond,
		MaxFailureRatio: 0.1,
		FailureAction:   Rollback,
		ReleaseWatch:    10 * time.Minute,
		Pacing:          Adaptive,
		Pace:            DefaultPaceTargets(),
	}
}

// Validate reports the first knob out of range, naming it as the API and
// the config do. It is the one check of a policy: the agent runs it on
// every request, the config's [defaults] and every journaled plan.
func (p Policy) Validate() error {
	switch {
	case p.MaxUnavailable <= 0:
		return fmt.Errorf("max_unavailable (K) must be positive, got %d", p.MaxUnavailable)
	case p.MaxStarting < 0:
		return fmt.Errorf("max_starting (W) must not be negative, got %d", p.MaxStarting)
	case p.StopParallel < 0:
		return fmt.Errorf("stop_parallel must not be negative, got %d", p.StopParallel)
	case p.StopTimeout <= 0:
		return fmt.Errorf("stop_timeout must be positive, got %v", p.StopTimeout)
	case p.Deadline <= 0:
		return fmt.Errorf("deadline must be positive, got %v", p.Deadline)
	case p.Delay < 0:
		return fmt.Errorf("delay must not be negative, got %v", p.Delay)
	case p.Monitor < 0:
		return fmt.Errorf("monitor must not be negative, got %v", p.Monitor)
	case p.Interval < 0:
		return fmt.Errorf("interval must not be negative, got %v", p.Interval)
	case p.Soak < 0:
		return fmt.Errorf("soak must not be negative, got %v", p.Soak)
	case p.ReleaseWatch < 0:
		return fmt.Errorf("release_watch must not be negative, got %v", p.ReleaseWatch)
	case p.Canary < 0:
		return fmt.Errorf("canary must not be negative, got %d", p.Canary)
	case math.IsNaN(p.MaxFailureRatio) || p.MaxFailureRatio < 0 || p.MaxFailureRatio > 1:
		return fmt.Errorf("max_failure_ratio must be between 0 and 1, got %v", p.MaxFailureRatio)
	case p.Pacing != "" && p.Pacing != Adaptive && p.Pacing != Fixed:
		return fmt.Errorf("unknown pacing %q (want adaptive or fixed)", p.Pacing)
	case p.MonitorHolds != "" && p.MonitorHolds != MonitorUntilProven && p.MonitorHolds != MonitorAll:
		return fmt.Errorf("unknown monitor_holds %q (want until_proven or all)", p.MonitorHolds)
	case p.Pace.CPU < 0 || p.Pace.Memory < 0 || p.Pace.IO < 0 || p.Pace.SlowFactor < 0:
		return fmt.Errorf("pace targets must not be negative, got %+v", p.Pace)
	}
	switch p.FailureAction {
	case Pause, Rollback:
	default:
		return fmt.Errorf("unknown failure_action %q (want pause or rollback)", p.FailureAction)
	}
	return nil
}

func (p Policy) starting() int {
	if p.MaxStarting <= 0 || p.MaxStarting > p.MaxUnavailable {
		return p.MaxUnavailable
	}
	return p.MaxStarting
}

// startingAllDown is W for a plan whose lockers are all down anyway
// (offline updates and their recovery; start plans and recoveries with
// only starts get it from PlanStart and PlanRecovery): MaxStarting when
// set, even above the configured K, since K is all lockers there; else K.
// So a K of 1, which keeps a rolling update to one restart at a time
// (the held-socket default, config's HeldMaxUnavailable), does not also
// start an offline update or 300 wake-ups at W 1.
func (p Policy) startingAllDown() int {
	if p.MaxStarting > 0 {
		return p.MaxStarting
	}
	return max(p.MaxUnavailable, 1)
}

// allDown reports whether every locker the plan moves is down anyway:
// start plans, offline updates and their recovery, and a recovery with
// only stopped lockers to start (a boot). K is all of them there, W may
// be above the configured K (startingAllDown), and an unproven release's
// proving wave is W lockers.
func (p Plan) allDown() bool {
	if p.Kind == KindStart || p.Strategy == Offline {
		return true
	}
	if p.Kind != KindRecover || len(p.Items) == 0 {
		return false
	}
	for _, it := range p.Items {
		if it.Op != OpStart {
			return false
		}
	}
	return true
}

// firstW is the adaptive pacer's first W: MaxStarting when set (capped
// to K); else 1 where serving capacity is at stake (rolling, restart,
// rollback: plans whose lockers serve while others start), as TCP's slow
// start begins with a small window and not at the link's capacity, and K
// for offline and start plans, whose lockers are all down anyway. From
// K, the pacer never measured a W below it: at N=300 under a client at
// every locker (bench scenario 6) four starts at once each took 1.9 s
// from start to healthy where one alone, under the same traffic, took
// 0.48 s, and the clients queued on each held socket waited out all of
// it. From 1, an offline update of N=300 on an idle box found its knee at
// W 2 on one noisy sample and took 78.6 s (61.9 s from K).
func (p Plan) firstW() int {
	switch {
	case p.allDown():
		return min(p.Policy.startingAllDown(), max(len(p.Items), 1))
	case p.Policy.MaxStarting <= 0:
		return 1
	}
	return p.Policy.starting()
}

func (p Policy) stopping() int {
	if p.StopParallel <= 0 {
		return p.MaxUnavailable
	}
	return p.StopParallel
}

func (p Policy) interval() time.Duration {
	if p.Interval <= 0 {
		return 500 * time.Millisecond
	}
	return p.Interval
}

// backgroundChecks is how many checks a monitor window run in the
// background makes (Policy.BackgroundInterval).
const backgroundChecks = 5

// BackgroundInterval is the time between two checks of a monitor window
// that runs in the background (the release proven, the locker's place in
// K free: MonitorUntilProven): the window ÷ backgroundChecks, at most
// maxBackgroundInterval (10 s), never less than Interval; 2 s at the
// defaults (a 10 s window), where a held window checks every 500 ms. A
// proven release's late failures are the rare ones, and at N=300 the held
// rate made 300 × 20 = 6,000 checks an update, each costing the agent
// about 0.5 ms of CPU (its profile: 3.25 s in the monitor's checks) and
// the benchmark app 0.54 ms to answer (its CPU over 3,000 checks),
// measured 2026-12-06, on a box whose CPU the starts need. Peers probe
// less often still: Kubernetes' periodSeconds is 10 s, Docker's
// HEALTHCHECK interval 30 s. What it trades: a locker that stops is seen
// up to this interval later (the proving wave, which holds its places,
// still checks every Interval), and one that answers 503 fails after
// unhealthyChecks of these checks.
func (p Policy) BackgroundInterval() time.Duration {
	return max(p.interval(), min(p.Monitor/backgroundChecks, maxBackgroundInterval))
}

// maxBackgroundInterval bounds BackgroundInterval for long monitor
// windows: Kubernetes' default probe period. A 5 min window checked every
// minute would fail a locker answering 503 only 3 minutes later.
const maxBackgroundInterval = 10 * time.Second

// MonitorHolds is which lockers hold their place in K through their
// monitor window (Policy.MonitorHolds).
type MonitorHolds string

const (
	// MonitorUntilProven: the lockers of a release not yet proven hold
	// their place through their whole window, as Kubernetes'
	// minReadySeconds; once the release is proven (or when the job
	// starts on a proven one), a locker frees its place at its first
	// healthy check and its window goes on in the background, its
	// failure still counted by the failure policy and down in K again
	// (Swarm's monitor: the next batch does not wait for it). The
	// default.
	MonitorUntilProven MonitorHolds = "until_proven"
	// MonitorAll: every locker holds its place through its whole
	// window (Kubernetes' minReadySeconds, Nomad's min_healthy_time).
	MonitorAll MonitorHolds = "all"
)

// Duration is a time.Duration that reads and writes text as a Go duration
// string ("1.5s", "10s"): the one duration convention of the API, the
// config and the job record. A bare JSON number is refused (it used to
// mean nanoseconds: "stop_timeout": 30 was 30 ns) with a
// *json.UnmarshalTypeError, to which the decoder adds the field's name.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalText writes the duration as "10s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads a duration like "10s" (TOML, flags).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. \"30s\", \"1m30s\")", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a JSON string ("1.5s").
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a JSON string like "1.5s"; a number is refused.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '"' {
		return &json.UnmarshalTypeError{Value: "number " + string(b), Type: durationType}
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	return d.UnmarshalText([]byte(s))
}

var durationType = reflect.TypeFor[Duration]()

// policyJSON is Policy on the wire: one name per knob, durations as
// strings.
type policyJSON struct {
	MaxUnavailable  int          `json:"max_unavailable"`
	MaxStarting     int          `json:"max_starting"`
	Pacing          Pacing       `json:"pacing"`
	Pace            PaceTargets  `json:"pace"`
	StopParallel    int          `json:"stop_parallel"`
	StopTimeout     Duration     `json:"stop_timeout"`
	Deadline        Duration     `json:"deadline"`
	Delay           Duration     `json:"delay"`
	Health          string       `json:"health"`
	Monitor         Duration     `json:"monitor"`
	MonitorHolds    MonitorHolds `json:"monitor_holds"`
	Interval        Duration     `json:"interval"`
	Canary          int          `json:"canary"`
	Soak            Duration     `json:"soak"`
	MaxFailureRatio float64      `json:"max_failure_ratio"`
	FailureAction   Action       `json:"failure_action"`
	ReleaseWatch    Duration     `json:"release_watch"`
}

func (p Policy) wire() policyJSON {
	return policyJSON{p.MaxUnavailable, p.MaxStarting, p.Pacing, p.Pace, p.StopParallel, Duration(p.StopTimeout), Duration(p.Deadline),
		Duration(p.Delay), p.Health, Duration(p.Monitor), p.MonitorHolds, Duration(p.Interval), p.Canary, Duration(p.Soak), p.MaxFailureRatio, p.FailureAction,
		Duration(p.ReleaseWatch)}
}

func (w policyJSON) policy() Policy {
	return Policy{w.MaxUnavailable, w.MaxStarting, w.Pacing, w.Pace, w.StopParallel, w.StopTimeout.D(), w.Deadline.D(), w.Delay.D(),
		w.Health, w.Monitor.D(), w.MonitorHolds, w.Interval.D(), w.Canary, w.Soak.D(), w.MaxFailureRatio, w.FailureAction, w.ReleaseWatch.D()}
}

// MarshalJSON writes the policy under its one set of names.
func (p Policy) MarshalJSON() ([]byte, error) { return json.Marshal(p.wire()) }

// UnmarshalJSON reads a policy over p's values (a knob left out keeps
// its value), refusing unknown knobs. Plans journaled before durations
// were strings (nanoseconds as numbers) still read.
func (p *Policy) UnmarshalJSON(b []byte) error {
	w := p.wire()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(&w)
	if err == nil {
		*p = w.policy()
		return nil
	}
	var legacy struct {
		MaxUnavailable  int           `json:"max_unavailable"`
		MaxStarting     int           `json:"max_starting"`
		Pacing          Pacing        `json:"pacing"`
		Pace            PaceTargets   `json:"pace"`
		StopParallel    int           `json:"stop_parallel"`
		StopTimeout     time.Duration `json:"stop_timeout"`
		Deadline        time.Duration `json:"deadline"`
		Delay           time.Duration `json:"delay"`
		Monitor         time.Duration `json:"monitor"`
		Interval        time.Duration `json:"interval"`
		Canary          int           `json:"canary"`
		Soak            time.Duration `json:"soak"`
		MaxFailureRatio float64       `json:"max_failure_ratio"`
		FailureAction   Action        `json:"failure_action"`
	}
	// Only a whole journaled policy (K and a stop timeout in nanoseconds)
	// reads the old way; a request's knob given as a number is an error.
	var keys map[string]json.RawMessage
	if json.Unmarshal(b, &keys) != nil || keys["max_unavailable"] == nil || len(keys["stop_timeout"]) == 0 || keys["stop_timeout"][0] == '"' ||
		json.Unmarshal(b, &legacy) != nil {
		return err
	}
	*p = Policy{MaxUnavailable: legacy.MaxUnavailable, MaxStarting: legacy.MaxStarting, Pacing: legacy.Pacing, Pace: legacy.Pace,
		StopParallel: legacy.StopParallel, StopTimeout: legacy.StopTimeout, Deadline: legacy.Deadline, Delay: legacy.Delay,
		Monitor: legacy.Monitor, Interval: legacy.Interval, Canary: legacy.Canary, Soak: legacy.Soak,
		MaxFailureRatio: legacy.MaxFailureRatio, FailureAction: legacy.FailureAction}
	return nil
}

// Knobs are the policy's names, as the API, the config and (with dashes)
// the CLI's flags spell them.
func Knobs() []string {
	t := reflect.TypeFor[policyJSON]()
	out := make([]string, t.NumField())
	for i := range out {
		out[i], _, _ = strings.Cut(t.Field(i).Tag.Get("json"), ",")
	}
	sort.Strings(out)
	return out
}

// Deprecated are the old names of knobs, each with its one name now: they
// still work in the config and the API, and say so.
var Deprecated = map[string]string{
	"window": "max_unavailable",
}

// Patch sets some knobs of a policy by name (a request's "policy" object,
// the CLI's flags, a config section): the values are what JSON holds
// (numbers, strings such as "10s"). Knobs left out keep their values.
type Patch map[string]any

// Apply returns p with patch's knobs set, validated. An unknown knob or a
// bad value is an error naming it. Old names (Deprecated) are accepted;
// the names used are returned so that the caller can say so.
func (p Policy) Apply(patch Patch) (Policy, []string, error) {
	if len(patch) == 0 {
		return p, nil, p.Validate()
	}
	var old []string
	clean := make(map[string]any, len(patch))
	for k, v := range patch {
		if f, ok := v.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
			return p, old, fmt.Errorf("%s must be a finite number, got %v", k, f)
		}
		if str, ok := v.(string); ok && str == "" && (k == "pacing" || k == "health" || k == "failure_action" || k == "monitor_holds") {
			return p, old, fmt.Errorf("%s is empty: give a value (health: none, http://..., tcp:... or exec:...) or leave it out", k)
		}
		if now, ok := Deprecated[k]; ok {
			old = append(old, k)
			if _, both := patch[now]; both {
				return p, old, fmt.Errorf("%s and its old name %s are both set", now, k)
			}
			k = now
		}
		clean[k] = v
	}
	sort.Strings(old)
	b, err := json.Marshal(clean)
	if err != nil {
		return p, old, fmt.Errorf("policy: %w", err)
	}
	out := p
	if err := json.Unmarshal(b, &out); err != nil {
		// Name the knob: a duration's own error does not carry it.
		for k, v := range clean {
			one, _ := json.Marshal(map[string]any{k: v})
			probe := p
			if kerr := json.Unmarshal(one, &probe); kerr != nil {
				if strings.HasPrefix(kerr.Error(), k) || strings.Contains(kerr.Error(), "unknown policy knob") || strings.Contains(kerr.Error(), "."+k) {
					return p, old, asOld(knobError(kerr), old)
				}
				return p, old, asOld(fmt.Errorf("%s: %w", k, knobError(kerr)), old)
			}
		}
		return p, old, asOld(knobError(err), old)
	}
	return out, old, asOld(out.Validate(), old)
}

// asOld adds the old names used to err, so that the message names what
// the operator wrote.
func asOld(err error, old []string) error {
	if err == nil || len(old) == 0 {
		return err
	}
	return fmt.Errorf("%w (given under the old name %s)", err, strings.Join(old, ", "))
}

// knobError rewrites encoding/json's errors in the policy's words.
func knobError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Type == durationType {
			return fmt.Errorf("%s must be a duration string like \"30s\", got %s", te.Field, te.Value)
		}
		return fmt.Errorf("%s: wrong type (%s)", te.Field, te.Value)
	}
	msg := err.Error()
	if i := strings.Index(msg, "unknown field "); i >= 0 {
		return fmt.Errorf("unknown policy knob %s (known: %s)", strings.Trim(msg[i+len("unknown field "):], `"`), strings.Join(Knobs(), ", "))
	}
	return errors.New(strings.TrimPrefix(msg, "json: "))
}
