package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"lxcfleet/codeupdate"
	"lxcfleet/fleet"
	"lxcfleet/internal/etcdtest"
	"lxcfleet/internal/fakecode"
	"lxcfleet/internal/testfleet"
)

// TestFleetOffAndUnreachable: an agent without [fleet] says so on
// /v1/fleet and 404s the fleet's routes; an agent whose etcd does not
// answer starts, serves, and says that etcd is unreachable.
func TestFleetOffAndUnreachable(t *testing.T) {
	off := serveAgent(t, Config{}, Deps{Containers: emptyHost(t)})
	var st map[string]any
	if code := getJSON(t, off.unix, "/v1/fleet", &st); code != 200 || st["enabled"] != false {
		t.Errorf("GET /v1/fleet without [fleet]: %d %v", code, st)
	}
	if code := getJSON(t, off.unix, "/v1/fleet/hosts", &st); code != 404 {
		t.Errorf("GET /v1/fleet/hosts without [fleet]: %d, want 404", code)
	}
	// A loopback port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	on := serveAgent(t, Config{Fleet: fleet.Config{Endpoints: []string{"http://" + addr}, HostID: "h1", TTL: 2 * time.Second}}, Deps{Containers: emptyHost(t)})
	eventually(t, 30*time.Second, func() (bool, string) {
		var s fleet.Status
		code := getJSON(t, on.unix, "/v1/fleet", &s)
		if code == 200 && !s.Connected && s.Error != "" && strings.Contains(s.Note, "etcd unreachable") {
			return true, ""
		}
		return false, fmt.Sprintf("GET /v1/fleet with etcd down: %d %+v; want connected=false naming the error", code, s)
	})
	if code := getJSON(t, on.unix, "/v1/fleet/hosts", &st); code != http.StatusServiceUnavailable {
		t.Errorf("GET /v1/fleet/hosts with etcd down: %d, want 503", code)
	}
}

