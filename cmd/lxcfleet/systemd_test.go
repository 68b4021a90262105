package main

import (
	"context"
	"fmt"
	"lxcfleet/internal/testfleet"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"lxcfleet/packaging"
)

// fileText reads a file each time it is printed.
type fileText string

func (f fileText) String() string {
	b, _ := os.ReadFile(string(f))
	return string(b)
}

// TestAgentUnderSystemd runs the real binary as systemd would (Type=notify,
// a watchdog): it says READY=1 once its socket answers, pings the watchdog,
// survives SIGHUP, and says STOPPING=1 and exits 0 on SIGTERM.
func TestAgentUnderSystemd(t *testing.T) {
	bin := lxcfleetBin(t)
	dir, err := os.MkdirTemp("", "lxsd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	lxcpath := filepath.Join(dir, "lxc")
	if err := os.MkdirAll(lxcpath, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "a.sock")
	cfg := filepath.Join(dir, "c.toml")
	body := fmt.Sprintf("lxcpath = %q\nstate_dir = %q\n[listen]\nsocket = %q\n", lxcpath, filepath.Join(dir, "state"), sock)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	notify := filepath.Join(dir, "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	cmd := exec.Command(bin, "agent", "--config", cfg)
	// stderr is "the journal": a file whose device:inode JOURNAL_STREAM names.
	logf, err := os.Create(filepath.Join(dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(logf.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify, "WATCHDOG_USEC=400000", fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	logs := fileText(filepath.Join(dir, "journal"))
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		// Only the process this test started, by its pid.
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", logs)
		}
	})
	await := func(want string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case m := <-msgs:
				if strings.Contains(m, want) {
					return
				}
			case <-done:
				t.Fatalf("the agent exited (%v) before it said %s", waitErr, want)
			case <-timeout:
				t.Fatalf("the agent did not say %s within 10s", want)
			}
		}
	}
	await("READY=1")
	cl := socketClient(sock)
	cl.Timeout = 5 * time.Second
	resp, err := cl.Get("http://lxcfleet/healthz")
	if err != nil {
		t.Fatalf("after READY=1 the socket does not answer: %v", err)
	}
	resp.Body.Close()
	await("WATCHDOG=1")

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := testfleet.WaitFileContains(filepath.Join(dir, "journal"), "SIGHUP ignored", 10*time.Second); err != nil {
		t.Fatalf("the agent did not note the SIGHUP: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://lxcfleet/healthz", nil)
	if resp, err := cl.Do(req); err != nil {
		t.Fatalf("after SIGHUP the agent does not answer: %v", err)
	} else {
		resp.Body.Close()
	}
	await("WATCHDOG=1")
	if !strings.Contains(logs.String(), "SIGHUP ignored") {
		t.Errorf("logs: want SIGHUP noted:\n%s", logs)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	await("STOPPING=1")
	// Under the journal: a syslog priority on every line, no timestamp.
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if len(line) < 3 || line[0] != '<' || line[2] != '>' || strings.Contains(line, "time=") {
			t.Errorf("log line not in journal form: %q", line)
		}
	}
	if !strings.Contains(logs.String(), "<4>msg=\"SIGHUP ignored") || !strings.Contains(logs.String(), "<6>msg=\"lxcfleet agent starting\"") {
		t.Errorf("logs: want priorities 4 (warning) and 6 (info):\n%s", logs)
	}
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("exit after SIGTERM: %v, want 0", waitErr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not exit 20s after SIGTERM")
	}
}

// TestServiceInstallWritesThePackagedUnit: `lxcfleet service install`
// gives kardianos/service the .deb's unit, with this binary and config.
func TestServiceInstallWritesThePackagedUnit(t *testing.T) {
	c := serviceConfig(packaging.UnitBinary, packaging.UnitConfig)
	if got := c.Option["SystemdScript"]; got != packaging.Unit {
		t.Errorf("service install unit:\n%v\nwant the packaged unit:\n%s", got, packaging.Unit)
	}
	c = serviceConfig("/opt/lxcfleet/bin/lxcfleet", "/srv/lxcfleet.toml")
	got, _ := c.Option["SystemdScript"].(string)
	if !strings.Contains(got, "ExecStart=/opt/lxcfleet/bin/lxcfleet agent --config /srv/lxcfleet.toml\n") ||
		strings.Replace(got, "/opt/lxcfleet/bin/lxcfleet agent --config /srv/lxcfleet.toml", packaging.UnitBinary+" agent --config "+packaging.UnitConfig, 1) != packaging.Unit {
		t.Errorf("service install unit for another path:\n%s\nwant the packaged unit with only ExecStart changed", got)
	}
	if strings.Contains(got, "{{") {
		t.Errorf("the unit holds template actions kardianos/service would expand")
	}
}

// TestServiceInstallWritesThePackagedHolderUnit: `lxcfleet service
// install` gives kardianos/service the .deb's holder unit too, with the
// config's lxcfleet-listenfd.
func TestServiceInstallWritesThePackagedHolderUnit(t *testing.T) {
	c := holderServiceConfig(packaging.HolderBinary)
	if got := c.Option["SystemdScript"]; got != packaging.HolderUnit {
		t.Errorf("service install holder unit:\n%v\nwant the packaged unit:\n%s", got, packaging.HolderUnit)
	}
	if c.Name != "lxcfleet-holder" {
		t.Errorf("holder unit name %q, want lxcfleet-holder (the agent's unit wants it by that name)", c.Name)
	}
	c = holderServiceConfig("/opt/lxcfleet/bin/lxcfleet-listenfd")
	got, _ := c.Option["SystemdScript"].(string)
	if !strings.Contains(got, "ExecStart=/opt/lxcfleet/bin/lxcfleet-listenfd hold -dir "+packaging.HolderDir+"\n") ||
		strings.Replace(got, "/opt/lxcfleet/bin/lxcfleet-listenfd", packaging.HolderBinary, 1) != packaging.HolderUnit {
		t.Errorf("holder unit for another path:\n%s\nwant the packaged unit with only ExecStart changed", got)
	}
	if strings.Contains(got, "{{") {
		t.Errorf("the holder unit holds template actions kardianos/service would expand")
	}
	if !strings.Contains(packaging.Unit, "Wants=network-online.target lxcfleet-holder.service") {
		t.Errorf("the agent's unit does not want the holder's")
	}
}

// TestServiceInstallWritesThePackagedLockersUnit: `lxcfleet service
// install` gives kardianos/service the .deb's lockers unit too (boot and
// host shutdown), with this binary and the config given in both commands.
func TestServiceInstallWritesThePackagedLockersUnit(t *testing.T) {
	c := lockersServiceConfig(packaging.UnitBinary, packaging.UnitConfig)
	if got := c.Option["SystemdScript"]; got != packaging.LockersUnit {
		t.Errorf("service install lockers unit:\n%v\nwant the packaged unit:\n%s", got, packaging.LockersUnit)
	}
	if c.Name != "lxcfleet-lockers" {
		t.Errorf("lockers unit name %q, want lxcfleet-lockers", c.Name)
	}
	c = lockersServiceConfig("/opt/lxcfleet/bin/lxcfleet", "/srv/lxcfleet.toml")
	got, _ := c.Option["SystemdScript"].(string)
	for _, want := range []string{
		"ExecStart=-/opt/lxcfleet/bin/lxcfleet start-all --boot --config /srv/lxcfleet.toml\n",
		"ExecStop=/opt/lxcfleet/bin/lxcfleet stop-all --host-shutdown --config /srv/lxcfleet.toml\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("lockers unit for another path lacks %q:\n%s", want, got)
		}
	}
	back := strings.ReplaceAll(strings.ReplaceAll(got, "/opt/lxcfleet/bin/lxcfleet", packaging.UnitBinary), "/srv/lxcfleet.toml", packaging.UnitConfig)
	if back != packaging.LockersUnit || strings.Contains(got, "{{") {
		t.Errorf("lockers unit for another path:\n%s\nwant the packaged unit with only its two commands changed", got)
	}
}
