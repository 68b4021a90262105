package main

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"lxcfleet/agent"
	"lxcfleet/rollout"
)

// flagValues are a valid non-default value per knob.
var flagValues = map[string]string{
	"max_unavailable": "7", "max_starting": "3", "pacing": "fixed", "stop_parallel": "5", "stop_timeout": "3s",
	"deadline": "42s", "delay": "150ms", "health": "tcp:127.0.0.1:{port}", "monitor": "2s", "monitor_holds": "all", "interval": "250ms",
	"canary": "2", "soak": "9s", "max_failure_ratio": "0.5", "failure_action": "pause", "release_watch": "3m0s",
}

// TestKnobFlagsReachThePolicy: each knob's flag, and nothing else, changes
// the policy the agent resolves from the request (the glue from the flag
// to rollout.Policy: --soak or --max-failure-ratio dropped on the way
// fails here).
func TestKnobFlagsReachThePolicy(t *testing.T) {
	base := agent.DefaultDefaults()
	for _, k := range knobs {
		t.Run(k.key, func(t *testing.T) {
			kf := newKnobFlags(nil, nil, alias{old: "window", key: "max_unavailable"})
			cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
			kf.register(cmd)
			if err := cmd.ParseFlags([]string{"--" + flagName(k.key) + "=" + flagValues[k.key]}); err != nil {
				t.Fatal(err)
			}
			req := agent.Request{Kind: agent.KindUpdate}
			if err := kf.fill(cmd, &req); err != nil {
				t.Fatalf("fill: %v", err)
			}
			got, err := agent.ResolvePolicy(req, base)
			if err != nil {
				t.Fatalf("resolving: %v", err)
			}
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(base.Policy)
			var gm, wm map[string]any
			_ = json.Unmarshal(gb, &gm)
			_ = json.Unmarshal(wb, &wm)
			for key := range gm {
				if key == k.key {
					if gm[key] == wm[key] {
						t.Errorf("--%s=%s left %s at its default %v", flagName(k.key), flagValues[k.key], key, wm[key])
					}
				} else if !jsonEqual(gm[key], wm[key]) {
					t.Errorf("--%s changed %s too: got %v, want %v", flagName(k.key), key, gm[key], wm[key])
				}
			}
			if _, ok := gm[k.key]; !ok {
				t.Errorf("%s missing from the policy's JSON %s", k.key, gb)
			}
		})
	}
}

func jsonEqual(a, b any) bool {
	ab, _ := json.Marshal(a)
	bb, _ := json.Marshal(b)
	return string(ab) == string(bb)
}

// TestDeprecatedFlagsStillWork: --window is max unavailable and says so.
func TestDeprecatedFlagsStillWork(t *testing.T) {
	kf := newKnobFlags(nil, nil, alias{old: "window", key: "max_unavailable"})
	cmd := &cobra.Command{Use: "x"}
	kf.register(cmd)
	if err := cmd.ParseFlags([]string{"--window=6"}); err != nil {
		t.Fatal(err)
	}
	req := agent.Request{Kind: agent.KindUpdate}
	if err := kf.fill(cmd, &req); err != nil {
		t.Fatal(err)
	}
	if p, err := agent.ResolvePolicy(req, agent.DefaultDefaults()); err != nil || p.MaxUnavailable != 6 {
		t.Errorf("--window 6: got K %d (%v), want 6", p.MaxUnavailable, err)
	}
	if f := cmd.Flags().Lookup("window"); f == nil || f.Deprecated == "" || !strings.Contains(f.Deprecated, "--max-unavailable") {
		t.Errorf("--window is not marked deprecated in favour of --max-unavailable: %+v", f)
	}
}

// TestOneNamePerKnob: the CLI's knobs are rollout.Policy's knobs (pace,
// the pacer's targets, is config-only), and the README's knob table
// lists each with its flag, its key and the help the CLI prints.
func TestOneNamePerKnob(t *testing.T) {
	var cli []string
	for _, k := range knobs {
		cli = append(cli, k.key)
	}
	var pol []string
	for _, k := range rollout.Knobs() {
		if k != "pace" {
			pol = append(pol, k)
		}
	}
	slices.Sort(cli)
	if !slices.Equal(cli, pol) {
		t.Errorf("CLI knobs %v, policy knobs %v", cli, pol)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range knobs {
		row := "| `" + k.key + "` | `--" + flagName(k.key) + "` | " + k.help + " |"
		if !strings.Contains(string(readme), row) {
			t.Errorf("README lacks the knob row %q", row)
		}
	}
}
