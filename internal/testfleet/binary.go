package testfleet

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// BinaryEnv names a prebuilt lxcfleet binary for the tests: `make test`
// builds bin/lxcfleet once and sets it, so that no test package builds
// its own (five did).
const BinaryEnv = "LXCFLEET_TEST_BIN"

var binOnce struct {
	sync.Once
	path, dir string
	out       []byte
	err       error
}

// Binary returns the real lxcfleet binary: $LXCFLEET_TEST_BIN when set
// (it must exist), else one built from this tree once per test binary
// (removed by Main, or by CleanBinary).
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(BinaryEnv); p != "" {
		abs, err := filepath.Abs(p)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			t.Fatalf("%s=%s: %v (make test builds it with make build)", BinaryEnv, p, err)
		}
		return abs
	}
	binOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		binOnce.dir, binOnce.err = os.MkdirTemp("", "lxcfleet-bin-")
		if binOnce.err != nil {
			return
		}
		binOnce.path = filepath.Join(binOnce.dir, "lxcfleet")
		cmd := exec.Command("go", "build", "-o", binOnce.path, "./cmd/lxcfleet")
		cmd.Dir = root
		binOnce.out, binOnce.err = cmd.CombinedOutput()
	})
	if binOnce.err != nil {
		t.Fatalf("building lxcfleet: %v\n%s", binOnce.err, binOnce.out)
	}
	return binOnce.path
}

// CleanBinary removes the binary Binary built, if any.
func CleanBinary() {
	if binOnce.dir != "" {
		_ = os.RemoveAll(binOnce.dir)
	}
}
