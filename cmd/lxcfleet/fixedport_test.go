package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
	"lxcfleet/provision"
)

// TestFixedPortRecipeFromConfig runs the README's recipe for an app on a
// fixed port with the real binary, as an operator would: a config whose
// [provision] section sets init (run under tini by default), network
// "empty" and no port base, and whose health check runs inside the
// lockers; update-code builds the first release from a real origin,
// provision and start-all bring up three lockers, update-code moves them
// to the next build. Each locker answers on :3000 inside its own namespace
// as itself, with tini as its PID 1, on the current build.
func TestFixedPortRecipeFromConfig(t *testing.T) {
	testfleet.RequireLXC(t)
	testfleet.RequireNode(t)
	if _, err := os.Stat(provision.DefaultTini); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %s is missing: run scripts/setup-host", provision.DefaultTini)
		}
		t.Skipf("%s not found: apt-get install tini", provision.DefaultTini)
	}
	root, templates, lxcpath := layoutDirs(t)
	dir := filepath.Dir(root)
	origin := testfleet.NewOrigin(t)
	src, err := os.ReadFile(filepath.Join(testfleet.AppSource(), "server.js"))
	if err != nil {
		t.Fatal(err)
	}
	fixed := strings.Replace(string(src), "const port = Number(process.env.PORT);", "const port = 3000;", 1)
	if fixed == string(src) {
		t.Fatal("the fixture app no longer reads its port as the test expects: update the test")
	}
	origin.Write("build A: listens on :3000 whatever its environment", map[string]string{"server.js": fixed})
	node := testfleet.NodeBinary(t)
	cfg := filepath.Join(dir, "lxcfleet.toml")
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
network = "empty"
port_base = 0
[defaults]
health = "exec:wget -q -O /dev/null http://127.0.0.1:3000/"
deadline = "20s"
monitor = "1s"
max_unavailable = 2
`, lxcpath, filepath.Join(dir, "state"), filepath.Join(dir, "none.sock"), root, templates, origin.URL)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := lxcctl.NewHost(lxcctl.Options{LXCPath: lxcpath})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	var names []string
	for i := range 3 {
		name := fmt.Sprintf("lxfr%s-%d", hex.EncodeToString(b), i)
		names = append(names, name)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := h.Stop(ctx, name, 2*time.Second); err != nil && !errors.Is(err, lxcctl.ErrNotFound) {
				t.Logf("cleanup: stopping %s: %v", name, err)
			}
			if err := h.Destroy(ctx, name); err != nil && !errors.Is(err, lxcctl.ErrNotFound) {
				t.Errorf("cleanup: destroying %s: %v", name, err)
			}
		})
	}
	cli := func(args ...string) string {
		t.Helper()
		out, stderr, code := runCLI(t, append(args, "--config", cfg)...)
		if code != 0 {
			t.Fatalf("lxcfleet %s: exit %d\n%s%s", strings.Join(args, " "), code, out, stderr)
		}
		return out
	}
	// wantAll checks every locker against the build current points to.
	wantAll := func() {
		t.Helper()
		cur, err := os.Readlink(filepath.Join(root, "current"))
		if err != nil {
			t.Fatal(err)
		}
		build, _, _ := strings.Cut(filepath.Base(cur), "-")
		hostNS, _ := os.Readlink("/proc/self/ns/net")
		for _, n := range names {
			r, err := h.Exec(context.Background(), n, "wget", "-q", "-O", "-", "http://127.0.0.1:3000/healthz")
			if err != nil || r.ExitCode != 0 {
				t.Errorf("%s: GET :3000 inside: exit %d %q %v", n, r.ExitCode, r.Stderr, err)
				continue
			}
			var hz struct {
				Locker string `json:"locker"`
				Build  any    `json:"build"`
			}
			if err := json.Unmarshal(r.Stdout, &hz); err != nil || hz.Locker != n || fmt.Sprint(hz.Build) != build {
				t.Errorf("%s: /healthz %s (%v), want itself on build %s (current %s)", n, r.Stdout, err, build, cur)
			}
			in, err := h.Info(context.Background(), n)
			if err != nil {
				t.Fatal(err)
			}
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", in.InitPID))
			if got := strings.TrimSpace(string(comm)); !strings.HasPrefix(got, "tini") {
				t.Errorf("%s: PID 1 is %q, want tini", n, got)
			}
			if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", in.InitPID)); ns == hostNS {
				t.Errorf("%s: on the host's network namespace, want its own", n)
			}
		}
	}

	cli("update-code") // builds the first release; no locker yet
	cli(append([]string{"provision", "--node", node}, names...)...)
	for _, n := range names {
		conf, err := os.ReadFile(h.ConfigPath(n))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"lxc.init.cmd = /sbin/tini -s -g -- /sbin/lxcfleet-init /usr/bin/node /opt/app/server.js\n",
			"lxc.mount.entry = " + provision.DefaultTini + " sbin/tini none bind,ro,create=file 0 0\n",
			"lxc.net.0.type = empty\nlxc.net.0.flags = up\n",
		} {
			if !strings.Contains(string(conf), want) {
				t.Errorf("%s: config lacks %q:\n%s", n, want, conf)
			}
		}
		if strings.Contains(string(conf), "PORT=") {
			t.Errorf("%s: config hands out a PORT with port_base = 0:\n%s", n, conf)
		}
	}
	if out := cli("check"); !strings.Contains(out, "0 deviate") {
		t.Errorf("check: %s, want 0 deviate", out)
	}
	cli("start-all")
	wantAll()
	before, _ := os.Readlink(filepath.Join(root, "current"))

	origin.AppChange("build B: app only, same port")
	cli("update-code")
	after, _ := os.Readlink(filepath.Join(root, "current"))
	if after == before {
		t.Fatalf("update-code left current at %s", after)
	}
	wantAll()
}
