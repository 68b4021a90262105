package lxcctl_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lxcctl"
)

// TestCheckConfigItem: LXC's own parser judges values provision writes.
func TestCheckConfigItem(t *testing.T) {
	tests := []struct {
		key, value string
		want       string // "" for accepted, else a part of the error
	}{
		{"lxc.signal.halt", "SIGTERM", ""},
		{"lxc.signal.halt", "SIGPWR", ""},
		{"lxc.signal.halt", "sigusr1", ""},
		{"lxc.signal.halt", "SIGRTMIN+3", ""},
		{"lxc.signal.halt", "15", ""},
		{"lxc.signal.halt", "SIGFOO", `refuses the value "SIGFOO" for lxc.signal.halt`},
		{"lxc.signal.halt", "TERM", `refuses the value "TERM"`},
		{"lxc.signal.halt", "99", "no such signal"},
		{"lxc.signal.halt", "0", "no such signal"},
		{"lxc.net.0.type", "none", ""},
		{"lxc.net.0.type", "bridge", `refuses the value "bridge" for lxc.net.0.type`},
		{"lxc.tty.maxx", "5", "does not know the key lxc.tty.maxx"},
	}
	for _, tc := range tests {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			err := lxcctl.CheckConfigItem(tc.key, tc.value)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want accepted", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	for line, want := range map[string]string{
		"lxc.cgroup.relative = 1": "",
		"# a comment":             "",
		"lxc.start.order":         "not a KEY = VALUE line",
		"lxc.fancy.newkey = 1":    "does not know the key lxc.fancy.newkey",
	} {
		err := lxcctl.CheckConfigLine(line)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("CheckConfigLine(%q): got %v, want %q", line, err, want)
		}
	}
}

// TestBrokenContainerIsListedNotFatal: a container whose config LXC
// cannot load is listed (StateBroken, LXC's reason, the groups and PORT
// LXC could read) beside the others; its verbs fail with a *LoadError; a
// repaired config loads again at once.
func TestBrokenContainerIsListedNotFatal(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{ExtraConfig: []string{"lxc.group = web"}})
	ls := f.Add(2, testfleet.Normal)
	good, bad := ls[0], ls[1]
	const badLine = "lxc.signal.halt = SIGFOO\n"
	edit := func(fn func(string) string) {
		t.Helper()
		if _, err := f.Host.EditConfig(bad.Name, func(old []byte) ([]byte, error) { return []byte(fn(string(old))), nil }); err != nil {
			t.Fatal(err)
		}
	}
	edit(func(s string) string { return s + badLine })
	t.Cleanup(func() { edit(func(s string) string { return strings.Replace(s, badLine, "", 1) }) })
	ctx := context.Background()

	infos, err := f.Host.List(ctx)
	if err != nil {
		t.Fatalf("List with a broken container: %v", err)
	}
	byName := map[string]lxcctl.Info{}
	for _, in := range infos {
		byName[in.Name] = in
	}
	if in := byName[good.Name]; in.Broken() || in.State != lxcctl.StateStopped {
		t.Errorf("%s: got %+v, want STOPPED", good.Name, in)
	}
	in := byName[bad.Name]
	if !in.Broken() || !strings.Contains(in.Error, `line `) || !strings.Contains(in.Error, `refuses the value "SIGFOO" for lxc.signal.halt`) {
		t.Errorf("%s: got state %s error %q, want BROKEN with LXC's reason and the line", bad.Name, in.State, in.Error)
	}
	if !in.InGroup("web") || in.Env["PORT"] == "" {
		t.Errorf("%s: got groups %v env %v, want what LXC could read (group web, PORT)", bad.Name, in.Groups, in.Env)
	}

	sel, err := f.Host.Select(ctx, []string{good.Name, bad.Name}, "web")
	if err != nil || len(sel) != 2 {
		t.Fatalf("Select by name and group: %d, %v; want both", len(sel), err)
	}
	if _, err := f.Host.Info(ctx, bad.Name); !errors.Is(err, lxcctl.ErrCannotLoad) {
		t.Errorf("Info: got %v, want ErrCannotLoad", err)
	}
	if err := f.Host.Start(ctx, bad.Name); !errors.Is(err, lxcctl.ErrCannotLoad) || !strings.Contains(err.Error(), bad.Name) {
		t.Errorf("Start: got %v, want a LoadError naming it", err)
	}
	if _, err := f.Host.Stop(ctx, bad.Name, time.Second); !errors.Is(err, lxcctl.ErrCannotLoad) {
		t.Errorf("Stop: got %v, want ErrCannotLoad", err)
	}

	// Repaired: it loads at once (the cache follows the file).
	edit(func(s string) string { return strings.Replace(s, badLine, "", 1) })
	if in, err := f.Host.Info(ctx, bad.Name); err != nil || in.Broken() || in.State != lxcctl.StateStopped {
		t.Errorf("after the repair: got %+v, %v; want STOPPED", in, err)
	}
	edit(func(s string) string { return s + badLine }) // for the cleanup's repair
}
