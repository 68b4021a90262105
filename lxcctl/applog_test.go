package lxcctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadAppExit(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, AppLogName)
	earlier := "old run\n" + AppExitLine + "1\n"
	this := "starting\nline 2\nline 3\nline 4\nline 5\nbroken build\n" + AppExitLine + "4\n"
	if err := os.WriteFile(log, []byte(earlier+this), 0o640); err != nil {
		t.Fatal(err)
	}
	got := readAppExit(log, int64(len(earlier)))
	if got.Status != 4 || strings.Join(got.Last, "|") != "line 2|line 3|line 4|line 5|broken build" {
		t.Errorf("readAppExit: got %+v, want status 4 and the last 5 lines of this run", got)
	}
	if s := got.String(); s != "app exited with status 4; its last output: line 2 | line 3 | line 4 | line 5 | broken build" {
		t.Errorf("String: got %q", s)
	}
	// A log the container replaced by a symlink to a host file is not read.
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.log")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	if got := readAppExit(link, 0); got.Status != -1 || len(got.Last) != 0 || got.String() != "" {
		t.Errorf("readAppExit through a symlink: got %+v, want nothing", got)
	}
	if got := readAppExit(filepath.Join(dir, "missing"), 0); got.String() != "" {
		t.Errorf("readAppExit of a missing log: got %+v, want nothing", got)
	}
}
