package testfleet

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"lxcfleet/internal/npmregistry"
)

var appOnce struct {
	sync.Once
	dir string
	err error
	out []byte
}

// AppSource is the folder of the fixture app (server.js, package.json,
// package-lock.json) in this repository.
func AppSource() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "app")
}

// App returns a folder holding the fixture app with its dependencies
// installed by a real `npm ci` from the test registry (npmregistry.Use),
// made once per test binary.
func App(t testing.TB) string {
	t.Helper()
	RequireNode(t)
	npmregistry.MustUse(t)
	appOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lxcfleet-testapp-")
		if err != nil {
			appOnce.err = err
			return
		}
		appOnce.dir = dir
		if appOnce.err = os.Chmod(dir, 0o755); appOnce.err != nil {
			return
		}
		if appOnce.err = CopyApp(dir); appOnce.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		appOnce.out, appOnce.err = cmd.CombinedOutput()
	})
	if appOnce.err != nil {
		t.Fatalf("preparing the fixture app in %s: %v\n%s", appOnce.dir, appOnce.err, appOnce.out)
	}
	return appOnce.dir
}

// CopyApp copies the fixture app's source files (not node_modules) to dir.
func CopyApp(dir string) error {
	for _, f := range []string{"server.js", "package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(AppSource(), f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
