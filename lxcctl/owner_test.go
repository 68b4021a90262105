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

// TestPortFilteredListeners: asked for one port, sock_diag's bytecode
// filter returns that port's listeners (IPv4 and IPv6 loopback) and not a
// wildcard listener on another port, as many as /proc/net/tcp{,6} read
// whole list on that port; asked for none, it returns them all.
func TestPortFilteredListeners(t *testing.T) {
	a, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	port := a.Addr().(*net.TCPAddr).Port
	var all []net.Listener
	if b, err := net.Listen("tcp6", "[::1]:"+strconv.Itoa(port)); err == nil { // no IPv6: IPv4 alone
		all = append(all, b)
	}
	other, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	all = append(all, other)
	defer func() {
		for _, l := range all {
			l.Close()
		}
	}()
	got, err := netlinkListeners(port)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := procListeners("/proc/self")
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, l := range slow {
		if l.port == port {
			want++
		}
	}
	for _, l := range got {
		if l.port != port {
			t.Errorf("asked for port %d, got a listener on %s:%d", port, l.ip, l.port)
		}
	}
	if len(got) != want || want < 1 {
		t.Errorf("port %d: %d listeners through sock_diag, %d in /proc/net/tcp{,6} (want the same, at least 1): %v", port, len(got), want, got)
	}
	every, err := netlinkListeners(0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, l := range every {
		seen[l.port] = true
	}
	if op := other.Addr().(*net.TCPAddr).Port; !seen[port] || !seen[op] || len(every) < len(got)+1 {
		t.Errorf("port 0 lists every listener: %d of them, ports %d and %d seen %v %v", len(every), port, op, seen[port], seen[op])
	}
}

// TestOwnerProofIsCheckedAgain: a check's proof is remembered (the process
// and descriptor holding the socket), and a later check does not pass on
// it once that process is gone, even while another process, outside the
// "container", still holds the same socket (as the host's socket holder
// does when a held-socket locker's app dies).
func TestOwnerProofIsCheckedAgain(t *testing.T) {
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("needs Linux /proc")
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	// The outsider: a sleep reparented away from this process (sh exits
	// at once), holding the socket at its fd 3.
	sh := exec.Command("sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!")
	sh.ExtraFiles = []*os.File{f}
	out, err := sh.Output()
	if err != nil {
		t.Fatal(err)
	}
	outsider, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p, err := os.FindProcess(outsider); err == nil {
			_ = p.Kill()
		}
	})
	// The app: a child of this process (the "init"), holding it too.
	app := exec.Command("sleep", "60")
	app.ExtraFiles = []*os.File{f}
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = app.Process.Kill()
		_ = app.Wait()
	})
	f.Close()
	addr := l.Addr()
	l.Close()
	init := os.Getpid()
	if err := checkAnswerOwner("c", init, addr); err != nil {
		t.Fatalf("a socket held by the init's child: %v", err)
	}
	ownerCache.mu.Lock()
	h, ok := ownerCache.by[init]
	ownerCache.mu.Unlock()
	if !ok || h.PID != app.Process.Pid {
		t.Fatalf("the proof remembered for init %d: %+v (%v), want pid %d", init, h, ok, app.Process.Pid)
	}
	if err := checkAnswerOwner("c", init, addr); err != nil {
		t.Errorf("the same socket checked again: %v", err)
	}
	_ = app.Process.Kill()
	_ = app.Wait()
	err = checkAnswerOwner("c", init, addr)
	if want := "is held by pid " + strconv.Itoa(outsider); !errors.Is(err, ErrForeignListener) || !strings.Contains(err.Error(), want) {
		t.Errorf("the app gone, the socket held by an outsider alone: got %v, want ErrForeignListener with %q", err, want)
	}
}
