package heldsock

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Activity counts, by port, the TCP sockets of a network namespace (netns
// a file such as /run/netns/NAME; "" for the caller's) that are not
// listening: connections in any state, TIME_WAIT included, by their local
// port and, for connections made on this host (loopback clients, a proxy
// on the host), by their remote port too. It is how the agent tells a
// locker idle for sleeping lockers (issue 20, part 2): a sample every few
// seconds sees each connection for as long as it lives, and for 60 s
// after the side that closed first (the app, for HTTP/1.0 and idle
// keep-alive connections; a client on this host otherwise) leaves it in
// TIME_WAIT, so short requests between two samples are seen too.
//
// It reads /proc/thread-self/net/tcp{,6} in the namespace: the kernel
// walks its whole connection table for each read (12-17 ms on the test
// VM), once per namespace and sample.
func Activity(netns string) (map[int]int, error) {
	type result struct {
		m   map[int]int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if netns != "" {
			// Never unlocked: the thread ends with this goroutine.
			ns, err := os.Open(netns)
			if err != nil {
				ch <- result{nil, fmt.Errorf("counting connections: %w", err)}
				return
			}
			err = unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET)
			ns.Close()
			if err != nil {
				ch <- result{nil, fmt.Errorf("counting connections: joining network namespace %s: %w", netns, err)}
				return
			}
		} else {
			defer runtime.UnlockOSThread()
		}
		m := map[int]int{}
		for _, file := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
			if err := countConnections(file, m); err != nil {
				ch <- result{nil, err}
				return
			}
		}
		ch <- result{m, nil}
	}()
	r := <-ch
	return r.m, r.err
}

// countConnections adds the non-listening sockets of one /proc/net/tcp
// file to m by local and remote port.
func countConnections(file string, m map[int]int) error {
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("counting connections: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 || fs[3] == "0A" {
			continue
		}
		for _, addr := range fs[1:3] {
			_, hexPort, ok := strings.Cut(addr, ":")
			if !ok {
				continue
			}
			if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil {
				m[int(p)]++
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("counting connections in %s: %w", file, err)
	}
	return nil
}
