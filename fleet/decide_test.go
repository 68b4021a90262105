package fleet

import (
	"strings"
	"testing"
	"time"
)

const (
	cNew = "1111111111111111111111111111111111111111"
	cOld = "0000000000000000000000000000000000000000"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 30, 2, 0, 0, 0, time.UTC)
	ch := func(p Policy) *Channel {
		return &Channel{Release: Release{Ref: "main", Commit: cNew}, PublishedAt: now.Add(-time.Minute), Policy: p}
	}
	paused := ch(Policy{})
	paused.Paused, paused.PausedReason = true, "operator"
	cases := []struct {
		name   string
		v      View
		host   string
		commit string
		want   Action
		slot   int
		why    string
	}{
		{"no channel", View{}, "h1", cOld, Wait, 0, "no release published"},
		{"up to date", View{Channel: ch(Policy{})}, "h1", cNew, Wait, 0, "on the channel's release"},
		{"up to date frees its slot", View{Channel: ch(Policy{}), Holders: []Holder{{Slot: 0, Host: "h1"}}}, "h1", cNew, Free, 0, ""},
		{"behind takes slot 0", View{Channel: ch(Policy{})}, "h1", cOld, Take, 0, "slot 0 of 1"},
		{"K=1 held by another", View{Channel: ch(Policy{}), Holders: []Holder{{Slot: 0, Host: "h2"}}}, "h1", cOld, Wait, 0, "1 of 1 slots held"},
		{"K=3 takes the lowest free", View{Channel: ch(Policy{MaxHosts: 3}), Holders: []Holder{{Slot: 0, Host: "h2"}, {Slot: 2, Host: "h3"}}}, "h1", cOld, Take, 1, "slot 1 of 3"},
		{"K lowered under the holders", View{Channel: ch(Policy{MaxHosts: 1}), Holders: []Holder{{Slot: 1, Host: "h2"}}}, "h1", cOld, Wait, 0, "1 of 1 slots held"},
		{"re-entrant", View{Channel: ch(Policy{}), Holders: []Holder{{Slot: 0, Host: "h1"}}}, "h1", cOld, Update, 0, "holds slot 0"},
		{"paused", View{Channel: paused}, "h1", cOld, Wait, 0, "paused"},
		{"paused keeps a held slot idle", View{Channel: paused, Holders: []Holder{{Slot: 0, Host: "h1"}}}, "h1", cOld, Wait, 0, "paused"},
		{"failed here holds", View{Channel: ch(Policy{MaxFailedHosts: 5}), Holders: []Holder{{Slot: 0, Host: "h1", Failed: "x", Release: Release{Commit: cNew}}},
			Results: []Result{{Host: "h1", Error: "boom"}}}, "h1", cOld, Hold, 0, "failed here"},
		{"failed here never retries", View{Channel: ch(Policy{MaxFailedHosts: 5}), Results: []Result{{Host: "h1", Error: "boom"}}}, "h1", cOld, Wait, 0, "failed here"},
		{"N failed hosts stop the others", View{Channel: ch(Policy{MaxHosts: 5, MaxFailedHosts: 2}), Results: []Result{{Host: "h2"}, {Host: "h3"}}}, "h1", cOld, Wait, 0, "2 hosts failed"},
		{"fewer failures than N go on", View{Channel: ch(Policy{MaxHosts: 5, MaxFailedHosts: 2}), Results: []Result{{Host: "h2"}}}, "h1", cOld, Take, 0, "slot 0"},
		{"a new release reuses a failed slot", View{Channel: ch(Policy{}), Holders: []Holder{{Slot: 0, Host: "h1", Failed: "x", Release: Release{Commit: cOld}}}}, "h1", cOld, Update, 0, "holds slot 0"},
		{"safe mode: canary alone", View{Channel: ch(Policy{MaxHosts: 3, SafeMode: true}), Holders: []Holder{{Slot: 0, Host: "h2"}}}, "h1", cOld, Wait, 0, "canary"},
		{"safe mode: after one success K applies", View{Channel: ch(Policy{MaxHosts: 3, SafeMode: true}), Holders: []Holder{{Slot: 0, Host: "h2"}},
			Results: []Result{{Host: "h3", OK: true}}}, "h1", cOld, Take, 1, "slot 1 of 3"},
		{"per period: full", View{Channel: ch(Policy{MaxHosts: 3, MaxPerPeriod: 2, Period: Duration(time.Hour)}),
			Starts: []Start{{Host: "h2", At: now.Add(-10 * time.Minute)}, {Host: "h3", At: now.Add(-50 * time.Minute)}}}, "h1", cOld, Wait, 0, "2 updates started"},
		{"per period: an old start does not count", View{Channel: ch(Policy{MaxHosts: 3, MaxPerPeriod: 2, Period: Duration(time.Hour)}),
			Starts: []Start{{Host: "h2", At: now.Add(-10 * time.Minute)}, {Host: "h3", At: now.Add(-70 * time.Minute)}}}, "h1", cOld, Take, 0, "slot 0"},
		{"phased: not yet", View{Channel: ch(Policy{PhaseStart: 0, PhaseDuration: Duration(1000 * time.Hour)})}, "h-not-yet", cOld, Wait, 0, "phased"},
		{"window: outside", View{Channel: ch(Policy{Windows: []string{"0 3 * * *"}, WindowDuration: Duration(time.Hour)})}, "h1", cOld, Wait, 0, "outside the update windows (next opens 2026-11-30T03:00:00Z)"},
		{"window: inside", View{Channel: ch(Policy{Windows: []string{"0 3 * * *", "30 1 * * *"}, WindowDuration: Duration(time.Hour)})}, "h1", cOld, Take, 0, "slot 0"},
		{"window: in its time zone", View{Channel: ch(Policy{Windows: []string{"0 3 * * *"}, TimeZone: "Europe/Paris"})}, "h1", cOld, Take, 0, "slot 0"},
		{"window: just closed", View{Channel: ch(Policy{Windows: []string{"0 1 * * *"}, WindowDuration: Duration(time.Hour)})}, "h1", cOld, Wait, 0, "outside"},
		{"window: a held slot goes on", View{Channel: ch(Policy{Windows: []string{"0 3 * * *"}}), Holders: []Holder{{Slot: 0, Host: "h1"}}}, "h1", cOld, Update, 0, "holds slot 0"},
		{"phased: over", View{Channel: ch(Policy{PhaseStart: 0, PhaseDuration: Duration(time.Second)})}, "h1", cOld, Take, 0, "slot 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(c.v, c.host, c.commit, now)
			if d.Action != c.want || (c.want == Take && d.Slot != c.slot) || !strings.Contains(d.Why, c.why) {
				t.Errorf("got action %d slot %d why %q, want action %d slot %d why containing %q", d.Action, d.Slot, d.Why, c.want, c.slot, c.why)
			}
		})
	}
}

