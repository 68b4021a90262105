package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
)

// Request asks the agent for one operation. Its Policy sets knobs of the
// agent's default policy by their one name (rollout.Policy: max_unavailable,
// max_starting, monitor, canary, soak, max_failure_ratio, ...); knobs left
// out take the config's [defaults] (see Defaults).
type Request struct {
	Kind    JobKind  `json:"kind" toml:"kind"`
	Names   []string `json:"names,omitempty" toml:"names"` // none: every locker (of Group)
	Group   string   `json:"group,omitempty" toml:"group"`
	Trigger string   `json:"trigger,omitempty" toml:"trigger"`

	// Policy overrides knobs of the default policy. In the job record it
	// is empty: the resolved policy is the plan's (Job.Plan.Policy).
	Policy rollout.Patch `json:"policy,omitempty" toml:"policy"`

	// update-code and rollback.
	Target   string `json:"target,omitempty" toml:"target"`     // branch, tag or commit
	Strategy string `json:"strategy,omitempty" toml:"strategy"` // rolling or offline
	Force    bool   `json:"force,omitempty" toml:"force"`       // allow a release marked bad
	To       string `json:"to,omitempty" toml:"to"`             // rollback: build or release name

	// Boot (start-all) starts only the lockers whose desired state is
	// running: the host's boot start (see hostpower.go).
	Boot bool `json:"boot,omitempty" toml:"boot"`
	// HostShutdown (stop-all, every locker) stops the lockers for a host
	// shutdown: their desired state is kept, and supervision holds still
	// until the boot.
	HostShutdown bool `json:"host_shutdown,omitempty" toml:"host_shutdown"`

	// Fence, when set, is asked before each decision that may begin a
	// locker move (rollout.Env.Fence): a fleet host's hold on its slot. It
	// is not part of the request's JSON.
	Fence func() error `json:"-" toml:"-"`

	// pol is the resolved policy (withDefaults): the defaults with Policy
	// applied.
	pol rollout.Policy
	// deprecated lists the old knob names the request used.
	deprecated []string
}

// requestKeys are the top-level keys of a request that are not knobs.
var requestKeys = map[string]bool{"kind": true, "names": true, "group": true, "trigger": true, "policy": true,
	"target": true, "strategy": true, "force": true, "to": true, "boot": true, "host_shutdown": true}

// UnmarshalJSON reads a request. A knob at the top level (the API's shape
// before the one policy: {"window": 2, "monitor": "3s"}) still works and
// moves into Policy; the job's log says it is deprecated. Unknown keys are
// refused, naming them.
func (r *Request) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	knobs := map[string]bool{}
	for _, k := range rollout.Knobs() {
		knobs[k] = true
	}
	flat := map[string]json.RawMessage{}
	var unknown []string
	for k, v := range m {
		switch {
		case requestKeys[k]:
			flat[k] = v
		case knobs[k] || rollout.Deprecated[k] != "":
			if r.Policy == nil {
				r.Policy = rollout.Patch{}
			}
			var x any
			if err := json.Unmarshal(v, &x); err != nil {
				return err
			}
			r.Policy[k] = x
			r.deprecated = append(r.deprecated, k)
		default:
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("unknown field %q", unknown[0])
	}
	top := r.Policy
	type plain Request
	var p plain
	nb, _ := json.Marshal(flat)
	dec := json.NewDecoder(bytes.NewReader(nb))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return err
	}
	dep := r.deprecated
	*r = Request(p)
	for k, v := range top {
		if r.Policy == nil {
			r.Policy = rollout.Patch{}
		}
		if _, both := r.Policy[k]; both {
			return fmt.Errorf("%s is set twice: in policy and at the top level", k)
		}
		r.Policy[k] = v
	}
	sort.Strings(dep)
	r.deprecated = dep
	return nil
}

// UnmarshalTOML reads a schedule's request as the API reads a JSON one
// ([schedule.request] with a [schedule.request.policy] table; knobs at the
// request's level still work, deprecated).
func (r *Request) UnmarshalTOML(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return r.UnmarshalJSON(b)
}

// The update strategies and failure actions.
const (
	StrategyRolling = "rolling"
	StrategyOffline = "offline"
	ActionPause     = string(rollout.Pause)
	ActionRollback  = string(rollout.Rollback)
	PacingAdaptive  = string(rollout.Adaptive)
	PacingFixed     = string(rollout.Fixed)
)

