package mounts

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReleaseFromMountinfo(t *testing.T) {
	unshareLayout := DefaultLayout()
	tests := []struct {
		file        string
		layout      Layout
		wantRelease string
		wantDeleted bool
		wantErr     string
	}{
		{"locker.txt", DefaultLayout(), "000042-3f9c2a1b7d4e", false, ""},
		{"locker-deleted.txt", DefaultLayout(), "000041-9d0e1f2a3b4c", true, ""},
		{"var-fs.txt", DefaultLayout(), "000043-0a1b2c3d4e5f", false, ""},
		{"unshare.txt", unshareLayout, "000044-dd44ee55ff66", false, ""},
		{"locker.txt", func() Layout { l := DefaultLayout(); l.AppPath = "/srv/app"; return l }(), "", false, "no mount at the app path /srv/app"},
		{"locker.txt", LayoutAt("/srv/fleet"), "", false, "is not a release in /srv/fleet/releases"},
	}
	for _, tt := range tests {
		t.Run(tt.file+" "+tt.layout.Releases+" "+tt.layout.AppPath, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata/mountinfo", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			rel, deleted, err := ReleaseFromMountinfo(f, tt.layout)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
			if rel != tt.wantRelease || deleted != tt.wantDeleted {
				t.Errorf("got %q, %v, want %q, %v", rel, deleted, tt.wantRelease, tt.wantDeleted)
			}
		})
	}
}

func TestReleaseFromMountinfoErrNoAppMount(t *testing.T) {
	in := "26 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
	_, _, err := ReleaseFromMountinfo(strings.NewReader(in), DefaultLayout())
	if !errors.Is(err, ErrNoAppMount) {
		t.Errorf("got %v, want ErrNoAppMount", err)
	}
}

func TestParseMountinfo(t *testing.T) {
	f, err := os.Open("testdata/mountinfo/locker.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mounts, err := parseMountinfo(f)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(mounts), 19; got != want {
		t.Fatalf("got %v mounts, want %v", got, want)
	}
	want := mountInfo{dev: "254:0", root: "/srv/shared assets/fonts\tv2", point: "/srv/shared assets"}
	if got := mounts[13]; got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}

	bad := []string{
		"26 1 254:0 / / rw,relatime ext4 /dev/vda rw\n", // no separator
		"26 1 254:0 /\n", // short
		"26 1 2540 / / rw,relatime - ext4 /dev/vda rw\n", // no major:minor
	}
	for _, in := range bad {
		if _, err := parseMountinfo(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), "malformed") {
			t.Errorf("%q: got %v, want a malformed error", in, err)
		}
	}
}

func TestUnescapeOctal(t *testing.T) {
	tests := []struct{ in, want string }{
		{`plain`, `plain`},
		{`a\040b`, `a b`},
		{`a\011b\012c\134d`, "a\tb\nc\\d"},
		{`trailing\04`, `trailing\04`},
		{`not\999octal`, `not\999octal`},
		{`\\040`, `\ `}, // a backslash that escapes nothing, then \040
	}
	for _, tt := range tests {
		if got := unescapeOctal(tt.in); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestReleaseWithHostTable covers what only the host's mount table can
// tell: a releases folder that is the root of its own file system, or a
// bind mount of a folder somewhere else.
func TestReleaseWithHostTable(t *testing.T) {
	l := LayoutAt("/nonexistent/lxcfleet") // not resolvable: lexical only
	container := []mountInfo{
		{dev: "254:0", root: "/var/lib/lxc/x/rootfs", point: "/"},
		{dev: "0:77", root: "/000050-abcdefabcdef", point: "/opt/app"},
	}
	tests := []struct {
		name    string
		host    []mountInfo
		want    string
		wantErr bool
	}{
		{"own file system", []mountInfo{
			{dev: "254:0", root: "/", point: "/"},
			{dev: "0:77", root: "/", point: "/nonexistent/lxcfleet/releases"},
		}, "000050-abcdefabcdef", false},
		{"own file system, other device", []mountInfo{
			{dev: "254:0", root: "/", point: "/"},
			{dev: "0:78", root: "/", point: "/nonexistent/lxcfleet/releases"},
		}, "", true},
		{"no host mount for it", []mountInfo{{dev: "254:0", root: "/", point: "/"}}, "", true},
		{"same device, another folder", []mountInfo{
			{dev: "254:0", root: "/", point: "/"},
			{dev: "0:77", root: "/data", point: "/nonexistent"},
		}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := releaseOf(container, l, tt.host)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got %q, %v, want %q (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}

	bound := []mountInfo{
		{dev: "254:0", root: "/var/lib/lxc/x/rootfs", point: "/"},
		{dev: "8:1", root: "/export/rel/000051-aaaaaaaaaaaa//deleted", point: "/opt/app"},
	}
	host := []mountInfo{
		{dev: "254:0", root: "/", point: "/"},
		{dev: "8:1", root: "/export/rel", point: "/nonexistent/lxcfleet/releases"},
	}
	got, deleted, err := releaseOf(bound, l, host)
	if err != nil || got != "000051-aaaaaaaaaaaa" || !deleted {
		t.Errorf("got %q, %v, %v, want 000051-aaaaaaaaaaaa, true, no error", got, deleted, err)
	}
}
