package agent

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"lxcfleet/internal/fakecode"
)

// TestAPIBadInput: every bad request gets a 4xx with a JSON message that
// says what is wrong; never a 5xx.
func TestAPIBadInput(t *testing.T) {
	s := serveAgent(t, Config{}, Deps{Containers: emptyHost(t)})
	tests := []struct {
		name         string
		method, path string
		body         string
		code         int
		want         string
	}{
		{"malformed JSON", "POST", "/v1/stop-all", `{"names": [`, 400, "invalid JSON body"},
		{"not an object", "POST", "/v1/stop-all", `["a"]`, 400, "invalid JSON body"},
		{"unknown field", "POST", "/v1/stop-all", `{"bogus": 1}`, 400, `unknown field "bogus"`},
		{"trailing data", "POST", "/v1/start-all", `{} {}`, 400, "trailing data"},
		{"invalid name", "POST", "/v1/stop-all", `{"names": ["../etc"]}`, 400, "invalid container name"},
		{"invalid group", "POST", "/v1/start-all", `{"group": "a b"}`, 400, "invalid group"},
		{"empty names", "POST", "/v1/restart", `{"names": []}`, 400, "names is empty"},
		{"empty names start", "POST", "/v1/start-all", `{"names": []}`, 400, "names is empty"},
		{"empty names stop", "POST", "/v1/stop-all", `{"names": []}`, 400, "names is empty"},
		{"empty names update", "POST", "/v1/jobs", `{"kind": "update-code", "names": []}`, 400, "names is empty"},
		{"restart of nothing named", "POST", "/v1/restart", `{}`, 400, "restart needs names or a group"},
		{"boot with names", "POST", "/v1/start-all", `{"boot": true, "names": ["a"]}`, 400, "no names, no group"},
		{"host shutdown with names", "POST", "/v1/stop-all", `{"host_shutdown": true, "names": ["a"]}`, 400, "no names, no group"},
		{"unknown group", "POST", "/v1/start-all", `{"group": "nosuch"}`, 400, `unknown group "nosuch"`},
		{"unknown group restart", "POST", "/v1/restart", `{"group": "nosuch"}`, 400, `unknown group "nosuch"`},
		{"unknown group stop", "POST", "/v1/stop-all", `{"group": "nosuch"}`, 400, `unknown group "nosuch"`},
		{"unknown container", "POST", "/v1/stop-all", `{"names": ["ghost-1"]}`, 400, "ghost-1"},
		{"bad duration", "POST", "/v1/stop-all", `{"stop_timeout": "soon"}`, 400, "invalid duration"},
		{"negative window", "POST", "/v1/start-all", `{"window": -1}`, 400, "window"},
		{"bad health", "POST", "/v1/start-all", `{"health": "ftp://x"}`, 400, "health"},
		{"bad ratio", "POST", "/v1/restart", `{"max_failure_ratio": 2}`, 400, "max_failure_ratio"},
		{"bad strategy", "POST", "/v1/restart", `{"strategy": "yolo"}`, 400, "strategy"},
		{"bad target", "POST", "/v1/restart", `{"target": "--upload-pack=x"}`, 400, "invalid target"},
		{"unknown kind", "POST", "/v1/jobs", `{"kind": "explode"}`, 400, "unknown job kind"},
		{"missing kind", "POST", "/v1/jobs", `{}`, 400, "missing job kind"},
		{"kind mismatch", "POST", "/v1/stop-all", `{"kind": "start-all"}`, 400, "does not match"},
		{"no code origin", "POST", "/v1/update-code", `{}`, 400, "code origin"},
		{"oversized body", "POST", "/v1/stop-all", `{"names": ["` + strings.Repeat("a", maxBodyBytes) + `"]}`, 400, "larger than"},
		{"unknown job", "GET", "/v1/jobs/20260101T000000.000Z-abcdef", "", 404, "job not found"},
		{"unknown job steps", "GET", "/v1/jobs/nope/steps", "", 404, "job not found"},
		{"unknown job events", "GET", "/v1/jobs/nope/events", "", 404, "job not found"},
		{"cancel unknown job", "POST", "/v1/jobs/nope/cancel", "", 404, "job not found"},
		{"bad limit", "GET", "/v1/jobs?limit=lots", "", 400, "limit"},
		{"invalid container path", "GET", "/v1/containers/a%20b", "", 400, "invalid container name"},
		{"unknown container path", "GET", "/v1/containers/ghost", "", 404, "not found"},
		{"unknown action", "POST", "/v1/containers/ghost/explode", "", 404, "unknown action"},
		{"unknown endpoint", "GET", "/v1/nope", "", 404, "no such endpoint"},
		{"no releases without code", "GET", "/v1/releases", "", 404, "no code origin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, b := s.do(t, tc.method, tc.path, tc.body)
			if code != tc.code {
				t.Errorf("%s %s: got %d, want %d (%s)", tc.method, tc.path, code, tc.code, b)
			}
			var e errorBody
			if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
				t.Fatalf("body %q: want a JSON error message (%v)", b, err)
			}
			if !strings.Contains(e.Error, tc.want) {
				t.Errorf("message %q: want it to contain %q", e.Error, tc.want)
			}
		})
	}
}

