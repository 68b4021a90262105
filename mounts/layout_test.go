package mounts

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultLayout(t *testing.T) {
	got := DefaultLayout()
	want := Layout{
		Root:           "/var/lib/lxcfleet",
		Current:        "/var/lib/lxcfleet/current",
		Releases:       "/var/lib/lxcfleet/releases",
		Lockers:        "/var/lib/lxcfleet/lockers",
		AppPath:        "opt/app",
		MePath:         "Me",
		ConfigPath:     "Config",
		ConfigReadOnly: true,
	}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got, want := got.ConfigDir("a1"), "/var/lib/lxcfleet/lockers/a1/Config"; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
	if got, want := DefaultLayout().MeDir("a1"), "/var/lib/lxcfleet/lockers/a1/Me"; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestValidateLexical(t *testing.T) {
	root := t.TempDir()
	base := LayoutAt(root)
	tests := []struct {
		name    string
		edit    func(*Layout)
		wantErr string // "" means valid
	}{
		{"default", func(*Layout) {}, ""},
		{"trailing slash and leading slash on targets", func(l *Layout) {
			l.Root += "/"
			l.AppPath = "/opt/app"
		}, ""},
		{"relative root", func(l *Layout) { l.Root = "var/lib/lxcfleet" }, "not an absolute path"},
		{"root is /", func(l *Layout) { *l = LayoutAt("/") }, "must not be /"},
		{"lockers outside root", func(l *Layout) { l.Lockers = "/srv/lockers" }, "not inside the layout root"},
		{"lockers is root", func(l *Layout) { l.Lockers = root }, "not inside the layout root"},
		{"lockers inside releases", func(l *Layout) { l.Lockers = filepath.Join(root, "releases/lockers") }, "overlap"},
		{"unset current", func(l *Layout) { l.Current = "" }, "layout current is not set"},
		{"space in path", func(l *Layout) { l.Lockers = filepath.Join(root, "my lockers") }, "contains ' '"},
		{"relative templates", func(l *Layout) { l.Templates = "templates" }, "not an absolute path"},
		{"empty app path", func(l *Layout) { l.AppPath = "/" }, "app_path is not set"},
		{"app path leaves rootfs", func(l *Layout) { l.AppPath = "../opt" }, "leaves the container's rootfs"},
		{"Me inside app", func(l *Layout) { l.MePath = "opt/app/Me" }, "overlap"},
		{"same targets", func(l *Layout) { l.ConfigPath = "Me" }, "overlap"},
		{"tab in target", func(l *Layout) { l.MePath = "M\te" }, "contains '\\t'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := base
			tt.edit(&l)
			err := l.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidateFilesystem(t *testing.T) {
	outside := t.TempDir()
	tests := []struct {
		name    string
		setup   func(t *testing.T, l Layout) Layout
		wantErr string
	}{
		{"fresh root", func(t *testing.T, l Layout) Layout { return l }, ""},
		{"root is a file", func(t *testing.T, l Layout) Layout {
			writeFile(t, filepath.Join(l.Root, "f"), "")
			return LayoutAt(filepath.Join(l.Root, "f"))
		}, "is not a directory"},
		{"current into releases", func(t *testing.T, l Layout) Layout {
			mkdirAll(t, filepath.Join(l.Releases, "1-abc"))
			symlink(t, "releases/1-abc", l.Current)
			return l
		}, ""},
		{"root is a symlink", func(t *testing.T, l Layout) Layout {
			mkdirAll(t, filepath.Join(l.Releases, "1-abc"), l.Lockers)
			symlink(t, "releases/1-abc", l.Current)
			link := filepath.Join(filepath.Dir(l.Root), "link")
			symlink(t, l.Root, link)
			return LayoutAt(link)
		}, ""},
		{"lockers symlink inside root", func(t *testing.T, l Layout) Layout {
			mkdirAll(t, filepath.Join(l.Root, "data/lockers"))
			symlink(t, "data/lockers", l.Lockers)
			return l
		}, ""},
		{"releases symlink out of root", func(t *testing.T, l Layout) Layout {
			symlink(t, outside, l.Releases)
			return l
		}, "outside"},
		{"lockers below a symlink out of root", func(t *testing.T, l Layout) Layout {
			symlink(t, outside, filepath.Join(l.Root, "data"))
			l.Lockers = filepath.Join(l.Root, "data/lockers")
			return l
		}, "outside"},
		{"current out of root", func(t *testing.T, l Layout) Layout {
			symlink(t, outside, l.Current)
			return l
		}, "not a release in"},
		{"current is the releases folder", func(t *testing.T, l Layout) Layout {
			mkdirAll(t, l.Releases)
			symlink(t, "releases", l.Current)
			return l
		}, "not a release in"},
		{"current dangling", func(t *testing.T, l Layout) Layout {
			symlink(t, "releases/gone", l.Current)
			return l
		}, "points to releases/gone, which does not exist"},
		{"dangling lockers", func(t *testing.T, l Layout) Layout {
			symlink(t, "nowhere", l.Lockers)
			return l
		}, "dangling symlink"},
		{"releases is a file", func(t *testing.T, l Layout) Layout {
			writeFile(t, l.Releases, "x")
			return l
		}, "is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := tt.setup(t, tempLayout(t))
			want := tt.wantErr
			err := l.Validate()
			switch {
			case want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
				t.Errorf("got %v, want an error containing %q", err, want)
			}
		})
	}
}

func TestValidateMissingRootMessage(t *testing.T) {
	root := filepath.Join(t.TempDir(), "absent")
	err := LayoutAt(root).Validate()
	want := "layout root " + root + " does not exist"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %v", err, want)
	}
	if _, serr := os.Stat(root); serr == nil {
		t.Errorf("Validate created %s", root)
	}
}
