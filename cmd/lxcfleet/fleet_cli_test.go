package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lxcfleet/fleet"
	"lxcfleet/internal/etcdtest"
	"lxcfleet/internal/testfleet"
)

// TestFleetPublishChecksTheOrigin: `fleet publish` of a commit the origin
// does not have (a full id, or REF --commit ID where ID is not REF's)
// exits 2 with a clear message and leaves the channel as it was; the
// ref's own tip is published. A real origin and a real etcd member.
func TestFleetPublishChecksTheOrigin(t *testing.T) {
	c := etcdtest.Start(t, 1)
	origin := testfleet.NewOrigin(t)
	a := origin.Head()
	b := origin.AppChange("build B")
	dir := t.TempDir()
	for _, d := range []string{"lxc", "root", "state"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	config := filepath.Join(dir, "lxcfleet.toml")
	body := fmt.Sprintf("lxcpath = %q\nstate_dir = %q\n[layout]\nroot = %q\n[code]\norigin = %q\n[fleet]\nendpoints = [%q]\ngroup = \"pub\"\nprefix = \"/lxcfleet-cli\"\n",
		filepath.Join(dir, "lxc"), filepath.Join(dir, "state"), filepath.Join(dir, "root"), origin.URL, c.Endpoints()[0])
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cli, err := fleet.Dial(fleet.Config{Endpoints: c.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st := fleet.NewStore(cli, "/lxcfleet-cli", "pub")
	missing := strings.Repeat("ab", 20)
	refused := func(want string, args ...string) {
		t.Helper()
		_, stderr, code := runCLI(t, append(append([]string{"fleet", "publish"}, args...), "--config", config)...)
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("fleet publish %s: exit %d, stderr %q; want exit 2 saying %q", strings.Join(args, " "), code, stderr, want)
		}
	}
	refused(`unknown target "`+missing+`"`, missing)
	refused(`unknown target "`+missing+`"`, "main", "--commit", missing)
	if _, _, err := st.Channel(t.Context()); !errors.Is(err, fleet.ErrNoChannel) {
		t.Errorf("after refused publishes: channel %v, want none written", err)
	}
	// Bad policy values are refused before anything is written.
	refused("max_hosts must be between 1", "main", "--max-hosts", "-1")
	refused("max_hosts must be between 1", "main", "--max-hosts", "0")
	refused("phase_start must be between 0 and 1", "main", "--phase-start", "2")
	refused("max_failed_hosts must be at least 1", "main", "--max-failed-hosts", "0")
	if _, _, err := st.Channel(t.Context()); !errors.Is(err, fleet.ErrNoChannel) {
		t.Errorf("after refused publishes: channel %v, want none written", err)
	}
	out, stderr, code := runCLI(t, "fleet", "publish", "main", "--config", config)
	if code != 0 || !strings.Contains(out, b) {
		t.Fatalf("fleet publish main: exit %d\n%s%s", code, out, stderr)
	}
	if !strings.Contains(stderr, "no live host follows group pub") {
		t.Errorf("publishing to a group no host follows: stderr %q, want a warning", stderr)
	}
	if _, stderr, code := runCLI(t, "fleet", "channel", "--max-hosts", "0", "--config", config); code != 2 || !strings.Contains(stderr, "max_hosts") {
		t.Errorf("fleet channel --max-hosts 0: exit %d %q, want 2", code, stderr)
	}
	before, _, err := st.Channel(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// --if-release: the second of two operators is told, not overwritten.
	if _, stderr, code := runCLI(t, "fleet", "publish", a, "--if-release", "none", "--config", config); code != 1 || !strings.Contains(stderr, "the channel's release changed") {
		t.Errorf("publish --if-release none on a published channel: exit %d %q, want 1 saying the release changed", code, stderr)
	}
	if _, stderr, code := runCLI(t, "fleet", "publish", a, "--if-release", a[:12], "--config", config); code != 1 || !strings.Contains(stderr, "main@"+b[:12]) {
		t.Errorf("publish --if-release with a stale commit: exit %d %q, want 1 naming the release now", code, stderr)
	}
	if after, _, _ := st.Channel(t.Context()); !after.PublishedAt.Equal(before.PublishedAt) || after.Release != before.Release {
		t.Errorf("a refused --if-release publish wrote the channel: %+v", after)
	}
	if out, stderr, code := runCLI(t, "fleet", "publish", a, "--if-release", b[:12], "--config", config); code != 0 || !strings.Contains(out, a) {
		t.Errorf("publish --if-release with the current commit: exit %d\n%s%s", code, out, stderr)
	}
	if out, stderr, code := runCLI(t, "fleet", "publish", "main", "--if-release", a, "--config", config); code != 0 || !strings.Contains(out, b) {
		t.Fatalf("publish main back: exit %d\n%s%s", code, out, stderr)
	}
	// Update windows and the update timeout: set, shown, bad values refused.
	out, stderr, code = runCLI(t, "fleet", "channel", "--window", "0 3 * * 1-5", "--window-duration", "2h", "--time-zone", "Europe/Paris", "--update-timeout", "30m", "--config", config)
	if code != 0 || !strings.Contains(out, `update windows: Europe/Paris for 2h0m0s after each of ["0 3 * * 1-5"]`) || !strings.Contains(out, "an update past 30m0s fails") {
		t.Errorf("fleet channel with windows and a timeout: exit %d\n%s%s", code, out, stderr)
	}
	for _, bad := range [][]string{{"--window", "at three"}, {"--time-zone", "Mars/Olympus"}, {"--update-timeout", "-1s"}, {"--window-duration", "0s"}} {
		if _, stderr, code := runCLI(t, append(append([]string{"fleet", "channel"}, bad...), "--config", config)...); code != 2 {
			t.Errorf("fleet channel %v: exit %d %q, want 2", bad, code, stderr)
		}
	}
	refused("main is "+b[:12]+" on the origin, not "+a[:12], "main", "--commit", a)
	refused(`unknown target "`+missing+`"`, missing)
	ch, _, err := st.Channel(t.Context())
	if err != nil || ch.Release.Commit != b {
		t.Errorf("channel after refused publishes: %+v %v, want main at %s untouched", ch.Release, err, b[:12])
	}
}

// TestFleetCLIConfigAndReachability: a missing or non-PEM fleet.ca is bad
// input (exit 2, naming it); an endpoint nobody listens on is named with
// what the connection says, not only "context deadline exceeded".
func TestFleetCLIConfigAndReachability(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"lxc", "root", "state"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(extra string) string {
		p := filepath.Join(dir, "lxcfleet.toml")
		body := fmt.Sprintf("lxcpath = %q\nstate_dir = %q\n[layout]\nroot = %q\n[fleet]\nendpoints = [%q]\n%s",
			filepath.Join(dir, "lxc"), filepath.Join(dir, "state"), filepath.Join(dir, "root"), closed, extra)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct{ extra, want string }{
		{fmt.Sprintf("ca = %q\n", filepath.Join(dir, "missing.pem")), "fleet.ca"},
		{fmt.Sprintf("ca = %q\n", notPEM), "no PEM certificate"},
	} {
		if _, stderr, code := runCLI(t, "fleet", "hosts", "--config", write(c.extra)); code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("fleet hosts with %s: exit %d %q, want 2 naming %q", strings.TrimSpace(c.extra), code, stderr, c.want)
		}
	}
	_, stderr, code := runCLI(t, "fleet", "hosts", "--config", write(""))
	if code != 1 || !strings.Contains(stderr, closed+": unreachable") {
		t.Errorf("fleet hosts with nothing listening: exit %d %q, want 1 naming the endpoint as unreachable", code, stderr)
	}
}
