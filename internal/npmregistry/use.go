package npmregistry

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Unreachable is a registry address nothing answers on (the discard port
// of loopback, closed on a test host): npm fails to connect at once.
// .ci/run points npm at it, so that a test that still needs the public
// registry fails loudly.
const Unreachable = "http://127.0.0.1:9/"

// Start starts a registry of its own for one test, closed at the test's
// end. Tests that only need npm to work call Use instead.
func Start(t testing.TB) *Registry {
	t.Helper()
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

var shared struct {
	once  sync.Once
	r     *Registry
	cache string
	err   error
}

// Use starts the test binary's shared registry (once) and points every npm
// the process starts at it: it sets npm_config_registry in the process
// environment, and npm_config_cache to a cache of the test binary's own (a
// warm cache of the host cannot hide a package the registry lacks). The
// code under test inherits both. Audit, fund and update-notifier requests
// are turned off. It is safe to call from many tests at once.
func Use() (*Registry, error) {
	shared.once.Do(func() {
		removeStaleCaches()
		cache, err := os.MkdirTemp("", cachePrefix+strconv.Itoa(os.Getpid())+"-")
		if err != nil {
			shared.err = fmt.Errorf("creating the test npm cache: %w", err)
			return
		}
		r, err := New()
		if err != nil {
			shared.err = err
			return
		}
		for k, v := range map[string]string{
			"npm_config_registry":        r.URL,
			"npm_config_cache":           cache,
			"npm_config_audit":           "false",
			"npm_config_fund":            "false",
			"npm_config_update_notifier": "false",
		} {
			if err := os.Setenv(k, v); err != nil {
				shared.err = fmt.Errorf("setting %s: %w", k, err)
				return
			}
		}
		shared.r, shared.cache = r, cache
	})
	return shared.r, shared.err
}

// Done stops the shared registry and removes the cache Use made; a
// TestMain calls it after m.Run (a test binary that does not is cleaned
// up by the next one's Use).
func Done() {
	if shared.r != nil {
		shared.r.Close()
	}
	if shared.cache != "" {
		os.RemoveAll(shared.cache)
	}
}

// MustUse is Use for a test: it fails the test when the registry cannot
// start.
func MustUse(t testing.TB) *Registry {
	t.Helper()
	r, err := Use()
	if err != nil {
		t.Fatalf("starting the test npm registry: %v", err)
	}
	return r
}

// cachePrefix starts the name of each test binary's npm cache folder,
// followed by the binary's process id.
const cachePrefix = "lxcfleet-npm-cache-"

// removeStaleCaches removes the npm caches of test binaries that have
// exited (a test binary has no hook at its exit to remove its own).
func removeStaleCaches() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), cachePrefix+"*"))
	for _, d := range dirs {
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), cachePrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}
