package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"lxcfleet/agent"
	"lxcfleet/codeupdate"
	"lxcfleet/internal/testfleet"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
)

// TestUsageErrorsExitTwo: every kind of usage error is exit 2 with a
// message, never help and exit 0 or exit 1.
func TestUsageErrorsExitTwo(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"stopall"}, "did you mean stop-all"},
		{[]string{"job", "cancl", "x"}, `unknown command "cancl" for "lxcfleet job"`},
		{[]string{"job"}, "needs a subcommand"},
		// Empty or invalid selectors and values that cannot mean anything
		// (issue 22, item 4): refused, never read as "all".
		{[]string{"stop-all", "--group", ""}, "--group is empty"},
		{[]string{"start-all", "--group", ""}, "--group is empty"},
		{[]string{"status", "--group", "../x;id"}, "invalid --group"},
		{[]string{"update-code", "--lxcpath", ""}, "--lxcpath is empty"},
		{[]string{"update-code", "--strategy", ""}, "--strategy is empty"},
		{[]string{"update-code", "--max-failure-ratio", "nan"}, "--max-failure-ratio"},
		{[]string{"update-code", "--max-unavailable", "0"}, "max_unavailable (K) must be positive"},
		{[]string{"update-code", "--monitor", "-1s"}, "monitor must not be negative"},
		{[]string{"update-code", "--failure-action", "explode"}, "failure_action"},
		{[]string{"start-all", "--health", "ftp://x"}, "--health"},
		{[]string{"service"}, "accepts 1 arg"},
		{[]string{"restart"}, "restart needs NAMEs or --group"},
		{[]string{"start-all", "--boot", "h-001"}, "--boot starts every locker whose desired state is running: no names, no --group"},
		{[]string{"start-all", "--boot", "--group", "web"}, "--boot starts every locker"},
		{[]string{"stop-all", "--host-shutdown", "h-001"}, "--host-shutdown stops every locker: no names, no --group"},
		{[]string{"restart", "--group", ""}, "--group is empty"},
		{[]string{"restart", "--group", "../x;id"}, "invalid --group"},
		{[]string{"man"}, "accepts 1 arg"},
		{[]string{"man", "usage_test.go"}, "is not a directory"},
		{[]string{"check-update", "extra"}, "unknown command"},
		{[]string{"jobs", "--bogus"}, "--bogus"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, code := runCLI(t, tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("got exit %d, stderr %q, stdout %.80q; want 2 and %q", code, stderr, stdout, tc.want)
			}
		})
	}
}

// TestHelpShowsOneDefault: no flag's help carries two defaults ("(default:
// defaults.window) (default 4)").
func TestHelpShowsOneDefault(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, line := range strings.Split(c.Flags().FlagUsages()+c.InheritedFlags().FlagUsages(), "\n") {
			if strings.Count(line, "(default") > 1 {
				t.Errorf("%s: %s", c.CommandPath(), strings.TrimSpace(line))
			}
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRootCmd())
}

// TestVersionFlag: --version prints the version the binary was built with.
func TestVersionFlag(t *testing.T) {
	out, _, code := runCLI(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "lxcfleet ") || strings.TrimSpace(out) == "lxcfleet" {
		t.Errorf("--version: exit %d %q, want lxcfleet VERSION", code, out)
	}
}

