package console_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lxcfleet/agent"
	"lxcfleet/fleet"
	"lxcfleet/internal/etcdtest"
	"lxcfleet/internal/testfleet"
)

// TestConsoleFleetView: with [fleet], the console shows the group's hosts
// from the etcd registry and the channel (a real etcd member on
// 127.0.0.1); it says so when etcd stops answering.
func TestConsoleFleetView(t *testing.T) {
	exec := requireChromium(t)
	testfleet.RequireLXC(t)
	c := etcdtest.Start(t, 1)
	fc := fleet.Config{Endpoints: c.Endpoints(), Group: "web", HostID: "box-1", TTL: 2 * time.Second, Prefix: "/lxcfleet-console"}
	e := newEnv(t, 1, testfleet.Options{}, func(cfg *agent.Config) { cfg.Fleet = fc })
	cli, err := fleet.Dial(fc)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// A phased release this host is not yet due for: it shows, untaken.
	pol := fleet.Policy{MaxHosts: 2, PhaseDuration: fleet.Duration(1000 * time.Hour)}
	if _, err := fleet.NewStore(cli, fc.Prefix, fc.Group).Publish(t.Context(), fleet.Release{Ref: "main", Commit: strings.Repeat("fe", 20)}, &pol, "test"); err != nil {
		t.Fatal(err)
	}
	p := newPage(t, exec)
	p.do("opening the console", chromedp.Navigate(e.url), chromedp.WaitVisible(chromedp.CSS("#login-token")))
	p.typeInto("#login-token", e.token)
	p.click("#login-submit")
	p.wait("the fleet's hosts", `!document.querySelector('#hosts-card').hidden && document.querySelectorAll('#hosts-table tbody tr').length === 1`, 20*time.Second)
	p.wait("the phased note", `document.querySelector('#hosts-table tbody').textContent.includes('phased rollout')`, 20*time.Second)
	row := p.text("#hosts-table tbody")
	for _, want := range []string{"box-1", "waiting", "#2", "1/1 running"} {
		if !strings.Contains(row, want) {
			t.Errorf("hosts row %q lacks %q", row, want)
		}
	}
	if got := p.text("#fleet-channel"); !strings.Contains(got, "release main @ fefefefefefe") || !strings.Contains(got, "at most 2 at once") {
		t.Errorf("channel line: %q", got)
	}
	c.Pause(0)
	defer c.Continue(0)
	p.wait("etcd unreachable", `document.querySelector('#fleet-channel').textContent.includes('etcd unreachable')`, 30*time.Second)
	p.noExceptions()
}
