package codeupdate_test

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lxcfleet/codeupdate"
	"lxcfleet/internal/npmregistry"
)

// registryOutage is one origin whose main is the testdata app (is-number
// 7.0.0) and a layout root whose first release, built against a registry
// of the test's own into an npm cache of the test's own, is current.
type registryOutage struct {
	o     *testOrigin
	reg   *npmregistry.Registry
	root  string
	cache string
	relA  codeupdate.Release
}

func newRegistryOutage(t *testing.T) *registryOutage {
	t.Helper()
	requireNpm(t)
	reg := npmregistry.Start(t)
	e := &registryOutage{o: newTestOrigin(t, appFiles()), reg: reg, root: t.TempDir()}
	e.cache = filepath.Join(e.root, "npm-cache")
	m := e.manager(t, e.root, reg.URL, 0)
	ctx := context.Background()
	var err error
	if e.relA, err = m.Build(ctx, "main", nil); err != nil {
		t.Fatalf("first build against the test registry: %v", err)
	}
	if e.relA.Npm != codeupdate.NpmRan {
		t.Fatalf("first build: npm %q, want ran", e.relA.Npm)
	}
	if _, err := m.Switch(ctx, e.relA, "first"); err != nil {
		t.Fatal(err)
	}
	return e
}

// manager returns a Manager over root with npm pointed at registry, the
// outage's npm cache, and a stall timeout (0: the default). npm's cache is
// keyed by URL: an outage keeps the registry's address.
func (e *registryOutage) manager(t *testing.T, root, registry string, stall time.Duration) *codeupdate.Manager {
	t.Helper()
	m, _ := newManagerOpts(t, codeupdate.Options{Root: root, Origin: e.o.url, NpmTimeout: 2 * time.Minute,
		NpmCache: e.cache, NpmRegistry: registry, FetchStallTimeout: stall})
	return m
}

// isNumber6 changes the app's dependency to is-number 6.0.0, whose
// tarball the first build did not fetch.
func isNumber6(t *testing.T) map[string]string {
	t.Helper()
	return map[string]string{
		"package.json":      strings.Replace(readFileT(t, "testdata/app/package.json"), `"is-number": "7.0.0"`, `"is-number": "6.0.0"`, 1),
		"package-lock.json": "@lock-is-number-6.json",
	}
}

// TestBuildRegistryStalls: a registry that accepts connections and never
// answers fails the build within the stall timeout (npm's fetch-timeout),
// naming the registry and the package; current and the running release
// are untouched.
func TestBuildRegistryStalls(t *testing.T) {
	t.Parallel()
	const stall = 3 * time.Second
	e := newRegistryOutage(t)
	e.o.commit("is-number 6", isNumber6(t))
	e.reg.Hang()
	stalled := e.reg.URL
	m := e.manager(t, e.root, stalled, stall)
	before := takeSnapshot(t, e.root)
	sums := treeSums(t, e.relA.Path)

	begin := time.Now()
	_, err := m.Build(context.Background(), "main", nil)
	took := time.Since(begin)
	if !errors.Is(err, codeupdate.ErrRegistryUnreachable) || !strings.Contains(err.Error(), "registry unreachable: "+stalled) ||
		!strings.Contains(err.Error(), "is-number@6.0.0") {
		t.Fatalf("Build with a stalled registry: got %v, want registry unreachable naming %s and is-number@6.0.0", err, stalled)
	}
	// On top of the one fetch that stalls: git, the copy of node_modules,
	// npm's start (about a second each on a busy machine).
	if took > stall+10*time.Second {
		t.Errorf("Build with a stalled registry took %v, want about the stall timeout %v", took, stall)
	}
	t.Logf("stalled registry: the build failed after %v (stall timeout %v): %v", took.Round(time.Millisecond), stall, err)
	if after := takeSnapshot(t, e.root); after != before {
		t.Errorf("a failed build changed the layout: got %+v, want %+v", after, before)
	}
	if got := treeSums(t, e.relA.Path); !maps.Equal(got, sums) {
		t.Errorf("the running release %s changed", e.relA.Name)
	}
}