// TestAPIRoundTrip: reads over the socket, and a job from submit to its
// record, steps and event stream (on an empty host: no LXC needed).
func TestAPIRoundTrip(t *testing.T) {
	code := fakecode.New("1-aaa")
	s := serveAgent(t, Config{}, Deps{Containers: emptyHost(t), Code: code})
	for _, p := range []string{"/healthz", "/v1/host", "/v1/build", "/v1/containers", "/v1/jobs", "/v1/releases", "/v1/update-available", "/v1/schedules"} {
		c, b := s.do(t, "GET", p, "")
		if c != 200 || !json.Valid(b) {
			t.Errorf("GET %s: got %d %s, want 200 JSON", p, c, b)
		}
	}
	j := s.submit(t, "/v1/check-update", `{"target": "main"}`)
	if j.State != JobRunning || j.Kind != KindCheckUpdate || j.Trigger != "api" {
		t.Errorf("submitted job: got %+v, want a running check-update triggered by the api", j)
	}
	events := s.follow(t, j.ID, nil)
	end := events[len(events)-1]
	var final Job
	if err := json.Unmarshal(end.Data, &final); err != nil {
		t.Fatal(err)
	}
	if final.State != JobSucceeded {
		t.Errorf("job at the end of its stream: got %s (%s), want succeeded", final.State, final.Error)
	}
	c, b := s.do(t, "GET", "/v1/update-available", "")
	var u struct {
		Available bool `json:"available"`
		Behind    int  `json:"behind"`
	}
	if c != 200 || json.Unmarshal(b, &u) != nil || !u.Available || u.Behind != 3 {
		t.Errorf("update-available after a check: got %d %s, want available, 3 behind", c, b)
	}
	c, b = s.do(t, "GET", "/v1/jobs/"+j.ID, "")
	if c != 200 || !bytes.Contains(b, []byte(`"succeeded"`)) {
		t.Errorf("GET job: got %d %s", c, b)
	}
	c, b = s.do(t, "POST", "/v1/jobs/"+j.ID+"/cancel", "")
	if c != http.StatusConflict || !bytes.Contains(b, []byte("not running")) {
		t.Errorf("cancel of a finished job: got %d %s, want 409 not running", c, b)
	}
	c, b = s.do(t, "GET", "/v1/build", "")
	if c != 200 || !bytes.Contains(b, []byte(`"1-aaa"`)) {
		t.Errorf("GET /v1/build: got %d %s, want release 1-aaa", c, b)
	}
}

