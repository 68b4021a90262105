package downtime

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func get(t *testing.T, port int) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/some/path")
	if err != nil {
		t.Fatalf("GET port %d: %v", port, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestHoldServesPageAndReleaseFreesPort(t *testing.T) {
	var h Holder
	t.Cleanup(h.ReleaseAll)
	port := freePort(t)
	until := time.Now().Add(90 * time.Second)
	if err := h.Hold(port, until); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.WaitBound(ctx, port); err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, port)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status: got %d, want 503", resp.StatusCode)
	}
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if ra < 80 || ra > 91 {
		t.Errorf("Retry-After: got %q, want about 90", resp.Header.Get("Retry-After"))
	}
	if !strings.Contains(body, "Down for maintenance") || !strings.Contains(body, until.UTC().Format(time.RFC3339)) {
		t.Errorf("body lacks the title or the end time %s:\n%s", until.UTC().Format(time.RFC3339), body)
	}

	// A second Hold moves the end.
	later := until.Add(time.Hour)
	if err := h.Hold(port, later); err != nil {
		t.Fatal(err)
	}
	if _, body := get(t, port); !strings.Contains(body, later.UTC().Format(time.RFC3339)) {
		t.Errorf("after a second Hold the page does not show the new end %s", later.UTC().Format(time.RFC3339))
	}

	h.Release(port)
	if h.Bound(port) || len(h.Ports()) != 0 {
		t.Errorf("after Release: Bound %v, Ports %v; want false, []", h.Bound(port), h.Ports())
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("the locker cannot bind its port after Release: %v", err)
	}
	l.Close()
	h.Release(port) // a second release is a no-op
}

func TestHoldWaitsForTheLockerToLetGo(t *testing.T) {
	h := Holder{RetryEvery: 5 * time.Millisecond}
	t.Cleanup(h.ReleaseAll)
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := app.Addr().(*net.TCPAddr).Port
	if err := h.Hold(port, time.Time{}); err != nil {
		t.Fatal(err)
	}
	// The hold binds only by binding the port, which the app has: a look
	// now says what a look later would (no wait for a thing that cannot
	// happen). WaitBound below proves the retries go on.
	if h.Bound(port) {
		t.Fatal("bound a port the app still listens on")
	}
	app.Close() // the app exits
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	begin := time.Now()
	if err := h.WaitBound(ctx, port); err != nil {
		t.Fatalf("waiting for the hold: %v", err)
	}
	t.Logf("held %v after the app let go", time.Since(begin))
	resp, body := get(t, port)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "30" || !strings.Contains(body, "a few minutes") {
		t.Errorf("got %d Retry-After %q; want 503, 30 and an unknown end", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestReleaseCancelsAPendingHold(t *testing.T) {
	h := Holder{RetryEvery: 5 * time.Millisecond}
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	port := app.Addr().(*net.TCPAddr).Port
	if err := h.Hold(port, time.Time{}); err != nil {
		t.Fatal(err)
	}
	h.Release(port) // the stop failed: the app keeps its port
	app.Close()
	// Release returned after the hold's goroutine ended: nothing is left
	// that could bind the port later.
	if h.Bound(port) {
		t.Fatal("a released hold bound the port later")
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("port not free after a released pending hold: %v", err)
	}
	l.Close()
}

func TestHoldRejectsBadPorts(t *testing.T) {
	var h Holder
	for _, p := range []int{0, -1, 70000} {
		if err := h.Hold(p, time.Time{}); err == nil {
			t.Errorf("Hold(%d): got nil error, want one", p)
		}
	}
}

func TestPage(t *testing.T) {
	until := time.Now().Add(2 * time.Minute)
	tests := []struct {
		name       string
		method     string
		accept     string
		info       PageInfo
		wantRA     int // 0: do not check exactly
		wantInBody string
	}{
		{"html with end", "GET", "text/html", PageInfo{Until: until}, 0, "Expected back by"},
		{"html unknown end", "GET", "", PageInfo{}, 30, "a few minutes"},
		{"back in 1.2s", "GET", "", PageInfo{Until: time.Now().Add(1200 * time.Millisecond)}, 2, "Expected back by"},
		{"back in 0.3s", "GET", "", PageInfo{Until: time.Now().Add(300 * time.Millisecond)}, 1, "Expected back by"},
		{"past end", "GET", "", PageInfo{Until: time.Now().Add(-time.Minute)}, 30, "a few minutes"},
		{"json", "GET", "application/json", PageInfo{Until: until, Title: "Updating lockers"}, 0, `"error":"Updating lockers"`},
		{"head", "HEAD", "", PageInfo{}, 30, ""},
		{"post", "POST", "", PageInfo{Message: "Back after the update."}, 30, "Back after the update."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, "/maintenance", nil)
			if tt.accept != "" {
				req.Header.Set("Accept", tt.accept)
			}
			rec := httptest.NewRecorder()
			Page(func() PageInfo { return tt.info }).ServeHTTP(rec, req)
			if rec.Code != http.StatusServiceUnavailable {
				t.Errorf("status: got %d, want 503", rec.Code)
			}
			ra, err := strconv.Atoi(rec.Header().Get("Retry-After"))
			if err != nil || ra < 1 {
				t.Errorf("Retry-After: got %q, want seconds >= 1", rec.Header().Get("Retry-After"))
			}
			if tt.wantRA != 0 && ra != tt.wantRA {
				t.Errorf("Retry-After: got %d, want %d", ra, tt.wantRA)
			}
			body := rec.Body.String()
			if tt.method == "HEAD" && body != "" {
				t.Errorf("HEAD body: got %d bytes, want none", len(body))
			}
			if !strings.Contains(body, tt.wantInBody) {
				t.Errorf("body lacks %q:\n%s", tt.wantInBody, body)
			}
		})
	}
}
