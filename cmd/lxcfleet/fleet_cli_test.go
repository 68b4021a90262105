package main

import (
	"errors"
	"fmt"
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
	if out, stderr, code := runCLI(t, "fleet", "publish", "main", "--config", config); code != 0 || !strings.Contains(out, b) {
		t.Fatalf("fleet publish main: exit %d\n%s%s", code, out, stderr)
	}
	refused("main is "+b[:12]+" on the origin, not "+a[:12], "main", "--commit", a)
	refused(`unknown target "`+missing+`"`, missing)
	ch, _, err := st.Channel(t.Context())
	if err != nil || ch.Release.Commit != b {
		t.Errorf("channel after refused publishes: %+v %v, want main at %s untouched", ch.Release, err, b[:12])
	}
}
