package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"lxcfleet/agent"
)

// TestFollowSaysTheAgentWentAway: a job stream cut mid-job (the agent was
// SIGKILLed: the connection breaks, "unexpected EOF") or ended without the
// job's end says the agent went away, that its next start recovers the
// job, and how to follow the job again, never only "unexpected EOF".
func TestFollowSaysTheAgentWentAway(t *testing.T) {
	for _, abrupt := range []bool{true, false} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: stage\ndata: {\"type\":\"stage\",\"stage\":\"plan\",\"message\":\"3 to restart\"}\n\n")
			w.(http.Flusher).Flush()
			if abrupt {
				panic(http.ErrAbortHandler) // the connection breaks mid-body
			}
		}))
		t.Cleanup(srv.Close)
		addr := srv.Listener.Addr().String()
		cl := &apiClient{close: func() {}, http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr)
			},
		}}}
		stages := 0
		_, err := cl.follow(t.Context(), "J1", func(e agent.Event) { stages++ })
		if err == nil {
			t.Fatal("follow of a cut stream: no error")
		}
		for _, want := range []string{"the agent went away", "recovers it", "lxcfleet jobs J1 --follow"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("abrupt=%v: error %q: want it to say %q", abrupt, err, want)
			}
		}
		t.Logf("abrupt=%v: %v", abrupt, err)
		if stages != 1 {
			t.Errorf("abrupt=%v: %d events before the cut, want 1", abrupt, stages)
		}
	}
}
