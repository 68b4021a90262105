package codeupdate

import (
	"os"
	"path/filepath"
	"testing"
)

// TestModulesKey checks what the modules key (which decides whether
// node_modules is reused) depends on: everything that shapes
// node_modules, and nothing else.
func TestModulesKey(t *testing.T) {
	const (
		pkg  = `{"name":"t","version":"1.0.0","scripts":{"test":"x","postinstall":"node gen.js"},"dependencies":{"a":"1.0.0"}}`
		lock = `{"lockfileVersion":3,"packages":{"":{"dependencies":{"a":"1.0.0"}}}}`
	)
	key := func(t *testing.T, files map[string]string, node, npm string) (string, pkgInfo) {
		t.Helper()
		dir := t.TempDir()
		for n, b := range files {
			if err := os.WriteFile(filepath.Join(dir, n), []byte(b), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		p, err := readPkg(dir, node, npm)
		if err != nil {
			t.Fatal(err)
		}
		return p.key, p
	}
	base, bp := key(t, map[string]string{"package.json": pkg, "package-lock.json": lock}, "v20.1.0", "10.0.0")
	if agrees, ok := lockAgrees(filepath.Join(t.TempDir()), bp); ok || agrees {
		t.Errorf("lockAgrees without a lockfile on disk: got %v %v, want false false", agrees, ok)
	}
	for _, c := range []struct {
		name  string
		files map[string]string
		node  string
		npm   string
		same  bool
	}{
		{"reformatted package.json", map[string]string{"package.json": "{\n  \"name\": \"t\", \"version\": \"2.0.0\",\n \"scripts\": {\"test\": \"y\", \"postinstall\": \"node gen.js\"},\n \"dependencies\": {\"a\": \"1.0.0\"}\n}\n", "package-lock.json": lock}, "", "", true},
		{"a dependency added", map[string]string{"package.json": `{"scripts":{"postinstall":"node gen.js"},"dependencies":{"a":"1.0.0","b":"2.0.0"}}`, "package-lock.json": lock}, "", "", false},
		{"a dev dependency", map[string]string{"package.json": `{"scripts":{"postinstall":"node gen.js"},"dependencies":{"a":"1.0.0"},"devDependencies":{"c":"1"}}`, "package-lock.json": lock}, "", "", false},
		{"overrides", map[string]string{"package.json": `{"scripts":{"postinstall":"node gen.js"},"dependencies":{"a":"1.0.0"},"overrides":{"d":"1"}}`, "package-lock.json": lock}, "", "", false},
		{"the postinstall script", map[string]string{"package.json": `{"scripts":{"postinstall":"node gen2.js"},"dependencies":{"a":"1.0.0"}}`, "package-lock.json": lock}, "", "", false},
		{"a prepare script added", map[string]string{"package.json": `{"scripts":{"postinstall":"node gen.js","prepare":"make"},"dependencies":{"a":"1.0.0"}}`, "package-lock.json": lock}, "", "", false},
		{"the lockfile", map[string]string{"package.json": pkg, "package-lock.json": lock + "\n"}, "", "", false},
		{"a shrinkwrap instead", map[string]string{"package.json": pkg, "npm-shrinkwrap.json": lock}, "", "", false},
		{".npmrc", map[string]string{"package.json": pkg, "package-lock.json": lock, ".npmrc": "omit=dev\n"}, "", "", false},
		{"node", map[string]string{"package.json": pkg, "package-lock.json": lock}, "v22.0.0", "", false},
		{"npm", map[string]string{"package.json": pkg, "package-lock.json": lock}, "", "11.0.0", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			node, npm := "v20.1.0", "10.0.0"
			if c.node != "" {
				node = c.node
			}
			if c.npm != "" {
				npm = c.npm
			}
			got, _ := key(t, c.files, node, npm)
			if (got == base) != c.same {
				t.Errorf("key changed: got %v, want %v", got != base, !c.same)
			}
		})
	}

	t.Run("lockAgrees", func(t *testing.T) {
		for _, c := range []struct {
			name       string
			pkg, lock  string
			agrees, ok bool
		}{
			{"same", pkg, lock, true, true},
			{"dependency added", `{"dependencies":{"a":"1.0.0","b":"1"}}`, lock, false, true},
			{"version changed", `{"dependencies":{"a":"2.0.0"}}`, lock, false, true},
			{"lockfile v1", pkg, `{"lockfileVersion":1,"dependencies":{"a":{"version":"1.0.0"}}}`, false, false},
		} {
			t.Run(c.name, func(t *testing.T) {
				dir := t.TempDir()
				for n, b := range map[string]string{"package.json": c.pkg, "package-lock.json": c.lock} {
					if err := os.WriteFile(filepath.Join(dir, n), []byte(b), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				p, err := readPkg(dir, "v", "v")
				if err != nil {
					t.Fatal(err)
				}
				agrees, ok := lockAgrees(dir, p)
				if agrees != c.agrees || ok != c.ok {
					t.Errorf("got %v %v, want %v %v", agrees, ok, c.agrees, c.ok)
				}
			})
		}
	})
}
