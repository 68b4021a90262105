package packaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"lxcfleet/agent"
	"lxcfleet/config"
	"lxcfleet/packaging"
)

// need skips without a tool, and fails in CI (setup-host installs them).
func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %s is missing: run scripts/setup-host", tool)
		}
		t.Skipf("%s not found", tool)
	}
	return p
}

func TestDefaultConfigIsValid(t *testing.T) {
	c, err := config.Load("lxcfleet.toml", true)
	if err != nil {
		t.Fatalf("the shipped config does not load: %v", err)
	}
	if d := c.AgentDefaults(); c.Listen.Socket != agent.DefaultSocket || !reflect.DeepEqual(d, agent.DefaultDefaults()) {
		t.Errorf("shipped config: got socket %q defaults %+v, want the built-in defaults %+v", c.Listen.Socket, d, agent.DefaultDefaults())
	}
	if w := c.Warnings(); len(w) > 0 {
		t.Errorf("shipped config uses deprecated names: %v", w)
	}
	// Switched to held sockets, it must not pin K: the held default
	// (config.HeldMaxUnavailable) applies.
	b, err := os.ReadFile("lxcfleet.toml")
	if err != nil {
		t.Fatal(err)
	}
	held := filepath.Join(t.TempDir(), "held.toml")
	if err := os.WriteFile(held, []byte(strings.Replace(string(b), `socket = "app"`, `socket = "held"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = config.Load(held, true); err != nil {
		t.Fatalf("the shipped config with socket = \"held\": %v", err)
	}
	if k := c.AgentDefaults().Policy.MaxUnavailable; c.Provision.Socket != "held" || k != config.HeldMaxUnavailable {
		t.Errorf("the shipped config with socket = \"held\": socket %q, K %d; want held, K %d", c.Provision.Socket, k, config.HeldMaxUnavailable)
	}
}

func TestUnitVerifies(t *testing.T) {
	need(t, "systemd-analyze")
	// systemd-analyze checks that ExecStart exists: point it at a real file.
	dir := t.TempDir()
	exe := filepath.Join(dir, "lxcfleet")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile("lxcfleet.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Restart=on-failure", "After=", "lxc.service", "KillMode=mixed", "RestartPreventExitStatus=2",
		"Type=notify", "WatchdogSec=", "TimeoutStopSec=10min", "Delegate=yes",
		"OOMScoreAdjust=", "TasksMax=", "LimitNPROC=", "RuntimeDirectory=", "Documentation=file:///usr/share/doc/lxcfleet/README.md"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	// TimeoutStopSec=10min must exceed the agent's own bound on a stop: the
	// default stop timeout of a locker.
	if d := agent.DefaultDefaults().Policy.StopTimeout; d >= 10*time.Minute {
		t.Errorf("TimeoutStopSec=10min is not above the stop timeout %v", d)
	}
	if packaging.Unit != string(unit) || packaging.UnitFor(packaging.UnitBinary, packaging.UnitConfig) != string(unit) {
		t.Errorf("the embedded unit differs from lxcfleet.service")
	}
	path := filepath.Join(dir, "lxcfleet.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/bin/lxcfleet", exe)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "lxcfleet.service:") {
		t.Errorf("systemd-analyze verify warns about the unit:\n%s", out)
	}
}

// TestLockersUnitVerifies: lxcfleet-lockers.service is the host's boot and
// shutdown path (a oneshot that stays active, as incus-startup.service):
// it runs after the agent, so that at shutdown its ExecStop (stop-all
// --host-shutdown) runs first, while the agent still runs; a failed boot
// start does not fail it (its ExecStop would then not run); and no
// Requires= or BindsTo= ties it to the agent, whose restart must not stop
// the lockers.
func TestLockersUnitVerifies(t *testing.T) {
	need(t, "systemd-analyze")
	dir := t.TempDir()
	exe := filepath.Join(dir, "lxcfleet")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile("lxcfleet-lockers.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=oneshot", "RemainAfterExit=yes", "After=lxcfleet.service", "Wants=lxcfleet.service",
		"ExecStart=-/usr/bin/lxcfleet start-all --boot --config /etc/lxcfleet/lxcfleet.toml",
		"ExecStop=/usr/bin/lxcfleet stop-all --host-shutdown --config /etc/lxcfleet/lxcfleet.toml",
		"TimeoutStopSec=10min", "WantedBy=multi-user.target", "Documentation=file:///usr/share/doc/lxcfleet/README.md"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("lockers unit lacks %q", want)
		}
	}
	for _, bad := range []string{"Requires=", "BindsTo=", "PartOf="} {
		if strings.Contains(string(unit), "\n"+bad) {
			t.Errorf("lockers unit has %s: a restart of the agent would stop every locker", bad)
		}
	}
	// The shutdown bound: every locker of a 300-locker host, stop_parallel
	// at once, each given the default stop timeout, fits TimeoutStopSec.
	pol := agent.DefaultDefaults().Policy
	if worst := time.Duration((300+pol.StopParallel-1)/pol.StopParallel) * pol.StopTimeout; worst >= 10*time.Minute {
		t.Errorf("a host shutdown of 300 lockers may take %v, over TimeoutStopSec=10min", worst)
	}
	path := filepath.Join(dir, "lxcfleet-lockers.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/bin/lxcfleet", exe)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "lxcfleet-lockers.service:") {
		t.Errorf("systemd-analyze verify warns about the unit:\n%s", out)
	}
}
