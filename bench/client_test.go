package bench

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestClientCountsQueuedRefusedAndTimedOut: a request to a socket whose
// owner accepts late (a held socket while its locker restarts) is
// answered, with the wait in its latency; one to a closed port is
// refused; one nobody answers times out; one closed unanswered is a
// reset. Real sockets on loopback.
func TestClientCountsQueuedRefusedAndTimedOut(t *testing.T) {
	queued, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer queued.Close()
	release := make(chan struct{})
	go func() {
		<-release // the connection waits in the accept queue until then
		c, err := queued.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		fmt.Fprint(c, "HTTP/1.0 200 OK\r\n\r\n{\"build\":\"B\"}")
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	hangup, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hangup.Close()
	go func() {
		c, err := hangup.Accept()
		if err == nil {
			c.Close()
		}
	}()

	done := make(chan clientReq)
	go func() { done <- oneRequest(queued.Addr().String(), 10*time.Second) }()
	wait := 300 * time.Millisecond
	time.Sleep(wait) // how long the request queues, not a synchronisation
	close(release)
	released := time.Now()
	r := <-done
	// It queued from its send to the release at least (the goroutine may
	// have sent it later than the sleep began, on a loaded machine).
	queuedFor := released.Sub(r.sent)
	if r.fail != "" || r.build != "B" || r.took < queuedFor {
		t.Errorf("queued request: fail %q (%s), build %q, took %v; want answered by B after at least %v", r.fail, r.err, r.build, r.took, queuedFor)
	}
	reqs := []clientReq{r}
	for _, c := range []struct {
		addr, want string
	}{{closedAddr, failRefused}, {silent.Addr().String(), failTimeout}, {hangup.Addr().String(), failReset}} {
		got := oneRequest(c.addr, 200*time.Millisecond)
		if got.fail != c.want {
			t.Errorf("request to %s: got %q (%s), want %q", c.addr, got.fail, got.err, c.want)
		}
		reqs = append(reqs, got)
	}
	f := clientFigures(reqs, r.sent, time.Now())
	if f.Requests != 4 || f.OK != 1 || f.Refused != 1 || f.TimedOut != 1 || f.Reset != 1 || f.Failed() != 3 || f.P99ms < float64(queuedFor.Milliseconds()) {
		t.Errorf("figures %+v", f)
	}
}

// TestPhaseSpans reads update-code's --json container events.
func TestPhaseSpans(t *testing.T) {
	out := []byte(`{"type":"stage","time":"2026-12-06T08:52:49Z","message":"building"}
{"type":"event","time":"2026-12-06T08:52:51Z","container":"a","phase":"stopping"}
{"type":"event","time":"2026-12-06T08:52:52Z","container":"a","phase":"stopped"}
{"type":"event","time":"2026-12-06T08:52:53Z","container":"a","phase":"starting"}
{"type":"event","time":"2026-12-06T08:52:53.5Z","container":"a","phase":"healthy"}
{"type":"event","time":"2026-12-06T08:52:51Z","container":"b","phase":"stopping"}
`)
	ss, sh := phaseSpans(out)
	if len(ss) != 1 || ss[0] != 2 || len(sh) != 1 || sh[0] != 0.5 {
		t.Errorf("got stopping → starting %v, starting → healthy %v; want [2] and [0.5]", ss, sh)
	}
}

// TestClientsAllOn: the window ends at the latest of the lockers' first
// answers by the target build, once every locker has one.
func TestClientsAllOn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					fmt.Fprint(c, "HTTP/1.0 200 OK\r\n\r\n{\"build\":\"B\"}")
				}
			}()
		}
	}()
	c := startClients([]string{ln.Addr().String(), ln.Addr().String()}, 20*time.Millisecond, 5*time.Second)
	var end time.Time
	ok := false
	// The sleep paces a poll: the clients keep their first answers in a
	// table and send no event (the benchmark reads it once, at the end).
	for deadline := time.Now().Add(10 * time.Second); !ok && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		end, ok = c.allOn("B")
	}
	reqs := c.finish()
	if !ok {
		t.Fatalf("never all on B; %d requests", len(reqs))
	}
	if _, on := c.allOn("C"); on {
		t.Error("all on C, which never answered")
	}
	for i := range 2 {
		if at := c.first[i]["B"]; at.After(end) {
			t.Errorf("locker %d first on B at %v, after the window's end %v", i, at, end)
		}
	}
}

