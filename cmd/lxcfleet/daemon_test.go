package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCLIThroughTheDaemon: the real binary as the agent, and the CLI
// following a job's event stream over its socket; a bad config stops the
// agent with exit code 2 naming the key.
func TestCLIThroughTheDaemon(t *testing.T) {
	dir := t.TempDir()
	lxcpath := filepath.Join(dir, "lxc")
	if err := os.MkdirAll(lxcpath, 0o755); err != nil {
		t.Fatal(err)
	}
	sockDir, _ := os.MkdirTemp("", "lxf")
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "s.sock")
	config := filepath.Join(dir, "c.toml")
	os.WriteFile(config, []byte(fmt.Sprintf("lxcpath = %q\nstate_dir = %q\n[listen]\nsocket = %q\n[[schedule]]\nname = \"nightly\"\ncron = \"0 3 * * *\"\n[schedule.request]\nkind = \"start-all\"\n", lxcpath, filepath.Join(dir, "state"), sock)), 0o600)

	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[defaults]\nwindow = -2\n"), 0o600)
	if _, stderr, code := runCLI(t, "agent", "--config", bad); code != 2 || !strings.Contains(stderr, "window") {
		t.Errorf("agent with a bad config: exit %d, stderr %q; want 2 naming window", code, stderr)
	}

	// The agent says READY=1 on NOTIFY_SOCKET once it listens (sd_notify):
	// the test waits for that, not for a clock.
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(sockDir, "n.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	agent := exec.Command(lxcfleetBin(t), "agent", "--config", config)
	agent.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.LocalAddr().String())
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = agent.Process.Signal(syscall.SIGTERM) // the pid this test started
		_ = agent.Wait()
	}()
	notify.SetReadDeadline(time.Now().Add(10 * time.Second))
	for buf := make([]byte, 4096); ; {
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatalf("the agent did not say READY=1: %v", err)
		}
		if strings.Contains(string(buf[:n]), "READY=1") {
			break
		}
	}
	out, stderr, code := runCLI(t, "stop-all", "--config", config, "--json")
	if code != 0 || !strings.Contains(out, `"type":"result"`) {
		t.Fatalf("stop-all through the agent: exit %d\n%s%s", code, out, stderr)
	}
	out, _, code = runCLI(t, "jobs", "--config", config)
	if code != 0 || !strings.Contains(out, "stop-all") || !strings.Contains(out, "succeeded") || !strings.Contains(out, "cli") {
		t.Errorf("jobs: exit %d\n%s", code, out)
	}
	out, _, code = runCLI(t, "schedules", "--config", config)
	if code != 0 || !strings.Contains(out, "nightly") || !strings.Contains(out, "03:00:00") {
		t.Errorf("schedules: exit %d\n%s", code, out)
	}
	if _, stderr, code := runCLI(t, "jobs", "--config", config, "20990101T000000.000Z-000000"); code != 2 || !strings.Contains(stderr, "not found") {
		t.Errorf("unknown job: exit %d %q, want 2 not found", code, stderr)
	}
	if _, stderr, code := runCLI(t, "update-code", "--config", config, "--strategy", "yolo"); code != 2 || !strings.Contains(stderr, "--strategy") {
		t.Errorf("bad strategy: exit %d %q", code, stderr)
	}
	if _, stderr, code := runCLI(t, "update-code", "--config", config); code != 2 || !strings.Contains(stderr, "code origin") {
		t.Errorf("update-code without an origin: exit %d %q", code, stderr)
	}
}
