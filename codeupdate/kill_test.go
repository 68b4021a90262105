package codeupdate_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lxcfleet/codeupdate"
	"lxcfleet/internal/testfleet"
)

// buildHelperEnv makes the test binary an agent that builds (see
// TestMain): it builds the target CODEUPDATE_TEST_BUILD_TARGET of origin
// CODEUPDATE_TEST_BUILD_ORIGIN under the root it names.
const buildHelperEnv = "CODEUPDATE_TEST_BUILD_ROOT"

func buildHelper(root string) int {
	m, err := codeupdate.New(codeupdate.Options{Root: root, Origin: os.Getenv("CODEUPDATE_TEST_BUILD_ORIGIN"), NpmCache: os.Getenv("CODEUPDATE_TEST_NPM_CACHE")})
	if err != nil {
		fmt.Println("error:", err)
		return 2
	}
	_, err = m.Build(context.Background(), os.Getenv("CODEUPDATE_TEST_BUILD_TARGET"), func(s string) { fmt.Println("step:", s) })
	fmt.Println("build:", err)
	return 0
}

// hangFiles is the testdata app with a root preinstall that writes its pid
// to $PIDFILE, starts a child that writes its own pid to $PIDFILE.child,
// and then both wait forever.
func hangFiles() map[string]string {
	f := appFiles()
	f["package.json"] = `{"name":"t","version":"1.0.0","private":true,` +
		`"scripts":{"preinstall":"node hang.js"},"dependencies":{"is-number":"7.0.0"}}` + "\n"
	f["hang.js"] = `'use strict';
const fs = require('fs');
const { spawn } = require('child_process');
const child = spawn(process.execPath, ['-e', "require('fs').writeFileSync(process.env.PIDFILE + '.child', String(process.pid)); setInterval(() => {}, 1000)"], { stdio: 'ignore' });
child.unref();
setTimeout(() => fs.writeFileSync(process.env.PIDFILE, String(process.pid)), 200);
setInterval(() => {}, 1000);
`
	return f
}

// waitPids waits for the pid files a hang.js wrote.
func waitPids(t *testing.T, pidfile string, within time.Duration) []int {
	t.Helper()
	var pids []int
	for _, f := range []string{pidfile, pidfile + ".child"} {
		if err := testfleet.WaitFile(f, within); err != nil {
			t.Fatalf("the preinstall script did not start: %v", err)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("pid file %s: %v", f, err)
		}
		pids = append(pids, n)
	}
	return pids
}

// alive reports whether pid runs (a zombie counts as dead).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// waitDead waits until none of pids runs; it kills and reports those that
// outlive within.
func waitDead(t *testing.T, pids []int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, p := range pids {
		testfleet.WaitExit(p, time.Until(deadline))
	}
	for _, p := range pids {
		if alive(p) {
			t.Errorf("process %d of the build still runs %v later", p, within)
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}
}

// TestBuildChildrenDie starts a build whose root preinstall (and a child
// it spawns) never end, then ends the build two ways: by cancelling its
// context, and by SIGKILLing the process that runs it (an agent killed
// mid-npm). Either way npm and every child die within seconds, and the
// next Manager on that root removes the staging folder the dead build
// left.
func TestBuildChildrenDie(t *testing.T) {
	requireNpm(t)
	o := newTestOrigin(t, hangFiles())

	t.Run("cancelled build", func(t *testing.T) {
		pidfile := filepath.Join(t.TempDir(), "pid")
		t.Setenv("PIDFILE", pidfile)
		m, _ := newManager(t, "", o.url, time.Minute)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := m.Build(ctx, "main", nil)
			errc <- err
		}()
		pids := waitPids(t, pidfile, 60*time.Second)
		cancel()
		select {
		case err := <-errc:
			if err == nil || !strings.Contains(err.Error(), "context canceled") {
				t.Errorf("Build: got %v, want it cancelled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Build did not return 10s after its context was cancelled")
		}
		waitDead(t, pids, 5*time.Second)
		if left, _ := filepath.Glob(filepath.Join(m.Root(), "releases", ".tmp-*")); len(left) > 0 {
			t.Errorf("staging folders: got %v, want none", left)
		}
	})

	t.Run("agent killed", func(t *testing.T) {
		root := t.TempDir()
		pidfile := filepath.Join(t.TempDir(), "pid")
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), buildHelperEnv+"="+root, "CODEUPDATE_TEST_BUILD_ORIGIN="+o.url,
			"CODEUPDATE_TEST_BUILD_TARGET=main", "CODEUPDATE_TEST_NPM_CACHE="+npmCache, "PIDFILE="+pidfile)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				t.Logf("helper: %s", sc.Text())
			}
		}()
		pids := waitPids(t, pidfile, 60*time.Second)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		waitDead(t, pids, 5*time.Second)
		if left, _ := filepath.Glob(filepath.Join(root, "releases", ".tmp-*")); len(left) != 1 {
			t.Fatalf("staging folders after the kill: got %v, want the dead build's one", left)
		}
		m, logs := newManager(t, root, o.url, 0)
		if left, _ := filepath.Glob(filepath.Join(root, "releases", ".tmp-*")); len(left) > 0 {
			t.Errorf("staging folders after a new Manager: got %v, want none", left)
		}
		if !strings.Contains(logs.String(), "removed leftover") {
			t.Errorf("log: got %q, want the leftover's removal", logs.String())
		}
		_ = m
	})
}
