package agent

import (
	"fmt"
	"strings"
	"time"

	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
)

// Request asks the agent for one operation. Zero fields take the agent's
// configured defaults (see Defaults).
type Request struct {
	Kind    JobKind  `json:"kind" toml:"kind"`
	Names   []string `json:"names,omitempty" toml:"names"` // none: every locker (of Group)
	Group   string   `json:"group,omitempty" toml:"group"`
	Trigger string   `json:"trigger,omitempty" toml:"trigger"`

	// Stopping.
	StopParallel int      `json:"stop_parallel,omitempty" toml:"stop_parallel"` // P
	StopTimeout  Duration `json:"stop_timeout,omitempty" toml:"stop_timeout"`   // grace before kill

	// Starting.
	Window   int      `json:"window,omitempty" toml:"window"`     // K: most starting at once
	Deadline Duration `json:"deadline,omitempty" toml:"deadline"` // start to healthy
	Delay    Duration `json:"delay,omitempty" toml:"delay"`       // between launches
	Health   string   `json:"health,omitempty" toml:"health"`     // see lxcctl.ParseHealthCheck
	// Monitor is how long each locker must stay healthy after its first
	// healthy check to count as moved (Swarm's monitor, Nomad's
	// min_healthy_time); it holds its place in the window until then.
	Monitor Duration `json:"monitor,omitempty" toml:"monitor"`
	// Pacing is "adaptive" (W, the most starting at once, adapts between
	// 1 and Window, or all lockers for offline updates and start-all, see
	// rollout.Pacer) or "fixed" (W = Window).
	Pacing string `json:"pacing,omitempty" toml:"pacing"`

	// update-code and rollback.
	Target          string   `json:"target,omitempty" toml:"target"`     // branch, tag or commit
	Strategy        string   `json:"strategy,omitempty" toml:"strategy"` // rolling or offline
	MaxFailureRatio *float64 `json:"max_failure_ratio,omitempty" toml:"max_failure_ratio"`
	FailureAction   string   `json:"failure_action,omitempty" toml:"failure_action"` // pause or rollback
	Canary          *int     `json:"canary,omitempty" toml:"canary"`                 // lockers moved first
	Soak            Duration `json:"soak,omitempty" toml:"soak"`                     // hold after the canary
	Force           bool     `json:"force,omitempty" toml:"force"`                   // allow a release marked bad
	To              string   `json:"to,omitempty" toml:"to"`                         // rollback: build or release name
}

// The update strategies and failure actions.
const (
	StrategyRolling = "rolling"
	StrategyOffline = "offline"
	ActionPause     = "pause"
	ActionRollback  = "rollback"
	PacingAdaptive  = string(rollout.Adaptive)
	PacingFixed     = string(rollout.Fixed)
)

// Defaults are the values a Request's zero fields take.
type Defaults struct {
	StopParallel    int           `json:"stop_parallel"`
	StopTimeout     time.Duration `json:"stop_timeout"`
	Window          int           `json:"window"`
	Deadline        time.Duration `json:"deadline"`
	Delay           time.Duration `json:"delay"`
	Health          string        `json:"health"`
	Monitor         time.Duration `json:"monitor"`
	Pacing          string        `json:"pacing"`
	Target          string        `json:"target"`
	Strategy        string        `json:"strategy"`
	MaxFailureRatio float64       `json:"max_failure_ratio"`
	FailureAction   string        `json:"failure_action"`
	Canary          int           `json:"canary"`
	Soak            time.Duration `json:"soak"`
	// DowntimePage holds the ports of lockers an offline update stopped
	// with the maintenance page (see holdPorts).
	DowntimePage bool `json:"downtime_page"`
}

// DefaultDefaults are lxcfleet's built-in defaults.
func DefaultDefaults() Defaults {
	return Defaults{
		StopParallel:    8,
		StopTimeout:     10 * time.Second,
		Window:          4,
		Deadline:        60 * time.Second,
		Health:          "none",
		Monitor:         10 * time.Second,
		Pacing:          PacingAdaptive,
		Target:          "main",
		Strategy:        StrategyRolling,
		MaxFailureRatio: 0.1,
		FailureAction:   ActionRollback,
		Canary:          0,
	}
}

// InvalidError is bad input in a request (a 400 from the API, exit 2 from
// the CLI).
type InvalidError struct{ Msg string }

func (e InvalidError) Error() string { return e.Msg }

func invalidf(format string, a ...any) error { return InvalidError{fmt.Sprintf(format, a...)} }