func TestAPITokenOnTCP(t *testing.T) {
	const token = "s3cret-token-of-at-least-32-bytes"
	s := serveAgent(t, Config{Listen: Listen{Token: token}}, Deps{Containers: emptyHost(t)})
	if s.tcp == "" {
		t.Fatal("no TCP listener")
	}
	tests := []struct {
		name, path, auth string
		code             int
	}{
		{"no token", "/v1/host", "", 401},
		{"wrong token", "/v1/host", "Bearer nope", 401},
		{"token without Bearer", "/v1/host", token, 401},
		{"token prefix", "/v1/host", "Bearer " + token[:5], 401},
		{"metrics without token", "/metrics", "", 401},
		{"job submit without token", "/v1/jobs", "", 401},
		{"right token", "/v1/host", "Bearer " + token, 200},
		{"metrics with token", "/metrics", "Bearer " + token, 200},
		{"healthz is open", "/healthz", "", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+s.tcp+tc.path, nil)
			if tc.path == "/v1/jobs" {
				req.Method = "POST"
				req.Body = io.NopCloser(strings.NewReader(`{"kind":"stop-all"}`))
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code {
				t.Errorf("GET %s with %q: got %d %s, want %d", tc.path, tc.auth, resp.StatusCode, b, tc.code)
			}
			if tc.code == 401 && (!bytes.Contains(b, []byte("token")) || resp.Header.Get("WWW-Authenticate") == "") {
				t.Errorf("401 body %s / WWW-Authenticate %q: want a JSON message about the token", b, resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	// No stop-all ran through the refused request.
	if jobs, _ := s.a.Jobs(0); len(jobs) != 0 {
		t.Errorf("jobs after refused requests: got %d, want 0", len(jobs))
	}
}

// TestMetricsFormat: /metrics parses as the Prometheus text format and
// promtool accepts it.
func TestMetricsFormat(t *testing.T) {
	s := serveAgent(t, Config{}, Deps{Containers: emptyHost(t), Code: fakecode.New("1-aaa")})
	j := s.submit(t, "/v1/stop-all", `{}`)
	waitJob(t, s.a, j.ID)
	j = s.submit(t, "/v1/check-update", `{}`)
	waitJob(t, s.a, j.ID)
	c, body := s.do(t, "GET", "/metrics", "")
	if c != 200 {
		t.Fatalf("GET /metrics: %d", c)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	for _, name := range []string{"lxcfleet_lockers", "lxcfleet_lockers_health", "lxcfleet_job_running", "lxcfleet_jobs_total",
		"lxcfleet_job_duration_seconds", "lxcfleet_build_number", "lxcfleet_build_info", "lxcfleet_update_available", "lxcfleet_lockers_off_current"} {
		if fams[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if f := fams["lxcfleet_jobs_total"]; f != nil {
		found := false
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == "stop-all" && labels["state"] == "succeeded" && m.GetCounter().GetValue() == 1 {
				found = true
			}
		}
		if !found {
			t.Errorf("lxcfleet_jobs_total: want {kind=stop-all,state=succeeded} 1, got %v", f)
		}
	}
	if f := fams["lxcfleet_update_available"]; f != nil && f.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Errorf("lxcfleet_update_available: got %v, want 1 after a check that found commits", f.GetMetric()[0].GetGauge().GetValue())
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Logf("promtool not installed: checked with expfmt only")
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestSchedulesNextRun: the API shows every schedule's next run.
func TestSchedulesNextRun(t *testing.T) {
	scheds := []Schedule{
		{Name: "sunday-update", Cron: "0 4 * * SUN", Request: Request{Kind: KindUpdate}},
		{Name: "hourly-check", Cron: "@hourly", Request: Request{Kind: KindCheckUpdate}},
	}
	s := serveAgent(t, Config{Schedules: scheds}, Deps{Containers: emptyHost(t), Code: fakecode.New("1-a")})
	c, b := s.do(t, "GET", "/v1/schedules", "")
	var got struct{ Schedules []ScheduleInfo }
	if c != 200 || json.Unmarshal(b, &got) != nil || len(got.Schedules) != 2 {
		t.Fatalf("GET /v1/schedules: got %d %s", c, b)
	}
	for _, sc := range got.Schedules {
		if sc.Next.Before(time.Now()) || sc.Next.After(time.Now().Add(8*24*time.Hour)) {
			t.Errorf("schedule %s: next run %v, want within the coming week", sc.Name, sc.Next)
		}
	}
	if got.Schedules[0].Next.Weekday() != time.Sunday || got.Schedules[0].Next.Hour() != 4 {
		t.Errorf("sunday-update next run %v: want a Sunday at 04:00", got.Schedules[0].Next)
	}
}

func TestBadSchedulesRefused(t *testing.T) {
	for _, sc := range []Schedule{
		{Name: "x", Cron: "every tuesday", Request: Request{Kind: KindCheckUpdate}},
		{Name: "", Cron: "@hourly", Request: Request{Kind: KindCheckUpdate}},
		{Name: "y", Cron: "@hourly", Request: Request{Kind: "nap"}},
	} {
		if _, err := New(Config{StateDir: t.TempDir(), Schedules: []Schedule{sc}}, Deps{Containers: emptyHost(t)}); err == nil {
			t.Errorf("New with schedule %+v: got no error", sc)
		}
	}
}

// TestStageMessagesDoNotRepeatTheStage: a stage's message is printed after
// its name ("boot: 0 of 0 lockers should run"), so it does not start with
// the name again ("boot: boot: ...", "host-shutdown: host shutdown: ...").
func TestStageMessagesDoNotRepeatTheStage(t *testing.T) {
	a, err := New(Config{StateDir: t.TempDir(), Defaults: DefaultDefaults()}, Deps{Containers: emptyHost(t), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	for _, req := range []Request{{Kind: KindStopAll, HostShutdown: true}, {Kind: KindStartAll, Boot: true}} {
		id := waitJob(t, a, submit(t, a, req)).ID
		steps, err := a.Steps(id)
		if err != nil {
			t.Fatal(err)
		}
		staged := 0
		for _, s := range steps {
			if s.Action != "host-shutdown" && s.Action != "boot" {
				continue
			}
			staged++
			first := strings.ToLower(strings.SplitN(s.Outcome, ":", 2)[0])
			if strings.ReplaceAll(first, " ", "-") == s.Action {
				t.Errorf("stage %s: message %q repeats the stage's name", s.Action, s.Outcome)
			}
		}
		if staged == 0 {
			t.Errorf("%s: no host-shutdown or boot stage in %+v", req.Kind, steps)
		}
	}
}

// TestContainersETag: GET /v1/containers carries an entity tag; a poll that
// names it gets 304 and no body until the snapshot changes (the console's
// polls, and most of the benchmark's API load, cost no encoding and no
// body). The agent does not Run: no background refresh moves the snapshot
// between two requests.
func TestContainersETag(t *testing.T) {
	// refreshedAgent is an agent on an empty host, not running, with one
	// inventory reading.
	refreshedAgent := func() *Agent {
		a, err := New(Config{StateDir: t.TempDir(), Defaults: testDefaults()}, Deps{Containers: emptyHost(t), Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		if err := a.RefreshInventory(t.Context()); err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := refreshedAgent()
	h := a.Handler()
	get := func(inm string) (int, string, []byte) {
		t.Helper()
		req := httptest.NewRequest("GET", "/v1/containers", nil)
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Header().Get("ETag"), rec.Body.Bytes()
	}
	code, etag, body := get("")
	if code != 200 || !json.Valid(body) || !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) {
		t.Fatalf("first GET: got %d, ETag %q, %s; want 200 JSON with a quoted entity tag", code, etag, body)
	}
	for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
		if code, tag, b := get(inm); code != http.StatusNotModified || tag != etag || len(b) != 0 {
			t.Errorf("GET with If-None-Match %s: got %d, ETag %q, %d bytes; want 304, the same tag, no body", inm, code, tag, len(b))
		}
	}
	if code, _, b := get(`"stale-1"`); code != 200 || !bytes.Equal(b, body) {
		t.Errorf("GET with a stale tag: got %d %s, want 200 and the body", code, b)
	}
	if err := a.RefreshInventory(t.Context()); err != nil {
		t.Fatal(err)
	}
	code, etag2, _ := get(etag)
	if code != 200 || etag2 == etag || etag2 == "" {
		t.Errorf("GET with the old tag after a refresh: got %d, ETag %q (was %q); want 200 with a new tag", code, etag2, etag)
	}
	// An agent restarted counts its snapshots from the start again: its
	// tags must not match the ones the last run gave out.
	if _, again := refreshedAgent().inv.encodedAll(); again == etag {
		t.Errorf("a second agent's first tag %s is the first agent's: a console would keep a stale list", again)
	}
}