// TestResultText: check-update and build print text, not raw JSON, and a
// target marked bad is flagged.
func TestResultText(t *testing.T) {
	tests := []struct {
		name string
		u    codeupdate.UpdateInfo
		want []string
	}{
		{"up to date", codeupdate.UpdateInfo{Target: "main", TargetSHA: "0123456789abcdef", CurrentRelease: "7-0123456789ab"}, []string{"up to date", "7-0123456789ab", "main"}},
		{"behind", codeupdate.UpdateInfo{Target: "main", Available: true, Behind: 1, CurrentRelease: "7-a", TargetRelease: "8-b", NpmNeeded: true,
			Commits: []codeupdate.Commit{{SHA: "bbbbbbbbbbbbbbbb", Subject: "fix the login"}}}, []string{"1 commit ahead", "npm will run", "bbbbbbbbbbbb fix the login"}},
		{"bad target", codeupdate.UpdateInfo{Target: "main", Available: true, Behind: 2, CurrentRelease: "7-a", TargetRelease: "9-c", TargetBad: true}, []string{"2 commits ahead", "9-c is marked bad", "--force"}},
		// A lockfile change whose release is built already: no npm to run.
		{"built already", codeupdate.UpdateInfo{Target: "main", Available: true, Behind: 1, CurrentRelease: "7-a", TargetRelease: "8-b", NpmNeeded: true, TargetBuilt: true},
			[]string{"a restart is enough (its release is built already)", "8-b is built already"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			printUpdateInfo(&b, tc.u)
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("got %q, want %q in it", b.String(), w)
				}
			}
			if strings.Contains(b.String(), "{") {
				t.Errorf("got %q, want text, not JSON", b.String())
			}
			if tc.u.TargetBuilt && strings.Contains(b.String(), "npm will run") {
				t.Errorf("got %q: npm will not run for a release built already", b.String())
			}
		})
	}
	// A build job that found its release built already says so, not "npm ran".
	for _, prebuilt := range []bool{false, true} {
		res, _ := json.Marshal(agent.BuildResult{Release: codeupdate.Release{Name: "8-b", Build: 8, Short: "b", Npm: codeupdate.NpmRan}, Prebuilt: prebuilt})
		var b bytes.Buffer
		printResultText(&b, agent.Job{Kind: agent.KindBuild, Result: res})
		if got := strings.Contains(b.String(), "npm ran"); got == prebuilt {
			t.Errorf("build result (prebuilt %v): %q", prebuilt, b.String())
		}
	}
}

// TestRestartCommand: `lxcfleet restart NAME...` replaces the named
// lockers (new init pids, running, healthy) and leaves the others alone;
// with no agent answering it says it runs in this process.
func TestRestartCommand(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	names := testfleet.Names(f.Add(3, testfleet.Normal))
	ctx := context.Background()
	if _, err := lockerverbs.StartAll(ctx, f.Host, names, lxcctl.StartOptions{Window: 3, Deadline: 20 * time.Second, Health: testfleet.HealthCheck()}); err != nil {
		t.Fatal(err)
	}
	before := map[string]int{}
	infos, _ := f.Host.Select(ctx, names, "")
	for _, in := range infos {
		before[in.Name] = in.InitPID
	}
	cfg := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(cfg, []byte("[listen]\nsocket = \""+filepath.Join(t.TempDir(), "none.sock")+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := runCLI(t, "restart", "--config", cfg, "--lxcpath", f.Path, "--health", "http://127.0.0.1:{port}/healthz", names[0], names[1])
	if code != 0 || !strings.Contains(out, "restarted 2 lockers") {
		t.Fatalf("restart: exit %d\n%s%s", code, out, stderr)
	}
	if !strings.Contains(stderr, "running in this process") {
		t.Errorf("stderr: got %q, want a note that the job runs in this process", stderr)
	}
	infos, _ = f.Host.Select(ctx, names, "")
	for _, in := range infos {
		restarted := in.Name != names[2]
		if in.State != lxcctl.StateRunning || (in.InitPID != before[in.Name]) != restarted {
			t.Errorf("%s: state %s pid %d (was %d); want running, restarted=%v", in.Name, in.State, in.InitPID, before[in.Name], restarted)
		}
	}
}

// TestUnknownGroupExitsTwo: a --group no locker belongs to is bad input
// (exit 2, naming it), as an unknown name is, never "nothing to do" (exit 0).
func TestUnknownGroupExitsTwo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lxc")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(cfg, []byte("[listen]\nsocket = \""+filepath.Join(t.TempDir(), "none.sock")+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"restart", "start-all", "stop-all"} {
		_, stderr, code := runCLI(t, verb, "--config", cfg, "--lxcpath", dir, "--group", "nosuch")
		if code != 2 || !strings.Contains(stderr, `unknown group "nosuch"`) {
			t.Errorf("%s --group nosuch: exit %d, stderr %q; want 2 and the group named", verb, code, stderr)
		}
	}
}