// withDefaults fills zero fields from d and validates the request.
func (r Request) withDefaults(d Defaults) (Request, error) {
	switch r.Kind {
	case KindStopAll, KindStartAll, KindRestart, KindUpdate, KindRollback, KindCheckUpdate, KindRecover, KindBuild:
	case "":
		return r, invalidf("missing job kind")
	default:
		return r, invalidf("unknown job kind %q", r.Kind)
	}
	for _, n := range r.Names {
		if err := lxcctl.ValidName(n); err != nil {
			return r, InvalidError{err.Error()}
		}
	}
	if r.Group != "" {
		if err := lxcctl.ValidName(r.Group); err != nil {
			return r, invalidf("invalid group %q", r.Group)
		}
	}
	if r.StopParallel == 0 {
		r.StopParallel = d.StopParallel
	}
	if r.StopTimeout == 0 {
		r.StopTimeout = Duration(d.StopTimeout)
	}
	if r.Window == 0 {
		r.Window = d.Window
	}
	if r.Deadline == 0 {
		r.Deadline = Duration(d.Deadline)
	}
	if r.Delay == 0 {
		r.Delay = Duration(d.Delay)
	}
	if r.Health == "" {
		r.Health = d.Health
	}
	if r.Monitor == 0 {
		r.Monitor = Duration(d.Monitor)
	}
	if r.Pacing == "" {
		r.Pacing = d.Pacing
	}
	if r.Target == "" {
		r.Target = d.Target
	}
	if r.Strategy == "" {
		r.Strategy = d.Strategy
	}
	if r.MaxFailureRatio == nil {
		v := d.MaxFailureRatio
		r.MaxFailureRatio = &v
	}
	if r.FailureAction == "" {
		r.FailureAction = d.FailureAction
	}
	if r.Canary == nil {
		v := d.Canary
		r.Canary = &v
	}
	if r.Soak == 0 {
		r.Soak = Duration(d.Soak)
	}
	switch {
	case r.StopParallel < 0:
		return r, invalidf("stop_parallel must be positive, got %d", r.StopParallel)
	case r.StopTimeout < 0:
		return r, invalidf("stop_timeout must be positive, got %v", r.StopTimeout.D())
	case r.Window < 0:
		return r, invalidf("window must be positive, got %d", r.Window)
	case r.Deadline < 0:
		return r, invalidf("deadline must be positive, got %v", r.Deadline.D())
	case r.Delay < 0:
		return r, invalidf("delay must not be negative, got %v", r.Delay.D())
	case r.Monitor < 0:
		return r, invalidf("monitor must not be negative, got %v", r.Monitor.D())
	case r.Soak < 0:
		return r, invalidf("soak must not be negative, got %v", r.Soak.D())
	case *r.MaxFailureRatio < 0 || *r.MaxFailureRatio > 1:
		return r, invalidf("max_failure_ratio must be between 0 and 1, got %v", *r.MaxFailureRatio)
	case *r.Canary < 0:
		return r, invalidf("canary must not be negative, got %d", *r.Canary)
	}
	if r.StopParallel == 0 || r.Window == 0 || r.StopTimeout == 0 || r.Deadline == 0 {
		return r, invalidf("stop_parallel, window, stop_timeout and deadline must be positive")
	}
	if _, err := lxcctl.ParseHealthCheck(r.Health); err != nil {
		return r, InvalidError{err.Error()}
	}
	pacing, err := rollout.ParsePacing(r.Pacing)
	if err != nil {
		return r, InvalidError{err.Error()}
	}
	r.Pacing = string(pacing)
	switch r.Strategy {
	case StrategyRolling, StrategyOffline:
	default:
		return r, invalidf("unknown strategy %q (want rolling or offline)", r.Strategy)
	}
	switch r.FailureAction {
	case ActionPause, ActionRollback:
	default:
		return r, invalidf("unknown failure_action %q (want pause or rollback)", r.FailureAction)
	}
	if r.Target == "" || len(r.Target) > 256 || strings.ContainsAny(r.Target, " \t\r\n\x00\\:~^?*[") || strings.HasPrefix(r.Target, "-") || strings.Contains(r.Target, "..") {
		return r, invalidf("invalid target %q: want a branch, tag or commit", r.Target)
	}
	if r.To != "" {
		if err := lxcctl.ValidName(r.To); err != nil {
			return r, invalidf("invalid rollback target %q: want a build number or release name", r.To)
		}
	}
	if len(r.Trigger) > 200 {
		return r, invalidf("trigger longer than 200 bytes")
	}
	return r, nil
}

// healthCheck is the request's parsed health check (validated in
// withDefaults).
func (r Request) healthCheck() lxcctl.HealthCheck {
	hc, _ := lxcctl.ParseHealthCheck(r.Health)
	return hc
}
