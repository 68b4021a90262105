package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"lxcfleet/internal/testfleet"
)

func TestMain(m *testing.M) { testfleet.Main(m) }

// lxcfleetBin returns the real binary (testfleet.Binary: make test's, or
// one built once per test run).
func lxcfleetBin(t *testing.T) string { return testfleet.Binary(t) }

// runCLI runs the binary and returns stdout, stderr and the exit code.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(lxcfleetBin(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running lxcfleet %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func TestBadInputExitsTwo(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing lxcpath", []string{"status", "--lxcpath", "/nonexistent/x"}, "/nonexistent/x"},
		{"unknown container", []string{"stop-all", "--lxcpath", dir, "ghost-1"}, "ghost-1"},
		{"invalid name", []string{"start-all", "--lxcpath", dir, "../etc"}, "invalid container name"},
		{"zero parallel", []string{"stop-all", "--lxcpath", dir, "--parallel", "-1"}, "--parallel"},
		{"negative parallel", []string{"start-all", "--lxcpath", dir, "-p", "-3"}, "--max-starting"},
		{"zero timeout", []string{"stop-all", "--lxcpath", dir, "--timeout", "0s"}, "--timeout"},
		{"negative timeout", []string{"start-all", "--lxcpath", dir, "--timeout", "-1s"}, "--timeout"},
		{"bad duration", []string{"stop-all", "--lxcpath", dir, "--timeout", "soon"}, "soon"},
		{"negative delay", []string{"start-all", "--lxcpath", dir, "--delay", "-1s"}, "--delay"},
		{"bad health", []string{"start-all", "--lxcpath", dir, "--health", "ftp://x"}, "health check"},
		{"unknown flag", []string{"stop-all", "--bogus"}, "--bogus"},
		{"bad log level", []string{"status", "--lxcpath", dir, "--log-level", "loud"}, "log-level"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, tc.args...)
			if code != 2 {
				t.Errorf("exit code: got %d, want 2 (stderr %q)", code, stderr)
			}
			if !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "panic") {
				t.Errorf("stderr %q: want a clear message containing %q", stderr, tc.want)
			}
		})
	}
}

func TestStopStartAllCLI(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	good := f.Add(3, testfleet.Normal)
	broken := f.Add(1, testfleet.Broken)[0]
	stubborn := f.Add(1, testfleet.Stubborn)[0]
	health := "http://127.0.0.1:{port}/healthz"

	// start-all with a broken locker: exit 1, the summary names it.
	out, stderr, code := runCLI(t, "start-all", "--lxcpath", f.Path, "-p", "2", "-t", "3s", "--health", health,
		good[0].Name, good[1].Name, good[2].Name, broken.Name, stubborn.Name)
	if code != 1 {
		t.Fatalf("start-all exit code: got %d, want 1\n%s%s", code, out, stderr)
	}
	if !strings.Contains(out, "4 healthy") || !strings.Contains(out, "FAILED "+broken.Name+": unhealthy") {
		t.Errorf("start-all summary:\n%s\nwant 4 healthy and %s named as unhealthy", out, broken.Name)
	}

	// status --json agrees.
	out, _, code = runCLI(t, "status", "--lxcpath", f.Path, "--json")
	if code != 0 {
		t.Fatalf("status exit code %d", code)
	}
	var st struct {
		Containers []struct{ Name, State string }
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	running := 0
	for _, c := range st.Containers {
		if c.State == "RUNNING" {
			running++
		}
	}
	if running != 5 {
		t.Errorf("status: got %d running, want 5:\n%s", running, out)
	}

	// stop-all --json: event lines then one result; the stubborn one killed.
	out, stderr, code = runCLI(t, "stop-all", "--lxcpath", f.Path, "--json", "-t", "1s")
	if code != 0 {
		t.Fatalf("stop-all exit code %d\n%s%s", code, out, stderr)
	}
	var result struct {
		Total          int      `json:"total"`
		Clean          int      `json:"clean"`
		Killed         []string `json:"killed"`
		AlreadyStopped int      `json:"already_stopped"`
	}
	events := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var line struct {
			Type   string          `json:"type"`
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("stop-all --json line %q: %v", sc.Text(), err)
		}
		switch line.Type {
		case "event":
			events++
		case "result":
			if err := json.Unmarshal(line.Result, &result); err != nil {
				t.Fatal(err)
			}
		}
	}
	if result.Total != 6 || result.Clean != 4 || len(result.Killed) != 1 || result.Killed[0] != stubborn.Name || result.AlreadyStopped != 1 {
		t.Errorf("stop-all result %+v: want 6 total (with the base), 4 clean, %s killed, 1 already stopped", result, stubborn.Name)
	}
	if events < 12 {
		t.Errorf("stop-all --json printed %d events; want stopping+stopped per container", events)
	}
	for name, state := range f.LXCLs(t) {
		if state != "STOPPED" {
			t.Errorf("lxc-ls: %s is %s after stop-all", name, state)
		}
	}
}
