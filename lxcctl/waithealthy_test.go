package lxcctl

import (
	"context"
	"errors"
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
