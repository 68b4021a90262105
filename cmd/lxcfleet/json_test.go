package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
)

// TestJSONConvention: a job command's --json is JSON lines, each with a
// "type"; times are RFC 3339 and durations seconds as numbers (no
// nanosecond counts); the last line is the result.
func TestJSONConvention(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	names := testfleet.Names(f.Add(2, testfleet.Normal))
	if _, err := lockerverbs.StartAll(context.Background(), f.Host, names, lxcctl.StartOptions{Window: 2, Deadline: 20 * time.Second, Health: testfleet.HealthCheck()}); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(cfg, []byte("[listen]\nsocket = \""+filepath.Join(t.TempDir(), "none.sock")+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"stop-all", "--json", "--config", cfg, "--lxcpath", f.Path},
		{"start-all", "--json", "--config", cfg, "--lxcpath", f.Path, "--health", "http://127.0.0.1:{port}/healthz"},
	} {
		out, stderr, code := runCLI(t, append(args, names...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, stderr)
		}
		var lines []map[string]any
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("%s: a line is not one JSON object: %q", args[0], sc.Text())
			}
			if _, ok := m["type"].(string); !ok {
				t.Errorf("%s: line without a type: %q", args[0], sc.Text())
			}
			if _, ok := m["duration"]; ok {
				t.Errorf("%s: a duration field (nanoseconds): %q", args[0], sc.Text())
			}
			if ts, ok := m["time"].(string); ok {
				if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
					t.Errorf("%s: time %q is not RFC 3339", args[0], ts)
				}
			}
			lines = append(lines, m)
		}
		last := lines[len(lines)-1]
		res, _ := last["result"].(map[string]any)
		if last["type"] != "result" || res == nil {
			t.Fatalf("%s: last line %v, want the result", args[0], last)
		}
		if _, ok := res["seconds"].(float64); !ok {
			t.Errorf("%s: result seconds %v, want a number", args[0], res["seconds"])
		}
		results, _ := res["results"].([]any)
		if len(results) != 2 {
			t.Fatalf("%s: results %v, want the 2 lockers", args[0], res["results"])
		}
		for _, r := range results {
			m := r.(map[string]any)
			if _, ok := m["seconds"].(float64); !ok || m["duration"] != nil {
				t.Errorf("%s: result %v, want seconds as a number", args[0], m)
			}
		}
	}
}