// TestBuildRegistryDownPackagesCached: with the registry down (a closed
// port), a build whose packages are all in the host's npm cache succeeds:
// npm prefers the cache. The build runs `npm ci` from nothing (a new
// layout root, the host's cache), so every package must come from it.
func TestBuildRegistryDownPackagesCached(t *testing.T) {
	t.Parallel()
	e := newRegistryOutage(t)
	e.reg.Close()
	m := e.manager(t, t.TempDir(), e.reg.URL, 0)
	begin := time.Now()
	rel, err := m.Build(context.Background(), "main", nil)
	if err != nil {
		t.Fatalf("Build with the registry down and every package cached: %v", err)
	}
	t.Logf("registry down, packages cached: built %s (npm %s) in %v", rel.Name, rel.Npm, time.Since(begin).Round(time.Millisecond))
	if rel.Npm != codeupdate.NpmRan || rel.NpmFrom != "" {
		t.Errorf("got npm %q from %q, want ran from nothing (npm ci with the registry down)", rel.Npm, rel.NpmFrom)
	}
	if v := readJSON(t, filepath.Join(rel.Path, "node_modules/is-number/package.json"))["version"]; v != "7.0.0" {
		t.Errorf("is-number: got %v, want 7.0.0", v)
	}
}

// TestBuildRegistryDownPackageMissing: with the registry down and a
// package the cache lacks, the build fails fast, naming the registry and
// the package; CheckUpdate, when npm must resolve a package the cache
// lacks to say whether package.json and the lockfile agree, says the
// registry is unreachable rather than that they disagree.
func TestBuildRegistryDownPackageMissing(t *testing.T) {
	t.Parallel()
	e := newRegistryOutage(t)
	e.o.commit("is-number 6", isNumber6(t))
	e.reg.Close()
	down := e.reg.URL
	m := e.manager(t, e.root, down, 0)
	before := takeSnapshot(t, e.root)

	begin := time.Now()
	_, err := m.Build(context.Background(), "main", nil)
	took := time.Since(begin)
	if !errors.Is(err, codeupdate.ErrRegistryUnreachable) || !strings.Contains(err.Error(), "registry unreachable: "+down) ||
		!strings.Contains(err.Error(), "is-number@6.0.0") {
		t.Fatalf("Build with the registry down and is-number 6 not cached: got %v, want registry unreachable naming %s and is-number@6.0.0", err, down)
	}
	if took > 20*time.Second {
		t.Errorf("the build took %v to fail, want fast (the port refuses at once)", took)
	}
	t.Logf("registry down, package missing: failed after %v: %v", took.Round(time.Millisecond), err)
	if after := takeSnapshot(t, e.root); after != before {
		t.Errorf("a failed build changed the layout: got %+v, want %+v", after, before)
	}

	// A dependency added to package.json only: npm must resolve ms, which
	// the cache lacks, to say whether the lockfile satisfies it.
	e.o.commit("ms added without the lockfile", map[string]string{
		"package.json":      strings.Replace(readFileT(t, "testdata/app/package.json"), `"is-number": "7.0.0"`, `"is-number": "7.0.0", "ms": "2.1.3"`, 1),
		"package-lock.json": "@app/package-lock.json",
	})
	_, err = m.CheckUpdate(context.Background(), "main")
	if !errors.Is(err, codeupdate.ErrRegistryUnreachable) || !strings.Contains(err.Error(), "registry unreachable: "+down) || !strings.Contains(err.Error(), "could not fetch ms") {
		t.Errorf("CheckUpdate with the registry down: got %v, want registry unreachable naming %s and ms", err, down)
	}
}

// publicRegistry is the registry npm uses by default.
const publicRegistry = "https://registry.npmjs.org/"

// TestBuildAgainstPublicRegistry_ProvesRealNpmProtocol builds the testdata
// app against the public npm registry, named explicitly (CI points npm at
// a closed port, and every other test at the test registry): it exists to
// prove that the test registry's protocol and the fixture lockfiles (whose
// integrity carries the public tarball's hash beside the test registry's)
// hold against the real thing. It skips, with the reason, when the public
// registry cannot be reached: no test may fail because the internet is
// down.
func TestBuildAgainstPublicRegistry_ProvesRealNpmProtocol(t *testing.T) {
	t.Parallel()
	requireNpm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, publicRegistry+"is-number", nil)
	req.Header.Set("Accept", npmregistry.AbbreviatedType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Skipf("the public npm registry %s is unreachable (%v): this test only runs with the internet", publicRegistry, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Skipf("the public npm registry %s answered %s: this test only runs when it works", publicRegistry, resp.Status)
	}
	o := newTestOrigin(t, appFiles())
	root := t.TempDir()
	m, _ := newManagerOpts(t, codeupdate.Options{Root: root, Origin: o.url, NpmTimeout: 3 * time.Minute,
		NpmCache: filepath.Join(root, "npm-cache"), NpmRegistry: publicRegistry})
	rel, err := m.Build(context.Background(), "main", nil)
	if err != nil {
		t.Fatalf("Build against %s: %v", publicRegistry, err)
	}
	if v := readJSON(t, filepath.Join(rel.Path, "node_modules/is-number/package.json"))["version"]; v != "7.0.0" {
		t.Errorf("is-number from the public registry: got %v, want 7.0.0", v)
	}
}
