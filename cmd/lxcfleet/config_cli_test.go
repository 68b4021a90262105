package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
)

// TestConfigDrivesEveryCommand: with only --config (no --lxcpath, no
// --root), provision, check, start-all, status and scripts/lxc-stop-all
// all act on the config's private lxcpath and layout, app_path included.
func TestConfigDrivesEveryCommand(t *testing.T) {
	testfleet.RequireLXC(t)
	testfleet.RequireNode(t)
	root, templates, lxcpath := layoutDirs(t)
	state := filepath.Join(filepath.Dir(root), "state")
	rel := filepath.Join(root, "releases", "r1")
	if err := os.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", testfleet.App(t), rel).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v %s", err, out)
	}
	if err := os.Symlink("releases/r1", filepath.Join(root, "current")); err != nil {
		t.Fatal(err)
	}
	node := testfleet.NodeBinary(t)
	cfg := filepath.Join(filepath.Dir(root), "lxcfleet.toml")
	body := fmt.Sprintf(`lxcpath = %q
state_dir = %q
[listen]
socket = %q
[layout]
root = %q
templates = %q
app_path = "srv/app"
[provision]
template = "busybox"
init = "/usr/bin/node /srv/app/server.js"
port_base = %d
[defaults]
health = "http://127.0.0.1:{port}/healthz"
deadline = "20s"
`, lxcpath, state, filepath.Join(filepath.Dir(root), "none.sock"), root, templates, testfleet.PortRange(t, 1))
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := lxcctl.NewHost(lxcctl.Options{LXCPath: lxcpath})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "lxcc" + hex.EncodeToString(b) + "-0"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := h.Stop(ctx, name, 2*time.Second); err != nil && !errors.Is(err, lxcctl.ErrNotFound) {
			t.Logf("cleanup: stopping %s: %v", name, err)
		}
		if err := h.Destroy(ctx, name); err != nil {
			t.Errorf("cleanup: destroying %s: %v", name, err)
		}
	})

	if out, stderr, code := runCLI(t, "provision", "--config", cfg, "--node", node, name); code != 0 {
		t.Fatalf("provision --config: exit %d\n%s%s", code, out, stderr)
	}
	conf, err := os.ReadFile(filepath.Join(lxcpath, name, "config"))
	if err != nil {
		t.Fatalf("provision did not create the locker in the config's lxcpath: %v", err)
	}
	if want := filepath.Join(root, "current") + " srv/app "; !strings.Contains(string(conf), want) {
		t.Errorf("locker config: no mount %q (layout.app_path):\n%s", want, conf)
	}
	out, stderr, code := runCLI(t, "check", "--config", cfg)
	if code != 0 || !strings.Contains(out, "1 locker checked against the layout in "+root+": 0 deviate") {
		t.Errorf("check --config: exit %d, %q %q; want 1 locker, 0 deviate, in %s", code, out, stderr, root)
	}
	if out, stderr, code := runCLI(t, "start-all", "--config", cfg); code != 0 {
		t.Fatalf("start-all --config: exit %d\n%s%s", code, out, stderr)
	}
	if st := statusJSON(t, "--config", cfg)[name]; st.State != "RUNNING" || st.Release != "r1" {
		t.Errorf("status --config: got %+v, want RUNNING on r1 (found through app_path srv/app)", st)
	}
	out, _, code = runCLI(t, "status", "--config", cfg)
	if code != 0 || !strings.Contains(out, "1 container in "+lxcpath) {
		t.Errorf("status --config: exit %d\n%s\nwant 1 container in %s", code, out, lxcpath)
	}
	cmd := exec.Command("../../scripts/lxc-stop-all", "--config", cfg)
	cmd.Env = append(os.Environ(), "LXCFLEET="+lxcfleetBin(t))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("lxc-stop-all --config: %v\n%s", err, b)
	}
	if st, _ := h.State(context.Background(), name); st != lxcctl.StateStopped {
		t.Errorf("after lxc-stop-all --config: %s is %s, want STOPPED", name, st)
	}
}
