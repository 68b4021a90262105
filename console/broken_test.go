package console_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lxcfleet/agent"
	"lxcfleet/internal/testfleet"
)

// TestConsoleShowsBrokenLocker: beside two running lockers, one container
// whose config LXC cannot load (a typo'd key). The console lists it as
// broken with LXC's reason (row, map tile, fleet card) instead of hiding
// it, and a stop-all from the agent stops the other two and fails naming
// it.
func TestConsoleShowsBrokenLocker(t *testing.T) {
	exec := requireChromium(t)
	testfleet.RequireLXC(t)
	e := newEnv(t, 2, testfleet.Options{}, nil)
	bad := e.fleet.Add(1, testfleet.Normal)[0]
	const badLine = "lxc.tty.maxx = 5\n"
	if _, err := e.fleet.Host.EditConfig(bad.Name, func(old []byte) ([]byte, error) { return append(old, badLine...), nil }); err != nil {
		t.Fatal(err)
	}
	// Runs before the fleet's cleanup (LIFO), which needs LXC to load it.
	t.Cleanup(func() {
		if _, err := e.fleet.Host.EditConfig(bad.Name, func(old []byte) ([]byte, error) {
			return []byte(strings.Replace(string(old), badLine, "", 1)), nil
		}); err != nil {
			t.Errorf("cleanup: repairing %s: %v", bad.Name, err)
		}
	})

	p := newPage(t, exec)
	p.do("opening the console", chromedp.Navigate(e.url), chromedp.WaitVisible(chromedp.CSS("#login-token")))
	p.typeInto("#login-token", e.token)
	p.click("#login-submit")
	row := fmt.Sprintf(`#lockers-table tr[data-name=%q]`, bad.Name)
	p.wait("the broken locker's row", fmt.Sprintf(`document.querySelector(%q)`, row), 15*time.Second)
	if got := p.text(row + " td:nth-child(2)"); got != "broken" {
		t.Errorf("%s state: got %q, want broken", bad.Name, got)
	}
	if got := p.text(row + " [data-error]"); !strings.Contains(got, "lxc.tty.maxx") || !strings.Contains(got, "does not know the key") {
		t.Errorf("%s row: got %q, want LXC's reason (the key it does not know)", bad.Name, got)
	}
	if n := eval[int](p, fmt.Sprintf(`document.querySelectorAll('#grid .tile.s-broken[data-name=%q]').length`, bad.Name)); n != 1 {
		t.Errorf("fleet map: got %d broken tiles for %s, want 1", n, bad.Name)
	}
	if got := p.text("#count-off"); !strings.Contains(got, "1 locker LXC cannot load: "+bad.Name) {
		t.Errorf("fleet card: got %q, want it to name %s as a locker LXC cannot load", got, bad.Name)
	}
	for _, l := range e.lockers {
		if got := p.text(fmt.Sprintf(`#lockers-table tr[data-name=%q] td:nth-child(2)`, l.Name)); got != "running" {
			t.Errorf("%s state: got %q, want running", l.Name, got)
		}
	}
	p.screenshot("console-broken-locker.png")
	p.noExceptions()

	job, err := e.agent.Submit(agent.Request{Kind: agent.KindStopAll, Trigger: "test"})
	if err != nil {
		t.Fatalf("stop-all with a broken locker: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if job, err = e.agent.Wait(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if job.State != agent.JobFailed || !strings.Contains(job.Error, bad.Name) {
		t.Errorf("stop-all: got %s %q, want failed naming %s", job.State, job.Error, bad.Name)
	}
	for _, l := range e.lockers {
		if st, err := e.fleet.Host.State(ctx, l.Name); err != nil || st != "STOPPED" {
			t.Errorf("after stop-all: %s is %s (%v), want STOPPED", l.Name, st, err)
		}
	}
}
