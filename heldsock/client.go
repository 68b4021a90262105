package heldsock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Client asks a holder, over its control socket, to hold, release and list
// sockets. With Binary set, a call that finds no holder answering starts
// one (Binary hold -dir Dir) in a session of its own: it is no child the
// agent's exit or crash takes along.
type Client struct {
	// Dir is the holder's folder (its control socket and pid file).
	Dir string
	// Binary is lxcfleet-listenfd on the host; empty never starts one.
	Binary string

	mu sync.Mutex // one start of a holder at a time
}

// Hold asks the holder to hold s (see Holder.Hold).
func (c *Client) Hold(ctx context.Context, s Spec) (Status, error) {
	resp, err := c.call(ctx, request{Op: "hold", Spec: s})
	if err != nil {
		return Status{}, fmt.Errorf("holding the socket of %q on %s: %w", s.Name, s.addr(), err)
	}
	if len(resp.Held) != 1 {
		return Status{}, fmt.Errorf("holding the socket of %q on %s: the holder answered %d sockets", s.Name, s.addr(), len(resp.Held))
	}
	return resp.Held[0], nil
}

// Release asks the holder to close the locker's socket.
func (c *Client) Release(ctx context.Context, name string) error {
	if _, err := c.call(ctx, request{Op: "release", Spec: Spec{Name: name}}); err != nil {
		return fmt.Errorf("releasing the held socket of %q: %w", name, err)
	}
	return nil
}

// List returns what the holder holds. No holder running is an error
// wrapping ErrNoHolder (it never starts one).
func (c *Client) List(ctx context.Context) ([]Status, error) {
	resp, err := c.ask(ctx, request{Op: "list"})
	if err != nil {
		return nil, fmt.Errorf("listing held sockets: %w", err)
	}
	return resp.Held, nil
}

// ErrNoHolder is wrapped by errors of calls that found no holder running.
var ErrNoHolder = errors.New("no socket holder answers")

// call asks the holder, starting it first when none answers and Binary is
// set.
func (c *Client) call(ctx context.Context, req request) (response, error) {
	resp, err := c.ask(ctx, req)
	if !errors.Is(err, ErrNoHolder) || c.Binary == "" {
		return resp, err
	}
	if err := c.start(ctx); err != nil {
		return resp, err
	}
	return c.ask(ctx, req)
}

// ask sends one request and reads the answer.
func (c *Client) ask(ctx context.Context, req request) (response, error) {
	path := filepath.Join(c.Dir, ControlFile)
	short, done, err := shortPath(path)
	if err != nil {
		return response{}, fmt.Errorf("%w at %s: %v", ErrNoHolder, path, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", short)
	done()
	if err != nil {
		return response{}, fmt.Errorf("%w at %s: %v", ErrNoHolder, path, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return response{}, fmt.Errorf("asking the socket holder at %s: %w", path, err)
	}
	var resp response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		return response{}, fmt.Errorf("reading the socket holder's answer at %s: %w", path, err)
	}
	if resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// start starts a holder unless another call just did, and waits until it
// answers.
func (c *Client) start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.ask(ctx, request{Op: "list"}); err == nil {
		return nil // started meanwhile
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return fmt.Errorf("starting the socket holder: %w", err)
	}
	logPath := filepath.Join(c.Dir, "holder.log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("starting the socket holder: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(c.Binary, "hold", "-dir", c.Dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the socket holder %s: %w", c.Binary, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaps it should it exit while we run
	pause := 5 * time.Millisecond
	for {
		if _, err := c.ask(ctx, request{Op: "list"}); err == nil {
			return nil
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("starting the socket holder %s: it exited (%v): %s", c.Binary, err, tail(log, 400))
		case <-ctx.Done():
			return fmt.Errorf("starting the socket holder %s: %w", c.Binary, ctx.Err())
		case <-time.After(pause): // polling its control socket until it answers
			pause = min(2*pause, 200*time.Millisecond)
		}
	}
}

// tail returns the last n bytes of b.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