// Defaults are what a request leaves out takes: the policy's knobs, the
// target and the strategy, and the downtime page.
type Defaults struct {
	Policy   rollout.Policy `json:"policy"`
	Target   string         `json:"target"`
	Strategy string         `json:"strategy"`
	// DowntimePage holds the ports of lockers an offline update stopped
	// with the maintenance page (see holdPorts).
	DowntimePage bool `json:"downtime_page"`
	// ImpliedMaxStarting: Policy.MaxStarting is not the operator's but
	// the held-socket default's (config.HeldMaxUnavailable: K 1, W 4 for
	// offline updates, start-all and wake-ups). A request that sets K
	// (max_unavailable, or its old name window) and not max_starting
	// drops it, so that W follows the request's K as it does without
	// held sockets (--max-unavailable 10 --pacing fixed starts 10).
	ImpliedMaxStarting bool `json:"implied_max_starting,omitempty"`
}

// DefaultDefaults are lxcfleet's built-in defaults: rollout.DefaultPolicy
// (the one table), target main, rolling.
func DefaultDefaults() Defaults {
	return Defaults{Policy: rollout.DefaultPolicy(), Target: "main", Strategy: StrategyRolling}
}

// InvalidError is bad input in a request (a 400 from the API, exit 2 from
// the CLI).
type InvalidError struct{ Msg string }

func (e InvalidError) Error() string { return e.Msg }

func invalidf(format string, a ...any) error { return InvalidError{fmt.Sprintf(format, a...)} }

// withDefaults resolves the request's policy over d (rollout.Policy.Apply,
// the one check of a policy), fills its target and strategy, and validates
// the rest.
func (r Request) withDefaults(d Defaults) (Request, error) {
	switch r.Kind {
	case KindStopAll, KindStartAll, KindRestart, KindUpdate, KindRollback, KindCheckUpdate, KindRecover, KindBuild:
	case "":
		return r, invalidf("missing job kind")
	default:
		return r, invalidf("unknown job kind %q", r.Kind)
	}
	if r.Names != nil && len(r.Names) == 0 {
		// "names": [] is a list left empty by mistake, not "every locker"
		// (that is names left out).
		return r, invalidf("names is empty: name the lockers, or leave names out for every locker (of the group)")
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
	base := d.Policy
	_, w := r.Policy["max_starting"]
	_, k := r.Policy["max_unavailable"]
	_, oldK := r.Policy["window"]
	if d.ImpliedMaxStarting && !w && (k || oldK) {
		base.MaxStarting = 0
	}
	pol, old, err := base.Apply(r.Policy)
	if err != nil {
		return r, InvalidError{"policy: " + err.Error()}
	}
	if _, err := lxcctl.ParseHealthCheck(pol.Health); err != nil {
		return r, InvalidError{"policy: health: " + err.Error()}
	}
	r.pol = pol
	r.deprecated = append(r.deprecated, old...)
	if r.Target == "" {
		r.Target = d.Target
	}
	if r.Strategy == "" {
		r.Strategy = d.Strategy
	}
	switch r.Strategy {
	case StrategyRolling, StrategyOffline:
	default:
		return r, invalidf("unknown strategy %q (want rolling or offline)", r.Strategy)
	}
	if r.Target == "" || len(r.Target) > 256 || strings.ContainsAny(r.Target, " \t\r\n\x00\\:~^?*[") || strings.HasPrefix(r.Target, "-") || strings.Contains(r.Target, "..") {
		return r, invalidf("invalid target %q: want a branch, tag or commit", r.Target)
	}
	if r.To != "" {
		if err := lxcctl.ValidName(r.To); err != nil {
			return r, invalidf("invalid rollback target %q: want a build number or release name", r.To)
		}
	}
	if r.Boot && r.Kind != KindStartAll {
		return r, invalidf("boot is a start-all's (%s given)", r.Kind)
	}
	if r.Boot && (len(r.Names) > 0 || r.Group != "") {
		return r, invalidf("boot starts every locker whose desired state is running (no names, no group)")
	}
	if r.HostShutdown && (r.Kind != KindStopAll || len(r.Names) > 0 || r.Group != "") {
		return r, invalidf("host_shutdown is a stop-all of every locker (no names, no group)")
	}
	if len(r.Trigger) > 200 {
		return r, invalidf("trigger longer than 200 bytes")
	}
	if r.Kind == KindRestart && len(r.Names) == 0 && r.Group == "" {
		return r, invalidf("restart needs names or a group")
	}
	return r, nil
}

// healthOfPolicy parses a policy's health check ("" and invalid: none; a
// policy is validated before it runs).
func healthOfPolicy(p rollout.Policy) lxcctl.HealthCheck {
	hc, _ := lxcctl.ParseHealthCheck(p.Health)
	return hc
}

// ResolvePolicy is the policy a request runs with under d: d's policy
// with the request's knobs applied, validated (the agent's own path).
func ResolvePolicy(req Request, d Defaults) (rollout.Policy, error) {
	if req.Kind == "" {
		req.Kind = KindUpdate
	}
	r, err := req.withDefaults(d)
	return r.pol, err
}