func getJSON(t *testing.T, cl *http.Client, path string, out any) int {
	t.Helper()
	resp, err := cl.Get("http://agent" + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(out)
	return resp.StatusCode
}

// TestFleetAPI drives the operators' routes against a real etcd (one
// member, its own process on 127.0.0.1): publish, channel, policy (K at run
// time), pause, resume, hosts, holders, unlock, metrics.
func TestFleetAPI(t *testing.T) {
	c := etcdtest.Start(t, 1)
	origin := testfleet.NewOrigin(t)
	code, err := codeupdate.New(codeupdate.Options{Root: t.TempDir(), Origin: origin.URL, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	s := serveAgent(t, Config{Version: "test", Fleet: fleet.Config{Endpoints: c.Endpoints(), HostID: "h1", Group: "api", TTL: 2 * time.Second, Prefix: "/lxcfleet-api"}},
		Deps{Containers: emptyHost(t), Code: code})
	commit := origin.Head()
	post := func(path, body string, want int) map[string]any {
		t.Helper()
		code, b := s.do(t, "POST", path, body)
		var out map[string]any
		_ = json.Unmarshal(b, &out)
		if code != want {
			t.Fatalf("POST %s %s: %d %s, want %d", path, body, code, b, want)
		}
		return out
	}
	post("/v1/fleet/publish", `{"ref":"nope"}`, 400) // not on the origin
	post("/v1/fleet/publish", `{"ref":"main","commit":"abc"}`, 400)
	post("/v1/fleet/publish", `{"ref":"main","commit":"`+strings.Repeat("ab", 20)+`"}`, 400)
	ch := post("/v1/fleet/publish", `{"ref":"main","commit":"`+commit+`","policy":{"max_hosts":2,"safe_mode":true}}`, 200)
	if rel := ch["release"].(map[string]any); rel["commit"] != commit {
		t.Errorf("published: %v", ch)
	}
	post("/v1/fleet/policy", `{"max_hosts":3,"period":"30m","max_per_period":4}`, 200)
	post("/v1/fleet/policy", `{"max_hosts":-1}`, 400)
	post("/v1/fleet/policy", `{"max_hosts":0}`, 400)
	post("/v1/fleet/publish", `{"ref":"main","policy":{"phase_start":2}}`, 400)
	post("/v1/fleet/pause", `{"reason":"maintenance"}`, 200)
	var ci ChannelInfo
	if code := getJSON(t, s.unix, "/v1/fleet/channel", &ci); code != 200 || ci.Channel == nil || !ci.Channel.Paused ||
		ci.Channel.PausedReason != "maintenance" || ci.Channel.Policy.MaxHosts != 3 || !ci.Channel.Policy.SafeMode || ci.Channel.Policy.MaxPerPeriod != 4 {
		t.Errorf("channel after policy and pause: %d %+v", code, ci.Channel)
	}
	post("/v1/fleet/resume", ``, 200)
	if getJSON(t, s.unix, "/v1/fleet/channel", &ci); ci.Channel.Paused {
		t.Errorf("channel after resume: still paused")
	}
	// The host registers itself; without a current release it takes no part.
	eventually(t, 30*time.Second, func() (bool, string) {
		var hs []fleet.HostRecord
		getJSON(t, s.unix, "/v1/fleet/hosts", &hs)
		if len(hs) == 1 && hs[0].ID == "h1" && hs[0].Version == "test" && hs[0].State == fleet.StateWaiting && strings.Contains(hs[0].Note, "current release") {
			return true, ""
		}
		return false, fmt.Sprintf("registry: %+v; want h1 waiting for want of a current release", hs)
	})
	var holders []fleet.Holder
	if code := getJSON(t, s.unix, "/v1/fleet/holders", &holders); code != 200 || len(holders) != 0 {
		t.Errorf("holders: %d %v, want none", code, holders)
	}
	post("/v1/fleet/unlock/nobody", ``, 404)
	status, body := s.do(t, "GET", "/metrics", "")
	if status != 200 || !strings.Contains(string(body), `lxcfleet_fleet_hosts{state="waiting"} 1`) || !strings.Contains(string(body), "lxcfleet_fleet_etcd_connected 1") {
		t.Errorf("/metrics: %d, want the fleet's host states and etcd connected", status)
	}
}

// TestResolveReleaseOnOrigin: publish checks the commit on a real git
// origin before anything is written: a full commit id the origin lacks, a
// --commit that is not the ref's, an unknown ref and no origin at all are
// refused as bad input (exit 2 / HTTP 400); the ref's own tip and an older
// commit published by its id are accepted.
func TestResolveReleaseOnOrigin(t *testing.T) {
	origin := testfleet.NewOrigin(t)
	a := origin.Head()
	b := origin.AppChange("build B")
	code, err := codeupdate.New(codeupdate.Options{Root: t.TempDir(), Origin: origin.URL, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	missing := strings.Repeat("ab", 20)
	for _, c := range []struct{ ref, commit, want string }{
		{missing, "", `unknown target "` + missing + `"`},
		{"main", missing, `unknown target "` + missing + `"`},
		{"main", a, "main is " + b[:12] + " on the origin, not " + a[:12]},
		{"nope", "", `unknown target "nope"`},
		{"main", "abc", "not a full 40-digit commit id"},
	} {
		_, err := ResolveRelease(ctx, code, c.ref, c.commit)
		var inv InvalidError
		if !errors.As(err, &inv) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ResolveRelease(%s, --commit %q): %v; want an InvalidError saying %q", c.ref, c.commit, err, c.want)
		}
	}
	if _, err := ResolveRelease(ctx, nil, "main", b); !errors.As(err, new(InvalidError)) || !strings.Contains(err.Error(), "no code origin") {
		t.Errorf("without an origin: %v; want an InvalidError saying there is no code origin", err)
	}
	for _, c := range []struct{ ref, commit, want string }{{"main", "", b}, {"main", b, b}, {a, "", a}} {
		rel, err := ResolveRelease(ctx, code, c.ref, c.commit)
		if err != nil || rel.Commit != c.want || rel.Ref != c.ref {
			t.Errorf("ResolveRelease(%s, --commit %q): %+v %v; want %s", c.ref, c.commit, rel, err, c.want[:12])
		}
	}
}

// blockingCode is fakecode.Code whose Build waits for the job's end: an update
// job that is still running when the test acts.
type blockingCode struct {
	*fakecode.Code
	started chan struct{}
}

func (b *blockingCode) Build(ctx context.Context, target string, progress func(string)) (codeupdate.Release, error) {
	b.started <- struct{}{}
	<-ctx.Done()
	return codeupdate.Release{}, ctx.Err()
}

// TestFleetJobCancelledWhenSlotLost: when the fleet says the slot is lost
// (the context given to Update is cancelled with fleet.ErrLeaseLost), the
// running update job is cancelled with that cause, Update waits for its
// end and reports it as not run to an end (no result for the release); a
// context that ends for another reason (the member stops) only stops the
// waiting, as before.
func TestFleetJobCancelledWhenSlotLost(t *testing.T) {
	code := &blockingCode{Code: fakecode.New("1-aaa"), started: make(chan struct{}, 2)}
	s := serveAgent(t, Config{}, Deps{Containers: emptyHost(t), Code: code})
	u := fleetUpdater{s.a}
	rel := fleet.Release{Ref: "main", Commit: strings.Repeat("cd", 20)}

	ctx, lose := context.WithCancelCause(t.Context())
	type outcome struct {
		job string
		err error
	}
	done := make(chan outcome, 1)
	go func() { j, err := u.Update(ctx, rel); done <- outcome{j, err} }()
	<-code.started
	lose(fmt.Errorf("%w: slot 0 was deleted", fleet.ErrLeaseLost))
	var o outcome
	select {
	case o = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Update did not return after the slot was lost")
	}
	if !errors.Is(o.err, fleet.ErrNotRun) || !errors.Is(o.err, fleet.ErrLeaseLost) {
		t.Errorf("Update after the slot was lost: %v; want ErrNotRun and ErrLeaseLost", o.err)
	}
	j, err := s.a.Job(o.job)
	if err != nil || j.State != JobCancelled {
		t.Errorf("job %s: %s %v, want cancelled (and ended: Update waits for its end)", o.job, j.State, err)
	}

	// The member stops: Update returns at once; the job is not cancelled by it.
	ctx2, stop := context.WithCancel(t.Context())
	go func() { j, err := u.Update(ctx2, rel); done <- outcome{j, err} }()
	<-code.started
	stop()
	select {
	case o = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Update did not return after its context ended")
	}
	if !errors.Is(o.err, fleet.ErrNotRun) || errors.Is(o.err, fleet.ErrLeaseLost) {
		t.Errorf("Update after the member stopped: %v; want ErrNotRun only", o.err)
	}
	if j, _ := s.a.Job(o.job); j.State != JobRunning {
		t.Errorf("job %s after the member stopped: %s, want still running", o.job, j.State)
	}
	if _, err := s.a.Cancel(o.job); err != nil {
		t.Fatal(err)
	}
}
