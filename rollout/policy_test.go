package rollout_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"lxcfleet/rollout"
)

// TestPolicyJSON: one name per knob, durations as strings, a round trip
// keeps every knob, and a plan journaled before durations were strings
// still reads.
func TestPolicyJSON(t *testing.T) {
	p := rollout.DefaultPolicy()
	p.Soak, p.Canary, p.Health = 3*time.Second, 2, "tcp:127.0.0.1:{port}"
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"stop_timeout":"10s"`) || !strings.Contains(string(b), `"soak":"3s"`) {
		t.Errorf("policy JSON %s: want durations as strings", b)
	}
	var q rollout.Policy
	if err := json.Unmarshal(b, &q); err != nil || q != p {
		t.Errorf("round trip: got %+v (%v), want %+v", q, err, p)
	}
	legacy := `{"max_unavailable":2,"stop_timeout":10000000000,"deadline":60000000000,"monitor":1000000000,"max_failure_ratio":0.1,"failure_action":"rollback"}`
	var l rollout.Policy
	if err := json.Unmarshal([]byte(legacy), &l); err != nil || l.MaxUnavailable != 2 || l.Monitor != time.Second || l.StopTimeout != 10*time.Second {
		t.Errorf("legacy plan: got %+v (%v)", l, err)
	}
}

// TestPolicyApply: a patch sets the knobs it names over the defaults, and
// refuses unknown knobs, wrong types and values out of range, naming them;
// old names work and are reported.
func TestPolicyApply(t *testing.T) {
	d := rollout.DefaultPolicy()
	tests := []struct {
		name  string
		patch rollout.Patch
		want  string // error substring; "" = ok
	}{
		{"soak", rollout.Patch{"soak": "2s", "canary": 1}, ""},
		{"old name", rollout.Patch{"window": 3}, ""},
		{"both names", rollout.Patch{"window": 3, "max_unavailable": 2}, "both set"},
		{"unknown", rollout.Patch{"wave_size": 3}, "unknown policy knob wave_size"},
		{"number for a duration", rollout.Patch{"stop_timeout": 30}, `stop_timeout must be a duration string like "30s"`},
		{"bad duration", rollout.Patch{"monitor": "soon"}, "soon"},
		{"ratio", rollout.Patch{"max_failure_ratio": 1.5}, "max_failure_ratio must be between 0 and 1"},
		{"K", rollout.Patch{"max_unavailable": 0}, "max_unavailable (K) must be positive"},
		{"old name named", rollout.Patch{"window": -1}, "old name window"},
		{"action", rollout.Patch{"failure_action": "explode"}, "failure_action"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, old, err := d.Apply(tc.patch)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want ok", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
			if tc.name == "soak" && (got.Soak != 2*time.Second || got.Canary != 1 || got.MaxUnavailable != d.MaxUnavailable) {
				t.Errorf("got %+v", got)
			}
			if tc.name == "old name" && (got.MaxUnavailable != 3 || len(old) != 1) {
				t.Errorf("window 3: got K %d, old names %v", got.MaxUnavailable, old)
			}
		})
	}
}

// TestOutcomeJSON: an outcome's durations are strings on the wire, the
// job record's one convention, and read back.
func TestOutcomeJSON(t *testing.T) {
	o := rollout.Outcome{Name: "l00", Op: rollout.OpReplace, Outcome: rollout.OutMoved, Duration: 1500 * time.Millisecond, Downtime: 250 * time.Millisecond}
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"duration":"1.5s"`) || !strings.Contains(string(b), `"downtime":"250ms"`) || strings.Count(string(b), `"duration"`) != 1 {
		t.Errorf("outcome JSON %s: want each duration once, as a string", b)
	}
	var back rollout.Outcome
	if err := json.Unmarshal(b, &back); err != nil || back != o {
		t.Errorf("round trip: got %+v (%v), want %+v", back, err, o)
	}
}
