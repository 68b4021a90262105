package mounts

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestApplyEntriesGolden(t *testing.T) {
	tests := []struct {
		file, locker string
	}{
		{"busybox.config", "bb1"},     // as written by lxc-create -t busybox
		{"rerender.config", "shop-7"}, // an older managed section, ro Config now
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			out, changed, err := ApplyEntries(in, DefaultLayout(), tt.locker)
			if err != nil {
				t.Fatal(err)
			}
			if !changed {
				t.Errorf("got changed %v, want %v", changed, true)
			}
			golden(t, tt.file+".golden", out)

			again, changed, err := ApplyEntries(out, DefaultLayout(), tt.locker)
			if err != nil {
				t.Fatal(err)
			}
			if changed || !bytes.Equal(again, out) {
				t.Errorf("second apply: got changed %v and\n%s\nwant changed false and identical bytes", changed, again)
			}
			if dev := DeviationsInConfig(out, DefaultLayout(), tt.locker); dev != nil {
				t.Errorf("got deviations %q, want none", dev)
			}
		})
	}
}

// TestApplyEntriesKeepsTemplateBinds checks that every line that is not a
// managed entry survives in its order, the template's binds first of all.
func TestApplyEntriesKeepsTemplateBinds(t *testing.T) {
	in, err := os.ReadFile("testdata/busybox.config")
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := ApplyEntries(in, DefaultLayout(), "bb1")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(out, in) {
		t.Errorf("got output that does not start with the whole original file:\n%s", out)
	}
	want := []string{
		"shm dev/shm tmpfs defaults,create=dir 0 0",
		"mqueue dev/mqueue mqueue defaults,optional,create=dir 0 0",
		"/lib lib none ro,bind 0 0",
		"/usr/lib usr/lib none ro,bind 0 0",
		"/lib64 lib64 none ro,bind 0 0",
		"/usr/lib64 usr/lib64 none ro,bind 0 0",
		"/sys/kernel/security sys/kernel/security none ro,bind,optional 0 0",
		"/var/lib/lxcfleet/current opt/app none bind,ro,create=dir 0 0",
		"/var/lib/lxcfleet/lockers/bb1/Me Me none bind,create=dir 0 0",
		"/var/lib/lxcfleet/lockers/bb1/Config Config none bind,ro,create=dir 0 0",
	}
	if got := MountEntries(out); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestApplyEntriesEdgeCases(t *testing.T) {
	l := DefaultLayout()
	managed := Marker + "\n" +
		"lxc.mount.entry = /var/lib/lxcfleet/current opt/app none bind,ro,create=dir 0 0\n" +
		"lxc.mount.entry = /var/lib/lxcfleet/lockers/a/Me Me none bind,create=dir 0 0\n" +
		"lxc.mount.entry = /var/lib/lxcfleet/lockers/a/Config Config none bind,ro,create=dir 0 0\n"
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", managed},
		{"no final newline", "lxc.uts.name = a", "lxc.uts.name = a\n\n" + managed},
		{"ends with blank line", "lxc.uts.name = a\n\n", "lxc.uts.name = a\n\n" + managed},
		{"crlf kept", "lxc.uts.name = a\r\n", "lxc.uts.name = a\r\n\n" + managed},
		{"marker and entries in the middle", "a = 1\n" + managed + "b = 2\n", "a = 1\nb = 2\n\n" + managed},
		{"duplicate managed entries", managed + managed, managed},
		{"commented entry kept", "#lxc.mount.entry = /var/lib/lxcfleet/current opt/app none bind 0 0\n",
			"#lxc.mount.entry = /var/lib/lxcfleet/current opt/app none bind 0 0\n\n" + managed},
		{"quoted and tab-indented owned entry", "\tlxc.mount.entry\t=\t'/x opt/app none bind 0 0'\n", managed},
		{"already applied", managed, managed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed, err := ApplyEntries([]byte(tt.in), l, "a")
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if want := tt.in != tt.want; changed != want {
				t.Errorf("got changed %v, want %v", changed, want)
			}
		})
	}
}

