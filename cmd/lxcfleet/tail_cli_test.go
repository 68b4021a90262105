package main

import (
	"bytes"
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

	"lxcfleet/agent"
	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
)

// TestStartAllTailAfterAutomaticRollback runs the operators' sequence
// with the real binary on real lockers and a real origin: after
// lxc-stop-all; update-code to a build whose app exits at start,
// lxc-start-all trips the failure policy and brings every locker up on the
// last good release. The CLI's tail says so (issue 22 item 11): the
// lockers that failed on the new build are named with their reason, each
// locker the start never reached is SKIPPED with its reason (I5),
// never a reasonless FAILED, and the last line says what serves now, as
// `lxcfleet status` sees it.
func TestStartAllTailAfterAutomaticRollback(t *testing.T) {
	testfleet.RequireLXC(t)
	testfleet.RequireNode(t)
	root, templates, lxcpath := layoutDirs(t)
	dir := filepath.Dir(root)
	origin := testfleet.NewOrigin(t)
	node := testfleet.NodeBinary(t)
	const n = 4
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
port_base = %d
[defaults]
health = "http://127.0.0.1:{port}/healthz"
deadline = "15s"
monitor = "1s"
max_unavailable = 2
max_starting = 1
pacing = "fixed"
`, lxcpath, filepath.Join(dir, "state"), filepath.Join(dir, "none.sock"), root, templates, origin.URL, testfleet.PortRange(t, n))
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
	for i := range n {
		name := fmt.Sprintf("lxrb%s-%d", hex.EncodeToString(b), i)
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
	cli := func(want int, args ...string) string {
		t.Helper()
		out, stderr, code := runCLI(t, append(args, "--config", cfg)...)
		if code != want {
			t.Fatalf("lxcfleet %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out, stderr)
		}
		return out
	}
	cli(0, "update-code") // build A, no locker yet
	good, err := os.Readlink(filepath.Join(root, "current"))
	if err != nil {
		t.Fatal(err)
	}
	good = filepath.Base(good)
	cli(0, append([]string{"provision", "--node", node}, names...)...)
	cli(0, "start-all") // proves A
	cli(0, "stop-all")
	origin.Broken("build B: exits at start")
	cli(0, "update-code") // B built, current on it, unproven: nothing runs
	if cur, _ := os.Readlink(filepath.Join(root, "current")); filepath.Base(cur) == good {
		t.Fatalf("update-code left current on %s: the test needs current on the broken build", good)
	}

	out := cli(1, "start-all")
	t.Logf("start-all after the broken update:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	failed, skipped := 0, 0
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "FAILED "):
			failed++
			if !strings.Contains(l, "up on "+good+" after the rollback") {
				t.Errorf("failed line %q: want its reason and that it is up on %s after the rollback", l, good)
			}
		case strings.HasPrefix(l, "SKIPPED "):
			skipped++
			if !strings.Contains(l, ": not moved to ") || !strings.Contains(l, "failure policy tripped") {
				t.Errorf("skipped line %q: want the tripped policy as its reason", l)
			}
		}
	}
	if failed == 0 || failed+skipped != n {
		t.Errorf("tail names %d failed and %d skipped, want at least 1 failed and %d in all", failed, skipped, n)
	}
	if want := fmt.Sprintf("%d failed, %d skipped", failed, skipped); !strings.Contains(out, want) {
		t.Errorf("summary line: want %q in\n%s", want, out)
	}
	if want := fmt.Sprintf("now: %d of %d lockers serving: %d on %s (after the rollback)", n, n, n, good); !strings.HasPrefix(lines[len(lines)-1], want) {
		t.Errorf("last line: got %q, want %q", lines[len(lines)-1], want)
	}
	// `jobs ID` after the fact prints the same tail (FAILED, SKIPPED and
	// now lines) as the run did.
	var list struct {
		Jobs []struct {
			ID string `json:"id"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(cli(0, "jobs", "--json", "--limit", "1")), &list); err != nil || len(list.Jobs) != 1 {
		t.Fatalf("jobs --json: %v, %d jobs", err, len(list.Jobs))
	}
	shown := cli(0, "jobs", list.Jobs[0].ID)
	for _, l := range lines {
		head := l
		if strings.HasPrefix(l, "FAILED ") || strings.HasPrefix(l, "SKIPPED ") {
			head, _, _ = strings.Cut(l, ": ") // the word and the locker
		} else if !strings.HasPrefix(l, "now: ") {
			continue
		}
		if !strings.Contains(shown, "\n"+head) {
			t.Errorf("jobs %s: want the run's line %q in\n%s", list.Jobs[0].ID, head, shown)
		}
	}
	// rollback --to a build that does not exist is bad input: exit 2,
	// refused before a job is created (issue 22 item 12).
	jobsBefore := cli(0, "jobs", "--json")
	_, stderr, code := runCLI(t, "rollback", "--to", "notabuild", "--config", cfg)
	if code != 2 || !strings.Contains(stderr, "notabuild") {
		t.Errorf("rollback --to notabuild: exit %d, stderr %q; want 2 naming the target", code, stderr)
	}
	if after := cli(0, "jobs", "--json"); after != jobsBefore {
		t.Errorf("rollback --to notabuild recorded a job:\nbefore %s\nafter %s", jobsBefore, after)
	}
	// status agrees: every locker runs the good release.
	st := statusJSON(t, "--config", cfg)
	for _, name := range names {
		if s := st[name]; s.State != "RUNNING" || s.Release != good {
			t.Errorf("status %s: got %+v, want RUNNING on %s", name, s, good)
		}
	}
}

// TestStopTailNamesSkippedLockers: a stop-all that was cancelled before it
// reached some lockers lists each as SKIPPED with the tally's reason, not
// as a reasonless FAILED, and counts them apart from failures (I5). The
// rendering alone (the tally comes from the agent; see agent's tests).
func TestStopTailNamesSkippedLockers(t *testing.T) {
	res := []lxcctl.StopResult{
		{Name: "l0", Outcome: lxcctl.StoppedClean},
		{Name: "l1", Outcome: lxcctl.StopFailed},
	}
	tl := &agent.Tally{Lockers: []agent.LockerTally{
		{Name: "l0", Outcome: "stopped", State: agent.TallyDown},
		{Name: "l1", Outcome: "skipped", State: agent.TallyUp, Reason: "not moved: the job was cancelled"},
	}}
	var out bytes.Buffer
	g := &globals{stdout: &out, stderr: &out}
	err := reportStop(g, newProgress(g, "stopping", 2), res, time.Second, tl)
	got := out.String()
	if err != nil || !strings.Contains(got, "1 clean, 0 killed, 0 already stopped, 0 failed, 1 skipped") ||
		!strings.Contains(got, "SKIPPED l1: not moved: the job was cancelled") || strings.Contains(got, "FAILED") {
		t.Errorf("stop tail (err %v):\n%s", err, got)
	}
}
