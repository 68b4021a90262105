package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestLogFormats(t *testing.T) {
	var b bytes.Buffer
	h, err := newLogHandler(logJournal, &b, slog.LevelDebug)
	if err != nil {
		t.Fatal(err)
	}
	l := slog.New(h).With("job", "j1")
	l.Error("job failed", "err", "boom")
	l.Warn("refused")
	l.Info("started")
	l.Debug("detail")
	want := []string{`<3>msg="job failed" job=j1 err=boom`, `<4>msg=refused job=j1`, `<6>msg=started job=j1`, `<7>msg=detail job=j1`}
	if got := strings.Split(strings.TrimSpace(b.String()), "\n"); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("journal format:\ngot  %q\nwant %q", got, want)
	}

	b.Reset()
	h, _ = newLogHandler(logJSON, &b, slog.LevelInfo)
	slog.New(h).Info("started", "container", "l-1")
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil || m["msg"] != "started" || m["container"] != "l-1" {
		t.Errorf("json format: got %s (%v)", b.String(), err)
	}
	b.Reset()
	// auto on a writer that is not the journal's stream: text.
	h, _ = newLogHandler(logAuto, &b, slog.LevelInfo)
	slog.New(h).Info("started")
	if !strings.Contains(b.String(), "time=") || !strings.Contains(b.String(), "level=INFO") {
		t.Errorf("auto format off the journal: got %q, want text", b.String())
	}
	if _, err := newLogHandler("yaml", &b, slog.LevelInfo); err == nil {
		t.Errorf("--log-format yaml accepted")
	}
}
