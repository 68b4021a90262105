package heldsock

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// freeLoopbackPort returns a port of 127.0.0.1 that is free now, below the
// ephemeral range.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	for port := 21000 + os.Getpid()%5000; port < 32000; port++ {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// startHolder runs a holder in this process and returns a client of it.
func startHolder(t *testing.T) (*Holder, *Client) {
	t.Helper()
	dir := t.TempDir()
	h := NewHolder(dir, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("holder: %v", err)
		}
	})
	c := &Client{Dir: dir}
	for { // the control socket exists once Run listens
		if _, err := c.List(ctx); err == nil {
			return h, c
		}
		select {
		case err := <-done:
			t.Fatalf("holder exited: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
}

// TestHeldSocketQueuesWhileNobodyAccepts is the mechanism: the holder
// makes the socket, a fetch gets the same socket (same inode, listening on
// the port), a connection made while no process accepts is not refused:
// it waits in the accept queue and the next fetcher accepts it, after the
// first fetcher closed its copy.
func TestHeldSocketQueuesWhileNobodyAccepts(t *testing.T) {
	_, c := startHolder(t)
	ctx := context.Background()
	port := freeLoopbackPort(t)
	spec := Spec{Name: "t1", Dir: filepath.Join(t.TempDir(), "held"), Address: "127.0.0.1", Port: port, UID: os.Getuid(), GID: os.Getgid()}
	st, err := c.Hold(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	sockPath := filepath.Join(spec.Dir, SocketFile)

	// An "app" fetches it, serves one connection, and exits (closes it).
	serveOne := func(want string) {
		t.Helper()
		f, err := Fetch(sockPath)
		if err != nil {
			t.Fatal(err)
		}
		ino, _ := Inode(f)
		p, listening, err := Describe(f)
		if err != nil || ino != st.Inode || p != port || !listening {
			t.Fatalf("fetched inode %d port %d listening %v (%v), want inode %d port %d listening", ino, p, listening, err, st.Inode, port)
		}
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conn, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(conn, want)
		conn.Close()
		ln.Close()
	}
	dial := func() (chan string, error) {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return nil, err
		}
		got := make(chan string, 1)
		go func() {
			b, _ := io.ReadAll(conn)
			conn.Close()
			got <- string(b)
		}()
		return got, nil
	}
	// No app: the connection is made (not refused) and waits.
	got, err := dial()
	if err != nil {
		t.Fatalf("connecting while no app accepts: %v (want it queued)", err)
	}
	serveOne("first")
	if s := <-got; s != "first" {
		t.Fatalf("got %q, want first", s)
	}
	// The first app is gone (its copy closed): the next connection waits
	// for the second.
	got, err = dial()
	if err != nil {
		t.Fatalf("connecting between two apps: %v (want it queued)", err)
	}
	serveOne("second")
	if s := <-got; s != "second" {
		t.Fatalf("got %q, want second", s)
	}

	// Hold again is idempotent; a lost Unix socket is made again.
	os.Remove(sockPath)
	st2, err := c.Hold(ctx, spec)
	if err != nil || st2.Inode != st.Inode {
		t.Fatalf("hold again: inode %d (%v), want %d", st2.Inode, err, st.Inode)
	}
	if _, err := os.Stat(sockPath); err != nil {
		t.Fatalf("hold again did not serve %s: %v", sockPath, err)
	}
	ls, err := c.List(ctx)
	if err != nil || len(ls) != 1 || ls[0].Fetches != 2 {
		t.Fatalf("list: %+v %v, want one socket fetched twice", ls, err)
	}

	// Release: refused again.
	if err := c.Release(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		t.Fatal("connected after release, want refused")
	}
}

// TestHeldSocketInNamedNetNS makes the socket inside a named network
// namespace (ip netns add), the way a fixed-port locker holds its port: it
// listens there and not on the host.
func TestHeldSocketInNamedNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and this test needs root (network namespaces)")
		}
		t.Skip("needs root (network namespaces)")
	}
	name := fmt.Sprintf("hstest%d", os.Getpid())
	if err := EnsureNetNS(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := RemoveNetNS(name); err != nil {
			t.Error(err)
		}
	})
	_, c := startHolder(t)
	port := 3999
	spec := Spec{Name: "t2", Dir: filepath.Join(t.TempDir(), "held"), Address: "127.0.0.1", Port: port, NetNS: NetNSPath(name)}
	if _, err := c.Hold(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", name, "ss", "-Hltn").CombinedOutput()
	if err != nil {
		t.Fatalf("ss in %s: %v: %s", name, err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("127.0.0.1:%d", port)) {
		t.Fatalf("no listener on :%d in netns %s: %s", port, name, out)
	}
}

// BenchmarkHoldAgain is what every start of a held-socket locker pays
// before it starts: a Hold of a socket already held (one control round
// trip).
func BenchmarkHoldAgain(b *testing.B) {
	dir := b.TempDir()
	h := NewHolder(dir, slogDiscard())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.Run(ctx)
	c := &Client{Dir: dir}
	for {
		if _, err := c.List(ctx); err == nil {
			break
		}
		time.Sleep(time.Millisecond) // paces the poll until the holder first listens (Run has no ready event; a benchmark's setup)
	}
	spec := Spec{Name: "b", Dir: filepath.Join(b.TempDir(), "held"), Address: "127.0.0.1", Port: 31999}
	if _, err := c.Hold(ctx, spec); err != nil {
		b.Fatal(err)
	}
	b.Run("hold", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Hold(ctx, spec); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fetch", func(b *testing.B) {
		for b.Loop() {
			f, err := Fetch(filepath.Join(spec.Dir, SocketFile))
			if err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestHolderRestartTakesSocketsBack: a holder stops while a locker's app
// holds its copy of the socket; a connection made then waits in the queue.
// The next holder in the same folder takes the same socket back from the
// app (pidfd_getfd) and serves it: the queued connection is answered by
// whoever fetches it next.
func TestHolderRestartTakesSocketsBack(t *testing.T) {
	dir := t.TempDir()
	run := func() (*Client, func()) {
		h := NewHolder(dir, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- h.Run(ctx) }()
		c := &Client{Dir: dir}
		for {
			if _, err := c.List(ctx); err == nil {
				break
			}
			select {
			case err := <-done:
				t.Fatalf("holder exited: %v", err)
			case <-time.After(time.Millisecond): // its control socket appears
			}
		}
		return c, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("holder: %v", err)
			}
		}
	}
	c, stop := run()
	port := freeLoopbackPort(t)
	ctDir := t.TempDir() // a container's folder: its config says it exists
	if err := os.WriteFile(filepath.Join(ctDir, "config"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Name: "r1", Dir: filepath.Join(ctDir, "held"), Address: "127.0.0.1", Port: port, UID: os.Getuid(), GID: os.Getgid()}
	st, err := c.Hold(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	app, err := Fetch(filepath.Join(spec.Dir, SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	stop() // the holder closes its copy; the app's keeps the socket
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("connecting while only the app holds the socket: %v", err)
	}
	defer conn.Close()
	c, stop = run()
	defer stop()
	ls, err := c.List(context.Background())
	if err != nil || len(ls) != 1 || ls[0].Inode != st.Inode {
		t.Fatalf("the new holder holds %+v (%v); want the socket %d taken back", ls, err, st.Inode)
	}
	app.Close() // the app stops
	f, err := Fetch(filepath.Join(spec.Dir, SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(a, "served")
	a.Close()
	b, _ := io.ReadAll(conn)
	if string(b) != "served" {
		t.Fatalf("the queued connection got %q, want served", b)
	}
}

// TestHolderReleasesDestroyedLockers: once a locker's container folder has
// no config (lxc-destroy), the holder's gc closes its socket.
func TestHolderReleasesDestroyedLockers(t *testing.T) {
	h, c := startHolder(t)
	ctDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(ctDir, "config"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	port := freeLoopbackPort(t)
	spec := Spec{Name: "g1", Dir: filepath.Join(ctDir, "held"), Address: "127.0.0.1", Port: port, UID: os.Getuid(), GID: os.Getgid()}
	if _, err := c.Hold(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	h.gc()
	if ls, _ := c.List(context.Background()); len(ls) != 1 {
		t.Fatalf("gc released a live locker's socket: %+v", ls)
	}
	if err := os.Remove(filepath.Join(ctDir, "config")); err != nil {
		t.Fatal(err)
	}
	h.gc()
	if ls, _ := c.List(context.Background()); len(ls) != 0 {
		t.Fatalf("after the locker was destroyed the holder still holds %+v", ls)
	}
	if _, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		t.Fatal("the destroyed locker's port still accepts connections")
	}
}

// TestWatchReportsPendingConnection: a watcher of a held socket nobody
// accepts on hears its name once a connection is pending, and the
// connection stays queued for the app that fetches the socket then (the
// way a sleeping locker wakes). Watching a socket the holder does not hold
// is an error.
func TestWatchReportsPendingConnection(t *testing.T) {
	_, c := startHolder(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	port := freeLoopbackPort(t)
	spec := Spec{Name: "w1", Dir: filepath.Join(t.TempDir(), "held"), Address: "127.0.0.1", Port: port, UID: os.Getuid(), GID: os.Getgid()}
	if _, err := c.Hold(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Watch(ctx, []string{"w1", "nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("watching an unknown socket: %v, want an error naming it", err)
	}
	f, err := Fetch(filepath.Join(spec.Dir, SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if p, err := Pending(f); err != nil || p {
		t.Fatalf("pending before any connection: %v %v", p, err)
	}
	ch, err := c.Watch(ctx, []string{"w1"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := <-ch; got != "w1" {
		t.Fatalf("watch said %q, want w1", got)
	}
	if p, err := Pending(f); err != nil || !p {
		t.Fatalf("pending after a connection: %v %v, want true", p, err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(a, "woke")
	a.Close()
	if b, _ := io.ReadAll(conn); string(b) != "woke" {
		t.Fatalf("the pending connection got %q, want woke", b)
	}
	if _, ok := <-ch; ok {
		t.Fatal("the watch goes on after its only name was reported")
	}
}

// TestActivitySeesShortConnections: a connection to a port shows in
// Activity once it ended (the server side closed first: TIME_WAIT), with
// how long ago; a port nobody talked to shows nothing, and a connection
// from ProbeSource (a health probe) does not count.
func TestActivitySeesShortConnections(t *testing.T) {
	// A free port no connection used lately (no TIME_WAIT left on it).
	before, err := Activity("")
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	port := 0
	for p := freeLoopbackPort(t); p < 32000 && ln == nil; p++ {
		if _, used := before[p]; !used {
			if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
				ln, port = l, p
			}
		}
	}
	if ln == nil {
		t.Fatal("no quiet port")
	}
	defer ln.Close()
	serveOne := func(from string) {
		t.Helper()
		served := make(chan struct{})
		go func() {
			c, err := ln.Accept()
			if err == nil {
				c.Close() // the server closes first: TIME_WAIT on its side
			}
			close(served)
		}()
		d := net.Dialer{}
		if from != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
		}
		c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		<-served
		_, _ = io.ReadAll(c)
		c.Close()
	}
	serveOne(ProbeSource)
	if m, err := Activity(""); err != nil {
		t.Fatal(err)
	} else if age, ok := m[port]; ok {
		t.Fatalf("a health probe's connection counts as activity (%v ago)", age)
	}
	serveOne("")
	m, err := Activity("")
	if err != nil {
		t.Fatal(err)
	}
	if age, ok := m[port]; !ok || age > 5*time.Second {
		t.Fatalf("activity after a short connection ended: %v %v, want seen within the last seconds", age, ok)
	}
}

// TestExecPutsTheSocketAtFD3 is the hand-over's contract with the app
// (sd_listen_fds(3)): Exec, given the socket at another descriptor (fd 4
// here, with another file at fd 3), replaces the process with the app,
// which finds that very socket (same inode) at fd 3, LISTEN_FDS=1,
// LISTEN_PID its own pid and LISTEN_FDNAMES the name. The test binary runs
// itself as the helper.
func TestExecPutsTheSocketAtFD3(t *testing.T) {
	if os.Getenv("HELDSOCK_TEST_EXEC") == "1" {
		sock := os.NewFile(4, "held")
		script := `echo "fds=$LISTEN_FDS names=$LISTEN_FDNAMES pid=$([ "$LISTEN_PID" = "$$" ] && echo own || echo "$LISTEN_PID not $$") fd3=$(readlink /proc/$$/fd/3)"`
		err := Exec(sock, "web", []string{"/bin/sh", "-c", script})
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inode, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestExecPutsTheSocketAtFD3$")
	cmd.Env = append(os.Environ(), "HELDSOCK_TEST_EXEC=1", "LISTEN_FDS=7")
	cmd.ExtraFiles = []*os.File{null, f} // fd 3: /dev/null, fd 4: the socket
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the helper: %v\n%s", err, out)
	}
	want := "fds=1 names=web pid=own fd3=" + inode
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("the app saw %q, want %q", got, want)
	}
}
