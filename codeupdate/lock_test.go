package codeupdate_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"lxcfleet/codeupdate"
)

// TestLock takes the host-wide lock in this process and in a second
// process (this test binary re-executed): whoever comes second fails at
// once with ErrLocked naming the holder, and the lock is free again after
// unlock or after the holder exits.
func TestLock(t *testing.T) {
	root := t.TempDir()
	m, _ := newManager(t, root, "unused", 0)

	t.Run("same process", func(t *testing.T) {
		unlock, err := m.Lock()
		if err != nil {
			t.Fatal(err)
		}
		_, err = m.Lock()
		want := fmt.Sprintf("update already running (lock held by pid %d since ", os.Getpid())
		if !errors.Is(err, codeupdate.ErrLocked) || !strings.Contains(err.Error(), want) {
			t.Errorf("second Lock: got %v, want ErrLocked with %q", err, want)
		}
		if err := unlock(); err != nil {
			t.Fatal(err)
		}
		if err := unlock(); err != nil {
			t.Errorf("second unlock: got %v, want nil", err)
		}
		unlock, err = m.Lock()
		if err != nil {
			t.Fatalf("Lock after unlock: got %v, want nil", err)
		}
		unlock()
	})

	t.Run("held by another process", func(t *testing.T) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), lockHelperEnv+"="+root)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if cmd.ProcessState == nil {
				stdin.Close()
				cmd.Wait()
			}
		}()
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		if strings.TrimSpace(line) != "locked" {
			t.Fatalf("helper: got %q, want locked", line)
		}
		_, err = m.Lock()
		want := fmt.Sprintf("lock held by pid %d since ", cmd.Process.Pid)
		if !errors.Is(err, codeupdate.ErrLocked) || !strings.Contains(err.Error(), want) {
			t.Errorf("Lock while another process holds it: got %v, want ErrLocked with %q", err, want)
		}
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper: %v", err)
		}
		unlock, err := m.Lock()
		if err != nil {
			t.Fatalf("Lock after the holder exited: got %v, want nil", err)
		}
		unlock()
	})

	t.Run("another process finds it held", func(t *testing.T) {
		unlock, err := m.Lock()
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), lockHelperEnv+"="+root)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.Output()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Errorf("helper exit: got %v, want status 3", err)
		}
		want := fmt.Sprintf("error: update already running (lock held by pid %d since ", os.Getpid())
		if !strings.HasPrefix(string(out), want) {
			t.Errorf("helper output: got %q, want %q...", out, want)
		}
	})
}

// TestLockReleasedUnderForks takes and releases the host lock 300 times
// while other goroutines fork and exec without pause, as the agent does
// (npm, git, lxc): after each unlock the next Lock, and a new Manager's
// cleanup of leftovers, find the lock free. Closing the lock file alone
// left the flock held by a child between its fork and exec: "update
// already running (lock held by pid <this process>)" (a CI flake, and the
// next job of a real agent could hit it too).
func TestLockReleasedUnderForks(t *testing.T) {
	root := t.TempDir()
	m, _ := newManager(t, root, "unused", 0)
	stop := make(chan struct{})
	var forkers sync.WaitGroup
	for range 4 {
		forkers.Add(1)
		go func() {
			defer forkers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = exec.Command("/bin/true").Run()
			}
		}()
	}
	defer forkers.Wait()
	defer close(stop)
	for i := range 300 {
		unlock, err := m.Lock()
		if err != nil {
			t.Fatalf("Lock %d after an unlock: %v", i, err)
		}
		if err := unlock(); err != nil {
			t.Fatal(err)
		}
		if _, logs := newManager(t, root, "unused", 0); strings.Contains(logs.String(), "not removing leftovers") {
			t.Fatalf("new Manager %d after an unlock: %s", i, logs.String())
		}
	}
}
