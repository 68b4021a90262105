package procsock

import (
	"net"
	"os"
	"os/exec"
	"slices"
	"testing"
)

// TestListenersAndHoldersFindOwnSocket listens on loopback and finds the
// socket in /proc/self's listeners, then this process holding it at the
// right descriptor, and nobody holding an inode no socket has.
func TestListenersAndHoldersFindOwnSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	ls, err := Listeners("/proc/self")
	if err != nil {
		t.Fatal(err)
	}
	var ino uint64
	for _, l := range ls {
		if l.Port == port && l.IP.Equal(net.IPv4(127, 0, 0, 1)) {
			ino = l.Inode
		}
	}
	if ino == 0 {
		t.Fatalf("port %d not among the %d listeners of /proc/self", port, len(ls))
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hs := Holders(map[uint64]bool{ino: true}, 0)[ino]
	var fds []int
	for _, h := range hs {
		if h.PID != os.Getpid() {
			t.Errorf("socket %d held by %v, want only this process (%d)", ino, h, os.Getpid())
		}
		fds = append(fds, h.FD)
	}
	if !slices.Contains(fds, int(f.Fd())) || len(fds) != 2 {
		t.Errorf("socket %d held at fds %v, want the listener's and its dup %d", ino, fds, f.Fd())
	}
	if !HoldsAny([]int{os.Getpid()}, map[uint64]bool{ino: true}) {
		t.Error("HoldsAny: this process does not hold its own socket")
	}
	if got := Holders(map[uint64]bool{1 << 62: true}, 0); len(got) != 0 {
		t.Errorf("an inode no socket has is held by %v", got)
	}
	if got := Holders(map[uint64]bool{ino: true}, 1)[ino]; len(got) != 1 {
		t.Errorf("limit 1 gave %d holders", len(got))
	}
}

// TestNamespacesAndDescendants: a child shares this process's namespaces
// and is among its descendants; pid 1 is not a descendant.
func TestNamespacesAndDescendants(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	child := cmd.Process.Pid
	if !SameNamespace("net", 0, child) || !SameNamespace("pid", os.Getpid(), child) {
		t.Error("a child does not share this process's net and pid namespaces")
	}
	if SameNamespace("net", 0, 1<<22+12345) {
		t.Error("a pid that does not exist shares a namespace")
	}
	d := Descendants(os.Getpid())
	if d[0] != os.Getpid() || !slices.Contains(d, child) || slices.Contains(d, 1) {
		t.Errorf("Descendants(%d) = %v, want this process first and child %d, not pid 1", os.Getpid(), d, child)
	}
}
