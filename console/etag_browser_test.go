package console_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lxcfleet/agent"
	"lxcfleet/internal/testfleet"
)

// TestConsolePollsWithETag: the console names the locker list's entity tag
// in its next poll, the agent answers 304 with no body while nothing
// changed, and the console keeps showing the list it had; once a locker
// changes, the next poll gets the new list. The inventory refreshes only
// when a job kicks it here, so that polls between changes find it
// unchanged.
func TestConsolePollsWithETag(t *testing.T) {
	exec := requireChromium(t)
	testfleet.RequireLXC(t)
	e := newEnv(t, 1, testfleet.Options{}, func(c *agent.Config) {
		c.InventoryInterval, c.HealthInterval = time.Hour, time.Hour
	})
	l := e.lockers[0]
	row := fmt.Sprintf(`#lockers-table tr[data-name=%q]`, l.Name)

	p := newPage(t, exec)
	p.do("opening the console", chromedp.Navigate(e.url), chromedp.WaitVisible(chromedp.CSS("#login-token")))
	p.typeInto("#login-token", e.token)
	p.click("#login-submit")
	p.wait("the locker's row", fmt.Sprintf(`document.querySelector(%q)`, row), 15*time.Second)
	const polls304 = `performance.getEntriesByType('resource').filter((r) => r.name.endsWith('/v1/containers') && r.responseStatus === 304).length`
	p.wait("a poll of the locker list answered 304 Not Modified", polls304+` >= 2`, 20*time.Second)
	if got := p.text(row + " td:nth-child(2)"); got != "running" {
		t.Errorf("%s after polls answered 304: got %q, want running (the list the console had)", l.Name, got)
	}

	job, err := e.agent.Submit(agent.Request{Kind: agent.KindStopAll, Names: []string{l.Name}, Trigger: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if job, err = e.agent.Wait(ctx, job.ID); err != nil || job.State != agent.JobSucceeded {
		t.Fatalf("stop-all of %s: %v %s %s", l.Name, err, job.State, job.Error)
	}
	p.wait("the stopped locker in the table", fmt.Sprintf(`document.querySelector(%q).textContent === 'stopped'`, row+" td:nth-child(2)"), 20*time.Second)
	p.noExceptions()
}
