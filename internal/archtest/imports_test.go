package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// rules maps an import path prefix to the only top-level folders that may
// import it.
var rules = map[string][]string{
	"github.com/lxc/go-lxc":          {"lxcctl"},
	"github.com/go-git/":             {"codeupdate"},
	"github.com/spf13/cobra":         {"cmd"},
	"github.com/schollz/progressbar": {"cmd"},
	"github.com/kardianos/service":   {"cmd"},
	// The fleet is the only user of etcd's client (the server runs only
	// as a test member); a host without [fleet] never links it in use.
	"go.etcd.io/etcd/": {"fleet", "internal"},
	// The rollout executor moves lockers only through its three verbs (I7:
	// nothing there can touch a locker's /Me): no file system, no LXC, no
	// git, no HTTP.
	// Its policy type crosses every layer: the CLI's flags fill it
	// (cmd), [defaults] decode into it (config), the console's tests set it.
	"lxcfleet/rollout": {"agent", "rollout", "lockerverbs", "config", "cmd", "console", "internal"},
}

// forbidden maps a folder to imports it must not have.
var forbidden = map[string][]string{
	"rollout": {"os", "io/fs", "path/filepath", "net", "net/http", "lxcfleet/lxcctl", "lxcfleet/mounts", "lxcfleet/codeupdate", "github.com/"},
}

func TestImportRules(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", root, err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		top := strings.SplitN(filepath.ToSlash(rel), "/", 2)[0]
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden[top] {
				if (p == bad || strings.HasPrefix(p, bad) && strings.HasSuffix(bad, "/")) && !strings.HasSuffix(rel, "_test.go") {
					t.Errorf("%s imports %s; %s must not (see the rollout package doc, I7)", rel, p, top)
				}
			}
			for prefix, allowed := range rules {
				if strings.HasPrefix(p, prefix) && !contains(allowed, top) {
					t.Errorf("%s imports %s; only %v may", rel, p, allowed)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("checked only %d files; the walk is broken", checked)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
