package mounts

import (
	"slices"
	"strings"
	"testing"
)

func TestEntries(t *testing.T) {
	rw := DefaultLayout()
	rw.ConfigReadOnly = false
	moved := LayoutAt("/srv/fleet/")
	moved.AppPath = "/srv/app"
	tests := []struct {
		name   string
		layout Layout
		locker string
		want   []string
	}{
		{"default", DefaultLayout(), "NAME", []string{
			"/var/lib/lxcfleet/current opt/app none bind,ro,create=dir 0 0",
			"/var/lib/lxcfleet/lockers/NAME/Me Me none bind,create=dir 0 0",
			"/var/lib/lxcfleet/lockers/NAME/Config Config none bind,ro,create=dir 0 0",
		}},
		{"config read-write", rw, "l1", []string{
			"/var/lib/lxcfleet/current opt/app none bind,ro,create=dir 0 0",
			"/var/lib/lxcfleet/lockers/l1/Me Me none bind,create=dir 0 0",
			"/var/lib/lxcfleet/lockers/l1/Config Config none bind,create=dir 0 0",
		}},
		{"other root and app path", moved, "l2", []string{
			"/srv/fleet/current srv/app none bind,ro,create=dir 0 0",
			"/srv/fleet/lockers/l2/Me Me none bind,create=dir 0 0",
			"/srv/fleet/lockers/l2/Config Config none bind,ro,create=dir 0 0",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.layout.Entries(tt.locker)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			for _, e := range got {
				if !tt.layout.Owns(e) {
					t.Errorf("got Owns(%q) false, want true", e)
				}
			}
		})
	}
}

func TestEntriesRefuses(t *testing.T) {
	tests := []struct {
		name    string
		layout  Layout
		locker  string
		wantErr string
	}{
		{"bad name", DefaultLayout(), "../etc", "invalid container name"},
		{"relative root", LayoutAt("lxcfleet"), "a", "not an absolute path"},
		{"zero layout", Layout{}, "a", "layout root is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.layout.Entries(tt.locker)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestOwns(t *testing.T) {
	l := DefaultLayout()
	tests := []struct {
		entry string
		want  bool
	}{
		{"/var/lib/lxcfleet/current opt/app none bind,ro,create=dir 0 0", true},
		{"/var/lib/lxcfleet/releases/7-abc opt/app none bind,ro 0 0", true},
		{"/var/lib/lxcfleet/lockers/x/Config Config none bind,create=dir 0 0", true},
		{"/var/lib/lxcfleet/./lockers/x/Me srv/me none bind 0 0", true},
		{"/old/root/lockers/x/Me Me none bind,create=dir 0 0", true},
		{"/old/root/current /opt/app none bind,ro 0 0", true},
		{"/old/root/lockers/x/Config ./Config none bind 0 0", true},
		{"/var/lib/lxcfleetX/current opt/app2 none bind 0 0", false},
		{"/lib lib none ro,bind 0 0", false},
		{"shm dev/shm tmpfs defaults,create=dir 0 0", false},
		{"/usr/bin/node usr/bin/node none bind,ro,create=file 0 0", false},
		{"/var/lib/lxcfleet", false},
		{"", false},
		{"/srv/opt/app opt/app/sub none bind 0 0", false},
		{`/var/lib/lxcfleet/lockers/a\040b/Me x none bind 0 0`, true},
	}
	for _, tt := range tests {
		t.Run(tt.entry, func(t *testing.T) {
			if got := l.Owns(tt.entry); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
