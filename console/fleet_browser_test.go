package console_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lxcfleet/agent"
	"lxcfleet/fleet"
	"lxcfleet/internal/etcdtest"
	"lxcfleet/internal/fakecode"
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

// TestConsoleFleetControls: the Hosts card shows the channel's update
// windows (closed now, with the next opening) and its update timeout, and
// its pause, publish and resume buttons go, behind a confirmation, through
// the agent's fleet API, the code of `fleet pause` / `fleet publish`:
// a ref the origin does not have is refused with its reason and nothing
// is written (issue 21).
func TestConsoleFleetControls(t *testing.T) {
	exec := requireChromium(t)
	testfleet.RequireLXC(t)
	c := etcdtest.Start(t, 1)
	fc := fleet.Config{Endpoints: c.Endpoints(), Group: "web", HostID: "box-1", TTL: 2 * time.Second, Prefix: "/lxcfleet-controls"}
	e := newEnv(t, 1, testfleet.Options{}, func(cfg *agent.Config) { cfg.Fleet = fc })
	cli, err := fleet.Dial(fc)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	store := fleet.NewStore(cli, fc.Prefix, fc.Group)
	// A window that opened 12 hours ago for an hour: closed now, so no
	// host of the test takes a release.
	at := time.Now().UTC().Add(-12 * time.Hour)
	pol := fleet.Policy{MaxHosts: 2, Windows: []string{fmt.Sprintf("%d %d * * *", at.Minute(), at.Hour())}, WindowDuration: fleet.Duration(time.Hour),
		UpdateTimeout: fleet.Duration(30 * time.Minute)}
	old := fleet.Release{Ref: "v1", Commit: strings.Repeat("ab", 20)}
	if _, err := store.Publish(t.Context(), old, &pol, "test"); err != nil {
		t.Fatal(err)
	}
	channel := func() fleet.Channel {
		t.Helper()
		ch, _, err := store.Channel(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	p := newPage(t, exec)
	p.do("opening the console", chromedp.Navigate(e.url), chromedp.WaitVisible(chromedp.CSS("#login-token")))
	p.typeInto("#login-token", e.token)
	p.click("#login-submit")
	p.wait("the channel's windows", `document.querySelector('#fleet-windows').textContent.includes('update windows: UTC')`, 20*time.Second)
	if got := p.text("#fleet-windows"); !strings.Contains(got, pol.Windows[0]) || !strings.Contains(got, "closed; next opens") {
		t.Errorf("windows line %q: want %q, closed now", got, pol.Windows[0])
	}
	if got := p.text("#fleet-policy"); !strings.Contains(got, "update timeout 30m0s") || !strings.Contains(got, "at most 2 hosts at once") {
		t.Errorf("policy line %q: want the update timeout and K", got)
	}

	// Pause, behind a confirmation.
	p.click("#btn-pause")
	p.setValue("#f-reason", "console test")
	p.confirm("No host of group web starts an update")
	p.wait("the paused channel", `document.querySelector('#fleet-channel').textContent.includes('PAUSED: console test') && !document.querySelector('#btn-resume').hidden`, 20*time.Second)
	if ch := channel(); !ch.Paused || ch.PausedReason != "console test" {
		t.Errorf("etcd channel after pause: paused %v %q", ch.Paused, ch.PausedReason)
	}

	// A ref the origin does not have: refused with the reason, nothing written.
	p.click("#btn-publish")
	p.setValue("#f-ref", "nosuchref")
	p.confirm("at most 2 hosts at once")
	p.wait("the refusal", `!document.querySelector('#toast').hidden && document.querySelector('#toast').textContent.includes('nosuchref')`, 20*time.Second)
	if got := p.text("#toast"); !strings.Contains(got, "unknown target") {
		t.Errorf("refusal toast %q: want the origin's reason", got)
	}
	if ch := channel(); ch.Release != old {
		t.Errorf("a refused publish wrote %+v", ch.Release)
	}

	// main, as the origin has it: written, the channel stays paused.
	p.click("#btn-publish")
	p.setValue("#f-ref", "main")
	p.confirm("It replaces v1 @ abababababab")
	p.wait("the new release on the card", `document.querySelector('#fleet-channel').textContent.includes('release main @ feedface0000')`, 20*time.Second)
	if ch := channel(); ch.Release.Commit != fakecode.MainSHA || !ch.Paused {
		t.Errorf("etcd channel after publish: %+v paused %v, want main at %s, still paused", ch.Release, ch.Paused, fakecode.MainSHA)
	}

	p.click("#btn-resume")
	p.confirm("It was paused: console test")
	p.wait("the resumed channel", `!document.querySelector('#fleet-channel').textContent.includes('PAUSED') && !document.querySelector('#btn-pause').hidden`, 20*time.Second)
	if ch := channel(); ch.Paused {
		t.Error("etcd channel still paused after resume")
	}
	p.noExceptions()
}
