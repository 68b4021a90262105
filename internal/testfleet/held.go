package testfleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"lxcfleet/heldsock"
)

var listenFDOnce struct {
	sync.Once
	path string
	out  []byte
	err  error
}

// ListenFD returns a static lxcfleet-listenfd built from this tree once
// per test binary (CGO_ENABLED=0: it runs inside busybox lockers), in the
// folder Binary's build uses (removed by Main).
func ListenFD(t testing.TB) string {
	t.Helper()
	listenFDOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "lxcfleet-listenfd-")
		if err != nil {
			listenFDOnce.err = err
			return
		}
		listenFDOnce.path = filepath.Join(dir, "lxcfleet-listenfd")
		cmd := exec.Command("go", "build", "-o", listenFDOnce.path, "./cmd/lxcfleet-listenfd")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		listenFDOnce.out, listenFDOnce.err = cmd.CombinedOutput()
	})
	if listenFDOnce.err != nil {
		t.Fatalf("building lxcfleet-listenfd: %v\n%s", listenFDOnce.err, listenFDOnce.out)
	}
	return listenFDOnce.path
}

// cleanListenFD removes what ListenFD built.
func cleanListenFD() {
	if listenFDOnce.path != "" {
		_ = os.RemoveAll(filepath.Dir(listenFDOnce.path))
	}
}

// Holder returns a client of a socket holder in a folder of the test's
// own, started (as in production: the real binary, in a session of its
// own) by the first Hold. The test's end stops it by its pid (HolderPID).
func Holder(t testing.TB) *heldsock.Client {
	t.Helper()
	c := &heldsock.Client{Dir: filepath.Join(t.TempDir(), "holder"), Binary: ListenFD(t)}
	t.Cleanup(func() { StopHolder(t, c) })
	return c
}

// HolderPID returns the pid of the holder serving c, 0 when none answers.
func HolderPID(c *heldsock.Client) int {
	if _, err := c.List(context.Background()); err != nil {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(c.Dir, heldsock.PIDFile))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// StopHolder sends SIGKILL to the holder serving c, if one runs, and
// waits for its exit (on a pidfd): its sockets are closed then.
func StopHolder(t testing.TB, c *heldsock.Client) {
	t.Helper()
	pid := HolderPID(c)
	if pid <= 0 {
		return
	}
	if err := KillAndWait(pid); err != nil {
		t.Errorf("stopping the socket holder (pid %d): %v", pid, err)
	}
}

// KillAndWait sends SIGKILL to pid and waits (pidfd, up to 10 s) until it
// has exited.
func KillAndWait(pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening a pidfd of %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("killing %d: %w", pid, err)
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 10000)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting for %d to exit: %w", pid, err)
		}
		if n == 0 {
			return fmt.Errorf("%d has not exited 10 s after SIGKILL", pid)
		}
		return nil
	}
}

// Outcome counts what a Prober's requests got.
type Outcome struct {
	OK, Refused, Reset, Other int
	// Bodies are the answers' bodies in order (one per OK).
	Bodies []string
	// Errors holds the first few errors other than OK.
	Errors []string
	// Latencies are the answered requests' times, connect to answer.
	Latencies []time.Duration
}

// P99 is the 99th percentile of the answered requests' latencies.
func (o Outcome) P99() time.Duration {
	if len(o.Latencies) == 0 {
		return 0
	}
	l := slices.Clone(o.Latencies)
	slices.Sort(l)
	return l[min(len(l)-1, len(l)*99/100)]
}

// Failed is every request that was not answered.
func (o Outcome) Failed() int { return o.Refused + o.Reset + o.Other }

func (o Outcome) String() string {
	return fmt.Sprintf("%d ok, %d refused, %d reset, %d other", o.OK, o.Refused, o.Reset, o.Other)
}

// Probe makes a new connection to addr every interval and sends GET path
// over HTTP/1.0, until stop is closed; then it returns what they got. With
// netns set, the connections are made inside that network namespace (on a
// thread that heldsock.InNetNS puts back after). Each request waits up to
// 30 s for its answer: a queued connection is slow, not failed.
func Probe(addr, path, netns string, interval time.Duration, stop <-chan struct{}) (Outcome, error) {
	results := make(chan probeResult, 1<<16)
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	dialerDone := make(chan struct{})
	go func() {
		defer close(dialerDone)
		err := heldsock.InNetNS(netns, func() error {
			errc <- nil
			dial(addr, path, interval, stop, results, &wg)
			return nil
		})
		if err != nil {
			select {
			case errc <- err:
			default:
			}
		}
	}()
	if err := <-errc; err != nil {
		return Outcome{}, err
	}
	<-stop
	<-dialerDone // its last dial is done: every reader is counted in wg
	return collect(results, &wg), nil
}

// probeResult is one probe request's answer.
type probeResult struct {
	body string
	err  error
	took time.Duration
}

// dial makes a connection every interval until stop closes (on the
// calling thread, so in its namespace); a goroutine per connection reads
// its answer into results.
func dial(addr, path string, interval time.Duration, stop <-chan struct{}, results chan<- probeResult, wg *sync.WaitGroup) {
	tick := time.NewTicker(interval) // the probe's pace, not a synchronisation
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		began := time.Now()
		conn, err := net.DialTimeout("tcp", addr, 30*time.Second)
		if err != nil {
			results <- probeResult{err: err}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: locker\r\n\r\n", path); err != nil {
				results <- probeResult{err: err}
				return
			}
			b, err := io.ReadAll(conn)
			if err != nil {
				results <- probeResult{err: err}
				return
			}
			s := string(b)
			if !strings.HasPrefix(s, "HTTP/1.1 200") && !strings.HasPrefix(s, "HTTP/1.0 200") {
				results <- probeResult{err: fmt.Errorf("answer %.40q", s)}
				return
			}
			_, body, _ := strings.Cut(s, "\r\n\r\n")
			results <- probeResult{body: body, took: time.Since(began)}
		}()
	}
}

// collect counts the results once every reader is done.
func collect(results chan probeResult, wg *sync.WaitGroup) Outcome {
	wg.Wait()
	close(results)
	var o Outcome
	for r := range results {
		switch {
		case r.err == nil:
			o.OK++
			o.Bodies = append(o.Bodies, r.body)
			o.Latencies = append(o.Latencies, r.took)
		case errors.Is(r.err, syscall.ECONNREFUSED):
			o.Refused++
		case errors.Is(r.err, syscall.ECONNRESET), errors.Is(r.err, syscall.EPIPE):
			o.Reset++
		default:
			o.Other++
		}
		if r.err != nil && len(o.Errors) < 5 {
			o.Errors = append(o.Errors, r.err.Error())
		}
	}
	return o
}

// NetNSCleanup removes, at the test's end, the named network namespaces
// whose names start with prefix (a locker prefix through
// provision.NetNSName). The holder removes a destroyed locker's namespace
// only at its next sweep, which a test that stops its holder sooner never
// reaches. Registered before the lockers, it runs after their cleanup.
func NetNSCleanup(t testing.TB, prefix string) {
	t.Cleanup(func() {
		ents, err := os.ReadDir(heldsock.NetNSDir)
		if err != nil {
			return // no namespace was ever made
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), prefix) {
				if err := heldsock.RemoveNetNS(e.Name()); err != nil {
					t.Errorf("test cleanup: %v", err)
				}
			}
		}
	})
}
