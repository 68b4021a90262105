package etcdtest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var built struct {
	sync.Once
	path string
	out  []byte
	err  error
}

// Require fails the test when CI=true and skips it otherwise when the go
// tool needed to build the member is missing.
func Require(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and the go tool is missing: the etcd member cannot be built")
		}
		t.Skip("the go tool is missing: cannot build the etcd member")
	}
}

// Binary builds ./etcdmember and returns its path. The binary is kept in
// one folder of the system's temporary folder named after a hash of its
// source and of go.sum, so that every test binary and every run reuses it
// (nothing piles up in /tmp); a build goes to a temporary name first and
// is renamed into place.
func Binary(t testing.TB) string {
	t.Helper()
	Require(t)
	built.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		src := filepath.Dir(file)
		h := sha256.New()
		for _, f := range []string{filepath.Join(src, "etcdmember", "main.go"), filepath.Join(src, "..", "..", "go.sum")} {
			b, err := os.ReadFile(f)
			if err != nil {
				built.err = err
				return
			}
			h.Write(b)
		}
		dir := filepath.Join(os.TempDir(), "lxcfleet-etcdmember-"+hex.EncodeToString(h.Sum(nil))[:16])
		built.path = filepath.Join(dir, "etcdmember")
		if _, err := os.Stat(built.path); err == nil {
			return
		}
		if built.err = os.MkdirAll(dir, 0o755); built.err != nil {
			return
		}
		tmp := fmt.Sprintf("%s.tmp-%d", built.path, os.Getpid())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, "./etcdmember")
		cmd.Dir = src
		if built.out, built.err = cmd.CombinedOutput(); built.err != nil {
			_ = os.Remove(tmp)
			return
		}
		built.err = os.Rename(tmp, built.path)
	})
	if built.err != nil {
		t.Fatalf("building the etcd member: %v\n%s", built.err, built.out)
	}
	return built.path
}

// Member is one etcd member process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	dir       string
	cmd       *exec.Cmd
	args      []string
	exited    chan struct{}
	mu        sync.Mutex
	stopped   bool       // SIGSTOPped
	ready     chan error // after Restart, until Ready
}

// Cluster is a running cluster.
type Cluster struct {
	Members []*Member
	t       testing.TB
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.ClientURL
	}
	return out
}

// Start starts an n-member cluster and waits until every member serves.
func Start(t testing.TB, n int) *Cluster { return StartWith(t, n, Options{}) }

// Options tune a cluster.
type Options struct {
	// TLS, when set, makes the members serve clients over https with
	// these PEM files (peers stay on plain http, loopback only).
	TLS *TLSFiles
}

// TLSFiles are the members' client TLS files. With ClientCA set, a client
// must present a certificate that chains to it.
type TLSFiles struct{ Cert, Key, ClientCA string }

// StartWith is Start with options.
func StartWith(t testing.TB, n int, o Options) *Cluster {
	t.Helper()
	bin := Binary(t)
	ports := freePorts(t, 2*n)
	c := &Cluster{t: t}
	var initial []string
	for i := range n {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("%s://127.0.0.1:%d", map[bool]string{true: "https", false: "http"}[o.TLS != nil], ports[2*i]),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
			dir:       filepath.Join(t.TempDir(), fmt.Sprintf("m%d", i)),
			exited:    make(chan struct{}),
		}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	ready := make(chan error, n)
	token := fmt.Sprintf("t%d", time.Now().UnixNano()) // one per cluster
	for _, m := range c.Members {
		m.cmd = exec.Command(bin, "-name", m.Name, "-data-dir", m.dir, "-client", m.ClientURL, "-peer", m.PeerURL,
			"-initial-cluster", strings.Join(initial, ","), "-token", token)
		if o.TLS != nil {
			m.cmd.Args = append(m.cmd.Args, "-cert", o.TLS.Cert, "-key", o.TLS.Key, "-client-ca", o.TLS.ClientCA)
		}
		m.args = m.cmd.Args
		m.start(t, ready)
		t.Cleanup(func() { m.stop(t) })
	}
	deadline := time.After(90 * time.Second)
	for range n {
		select {
		case err := <-ready:
			if err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatalf("the %d-member etcd cluster was not ready within 90s", n)
		}
	}
	return c
}

// start runs m.cmd; ready gets nil once it serves, or an error if it
// exits first.
func (m *Member) start(t testing.TB, ready chan<- error) {
	m.cmd.Stderr = testLog{t, m.Name}
	out, err := m.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("starting etcd member %s: %v", m.Name, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if sc.Text() == "ready" && !ok {
				ok = true
				ready <- nil
			}
		}
		if !ok {
			ready <- fmt.Errorf("etcd member %s exited before it was ready", m.Name)
		}
	}()
	cmd, exited := m.cmd, m.exited
	go func() { _ = cmd.Wait(); close(exited) }()
}

// Restart starts killed members again on their data folders (the same
// ports and names) and returns at once: a member that needs its peers for
// a quorum is ready only once they are back too. Wait for the cluster with
// Ready.
func (c *Cluster) Restart(is ...int) {
	c.t.Helper()
	for _, i := range is {
		m := c.Members[i]
		select {
		case <-m.exited:
		default:
			c.t.Fatalf("restarting etcd member %s: it is still running", m.Name)
		}
		m.mu.Lock()
		m.cmd = exec.Command(m.args[0], m.args[1:]...)
		m.exited = make(chan struct{})
		m.stopped = false
		m.ready = make(chan error, 1)
		m.mu.Unlock()
		m.start(c.t, m.ready)
	}
}

// Ready waits until every member restarted by Restart serves.
func (c *Cluster) Ready(d time.Duration) {
	c.t.Helper()
	deadline := time.After(d)
	for _, m := range c.Members {
		if m.ready == nil {
			continue
		}
		select {
		case err := <-m.ready:
			if err != nil {
				c.t.Fatal(err)
			}
			m.ready = nil
		case <-deadline:
			c.t.Fatalf("restarted etcd member %s was not ready within %s", m.Name, d)
		}
	}
}

// Kill sends SIGKILL to member i (the process this package started).
func (c *Cluster) Kill(i int) {
	m := c.Members[i]
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.exited
}

// Pause sends SIGSTOP to member i; Continue sends SIGCONT.
func (c *Cluster) Pause(i int) {
	m := c.Members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	_ = m.cmd.Process.Signal(syscall.SIGSTOP)
	m.stopped = true
}

// Continue resumes a paused member.
func (c *Cluster) Continue(i int) {
	m := c.Members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	_ = m.cmd.Process.Signal(syscall.SIGCONT)
	m.stopped = false
}

// stop ends the member: SIGCONT if paused, SIGTERM, SIGKILL after 10s.
func (m *Member) stop(t testing.TB) {
	select {
	case <-m.exited:
		return
	default:
	}
	m.mu.Lock()
	if m.stopped {
		_ = m.cmd.Process.Signal(syscall.SIGCONT)
	}
	m.mu.Unlock()
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		t.Logf("etcd member %s did not stop within 10s of SIGTERM; killing pid %d", m.Name, m.cmd.Process.Pid)
		_ = m.cmd.Process.Signal(syscall.SIGKILL)
		<-m.exited
	}
}

// freePorts returns n distinct ports of 127.0.0.1 free now.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// testLog sends a member's stderr to the test log.
type testLog struct {
	t    testing.TB
	name string
}

func (w testLog) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if line != "" {
			w.t.Logf("etcd %s: %s", w.name, line)
		}
	}
	return len(p), nil
}
