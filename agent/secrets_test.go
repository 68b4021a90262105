package agent

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
)

const goodToken = "dGhpcyBpcyBhIDMyIGJ5dGUgdG9rZW4gZm9yIHRlc3RzIQ=="

// TestListenerRefusesShortToken: the agent itself refuses a short token.
func TestListenerRefusesShortToken(t *testing.T) {
	a, err := New(Config{StateDir: t.TempDir(), Listen: Listen{TCP: "127.0.0.1:0", Token: "short"}}, Deps{Containers: emptyHost(t), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Errorf("Run with a 5-byte token: got %v, want a refusal", err)
	}
}

// TestListenerClosesIdleConnections: a keep-alive connection that sends
// nothing more is closed after the idle timeout, and one that never sends
// a whole request after the read timeout; refused tokens are logged.
func TestListenerClosesIdleConnections(t *testing.T) {
	logs := &syncBuffer{}
	s := serveAgent(t, Config{Listen: Listen{Token: goodToken, IdleTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond}}, Deps{Containers: emptyHost(t), Logger: slogTo(logs)})
	// Idle after an unauthenticated request.
	c, err := net.Dial("tcp", s.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /v1/host HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: got %d, want 401", resp.StatusCode)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	begin := time.Now()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle keep-alive connection: got %v, want EOF (closed by the agent)", err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("idle connection closed after %v, want about 300ms", d)
	}
	if !strings.Contains(logs.String(), "refused a request") || !strings.Contains(logs.String(), "/v1/host") {
		t.Errorf("logs: got\n%s\nwant the refused request logged", logs)
	}

	// A request body that never arrives.
	c2, err := net.Dial("tcp", s.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprintf(c2, "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100\r\n\r\n{", goodToken)
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c2)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("a stalled request body: the connection stayed open 5s (read %q)", b)
	}
}

// TestAPIDurationsAreStrings: "30s" is a duration, 30 is a 400 naming the
// field (it used to mean 30 nanoseconds).
func TestAPIDurationsAreStrings(t *testing.T) {
	s := serveAgent(t, Config{}, Deps{Containers: emptyHost(t)})
	code, b := s.do(t, "POST", "/v1/stop-all", `{"stop_timeout": 30}`)
	if code != http.StatusBadRequest || !strings.Contains(string(b), "stop_timeout") || !strings.Contains(string(b), `\"30s\"`) {
		t.Errorf("stop_timeout 30: got %d %s, want 400 naming stop_timeout", code, b)
	}
	code, b = s.do(t, "POST", "/v1/stop-all", `{"stop_timeout": "30s"}`)
	if code != http.StatusAccepted {
		t.Errorf(`stop_timeout "30s": got %d %s, want 202`, code, b)
	}
}

// TestFailedLockersAreLogged: a locker that fails to start is logged with
// its name and reason, not only counted in the job's result.
func TestFailedLockersAreLogged(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	bad := f.Add(1, testfleet.Crash)[0].Name
	good := f.Add(1, testfleet.Normal)[0].Name
	logs := &syncBuffer{}
	s := serveAgent(t, Config{LXCPath: f.Path}, Deps{Containers: f.Host, Logger: slogTo(logs)})
	j := s.submit(t, "/v1/start-all", `{"names":["`+bad+`","`+good+`"],"health":"http://127.0.0.1:{port}/healthz","deadline":"5s"}`)
	j = waitJob(t, s.a, j.ID)
	if j.State == JobSucceeded {
		t.Fatalf("start-all with a crashing locker: got %s, want failed", j.State)
	}
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `msg="locker failed"`) {
			line = l
			if strings.Contains(l, "container="+good) {
				t.Errorf("a healthy locker logged as failed: %s", l)
			}
		}
	}
	if !strings.Contains(line, "container="+bad) || !strings.Contains(line, "level=ERROR") {
		t.Errorf("logs: got\n%s\nwant an error naming %s", logs, bad)
	}
}

// TestEventStreamOutlivesReadTimeout: a job's event stream runs longer
// than the listener's read timeout and still reaches its end.
func TestEventStreamOutlivesReadTimeout(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	name := f.Add(1, testfleet.Stubborn)[0].Name
	if _, err := lockerverbs.StartAll(t.Context(), f.Host, []string{name}, lxcctl.StartOptions{Window: 1, Deadline: 20 * time.Second, Health: testfleet.HealthCheck()}); err != nil {
		t.Fatal(err)
	}
	s := serveAgent(t, Config{LXCPath: f.Path, Listen: Listen{ReadTimeout: 200 * time.Millisecond}}, Deps{Containers: f.Host})
	// The stubborn locker takes its whole 1.5s grace period.
	j := s.submit(t, "/v1/stop-all", `{"names":["`+name+`"],"stop_timeout":"1500ms"}`)
	begin := time.Now()
	events := s.follow(t, j.ID, nil)
	if events[len(events)-1].Type != "end" {
		t.Errorf("stream: last event %q, want end", events[len(events)-1].Type)
	}
	if d := time.Since(begin); d < time.Second {
		t.Errorf("the stream lasted %v, want longer than the read timeout (the stop takes 1.5s)", d)
	}
}
