package lxcctl

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestAnswerOwner matches listening sockets to processes without LXC: the
// test process stands for a container's init. A socket it holds, or one
// held only by a child it started (a descendant), passes; the same socket
// seen from another "init" (a sleep of its own) is foreign and the error names the
// holder; a listener on the wildcard address answers a probe of 127.0.0.1;
// a port nothing listens on is foreign; a container with no init never
// passes.
func TestAnswerOwner(t *testing.T) {
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("needs Linux /proc")
	}
	own, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if err := checkAnswerOwner("c", os.Getpid(), own.Addr()); err != nil {
		t.Errorf("a socket of the init itself: %v", err)
	}
	// Another "container": a process of its own with no socket.
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = other.Process.Kill()
		_ = other.Wait()
	})
	otherInit := other.Process.Pid
	err = checkAnswerOwner("c", otherInit, own.Addr())
	wantHolder := "is held by pid " + strconv.Itoa(os.Getpid()) + " ("
	if !errors.Is(err, ErrForeignListener) || !strings.Contains(err.Error(), wantHolder) {
		t.Errorf("a socket of another process: got %v, want ErrForeignListener with %q", err, wantHolder)
	}
	err = checkAnswerOwner("c", 0, own.Addr())
	if !errors.Is(err, ErrForeignListener) || !strings.Contains(err.Error(), "not running") {
		t.Errorf("a container with no init: got %v, want ErrForeignListener saying it is not running", err)
	}

	// A wildcard listener handed to a child, then closed here: only the
	// child (a descendant of the "init") holds it.
	wild, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := wild.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command("sleep", "60")
	child.ExtraFiles = []*os.File{f}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = child.Process.Kill()
		_ = child.Wait()
	})
	port := wild.Addr().(*net.TCPAddr).Port
	f.Close()
	wild.Close()
	probe := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	if err := checkAnswerOwner("c", os.Getpid(), probe); err != nil {
		t.Errorf("a wildcard socket held by a descendant: %v", err)
	}
	err = checkAnswerOwner("c", otherInit, probe)
	if want := "is held by pid " + strconv.Itoa(child.Process.Pid) + " (sleep)"; !errors.Is(err, ErrForeignListener) || !strings.Contains(err.Error(), want) {
		t.Errorf("the child's socket from another init: got %v, want %q", err, want)
	}

	// Nothing listens any more.
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := gone.Addr()
	gone.Close()
	if err := checkAnswerOwner("c", os.Getpid(), addr); !errors.Is(err, ErrForeignListener) {
		t.Errorf("a port nothing listens on: got %v, want ErrForeignListener", err)
	}
}

// TestHeldNote: an answer held by lxcfleet's socket holder alone is
// explained; one held by anyone else is not.
func TestHeldNote(t *testing.T) {
	for _, tc := range []struct {
		owners []string
		want   bool
	}{
		{[]string{"pid 7 (lxcfleet-listen)"}, true},
		{[]string{"pid 7 (lxcfleet-listen)", "pid 9 (node)"}, false},
		{[]string{"pid 9 (node)"}, false},
		{nil, false},
	} {
		if got := heldNote(tc.owners) != ""; got != tc.want {
			t.Errorf("heldNote(%v) given: %v, want %v", tc.owners, got, tc.want)
		}
	}
}
