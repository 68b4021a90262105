package testfleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"lxcfleet/internal/npmregistry"
	"lxcfleet/lxcctl"
	"lxcfleet/mounts"

	"golang.org/x/sys/unix"
)

// Variant is how a test locker behaves.
type Variant string

// The locker variants.
const (
	// Normal answers /healthz with 200 and exits on the halt signal.
	Normal Variant = "normal"
	// Stubborn ignores the halt signal: a graceful stop times out.
	Stubborn Variant = "stubborn"
	// Broken runs but answers /healthz with 503 forever.
	Broken Variant = "broken"
	// Crash exits at once: the container stops right after it starts.
	Crash Variant = "crash"
)

// Main is the TestMain of every package whose tests start containers: it
// routes the forkstart re-exec (see lxcctl.ForkStartCommand) and otherwise
// runs the tests with every npm of the process pointed at the test
// registry (npmregistry.Use): no test needs the public registry.
func Main(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == lxcctl.ForkStartCommand {
		os.Exit(lxcctl.ForkStartMain(os.Args[2:]))
	}
	if _, err := npmregistry.Use(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	npmregistry.Done()
	CleanBinary()
	cleanListenFD()
	if appOnce.dir != "" {
		_ = os.RemoveAll(appOnce.dir)
	}
	os.Exit(code)
}

// RequireLXC skips t with a reason when this machine cannot run LXC
// containers (not root, or LXC's tools missing), and fails it instead when
// CI=true: a skipped real-system test is not a passing one.
func RequireLXC(t testing.TB) {
	t.Helper()
	var why string
	switch {
	case runtime.GOOS != "linux":
		why = "LXC needs Linux"
	case os.Geteuid() != 0:
		why = "LXC tests need root (they create privileged busybox containers)"
	default:
		for _, tool := range []string{"lxc-create", "lxc-ls", "busybox"} {
			if _, err := exec.LookPath(tool); err != nil {
				why = fmt.Sprintf("%s not found: run scripts/setup-host (apt-get install lxc lxc-templates busybox-static)", tool)
				break
			}
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and this real-LXC test cannot run: %s", why)
	}
	t.Skip(why)
}

// RequireNode is RequireLXC for node and npm.
func RequireNode(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI=true and %s is missing: run scripts/setup-host", tool)
			}
			t.Skipf("%s not found: run scripts/setup-host", tool)
		}
	}
}

// Fleet is a set of real test lockers in a private lxcpath. Every locker it
// makes is stopped and destroyed when the test ends.
type Fleet struct {
	t      testing.TB
	Host   *lxcctl.Host
	Path   string // the private lxcpath
	Prefix string // every container name starts with it
	AppDir string // the app bind-mounted read-only at /opt/app

	mu      sync.Mutex
	base    string
	lockers []Locker
}

// Locker is one test locker.
type Locker struct {
	Name    string
	Port    int
	Variant Variant
}

// URL is the locker's health endpoint on 127.0.0.1.
func (l Locker) URL() string { return fmt.Sprintf("http://127.0.0.1:%d/healthz", l.Port) }

// Options tunes a Fleet.
type Options struct {
	// AppDir is mounted read-only at /opt/app; default: the fixture app
	// with its dependencies installed by npm (see App).
	AppDir string
	// StartupMS is CPU time each locker burns before it listens.
	StartupMS int
	// ExtraConfig lines are appended to every locker's config.
	ExtraConfig []string
}

// New makes an empty fleet in a private lxcpath under t.TempDir(). It needs
// root, LXC and node (see RequireLXC).
func New(t testing.TB, opts Options) *Fleet {
	t.Helper()
	RequireLXC(t)
	RequireNode(t)
	if opts.AppDir == "" {
		opts.AppDir = App(t)
	}
	path := filepath.Join(t.TempDir(), "lxc")
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatalf("making lxcpath: %v", err)
	}
	h, err := lxcctl.NewHost(lxcctl.Options{LXCPath: path})
	if err != nil {
		t.Fatalf("opening host: %v", err)
	}
	f := &Fleet{t: t, Host: h, Path: path, Prefix: "lxft" + randHex(3) + "-", AppDir: opts.AppDir}
	f.base = f.Prefix + "base"
	f.createBase(opts)
	return f
}

// createBase makes the busybox container every locker is cloned from.
func (f *Fleet) createBase(opts Options) {
	t := f.t
	t.Helper()
	ctx := context.Background()
	if err := f.Host.Create(ctx, f.base, "busybox"); err != nil {
		t.Fatalf("creating base container: %v", err)
	}
	f.cleanup(f.base)
	lines := []string{
		"lxc.net.0.type = none",
		"lxc.signal.halt = SIGTERM",
		"lxc.init.cmd = /usr/bin/node /opt/app/server.js",
		"lxc.mount.entry = " + NodeBinary(t) + " usr/bin/node none bind,ro,create=file 0 0",
		"lxc.mount.entry = " + opts.AppDir + " opt/app none bind,ro,create=dir 0 0",
	}
	if opts.StartupMS > 0 {
		lines = append(lines, fmt.Sprintf("lxc.environment = STARTUP_MS=%d", opts.StartupMS))
	}
	lines = append(lines, opts.ExtraConfig...)
	_, err := f.Host.EditConfig(f.base, func(old []byte) ([]byte, error) {
		return mounts.AppendConfig(mounts.DropConfigKeys(old, "lxc.net.", "lxc.signal.halt", "lxc.signal.reboot", "lxc.apparmor."), lines...), nil
	})
	if err != nil {
		t.Fatalf("configuring base container: %v", err)
	}
}

