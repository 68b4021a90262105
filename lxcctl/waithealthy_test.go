package lxcctl

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestWaitHealthyKeepsTheLastCompleteCheck: the error of a start that is
// not healthy by its deadline names the last check that ended, not the
// attempt the deadline cut. Here the first check gets a 503 and the next
// one hangs until the deadline: the error says 503. (Found by
// provision's TestSquattedPortNeverHealthy on CI: its last attempt, cut
// at the deadline, hid the squatter the checks before it had named.)
func TestWaitHealthyKeepsTheLastCompleteCheck(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		<-r.Context().Done() // hangs until the client gives up
	}))
	defer srv.Close()
	k := newChecker(&Host{})
	// The first check has the deadline's 2 s to end (a loaded box's
	// loopback request takes far less); the second begins 1 s after it.
	// The container's state is read every 5 intervals (5 s): after the
	// deadline, so this container, which does not exist, is not.
	hc := HealthCheck{Kind: HealthHTTP, Target: srv.URL + "/healthz", Interval: time.Second, Timeout: 5 * time.Second}
	err := k.waitHealthy(context.Background(), hc, Info{Name: "c"}, time.Now().Add(2*time.Second))
	if !errors.Is(err, errUnhealthy) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("waitHealthy = %v; want not healthy, naming the 503 of the last check that ended", err)
	}
	if n.Load() < 2 {
		t.Fatalf("%d checks, want a second one cut by the deadline", n.Load())
	}
}

// TestPollInterval: an HTTP or TCP wait without an interval of its own
// tries every 10 ms alone, every n × 5 ms among n waits, and never less
// often than every 100 ms (the old fixed interval); an exec check keeps
// 100 ms; a check's own interval wins.
func TestPollInterval(t *testing.T) {
	hh, tt := HealthCheck{Kind: HealthHTTP}, HealthCheck{Kind: HealthTCP}
	for _, tc := range []struct {
		hc      HealthCheck
		waiters int64
		want    time.Duration
	}{
		{hh, 1, 10 * time.Millisecond},
		{hh, 2, 10 * time.Millisecond},
		{tt, 3, 15 * time.Millisecond},
		{hh, 20, 100 * time.Millisecond},
		{hh, 300, 100 * time.Millisecond},
		{HealthCheck{Kind: HealthExec}, 1, 100 * time.Millisecond},
		{HealthCheck{Kind: HealthHTTP, Interval: 20 * time.Millisecond}, 300, 20 * time.Millisecond},
	} {
		if got := pollInterval(tc.hc, tc.waiters); got != tc.want {
			t.Errorf("pollInterval(%s, interval %v, %d waiters) = %v, want %v", tc.hc.Kind, tc.hc.Interval, tc.waiters, got, tc.want)
		}
	}
}

// TestWaitsShareOneBudget: 40 starts waiting at once on apps that answer
// 503 make a few attempts each (every 100 ms), not one every 10 ms. A
// real HTTP server on loopback; the count is an upper bound, so a slow
// machine only lowers it.
func TestWaitsShareOneBudget(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		http.Error(w, "starting", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	k := newChecker(&Host{})
	hc := HealthCheck{Kind: HealthHTTP, Target: srv.URL + "/healthz", Timeout: time.Second}
	const waits = 40
	// Before the first state read (500 ms): the container does not exist.
	deadline := time.Now().Add(450 * time.Millisecond)
	done := make(chan error, waits)
	for range waits {
		go func() { done <- k.waitHealthy(context.Background(), hc, Info{Name: "c"}, deadline) }()
	}
	for range waits {
		if err := <-done; !errors.Is(err, errUnhealthy) {
			t.Fatalf("waitHealthy = %v, want not healthy", err)
		}
	}
	// Each: one attempt at once, then every 100 ms (40 × 5 ms, at most
	// 100): 5 by the deadline. 10 ms apart they would be 45 each.
	if got := n.Load(); got > 6*waits {
		t.Errorf("%d waits made %d attempts in 450 ms, want at most %d: they do not share a budget", waits, got, 6*waits)
	}
	if k.waiting.Load() != 0 {
		t.Errorf("%d waits still counted after they ended", k.waiting.Load())
	}
}

// BenchmarkAttemptRefused is one HTTP health attempt on a loopback port
// nobody listens on: what the shared budget spends per attempt while an
// app boots (50–130 µs a run on this 2-core VM, 2026-12-07).
func BenchmarkAttemptRefused(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	k := newChecker(&Host{})
	hc := HealthCheck{Kind: HealthHTTP, Target: "http://" + addr + "/healthz"}
	for b.Loop() {
		if k.once(context.Background(), hc, Info{Name: "c"}) == nil {
			b.Fatal("an attempt on a closed port passed")
		}
	}
}
