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
	if s := got.String(); s != "app exited with status 4; its last output: line 2 | line 3 | line 4 | line 5 | broken build; app log: "+log {
		t.Errorf("String: got %q", s)
	}
	// Read from the start, the earlier run's lines do not mix in.
	if got := readAppExit(log, 0); got.Status != 4 || strings.Join(got.Last, "|") != "line 2|line 3|line 4|line 5|broken build" {
		t.Errorf("readAppExit from 0: got %+v, want only this run", got)
	}
	// A Node uncaught exception: the reason is above the stack frames.
	node := "earlier output\nError: earlier run's\n" + AppExitLine + "1\n" +
		"listening on 4101\n/opt/app/server.js:12\n    throw new Error('no /Me/data.json');\n    ^\n\n" +
		"Error: no /Me/data.json\n    at Object.<anonymous> (/opt/app/server.js:12:11)\n    at Module._compile (node:internal/modules/cjs/loader:1256:14)\n" +
		"    at Module._extensions..js (node:internal/modules/cjs/loader:1310:10)\n    at Module.load (node:internal/modules/cjs/loader:1119:32)\n" +
		"    at Module._load (node:internal/modules/cjs/loader:960:12)\n\nNode.js v20.19.2\n" + AppExitLine + "1\n"
	if err := os.WriteFile(log, []byte(node), 0o640); err != nil {
		t.Fatal(err)
	}
	got = readAppExit(log, 0)
	if got.FirstError != "Error: no /Me/data.json" || got.Status != 1 {
		t.Errorf("node crash: got first error %q status %d, want this run's Error line and 1", got.FirstError, got.Status)
	}
	if s := got.String(); !strings.Contains(s, "first error: Error: no /Me/data.json") || !strings.Contains(s, "app log: "+log) || strings.Contains(s, "earlier") {
		t.Errorf("node crash: String %q: want the first error, the app log, nothing of the earlier run", s)
	}
	// A run killed before it wrote its exit line.
	if err := os.WriteFile(log, []byte("a\n"+AppExitLine+"0\nTypeError: x is not a function\nb\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if got := readAppExit(log, 0); got.Status != -1 || got.FirstError != "TypeError: x is not a function" || strings.Join(got.Last, "|") != "TypeError: x is not a function|b" {
		t.Errorf("a run without exit line: got %+v", got)
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
