package console_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lxcfleet/agent"
	"lxcfleet/heldsock"
	"lxcfleet/internal/testfleet"
)

// oneHeld is the host's held sockets as the sleeper sees them: one
// locker's spec (its folder under the fleet's lxcpath), no pending
// connection ever.
type oneHeld struct{ spec heldsock.Spec }

func (h oneHeld) Specs() (map[string]heldsock.Spec, error) {
	return map[string]heldsock.Spec{h.spec.Name: h.spec}, nil
}

func (h oneHeld) Watch(ctx context.Context, names []string) (<-chan string, error) {
	return make(chan string), nil
}

// TestConsoleShowsSleepingLocker: of two running lockers one is stopped
// by a job and recorded asleep by that job (heldsock.AsleepFile, as the
// sleeper records an idle stop). The console shows it as a state of its
// own, not as down: "sleeping" in the table, its own tile colour in the
// map, and the fleet card counts it.
func TestConsoleShowsSleepingLocker(t *testing.T) {
	exec := requireChromium(t)
	testfleet.RequireLXC(t)
	e := newEnvHeld(t, 2, testfleet.Options{}, func(c *agent.Config) {
		c.Sleep = agent.SleepConfig{IdleStop: time.Hour, Sample: 100 * time.Millisecond}
	}, func(f *testfleet.Fleet) agent.HeldSockets {
		return heldsockOf(t, f)
	})
	sleeper := e.lockers[1]
	j, err := e.agent.Submit(agent.Request{Kind: agent.KindStopAll, Names: []string{sleeper.Name}, Trigger: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if j, err = e.agent.Wait(t.Context(), j.ID); err != nil || j.State != agent.JobSucceeded {
		t.Fatalf("stopping %s: %v %s %s", sleeper.Name, err, j.State, j.Error)
	}
	if err := heldsock.MarkAsleep(heldSpec(e.fleet, sleeper.Name), heldsock.Asleep{Job: j.ID, At: time.Now()}); err != nil {
		t.Fatal(err)
	}

	p := newPage(t, exec)
	p.do("opening the console", chromedp.Navigate(e.url), chromedp.WaitVisible(chromedp.CSS("#login-token")))
	p.typeInto("#login-token", e.token)
	p.click("#login-submit")
	row := fmt.Sprintf(`#lockers-table tr[data-name=%q]`, sleeper.Name)
	p.wait("the sleeping locker's row", fmt.Sprintf(`document.querySelector('%s[data-view="sleeping"]')`, row), 15*time.Second)
	if got := p.text(row + " td:nth-child(2)"); got != "sleeping" {
		t.Errorf("%s state: got %q, want sleeping", sleeper.Name, got)
	}
	if n := eval[int](p, fmt.Sprintf(`document.querySelectorAll('#grid .tile.s-sleeping[data-name=%q]').length`, sleeper.Name)); n != 1 {
		t.Errorf("fleet map: got %d sleeping tiles for %s, want 1", n, sleeper.Name)
	}
	if got := p.text("#count-detail"); !strings.Contains(got, "1 sleeping") {
		t.Errorf("fleet card: got %q, want it to count 1 sleeping", got)
	}
	if got := p.text(fmt.Sprintf(`#lockers-table tr[data-name=%q] td:nth-child(2)`, e.lockers[0].Name)); got != "running" {
		t.Errorf("%s state: got %q, want running", e.lockers[0].Name, got)
	}
}

// heldSpec is the held socket spec of the fleet's locker name: its folder
// is <lxcpath>/<name>/held, where the sleep record goes beside it.
func heldSpec(f *testfleet.Fleet, name string) heldsock.Spec {
	return heldsock.Spec{Name: name, Dir: filepath.Join(f.Path, name, "held"), Address: "127.0.0.1", Port: 1}
}

// heldsockOf is oneHeld for the fleet's second locker (made by newEnvHeld
// before the agent), its folder made.
func heldsockOf(t *testing.T, f *testfleet.Fleet) agent.HeldSockets {
	t.Helper()
	ls := f.Lockers()
	spec := heldSpec(f, ls[len(ls)-1].Name)
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return oneHeld{spec}
}