func TestThrottleAndHash(t *testing.T) {
	pub := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := Policy{PhaseStart: 0.2, PhaseDuration: Duration(10 * time.Hour)}
	for _, c := range []struct {
		at   time.Duration
		want float64
	}{{-time.Hour, 0.2}, {0, 0.2}, {5 * time.Hour, 0.6}, {10 * time.Hour, 1}, {20 * time.Hour, 1}} {
		if got := Throttle(p, pub, pub.Add(c.at)); got < c.want-1e-9 || got > c.want+1e-9 {
			t.Errorf("Throttle at %s: got %g, want %g", c.at, got, c.want)
		}
	}
	if got := Throttle(Policy{}, pub, pub); got != 1 {
		t.Errorf("Throttle without phasing: got %g, want 1", got)
	}
	// The hash spreads hosts evenly: about 30% under 0.3 out of 2000.
	n := 0
	for i := range 2000 {
		h := HashFraction("host-"+string(rune('a'+i%26))+"-"+time.Duration(i).String(), cNew)
		if h < 0 || h >= 1 {
			t.Fatalf("HashFraction out of [0,1): %g", h)
		}
		if h <= 0.3 {
			n++
		}
	}
	if n < 500 || n > 700 {
		t.Errorf("hosts under 0.3: got %d of 2000, want about 600", n)
	}
	if HashFraction("h1", cNew) == HashFraction("h1", cOld) {
		t.Errorf("a host's place must differ between releases")
	}
}
