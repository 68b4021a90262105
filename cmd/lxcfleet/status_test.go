package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lxcfleet/agent"
	"lxcfleet/internal/testfleet"
)

// TestStatusShowsQuarantine: status shows a locker the agent's supervision
// quarantined as QUARANTINED with the agent's reason, not as plain
// STOPPED. The lockers are real (LXC); the agent answering on the config's
// socket is a stand-in that reports the quarantine (a real one needs a
// crash loop: supervise_test.go covers that the agent reports it).
func TestStatusShowsQuarantine(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	names := testfleet.Names(f.Add(2, testfleet.Normal))
	sock := filepath.Join(t.TempDir(), "a.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	reason := "quarantined: it kept stopping on its own (3 restarts within 1m0s) on release 7-abc; supervision leaves it stopped: start it by hand once fixed"
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/host":
			_ = json.NewEncoder(w).Encode(agent.HostInfo{LXCPath: f.Path})
		case "/v1/containers":
			_ = json.NewEncoder(w).Encode(map[string]any{"containers": []agent.Locker{{Name: names[0], Quarantined: reason}, {Name: names[1]}}})
		default:
			http.NotFound(w, r)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	cfg := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(cfg, []byte("[listen]\nsocket = \""+sock+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := runCLI(t, "status", "--config", cfg, "--lxcpath", f.Path)
	if code != 0 {
		t.Fatalf("status: exit %d\n%s%s", code, out, stderr)
	}
	for _, l := range strings.Split(out, "\n") {
		fields := strings.Fields(l)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case names[0]:
			if fields[1] != "QUARANTINED" {
				t.Errorf("%s: state %s, want QUARANTINED:\n%s", names[0], fields[1], out)
			}
		case names[1]:
			if fields[1] != "STOPPED" {
				t.Errorf("%s: state %s, want STOPPED:\n%s", names[1], fields[1], out)
			}
		}
	}
	if want := "QUARANTINED " + names[0] + ": it kept stopping on its own"; !strings.Contains(out, want) {
		t.Errorf("status: want %q in\n%s", want, out)
	}
	out, _, code = runCLI(t, "status", "--json", "--config", cfg, "--lxcpath", f.Path)
	if code != 0 || !strings.Contains(out, `"quarantined": "`+reason) {
		t.Errorf("status --json: exit %d, want the reason under quarantined:\n%s", code, out)
	}
}
