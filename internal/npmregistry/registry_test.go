package npmregistry_test

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"lxcfleet/internal/npmregistry"
	"lxcfleet/internal/testfleet"
)

// TestRealNpmInstalls runs the real npm client against the registry: the
// fixture app's `npm ci` (its lockfile carries the public and the test
// registry's hashes), and `npm install` of a scoped package that depends
// on another one (packument, abbreviated packument and tarballs, sha512
// integrity checked by npm).
func TestRealNpmInstalls(t *testing.T) {
	testfleet.RequireNode(t)
	r := npmregistry.Start(t)
	npm := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command("npm", append(args, "--no-audit", "--no-fund")...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "npm_config_registry="+r.URL, "npm_config_cache="+filepath.Join(t.TempDir(), "cache"),
			"npm_config_update_notifier=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
		}
	}

	app := t.TempDir()
	if err := testfleet.CopyApp(app); err != nil {
		t.Fatal(err)
	}
	npm(app, "ci")
	if v := version(t, filepath.Join(app, "node_modules/ms/package.json")); v != "2.1.3" {
		t.Errorf("fixture app's ms: got %q, want 2.1.3", v)
	}

	scoped := t.TempDir()
	if err := os.WriteFile(filepath.Join(scoped, "package.json"), []byte(`{"name":"s","version":"1.0.0","private":true}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	npm(scoped, "install", "@lxcfleet-test/hello")
	run := exec.Command("node", "-e", `console.log(require("@lxcfleet-test/hello")())`)
	run.Dir = scoped
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("running the scoped package: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "hello after 2s" {
		t.Errorf("scoped package says %q, want %q", got, "hello after 2s")
	}
	if got := r.Integrity("@lxcfleet-test/hello", "1.0.0"); got == "" || !strings.Contains(readFile(t, filepath.Join(scoped, "package-lock.json")), got) {
		t.Errorf("the lockfile does not record the tarball's integrity %q", got)
	}
	// A lockfile whose "resolved" URLs name the public registry installs
	// from the configured one: npm's replace-registry-host (default
	// "npmjs") swaps registry.npmjs.org for it.
	lockPath := filepath.Join(scoped, "package-lock.json")
	var lock map[string]any
	if err := json.Unmarshal([]byte(readFile(t, lockPath)), &lock); err != nil {
		t.Fatal(err)
	}
	pkgs := lock["packages"].(map[string]any)
	pkgs["node_modules/ms"].(map[string]any)["resolved"] = "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz"
	pkgs["node_modules/@lxcfleet-test/hello"].(map[string]any)["resolved"] = "https://registry.npmjs.org/@lxcfleet-test/hello/-/hello-1.0.0.tgz"
	b, _ := json.MarshalIndent(lock, "", "  ")
	if err := os.WriteFile(lockPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(scoped, "node_modules")); err != nil {
		t.Fatal(err)
	}
	before := len(r.Requests())
	npm(scoped, "ci")
	if got := strings.Join(r.Requests()[before:], " "); !strings.Contains(got, "GET /@lxcfleet-test/hello/-/hello-1.0.0.tgz") {
		t.Errorf("npm ci of a lockfile resolved to registry.npmjs.org: the test registry got %q, want the tarballs", got)
	}

	reqs := strings.Join(r.Requests(), "\n")
	for _, want := range []string{"GET /@lxcfleet-test%2fhello", "GET /@lxcfleet-test/hello/-/hello-1.0.0.tgz", "GET /ms/-/ms-2.1.3.tgz"} {
		if !strings.Contains(reqs, want) {
			t.Errorf("requests: got\n%s\nwant %s", reqs, want)
		}
	}
}

// TestPackuments checks the two packument forms and a missing package.
func TestPackuments(t *testing.T) {
	r := npmregistry.Start(t)
	get := func(path, accept string) (int, string, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, r.URL+path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc map[string]any
		json.NewDecoder(resp.Body).Decode(&doc)
		return resp.StatusCode, resp.Header.Get("Content-Type"), doc
	}
	code, ctype, doc := get("ms", npmregistry.AbbreviatedType+", application/json;q=0.8")
	if code != 200 || ctype != npmregistry.AbbreviatedType {
		t.Fatalf("abbreviated ms: got %d %s, want 200 %s", code, ctype, npmregistry.AbbreviatedType)
	}
	if tags := doc["dist-tags"].(map[string]any); tags["latest"] != "2.1.3" {
		t.Errorf("dist-tags: got %v, want latest 2.1.3", tags)
	}
	v := doc["versions"].(map[string]any)["2.1.3"].(map[string]any)
	dist := v["dist"].(map[string]any)
	if dist["integrity"] != r.Integrity("ms", "2.1.3") || dist["shasum"] == "" || dist["tarball"] != r.URL+"ms/-/ms-2.1.3.tgz" {
		t.Errorf("dist: got %v", dist)
	}
	if _, ok := v["description"]; ok {
		t.Errorf("abbreviated packument carries the description: %v", v)
	}
	code, _, doc = get("@lxcfleet-test%2fhello", "application/json")
	if code != 200 || doc["_id"] != "@lxcfleet-test/hello" || doc["time"] == nil {
		t.Errorf("full scoped packument: got %d %v", code, doc)
	}
	if code, _, _ := get("no-such-package", ""); code != 404 {
		t.Errorf("missing package: got %d, want 404", code)
	}
	if code, _, _ := get("ms/-/ms-9.9.9.tgz", ""); code != 404 {
		t.Errorf("missing tarball: got %d, want 404", code)
	}
}

func version(t *testing.T, path string) string {
	t.Helper()
	var pj struct{ Version string }
	if err := json.Unmarshal([]byte(readFile(t, path)), &pj); err != nil {
		t.Fatal(err)
	}
	return pj.Version
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