// TestCtlStartingCountsAgainstTheLaunchW: replaces launched under W 8
// and still in flight when W is cut to 4 are no breach of the cap (a cut
// does not recall launches); a launch made under W 4 while 4 are in
// flight is one.
func TestCtlStartingCountsAgainstTheLaunchW(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	var all []any
	at := 0
	add := func(kv map[string]any) {
		at++
		kv["time"] = t0.Add(time.Duration(at) * time.Millisecond).Format(time.RFC3339Nano)
		all = append(all, kv)
	}
	ev := func(c, phase string, w int) {
		kv := map[string]any{"type": "container", "container": c, "phase": phase}
		if w > 0 {
			kv["max_starting"] = float64(w)
		}
		add(kv)
	}
	add(map[string]any{"type": "stage", "message": "pacing: W=8"})
	for i := range 8 {
		ev(fmt.Sprintf("l%d", i), "stopping", 8)
	}
	add(map[string]any{"type": "stage", "message": "pacing: IO pressure: W=4"})
	for i := range 8 {
		ev(fmt.Sprintf("l%d", i), "stopped", 0)
		ev(fmt.Sprintf("l%d", i), "starting", 8)
	}
	for i := range 5 {
		ev(fmt.Sprintf("l%d", i), "healthy", 0)
	}
	ev("l8", "stopping", 4) // 3 in flight + this one: within W 4
	var m Mark
	ctlStarting(&m, all)
	if m.CtlOverCap != 0 || m.CtlMaxStarting != 8 || m.CtlMaxW != 8 || m.CtlWChanges != 2 {
		t.Errorf("launches before a cut: over cap %d, most starting %d, W max %d, changes %d; want 0, 8, 8, 2", m.CtlOverCap, m.CtlMaxStarting, m.CtlMaxW, m.CtlWChanges)
	}
	ev("l9", "stopping", 4) // 5 in flight under W 4: a breach
	m = Mark{}
	ctlStarting(&m, all)
	if m.CtlOverCap != 1 {
		t.Errorf("a launch past its own W: over cap %d, want 1", m.CtlOverCap)
	}
}

// TestSplitByRestart: a request sent to a locker between its stopping and
// its healthy event counts as in its restart; one sent to it before or
// after, or to another locker meanwhile, does not. A restart with no end
// (the job died) runs to the end.
func TestSplitByRestart(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 20, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	ev := func(s float64, name, phase string) string {
		return fmt.Sprintf(`{"type":"event","time":%q,"container":%q,"phase":%q}`, at(s).Format(time.RFC3339Nano), name, phase)
	}
	out := strings.Join([]string{
		`{"type":"stage","stage":"plan"}`,
		ev(1, "a", "stopping"), ev(1.1, "a", "stopped"), ev(1.2, "a", "starting"), ev(2, "a", "healthy"),
		ev(3, "b", "stopping"), ev(3.5, "b", "starting"),
	}, "\n")
	spans := restartSpans([]byte(out))
	if len(spans["a"]) != 1 || !spans["a"][0].from.Equal(at(1)) || !spans["a"][0].to.Equal(at(2)) {
		t.Fatalf("spans of a: %+v", spans["a"])
	}
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	reqs := []clientReq{
		{locker: 0, sent: at(0.5), took: ms(3)},   // a, before its restart
		{locker: 0, sent: at(1.5), took: ms(500)}, // a, in it: waits for the start
		{locker: 0, sent: at(2.5), took: ms(4)},   // a, after it
		{locker: 1, sent: at(1.5), took: ms(5)},   // b, not restarting then
		{locker: 1, sent: at(4), took: ms(900)},   // b, restarting to the end
		{locker: 1, sent: at(4.5), fail: failRefused},
	}
	in, elsewhere := splitByRestart(reqs, t0, at(10), []string{"a", "b"}, spans)
	if in.Requests != 3 || in.OK != 2 || in.Refused != 1 || in.MaxMs != 900 {
		t.Errorf("in restart: %+v, want 3 requests (2 answered, max 900 ms, 1 refused)", in)
	}
	if elsewhere.Requests != 3 || elsewhere.OK != 3 || elsewhere.MaxMs != 5 {
		t.Errorf("elsewhere: %+v, want 3 answered, max 5 ms", elsewhere)
	}
}
