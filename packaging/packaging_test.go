package packaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"lxcfleet/agent"
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
	c, err := agent.LoadConfig("lxcfleet.toml", true)
	if err != nil {
		t.Fatalf("the shipped config does not load: %v", err)
	}
	if c.Listen.Socket != agent.DefaultSocket || c.Defaults.Window != 4 {
		t.Errorf("shipped config: got socket %q window %d, want the defaults", c.Listen.Socket, c.Defaults.Window)
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
	for _, want := range []string{"Restart=on-failure", "After=", "lxc.service", "KillMode=process", "Delegate=yes"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
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

func TestDebContents(t *testing.T) {
	need(t, "dpkg-deb")
	dir := t.TempDir()
	bin := filepath.Join(dir, "lxcfleet")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/lxcfleet").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command("./build-deb", bin, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("build-deb: %v\n%s", err, out)
	}
	deb := strings.TrimSpace(string(out))
	info, err := exec.Command("dpkg-deb", "--info", deb).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb --info: %v\n%s", err, info)
	}
	for _, want := range []string{"Package: lxcfleet", "Depends: lxc", "conffiles"} {
		if !strings.Contains(string(info), want) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}
	contents, err := exec.Command("dpkg-deb", "--contents", deb).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb --contents: %v\n%s", err, contents)
	}
	for _, want := range []string{"./usr/bin/lxcfleet", "./lib/systemd/system/lxcfleet.service", "./etc/lxcfleet/lxcfleet.toml",
		"./usr/sbin/lxc-stop-all", "./usr/sbin/update-code", "./usr/sbin/lxc-start-all"} {
		if !strings.Contains(string(contents), want) {
			t.Errorf("dpkg-deb --contents lacks %s:\n%s", want, contents)
		}
	}
	t.Logf("dpkg-deb --info:\n%s\ndpkg-deb --contents:\n%s", info, contents)
}
