package console_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"lxcfleet/rollout"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lxcfleet/agent"
	"lxcfleet/internal/testfleet"
)

// probeResult is one request to a locker's port.
type probeResult struct {
	at         time.Time
	kind       string // app, page, refused, other
	retryAfter string
	body       string
}

var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}

func probe(ctx context.Context, port int) probeResult {
	r := probeResult{at: time.Now()}
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d/healthz", port), nil)
	resp, err := probeClient.Do(req)
	if err != nil {
		r.kind = "other"
		if errors.Is(err, syscall.ECONNREFUSED) {
			r.kind = "refused"
		}
		r.body = err.Error()
		return r
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r.body, r.retryAfter = string(b), resp.Header.Get("Retry-After")
	switch {
	case resp.StatusCode == 200 && strings.Contains(r.body, `"locker"`):
		r.kind = "app"
	case resp.StatusCode == 503 && strings.Contains(r.body, "Down for maintenance"):
		r.kind = "page"
	default:
		r.kind = fmt.Sprintf("other %d", resp.StatusCode)
	}
	return r
}

// TestDowntimePageDuringOfflineUpdate: with downtime_page on, a prober
// hitting a locker's port during an offline update gets the maintenance
// page (503, Retry-After, the expected end) while the locker is down
// between its stop and its start, and the app again afterwards.
func TestDowntimePageDuringOfflineUpdate(t *testing.T) {
	testfleet.RequireLXC(t)
	e := newEnv(t, 3, testfleet.Options{StartupMS: 300}, func(c *agent.Config) {
		c.Defaults.DowntimePage = true
		c.Defaults.Policy.MaxUnavailable = 1     // the last locker waits for the others' starts
		c.Defaults.Policy.Pacing = rollout.Fixed // (adaptive pacing would widen W)
	})
	target := e.lockers[len(e.lockers)-1] // started last
	// An offline update stops each locker just before its own start: the
	// page holds the port from the app's exit to the start, which a stop
	// 1.5 s slower makes long enough to see.
	slowStops = map[string]time.Duration{target.Name: 1500 * time.Millisecond}
	t.Cleanup(func() { slowStops = nil })

	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var results []probeResult
	added := make(chan struct{}) // closed (and replaced) at each new result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			r := probe(ctx, target.Port)
			if ctx.Err() != nil {
				return
			}
			mu.Lock()
			results = append(results, r)
			close(added)
			added = make(chan struct{})
			mu.Unlock()
			// Paces the prober: a request every ~15 ms is a dense timeline
			// without flooding the locker.
			time.Sleep(15 * time.Millisecond)
		}
	}()
	// waitApp waits until the prober got an answer from the app probed
	// after since.
	waitApp := func(what string, since time.Time) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			mu.Lock()
			ch := added
			for _, r := range results {
				if r.kind == "app" && r.at.After(since) {
					mu.Unlock()
					return
				}
			}
			mu.Unlock()
			select {
			case <-ch:
			case <-timeout:
				t.Fatalf("the prober got no answer from the app %s", what)
			}
		}
	}
	waitApp("before the update", time.Time{})
	job, err := e.agent.Submit(agent.Request{Kind: agent.KindUpdate, Strategy: agent.StrategyOffline, Trigger: "test"})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer wcancel()
	job, err = e.agent.Wait(wctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if job.State == agent.JobSucceeded {
		waitApp("after the update", time.Now())
	}
	cancel()
	wg.Wait()
	if job.State != agent.JobSucceeded {
		t.Fatalf("offline update: got %s (%s), want succeeded", job.State, job.Error)
	}

	// Summarise the timeline: runs of the same kind.
	var kinds []string
	var runs []string
	count := map[string]int{}
	var firstPage *probeResult
	var refusedWhileDown time.Duration
	seenDown := false
	for i, r := range results {
		count[r.kind]++
		if r.kind == "page" && firstPage == nil {
			firstPage = &results[i]
		}
		if r.kind != "app" {
			seenDown = true
		}
		if r.kind == "refused" && seenDown && i+1 < len(results) {
			refusedWhileDown += results[i+1].at.Sub(r.at)
		}
		if len(kinds) == 0 || kinds[len(kinds)-1] != r.kind {
			kinds = append(kinds, r.kind)
			runs = append(runs, fmt.Sprintf("%s@%s", r.kind, r.at.Format("05.000")))
		}
	}
	t.Logf("prober: %d requests %v; timeline %s", len(results), count, strings.Join(runs, " → "))
	if firstPage == nil {
		t.Fatalf("the prober never got the maintenance page while %s was down (timeline %s)", target.Name, strings.Join(runs, " → "))
	}
	if firstPage.retryAfter == "" || !strings.Contains(firstPage.body, "Expected back by") {
		t.Errorf("page: Retry-After %q, body without the expected end:\n%s", firstPage.retryAfter, firstPage.body)
	}
	if kinds[0] != "app" || kinds[len(kinds)-1] != "app" {
		t.Errorf("timeline %v: want the app first and last", kinds)
	}
	var held time.Duration
	for i, r := range results {
		if r.kind == "page" && i+1 < len(results) {
			held += results[i+1].at.Sub(r.at)
		}
	}
	t.Logf("held with the page for %v; refused for %v (the moments between the app letting go and the hold, and between the release and the app listening)", held.Round(time.Millisecond), refusedWhileDown.Round(time.Millisecond))
	// Held from the app's exit to the start; refused only in the moments
	// around the hold and while the app boots (it must bind the port).
	if refusedWhileDown > held/2 {
		t.Errorf("refused for %v while held for only %v: the hold should cover most of the downtime", refusedWhileDown, held)
	}
	if !healthy(target) {
		t.Errorf("%s does not answer after the update", target.Name)
	}
}