func TestApplyEntriesRefuses(t *testing.T) {
	in := []byte("lxc.uts.name = a\n")
	if _, _, err := ApplyEntries(in, DefaultLayout(), "a/../../etc"); err == nil || !strings.Contains(err.Error(), "invalid container name") {
		t.Errorf("got %v, want an invalid name error", err)
	}
	if _, _, err := ApplyEntries(in, Layout{}, "a"); err == nil {
		t.Errorf("got %v, want an error for an empty layout", err)
	}
}

func TestMountEntries(t *testing.T) {
	in := "# lxc.mount.entry = /commented x none bind 0 0\n" +
		"lxc.mount.entry=/a a none bind 0 0\n" +
		"  lxc.mount.entry   =   /b b none bind 0 0   \n" +
		"lxc.mount.entry = \"/c c none bind 0 0\"\n" +
		"lxc.mount.auto = proc:mixed\n" +
		"lxc.mount.entry.x = /d d none bind 0 0\n" +
		"lxc.mount.entry = /e e none bind 0 0"
	want := []string{"/a a none bind 0 0", "/b b none bind 0 0", "/c c none bind 0 0", "/e e none bind 0 0"}
	if got := MountEntries([]byte(in)); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestDeviationsInConfig(t *testing.T) {
	l := DefaultLayout()
	const (
		app    = "lxc.mount.entry = /var/lib/lxcfleet/current opt/app none bind,ro,create=dir 0 0\n"
		me     = "lxc.mount.entry = /var/lib/lxcfleet/lockers/a/Me Me none bind,create=dir 0 0\n"
		config = "lxc.mount.entry = /var/lib/lxcfleet/lockers/a/Config Config none bind,ro,create=dir 0 0\n"
	)
	tests := []struct {
		name   string
		config string
		want   []string
	}{
		{"all good", app + me + config, nil},
		{"all good, other spacing", "lxc.mount.entry=/var/lib/lxcfleet/current /opt/app none create=dir,ro,bind 0 0\n" + me + config, nil},
		{"nothing", "lxc.uts.name = a\n", []string{
			`missing mount entry for /opt/app (want "/var/lib/lxcfleet/current opt/app none bind,ro,create=dir 0 0")`,
			`missing mount entry for /Me (want "/var/lib/lxcfleet/lockers/a/Me Me none bind,create=dir 0 0")`,
			`missing mount entry for /Config (want "/var/lib/lxcfleet/lockers/a/Config Config none bind,ro,create=dir 0 0")`,
		}},
		{"config rw", app + me + "lxc.mount.entry = /var/lib/lxcfleet/lockers/a/Config Config none bind,create=dir 0 0\n", []string{
			"/Config is mounted read-write (rw), want read-only (ro)",
		}},
		{"app rw after ro", "lxc.mount.entry = /var/lib/lxcfleet/current opt/app none bind,ro,rw,create=dir 0 0\n" + me + config, []string{
			"/opt/app is mounted read-write (rw), want read-only (ro)",
		}},
		{"Me ro", app + "lxc.mount.entry = /var/lib/lxcfleet/lockers/a/Me Me none bind,ro,create=dir 0 0\n" + config, []string{
			"/Me is mounted read-only (ro), want read-write (rw)",
		}},
		{"duplicate", app + app + me + config, []string{"2 mount entries for /opt/app, want 1"}},
		{"another locker's Me", app + "lxc.mount.entry = /var/lib/lxcfleet/lockers/b/Me Me none bind,create=dir 0 0\n" + config, []string{
			"/Me mounts /var/lib/lxcfleet/lockers/b/Me, want /var/lib/lxcfleet/lockers/a/Me",
		}},
		{"a release instead of current", "lxc.mount.entry = /var/lib/lxcfleet/releases/1-abc opt/app none bind,ro,create=dir 0 0\n" + me + config, []string{
			"/opt/app mounts /var/lib/lxcfleet/releases/1-abc, want /var/lib/lxcfleet/current",
		}},
		{"missing create=dir", app + "lxc.mount.entry = /var/lib/lxcfleet/lockers/a/Me Me none bind 0 0\n" + config, []string{
			`/Me has options "bind", want "bind,create=dir"`,
		}},
		{"stale managed entry", app + me + config + "lxc.mount.entry = /var/lib/lxcfleet/lockers/a/Config etc/app none bind 0 0\n", []string{
			`unexpected managed mount entry "/var/lib/lxcfleet/lockers/a/Config etc/app none bind 0 0"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DeviationsInConfig([]byte(tt.config), l, "a")
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if got := DeviationsInConfig(nil, l, ".."); len(got) != 1 || !strings.Contains(got[0], "invalid container name") {
		t.Errorf("got %q, want one invalid name deviation", got)
	}
}

// FuzzApplyEntries checks, for any config text, that ApplyEntries is
// idempotent, keeps every line it does not own in order, and leaves a
// config with no deviations.
func FuzzApplyEntries(f *testing.F) {
	for _, name := range []string{"busybox.config", "rerender.config"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(""))
	f.Add([]byte("\n\n"))
	f.Add([]byte("lxc.uts.name = a"))
	f.Add([]byte("a = 1\r\n" + Marker + "\r\nlxc.mount.entry = /x opt/app none bind 0 0\r\nb = 2"))
	f.Add([]byte("lxc.mount.entry = '/var/lib/lxcfleet/lockers/b/Me\tMe'\n  \n"))
	f.Add([]byte("lxc.mount.entry = /var/lib/lxcfleet\\040x/y z none bind 0 0\n#" + Marker + "\n"))
	l := DefaultLayout()
	f.Fuzz(func(t *testing.T, in []byte) {
		out, changed, err := ApplyEntries(in, l, "a")
		if err != nil {
			t.Fatal(err)
		}
		if changed != !bytes.Equal(out, in) {
			t.Errorf("got changed %v, want %v", changed, !bytes.Equal(out, in))
		}
		again, changed2, err := ApplyEntries(out, l, "a")
		if err != nil {
			t.Fatal(err)
		}
		if changed2 || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: got changed %v and %q, want false and %q", changed2, again, out)
		}
		// Every line ApplyEntries does not own must be in the output, in
		// order.
		outLines := strings.Split(string(out), "\n")
		i := 0
		for _, line := range strings.SplitAfter(string(in), "\n") {
			if line == "" {
				continue
			}
			if v, ok := mountEntryValue(line); (ok && l.Owns(v)) || isMarker(line) {
				continue
			}
			line = strings.TrimSuffix(line, "\n")
			for i < len(outLines) && outLines[i] != line {
				i++
			}
			if i == len(outLines) {
				t.Fatalf("line %q was dropped: got %q", line, out)
			}
			i++
		}
		if dev := DeviationsInConfig(out, l, "a"); dev != nil {
			t.Errorf("got deviations %q, want none", dev)
		}
	})
}

// TestApplyEntriesKeepsOtherBindsUnderRoot: an lxcpath inside the layout
// root (as the demo has it) holds each locker's init wrapper and app log;
// their binds are provision's, not the layout's, and must survive
// ApplyEntries (they were dropped, and every demo locker failed to start).
func TestApplyEntriesKeepsOtherBindsUnderRoot(t *testing.T) {
	l := LayoutAt("/var/lib/lxcfleet-demo")
	keep := []string{
		"lxc.mount.entry = /var/lib/lxcfleet-demo/lxc/demo-001/lxcfleet-init sbin/lxcfleet-init none bind,ro,create=file 0 0",
		"lxc.mount.entry = /var/lib/lxcfleet-demo/lxc/demo-001/applog var/log/lxcfleet none bind,create=dir 0 0",
	}
	stale := "lxc.mount.entry = /var/lib/lxcfleet-demo/releases/1-abc opt/app none bind,ro,create=dir 0 0"
	in := []byte(strings.Join(append(append([]string{}, keep...), stale), "\n") + "\n")
	out, _, err := ApplyEntries(in, l, "demo-001")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keep {
		if !strings.Contains(string(out), k) {
			t.Errorf("ApplyEntries dropped %q:\n%s", k, out)
		}
	}
	if strings.Contains(string(out), stale) {
		t.Errorf("ApplyEntries kept the stale release bind %q:\n%s", stale, out)
	}
}
