package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
)

// TestOneBrokenContainerBlocksNothing: a private lxcpath holds three
// working lockers and three containers whose config LXC cannot load (a
// halt signal LXC refuses, as provision wrote before it checked; a typo'd
// key; a key this LXC does not know, as from a newer one). lxc-ls skips
// the three. status, check, stop-all, start-all and update-code, each run
// as the real binary, act on the working lockers and exit 1 naming each
// broken one with LXC's reason; the update moves the working lockers and
// marks nothing bad. provision refuses halt_signal = "SIGFOO" (exit 2,
// naming the value) and makes nothing.
func TestOneBrokenContainerBlocksNothing(t *testing.T) {
	testfleet.RequireLXC(t)
	testfleet.RequireNode(t)
	root, templates, lxcpath := layoutDirs(t)
	dir := filepath.Dir(root)
	origin := testfleet.NewOrigin(t)
	node := testfleet.NodeBinary(t)
	config := func(file, extra string) string {
		body := fmt.Sprintf(`lxcpath = %q
state_dir = %q
[listen]
socket = %q
[layout]
root = %q
templates = %q
[code]
origin = %q
[provision]
template = "busybox"
init = "/usr/bin/node /opt/app/server.js"
port_base = %d
%s
[defaults]
health = "http://127.0.0.1:{port}/healthz"
deadline = "20s"
monitor = "500ms"
window = 2
`, lxcpath, filepath.Join(dir, "state"), filepath.Join(dir, "none.sock"), root, templates, origin.URL, testfleet.PortRange(t, 8), extra)
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := config("lxcfleet.toml", "")
	h, err := lxcctl.NewHost(lxcctl.Options{LXCPath: lxcpath})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	prefix := "lxbk" + hex.EncodeToString(b) + "-"
	var good []string
	for i := range 3 {
		good = append(good, fmt.Sprintf("%sok%d", prefix, i))
	}
	// Each broken one: its name, the line that breaks it, what the
	// report must say.
	broken := []struct{ name, line, why string }{
		{prefix + "sig", "lxc.signal.halt = SIGFOO", `refuses the value "SIGFOO" for lxc.signal.halt`},
		{prefix + "typo", "lxc.tty.maxx = 5", "does not know the key lxc.tty.maxx"},
		{prefix + "newer", "lxc.hook.stop.timeout = 5", "does not know the key lxc.hook.stop.timeout"},
	}
	all := append([]string{}, good...)
	for _, x := range broken {
		all = append(all, x.name)
	}
	for _, name := range append(all, prefix+"refused") {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := h.Stop(ctx, name, 2*time.Second); err != nil && !errors.Is(err, lxcctl.ErrNotFound) && !errors.Is(err, lxcctl.ErrCannotLoad) {
				t.Logf("cleanup: stopping %s: %v", name, err)
			}
			// lxc-destroy cannot load a broken one either: remove its
			// folder (a busybox rootfs in the private lxcpath).
			if err := h.Destroy(ctx, name); err != nil && !errors.Is(err, lxcctl.ErrNotFound) {
				if err := os.RemoveAll(filepath.Join(lxcpath, name)); err != nil {
					t.Errorf("cleanup: removing %s: %v", name, err)
				}
			}
		})
	}
	run := func(want int, args ...string) string {
		t.Helper()
		out, stderr, code := runCLI(t, append(args, "--config", cfg)...)
		if code != want {
			t.Fatalf("lxcfleet %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out, stderr)
		}
		t.Logf("lxcfleet %s: exit %d\n%s%s", strings.Join(args, " "), code, out, stderr)
		return out + stderr
	}
	// wantNamed checks that out names every broken container with its
	// reason.
	wantNamed := func(what, out string) {
		t.Helper()
		for _, x := range broken {
			if !regexp.MustCompile(regexp.QuoteMeta(x.name) + `:\s*(- )?[^\n]*` + regexp.QuoteMeta(x.why)).MatchString(out) {
				t.Errorf("%s: want %s named with %q:\n%s", what, x.name, x.why, out)
			}
		}
	}
	wantStates := func(what string, state string) {
		t.Helper()
		ls := lxcLs(t, lxcpath)
		for _, n := range good {
			if ls[n] != state {
				t.Errorf("%s: lxc-ls says %s is %q, want %s", what, n, ls[n], state)
			}
		}
		for _, x := range broken {
			if _, ok := ls[x.name]; ok {
				t.Errorf("%s: lxc-ls lists %s, which it should skip", what, x.name)
			}
		}
	}

	// provision with a halt signal LXC refuses: exit 2 naming the value,
	// nothing made.
	bad := config("bad-signal.toml", `halt_signal = "SIGFOO"`)
	out, stderr, code := runCLI(t, "provision", "--config", bad, "--node", node, prefix+"refused")
	if code != 2 || !strings.Contains(stderr, `"SIGFOO"`) || !strings.Contains(stderr, "halt signal") {
		t.Errorf("provision with halt_signal SIGFOO: exit %d, stderr %q; want 2 naming the value", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(lxcpath, prefix+"refused")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("provision with halt_signal SIGFOO made a container (%v)\n%s", err, out)
	}

	run(0, "update-code") // the first release; no locker yet
	run(0, append([]string{"provision", "--node", node}, all...)...)
	run(0, "start-all")
	for _, x := range broken {
		// What an operator's edit, a newer LXC's key or the provision of
		// old did to the config: stop it first, as LXC cannot later.
		if _, err := h.Stop(context.Background(), x.name, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := h.EditConfig(x.name, func(old []byte) ([]byte, error) { return append(old, []byte(x.line+"\n")...), nil }); err != nil {
			t.Fatal(err)
		}
	}
	wantStates("before", "RUNNING")

	out = run(1, "status")
	wantNamed("status", out)
	for _, n := range good {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(n) + `\s+RUNNING\s`).MatchString(out) {
			t.Errorf("status: want %s RUNNING:\n%s", n, out)
		}
	}
	if !strings.Contains(out, "3 broken") {
		t.Errorf("status: want the count of broken ones:\n%s", out)
	}
	outJSON, _, code := runCLI(t, "status", "--json", "--config", cfg)
	var st struct {
		Containers []struct{ Name, State, Error string }
	}
	if err := json.Unmarshal([]byte(outJSON), &st); err != nil || code != 1 || len(st.Containers) != 6 {
		t.Errorf("status --json: exit %d, %v, %d containers, want 1 and 6:\n%s", code, err, len(st.Containers), outJSON)
	}
	for _, c := range st.Containers {
		if strings.HasPrefix(c.Name, prefix) && !strings.Contains(c.Name, "ok") && (c.State != "BROKEN" || c.Error == "") {
			t.Errorf("status --json: %s is %s %q, want BROKEN with its error", c.Name, c.State, c.Error)
		}
	}

	out = run(1, "check")
	wantNamed("check", out)
	for _, n := range good {
		if strings.Contains(out, "DEVIATES "+n) {
			t.Errorf("check: %s deviates:\n%s", n, out)
		}
	}

	out = run(1, "stop-all")
	wantNamed("stop-all", out)
	wantStates("after stop-all", "STOPPED")

	out = run(1, "start-all")
	wantNamed("start-all", out)
	wantStates("after start-all", "RUNNING")

	before, _ := os.Readlink(filepath.Join(root, "current"))
	origin.AppChange("build B: app only")
	out = run(1, "update-code")
	wantNamed("update-code", out)
	after, _ := os.Readlink(filepath.Join(root, "current"))
	if after == before {
		t.Fatalf("update-code left current at %s:\n%s", after, out)
	}
	if strings.Contains(out, "marked bad") || strings.Contains(out, "tripped") {
		t.Errorf("update-code: a broken container must count against no release:\n%s", out)
	}
	wantStates("after update-code", "RUNNING")
	for _, n := range good {
		if st := statusRelease(t, cfg, n); st != filepath.Base(after) {
			t.Errorf("after update-code: %s runs %q, want %s", n, st, filepath.Base(after))
		}
	}
}

// lxcLs returns each container's state as `lxc-ls -f` prints it.
func lxcLs(t *testing.T, lxcpath string) map[string]string {
	t.Helper()
	out, err := exec.Command("lxc-ls", "-P", lxcpath, "-f", "-F", "NAME,STATE").Output()
	if err != nil {
		t.Fatalf("lxc-ls -P %s -f: %v: %s", lxcpath, err, out)
	}
	states := map[string]string{}
	for i, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fs := strings.Fields(line)
		if i == 0 || len(fs) < 2 {
			continue
		}
		states[fs[0]] = fs[1]
	}
	return states
}

// statusRelease is the release `status --json` says a locker runs.
func statusRelease(t *testing.T, cfg, name string) string {
	t.Helper()
	out, _, _ := runCLI(t, "status", "--json", "--config", cfg, name)
	var st struct {
		Containers []statusLine `json:"containers"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Containers) != 1 {
		t.Fatalf("status --json %s: %v\n%s", name, err, out)
	}
	return st.Containers[0].Release
}
