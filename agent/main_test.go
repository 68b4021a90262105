package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
)

func TestMain(m *testing.M) { testfleet.Main(m) }

// testLogger sends the agent's logs to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// emptyHost is a real lxcctl.Host on an empty private lxcpath: listing it
// needs neither root nor a container.
func emptyHost(t testing.TB) *lxcctl.Host {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lxc")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	h, err := lxcctl.NewHost(lxcctl.Options{LXCPath: dir})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// served is a real agent serving on a Unix socket in t.TempDir() and, when
// a token is given, on 127.0.0.1:0.
type served struct {
	a     *Agent
	sock  string
	tcp   string // host:port, "" without a TCP listener
	unix  *http.Client
	token string
}

// serveAgent starts a.Run and stops it when the test ends.
// testDefaults are the built-in defaults with a 1s monitor window, so
// that tests of other things do not wait 10s per locker.
func testDefaults() Defaults {
	d := DefaultDefaults()
	d.Policy.Monitor = time.Second
	return d
}

func serveAgent(t testing.TB, cfg Config, deps Deps) *served {
	t.Helper()
	// Unix socket paths are limited to 108 bytes: keep it short.
	sockDir, err := os.MkdirTemp("", "lxf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.Defaults == (Defaults{}) {
		cfg.Defaults = testDefaults()
	}
	cfg.Listen.Socket = filepath.Join(sockDir, "s.sock")
	if cfg.Listen.Token != "" && cfg.Listen.TCP == "" {
		cfg.Listen.TCP = "127.0.0.1:0"
	}
	if deps.Logger == nil {
		deps.Logger = testLogger(t)
	}
	a, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Run did not return 20s after its context ended")
		}
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	select {
	case <-a.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not listen within 10s")
	}
	s := &served{a: a, sock: cfg.Listen.Socket, token: cfg.Listen.Token, unix: unixClient(cfg.Listen.Socket)}
	for _, ad := range a.Addrs() {
		if ad.Network() == "tcp" {
			s.tcp = ad.String()
		}
	}
	return s
}

func unixClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

// do sends a request over the socket and returns the status and body.
func (s *served) do(t testing.TB, method, path, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://lxcfleet"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.unix.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// submit posts a job and returns it; it fails the test on any status but 202.
func (s *served) submit(t testing.TB, path, body string) Job {
	t.Helper()
	code, b := s.do(t, "POST", path, body)
	if code != http.StatusAccepted {
		t.Fatalf("POST %s %s: got %d %s, want 202", path, body, code, b)
	}
	var j Job
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatalf("decoding job: %v: %s", err, b)
	}
	return j
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	ID   string
	Type string
	Data []byte
}

// follow reads a job's SSE stream to its end and returns the events.
func (s *served) follow(t testing.TB, id string, each func(sseEvent)) []sseEvent {
	t.Helper()
	return followJob(t, s.unix, id, each)
}

// followJob reads job id's SSE stream through cl (an agent's Unix socket)
// to its end and returns the events.
func followJob(t testing.TB, cl *http.Client, id string, each func(sseEvent)) []sseEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://lxcfleet/v1/jobs/"+id+"/events", nil)
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("following job %s: %v", id, err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET events: got %d %q %s, want 200 text/event-stream", resp.StatusCode, ct, b)
	}
	events, err := readSSE(resp.Body, each)
	if err != nil {
		t.Fatalf("reading the event stream: %v", err)
	}
	return events
}

// readSSE parses an event stream until it ends or an "end" event arrives.
func readSSE(r io.Reader, each func(sseEvent)) ([]sseEvent, error) {
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.Type == "" && cur.Data == nil {
				continue
			}
			out = append(out, cur)
			if each != nil {
				each(cur)
			}
			if cur.Type == "end" {
				return out, nil
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			cur.ID = line[4:]
		case strings.HasPrefix(line, "event: "):
			cur.Type = line[7:]
		case strings.HasPrefix(line, "data: "):
			cur.Data = append(bytes.Clone(cur.Data), line[6:]...)
		default:
			return out, errors.New("unexpected line in event stream: " + line)
		}
	}
	if err := sc.Err(); err != nil {
		return out, err
	}
	return out, errors.New("event stream ended without an end event")
}

// waitJob polls a job until it ends.
func waitJob(t testing.TB, a *Agent, id string) Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	j, err := a.Wait(ctx, id)
	if err != nil {
		t.Fatalf("waiting for job %s: %v", id, err)
	}
	return j
}

// result decodes a job's Result.
func result(t testing.TB, j Job) Result {
	t.Helper()
	var r Result
	if len(j.Result) > 0 {
		if err := json.Unmarshal(j.Result, &r); err != nil {
			t.Fatalf("decoding result of job %s: %v", j.ID, err)
		}
	}
	return r
}

// states returns each locker's LXC state.
func states(t testing.TB, h *lxcctl.Host, names []string) map[string]lxcctl.State {
	t.Helper()
	out := map[string]lxcctl.State{}
	for _, n := range names {
		st, err := h.State(context.Background(), n)
		if err != nil {
			t.Fatalf("state of %s: %v", n, err)
		}
		out[n] = st
	}
	return out
}

// pids returns each locker's init pid.
func pids(t testing.TB, h *lxcctl.Host, names []string) map[string]int {
	t.Helper()
	infos, err := h.Select(context.Background(), names, "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, in := range infos {
		out[in.Name] = in.InitPID
	}
	return out
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// eventually waits until cond holds, and fails the test with cond's last
// reason after within. It is for states that send no event to wait on
// (LXC container states, etcd records and the supervisor's decisions read
// through the API): the interval paces the reads; jobs are waited for by
// their event streams or Agent.Wait instead.
func eventually(t testing.TB, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, why)
		}
		time.Sleep(50 * time.Millisecond) // paces the poll of a state that has no event
	}
}
