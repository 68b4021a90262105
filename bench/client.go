package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// How a client's request failed ("" when answered).
const (
	failRefused = "refused"
	failReset   = "reset"
	failTimeout = "timed out"
	failOther   = "other"
)

// clientReq is one request of a client: when it was sent, how long it
// took to its answer (or its failure), the build that answered, and how
// it failed.
type clientReq struct {
	locker int
	sent   time.Time
	took   time.Duration
	build  string
	fail   string
	err    string
}

// clients is a client at each locker (issue 20's benchmark): every
// interval a new TCP connection and one GET /healthz over HTTP/1.0, each
// in its own goroutine, so a request waiting in a socket's queue holds no
// other back. A request fails when it is refused, reset (or closed with
// no answer), or not answered within timeout.
type clients struct {
	addrs   []string
	stop    chan struct{}
	senders sync.WaitGroup
	pending sync.WaitGroup
	mu      sync.Mutex
	reqs    []clientReq
	// first is, per locker, when a request was first answered by each
	// build.
	first []map[string]time.Time
}

// startClients starts a client at each address. The lockers' first
// requests are spread over the first interval.
func startClients(addrs []string, interval, timeout time.Duration) *clients {
	c := &clients{addrs: addrs, stop: make(chan struct{}), first: make([]map[string]time.Time, len(addrs))}
	for i := range addrs {
		c.first[i] = map[string]time.Time{}
	}
	for i, addr := range addrs {
		c.senders.Add(1)
		go func() {
			defer c.senders.Done()
			phase := interval * time.Duration(i) / time.Duration(max(1, len(addrs)))
			select {
			case <-c.stop:
				return
			case <-time.After(phase):
			}
			tick := time.NewTicker(interval) // the client's pace
			defer tick.Stop()
			for {
				c.pending.Add(1)
				go func() {
					defer c.pending.Done()
					r := oneRequest(addr, timeout)
					r.locker = i
					c.mu.Lock()
					defer c.mu.Unlock()
					c.reqs = append(c.reqs, r)
					if r.fail == "" {
						if at, ok := c.first[i][r.build]; !ok || r.sent.Add(r.took).Before(at) {
							c.first[i][r.build] = r.sent.Add(r.took)
						}
					}
				}()
				select {
				case <-c.stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	return c
}

// allOn reports when every locker had answered a request with build (the
// latest of their first such answers); ok false while one has not. Each
// update's target build is new to the fleet, so any answer by it came
// after the update began.
func (c *clients) allOn(build string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var last time.Time
	for i := range c.addrs {
		first, ok := c.first[i][build]
		if !ok {
			return time.Time{}, false
		}
		if first.After(last) {
			last = first
		}
	}
	return last, true
}

// finish stops sending, waits for every request sent to end (answered,
// failed or timed out) and returns them.
func (c *clients) finish() []clientReq {
	close(c.stop)
	c.senders.Wait()
	c.pending.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reqs
}

// oneRequest makes a new connection to addr and sends GET /healthz.
func oneRequest(addr string, timeout time.Duration) clientReq {
	r := clientReq{sent: time.Now()}
	deadline := r.sent.Add(timeout)
	fail := func(err error) clientReq {
		r.took = time.Since(r.sent)
		r.fail, r.err = classify(err), err.Error()
		return r
	}
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.0\r\nHost: locker\r\n\r\n"); err != nil {
		return fail(err)
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return fail(err)
	}
	if len(b) == 0 {
		return fail(errEmpty)
	}
	s := string(b)
	if !strings.HasPrefix(s, "HTTP/1.1 200") && !strings.HasPrefix(s, "HTTP/1.0 200") {
		r.took = time.Since(r.sent)
		r.fail, r.err = failOther, fmt.Sprintf("answer %.40q", s)
		return r
	}
	_, body, _ := strings.Cut(s, "\r\n\r\n")
	var hz struct {
		Build string `json:"build"`
	}
	_ = json.Unmarshal([]byte(body), &hz)
	r.took, r.build = time.Since(r.sent), hz.Build
	return r
}

// errEmpty is a connection closed without an answer: the app took it
// and went away (a reset, as far as the client can tell).
var errEmpty = errors.New("connection closed without an answer")

func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return failRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, errEmpty):
		return failReset
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return failTimeout
	}
	return failOther
}

// ClientFigures is what the clients' requests got over a span.
type ClientFigures struct {
	Requests int `json:"requests"`
	OK       int `json:"ok"`
	Refused  int `json:"refused"`
	Reset    int `json:"reset"`
	TimedOut int `json:"timed_out"`
	Other    int `json:"other"`
	// Latency of the answered requests, connect to answer.
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
	// Errors holds the first few failures' messages.
	Errors []string `json:"errors,omitempty"`
}

// Failed is every request not answered.
func (f ClientFigures) Failed() int { return f.Refused + f.Reset + f.TimedOut + f.Other }

// clientFigures sums the requests sent in [from, to].
func clientFigures(reqs []clientReq, from, to time.Time) ClientFigures {
	var f ClientFigures
	var lat []float64
	for _, r := range reqs {
		if r.sent.Before(from) || r.sent.After(to) {
			continue
		}
		f.Requests++
		switch r.fail {
		case "":
			f.OK++
			lat = append(lat, float64(r.took.Microseconds())/1000)
		case failRefused:
			f.Refused++
		case failReset:
			f.Reset++
		case failTimeout:
			f.TimedOut++
		default:
			f.Other++
		}
		if r.fail != "" && len(f.Errors) < 5 {
			f.Errors = append(f.Errors, r.err)
		}
	}
	f.P50ms, f.P99ms, f.MaxMs = quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 1)
	return f
}
