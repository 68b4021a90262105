package agent

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"lxcfleet/codeupdate"
	"lxcfleet/internal/testfleet"
)

// TestUpdateCheckRefreshedAfterUpdate: with a real origin and release
// manager, a check finds one commit to update to; after update-code to it,
// /v1/update-available (what the console's card and the metric show) says
// up to date, not "1 commit behind"; after a rollback, 1 behind again.
func TestUpdateCheckRefreshedAfterUpdate(t *testing.T) {
	testfleet.RequireNode(t)
	origin := testfleet.NewOrigin(t)
	root := filepath.Join(t.TempDir(), "root")
	code, err := codeupdate.New(codeupdate.Options{Root: root, Origin: origin.URL, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	s := serveAgent(t, Config{}, Deps{Containers: emptyHost(t), Code: code})
	run := func(path, body string) Job {
		t.Helper()
		j := waitJob(t, s.a, s.submit(t, path, body).ID)
		if j.State != JobSucceeded {
			t.Fatalf("%s: %s %s", path, j.State, j.Error)
		}
		return j
	}
	available := func() codeupdate.UpdateInfo {
		t.Helper()
		code, b := s.do(t, "GET", "/v1/update-available", "")
		var u codeupdate.UpdateInfo
		if code != 200 || json.Unmarshal(b, &u) != nil {
			t.Fatalf("GET /v1/update-available: %d %s", code, b)
		}
		return u
	}
	run("/v1/update-code", `{"target":"main"}`)
	origin.AppChange("build B")
	run("/v1/check-update", `{"target":"main"}`)
	if u := available(); !u.Available || u.Behind != 1 {
		t.Fatalf("after a new commit: got %+v, want 1 behind", u)
	}
	run("/v1/update-code", `{"target":"main"}`)
	if u := available(); u.Available || u.Behind != 0 {
		t.Errorf("after update-code to that commit: got available=%v behind=%d, want up to date", u.Available, u.Behind)
	}
	if _, b := s.do(t, "GET", "/metrics", ""); !strings.Contains(string(b), "\nlxcfleet_update_available 0\n") {
		t.Errorf("metrics after the update: want lxcfleet_update_available 0:\n%s", b)
	}
	// A rollback away from it: main is one commit ahead again.
	run("/v1/rollback", `{}`)
	if u := available(); !u.Available || u.Behind != 1 || !u.TargetBad {
		t.Errorf("after a rollback: got available=%v behind=%d target_bad=%v, want 1 behind, the target marked bad", u.Available, u.Behind, u.TargetBad)
	}
	if _, b := s.do(t, "GET", "/metrics", ""); !strings.Contains(string(b), "\nlxcfleet_update_available 1\n") {
		t.Errorf("metrics after the rollback: want lxcfleet_update_available 1:\n%s", b)
	}
}
