package codeupdate_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"lxcfleet/codeupdate"
)

// BenchmarkBuildTimes measures, with a warm npm cache, the builds the
// issue names on a project the size of a small web app (express and its
// ~65 packages, from the npm registry): an app-only build; a
// one-dependency lockfile change built by lxcfleet (incremental) against
// `npm install` in place on the same change and against `npm ci` from
// nothing; and a project without a lockfile whose package.json did not
// change. It installs from the public registry, named explicitly (the
// package's tests point npm at the test registry, whose express is a
// stand-in). Run it by hand (it needs the registry):
//
//	go test -run '^$' -bench BuildTimes -benchtime 1x ./codeupdate/
func BenchmarkBuildTimes(b *testing.B) {
	for _, bin := range []string{"node", "npm", "git"} {
		if _, err := exec.LookPath(bin); err != nil {
			b.Skipf("%s not found", bin)
		}
	}
	ctx := context.Background()
	npm := func(dir string, args ...string) time.Duration {
		b.Helper()
		cmd := exec.Command("npm", append(args, "--no-audit", "--no-fund")...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "npm_config_cache="+npmCache, "npm_config_registry="+publicRegistry)
		begin := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("npm %v: %v\n%s", args, err, out)
		}
		return time.Since(begin)
	}
	gitB := func(dir string, args ...string) {
		b.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@localhost", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@localhost", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	build := func(m *codeupdate.Manager, target string) (codeupdate.Release, time.Duration) {
		b.Helper()
		begin := time.Now()
		rel, err := m.Build(ctx, target, nil)
		if err != nil {
			b.Fatalf("Build(%s): %v", target, err)
		}
		return rel, time.Since(begin)
	}
	newM := func(origin string) *codeupdate.Manager {
		m, err := codeupdate.New(codeupdate.Options{Root: b.TempDir(), Origin: origin, NpmCache: npmCache, NpmRegistry: publicRegistry})
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	for range b.N {
		dir := b.TempDir()
		origin, work := filepath.Join(dir, "origin.git"), filepath.Join(dir, "work")
		gitB(dir, "init", "--quiet", "--bare", "--initial-branch=main", origin)
		gitB(dir, "init", "--quiet", "--initial-branch=main", work)
		gitB(work, "remote", "add", "origin", origin)
		write := func(name, body string) {
			if err := os.WriteFile(filepath.Join(work, name), []byte(body), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		commit := func(msg string) {
			gitB(work, "add", "-A")
			gitB(work, "commit", "--quiet", "-m", msg)
			gitB(work, "push", "--quiet", "origin", "HEAD")
		}
		write("package.json", `{"name":"bench","version":"1.0.0","private":true,"dependencies":{"express":"4.21.2"}}`+"\n")
		write(".gitignore", "node_modules/\n")
		write("server.js", "require('express');\n")
		npm(work, "install") // the lockfile, and a warm cache
		commit("A")

		m := newM(origin)
		relA, fresh := build(m, "main")
		if _, err := m.Switch(ctx, relA, "bench"); err != nil {
			b.Fatal(err)
		}
		write("server.js", "require('express'); // B\n")
		commit("B: app only")
		relB, appOnly := build(m, "main")
		if _, err := m.Switch(ctx, relB, "bench"); err != nil {
			b.Fatal(err)
		}
		inPlace := npm(work, "install", "is-number@7.0.0") // the operators' way: in place
		commit("C: one dependency more")
		relC, incr := build(m, "main")
		_, ci := build(newM(origin), "main")

		gitB(work, "checkout", "--quiet", "-b", "nolock")
		os.Remove(filepath.Join(work, "package-lock.json"))
		commit("no lockfile")
		ml := newM(origin)
		relN, nolock1 := build(ml, "nolock")
		if _, err := ml.Switch(ctx, relN, "bench"); err != nil {
			b.Fatal(err)
		}
		write("server.js", "require('express'); // D\n")
		commit("D: app only, no lockfile")
		relN2, nolock2 := build(ml, "nolock")

		b.Logf("first build, npm ci from nothing: %v (%s)", fresh.Round(time.Millisecond), relA.Npm)
		b.Logf("app-only build: %v (npm %s, %s)", appOnly.Round(time.Millisecond), relB.Npm, relB.ModulesCopy)
		b.Logf("one dependency more: lxcfleet %v (npm %s over a %s of %s); npm install in place %v (%.2fx); npm ci from nothing %v",
			incr.Round(time.Millisecond), relC.Npm, relC.ModulesCopy, relC.NpmFrom, inPlace.Round(time.Millisecond), float64(incr)/float64(inPlace), ci.Round(time.Millisecond))
		b.Logf("no lockfile: first build %v (npm %s), package.json unchanged %v (npm %s, %s)",
			nolock1.Round(time.Millisecond), relN.Npm, nolock2.Round(time.Millisecond), relN2.Npm, relN2.ModulesCopy)
	}
}
