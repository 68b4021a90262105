package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"lxcfleet/agent"
	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
)

// knob is one knob of rollout.Policy as a flag: its flag is its JSON name
// with dashes (--max-unavailable is max_unavailable in the API and the
// config's [defaults]), the one name everywhere.
type knob struct {
	key   string // rollout.Policy's JSON name
	kind  string // int, duration, float, string
	short string // one-letter shorthand, where the command keeps one
	help  string
}

// knobs are the policy's flags, with their help: the README's knob table
// says the same (TestOneNamePerKnob).
var knobs = []knob{
	{"max_unavailable", "int", "", "K, the most lockers down because of the job at once (Kubernetes' maxUnavailable; 1 by default with held sockets); each counts until it passed the monitor window, or (monitor_holds until_proven, once the release is proven) until its first healthy check, and again if it fails"},
	{"max_starting", "int", "", "W ≤ K, the most lockers starting at once; with adaptive pacing W's first value (unset: 1 while lockers serve, K offline) (offline and start-all: K is all lockers, W this, even above max_unavailable; 4 by default with held sockets)"},
	{"pacing", "string", "", "adaptive (W between 1 and K doubles per window of healthy starts, holds where healthy starts per second stop rising, halves on failed starts, memory or IO pressure and starts past half the deadline) or fixed (W = max starting, or K)"},
	{"stop_parallel", "int", "", "most lockers stopping at once in stop-all (an update stops each locker just before its own start, so W bounds its stops)"},
	{"stop_timeout", "duration", "", "grace period after the halt signal before a locker is killed"},
	{"deadline", "duration", "", "start-to-healthy limit per locker (Nomad's healthy_deadline)"},
	{"delay", "duration", "", "wait between two launches (lxc.start.delay's role)"},
	{"health", "string", "", "health check: none, http://127.0.0.1:{port}/healthz, tcp:HOST:PORT or exec:COMMAND"},
	{"monitor", "duration", "", "monitor window: how long a locker must stay healthy after its first healthy check to count as moved (Swarm's monitor)"},
	{"monitor_holds", "string", "", "which lockers hold their place in K through their monitor window: until_proven (those of a release not yet proven; after that a healthy locker frees its place and its window goes on in the background, its failures still counted, as Swarm's monitor) or all (every locker, as Kubernetes' minReadySeconds)"},
	{"interval", "duration", "", "time between two checks in the monitor window and the soak (a window in the background: every monitor ÷ 5, between interval and 10 s)"},
	{"canary", "int", "", "canary lockers moved first, alone, then held healthy for the soak before the rest"},
	{"soak", "duration", "", "how long the canaries must stay healthy before the rest moves"},
	{"max_failure_ratio", "float", "", "failure ratio (0..1) over the plan and over the last K lockers that trips the failure action (Swarm's max_failure_ratio)"},
	{"failure_action", "string", "", "pause or rollback, when the failure policy trips (Swarm's failure_action)"},
	{"release_watch", "duration", "", "after an update, how long the lockers on its release are still watched: more than the failure ratio of them (and at least two) crashed or unhealthy trips the failure action; 0 watches not"},
}

// flagName is a knob's flag.
func flagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// alias is an old flag name that still works and says it is deprecated.
type alias struct{ old, short, key string }

// knobFlags registers some knobs as flags on a command and turns the
// flags given into a rollout.Patch.
type knobFlags struct {
	keys    []string
	aliases []alias
	shorts  map[string]string
	ints    map[string]*int
	floats  map[string]*float64
	strs    map[string]*string
	durs    map[string]*time.Duration
}

// newKnobFlags is the flags for keys (all knobs when none), with old
// names and shorthands.
func newKnobFlags(keys []string, shorts map[string]string, aliases ...alias) *knobFlags {
	if len(keys) == 0 {
		for _, k := range knobs {
			keys = append(keys, k.key)
		}
	}
	return &knobFlags{keys: keys, aliases: aliases, shorts: shorts, ints: map[string]*int{}, floats: map[string]*float64{}, strs: map[string]*string{}, durs: map[string]*time.Duration{}}
}

func knobOf(key string) knob {
	for _, k := range knobs {
		if k.key == key {
			return k
		}
	}
	panic("lxcfleet: no knob " + key)
}

func (p *knobFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	for _, key := range p.keys {
		p.define(f, flagName(key), p.shorts[key], knobOf(key))
	}
	for _, a := range p.aliases {
		p.define(f, a.old, a.short, knobOf(a.key))
		_ = f.MarkDeprecated(a.old, "use --"+flagName(a.key))
	}
}

func (p *knobFlags) define(f *pflag.FlagSet, name, short string, k knob) {
	help := k.help + " (the config's defaults." + k.key + " when set, else the built-in value)"
	switch k.kind {
	case "int":
		p.ints[name] = f.IntP(name, short, 0, help)
	case "float":
		p.floats[name] = f.Float64P(name, short, 0, help)
	case "duration":
		p.durs[name] = f.DurationP(name, short, 0, help)
	default:
		p.strs[name] = f.StringP(name, short, "", help)
	}
	// Help and man pages show the built-in value (rollout.DefaultPolicy),
	// not the flag's zero; only a flag given changes the request.
	if v, ok := builtin()[k.key]; ok {
		f.Lookup(name).DefValue = v
	}
}

// builtin is rollout.DefaultPolicy's knobs as text ("10s", "4", "none").
func builtin() map[string]string {
	b, _ := json.Marshal(rollout.DefaultPolicy())
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	out := map[string]string{}
	for k, v := range m {
		switch v := v.(type) {
		case string:
			out[k] = v
		case float64:
			out[k] = strconv.FormatFloat(v, 'g', -1, 64)
		}
	}
	return out
}

// value is the flag's value as the policy's JSON holds it.
func (p *knobFlags) value(name string) any {
	switch {
	case p.ints[name] != nil:
		return *p.ints[name]
	case p.floats[name] != nil:
		return *p.floats[name]
	case p.durs[name] != nil:
		return rollout.Duration(*p.durs[name])
	}
	return *p.strs[name]
}

// fill puts the knobs given into req.Policy and checks them with the one
// check of a policy (rollout.Policy.Apply over the built-in defaults): a
// bad value is bad input (exit 2) naming the flag.
func (p *knobFlags) fill(cmd *cobra.Command, req *agent.Request) error {
	f := cmd.Flags()
	patch := rollout.Patch{}
	set := func(name, key string) error {
		if _, dup := patch[key]; dup {
			return usagef("--%s is given twice (under an old name too)", flagName(key))
		}
		v := p.value(name)
		if _, _, err := rollout.DefaultPolicy().Apply(rollout.Patch{key: v}); err != nil {
			return usagef("--%s: %v", name, err)
		}
		if key == "health" {
			if _, err := lxcctl.ParseHealthCheck(v.(string)); err != nil {
				return usageError{fmt.Errorf("--%s: %w", name, err)}
			}
		}
		patch[key] = v
		return nil
	}
	for _, key := range p.keys {
		if f.Changed(flagName(key)) {
			if err := set(flagName(key), key); err != nil {
				return err
			}
		}
	}
	for _, a := range p.aliases {
		if f.Changed(a.old) {
			if err := set(a.old, a.key); err != nil {
				return err
			}
		}
	}
	if len(patch) > 0 {
		req.Policy = patch
	}
	return nil
}