// Add makes n lockers of the given variant (stopped) and returns them.
func (f *Fleet) Add(n int, v Variant) []Locker {
	t := f.t
	t.Helper()
	ctx := context.Background()
	var out []Locker
	for range n {
		f.mu.Lock()
		name := fmt.Sprintf("%s%03d", f.Prefix, len(f.lockers))
		port := freePort(t)
		l := Locker{Name: name, Port: port, Variant: v}
		f.lockers = append(f.lockers, l)
		f.mu.Unlock()
		if err := f.Host.Clone(ctx, f.base, name); err != nil {
			t.Fatalf("cloning locker %s: %v", name, err)
		}
		f.cleanup(name)
		_, err := f.Host.EditConfig(name, func(old []byte) ([]byte, error) {
			return mounts.AppendConfig(old,
				"lxc.uts.name = "+name,
				fmt.Sprintf("lxc.environment = PORT=%d", port),
				"lxc.environment = LOCKER="+name,
				"lxc.environment = MODE="+string(v),
			), nil
		})
		if err != nil {
			t.Fatalf("configuring locker %s: %v", name, err)
		}
		out = append(out, l)
	}
	return out
}

// Lockers returns every locker made so far, in name order.
func (f *Fleet) Lockers() []Locker {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Locker(nil), f.lockers...)
}

// Names returns the names of lockers.
func Names(ls []Locker) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Name
	}
	return out
}

// HealthCheck is the health check that fits the test lockers.
func HealthCheck() lxcctl.HealthCheck {
	return lxcctl.HealthCheck{Kind: lxcctl.HealthHTTP, Target: "http://127.0.0.1:{port}/healthz", Interval: 20 * time.Millisecond}
}

// cleanup registers the stop and destroy of one container.
func (f *Fleet) cleanup(name string) {
	f.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := f.Host.Stop(ctx, name, 100*time.Millisecond); err != nil {
			f.t.Logf("cleanup: stopping %s: %v", name, err)
		}
		if err := f.Host.Destroy(ctx, name); err != nil {
			f.t.Errorf("cleanup: destroying %s: %v", name, err)
		}
	})
}

// LXCLs returns the state of each container as `lxc-ls -f` prints it.
func (f *Fleet) LXCLs(t testing.TB) map[string]string {
	t.Helper()
	out, err := exec.Command("lxc-ls", "-P", f.Path, "-f", "-F", "NAME,STATE").CombinedOutput()
	if err != nil {
		t.Fatalf("lxc-ls -P %s -f: %v: %s", f.Path, err, out)
	}
	states := map[string]string{}
	for i, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fs := strings.Fields(line)
		if i == 0 || len(fs) < 2 {
			continue
		}
		states[fs[0]] = fs[1]
	}
	return states
}

var nodeOnce struct {
	sync.Once
	path string
	err  error
}

// NodeBinary is the host's node binary (symlinks resolved), bind-mounted
// into lockers; it fails the test when there is none.
func NodeBinary(t testing.TB) string {
	nodeOnce.Do(func() {
		p, err := exec.LookPath("node")
		if err == nil {
			p, err = filepath.EvalSymlinks(p)
		}
		nodeOnce.path, nodeOnce.err = p, err
	})
	if nodeOnce.err != nil {
		t.Fatalf("finding node: %v", nodeOnce.err)
	}
	return nodeOnce.path
}

// Ports handed out to lockers come from below the kernel's ephemeral range
// (32768-60999 here): a port taken from that range can be grabbed, before the
// locker binds it, by any outgoing connection (the health checks' own), and
// the locker then fails with EADDRINUSE while the check talks to someone else.
const (
	portLow  = 20000
	portHigh = 32000
)

// portLocks is where test processes reserve ports: one file per port,
// flocked by the process that was given it for as long as it runs (the
// kernel drops the lock when it exits, even killed). make test runs two
// packages' tests at once, and a port free now is only a port nobody has
// bound yet: a locker of the other process may be about to.
var portLocks = filepath.Join(os.TempDir(), "lxcfleet-test-ports")

var (
	portMu    sync.Mutex
	portsHeld []*os.File // the reservations, kept open for the process's life
)

// PortRange returns a base port p such that p .. p+n-1 on 127.0.0.1 are
// free now, below the kernel's ephemeral range (provision refuses a base
// in it), and reserved for this test process: no other call in this
// process and no other test process using PortRange is given any of them.
// Every test that hands lockers ports takes them here.
func PortRange(t testing.TB, n int) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	if err := os.MkdirAll(portLocks, 0o777); err != nil {
		t.Fatalf("reserving %d ports: %v", n, err)
	}
	for range 1000 {
		r, err := rand.Int(rand.Reader, big.NewInt(int64(portHigh-portLow-n)))
		if err != nil {
			t.Fatalf("reserving %d ports: %v", n, err)
		}
		base := portLow + int(r.Int64())
		if held, ok := reservePorts(base, n); ok {
			portsHeld = append(portsHeld, held...)
			return base
		}
	}
	t.Fatalf("reserving %d ports: no %d free in a row in %d-%d after 1000 tries", n, n, portLow, portHigh)
	return 0
}

// reservePorts flocks base .. base+n-1 and checks that each can be bound
// now; on any failure it gives back what it took.
func reservePorts(base, n int) ([]*os.File, bool) {
	var held []*os.File
	giveBack := func() {
		for _, f := range held {
			f.Close()
		}
	}
	for p := base; p < base+n; p++ {
		f, err := os.OpenFile(filepath.Join(portLocks, strconv.Itoa(p)), os.O_RDWR|os.O_CREATE, 0o666)
		if err != nil {
			giveBack()
			return nil, false
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			giveBack()
			return nil, false
		}
		held = append(held, f)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			giveBack()
			return nil, false
		}
		l.Close()
	}
	return held, true
}

// freePort is PortRange of one port.
func freePort(t testing.TB) int { return PortRange(t, 1) }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
