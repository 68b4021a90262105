package lxcctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	lxc "github.com/lxc/go-lxc"
	"golang.org/x/sys/unix"
)

// ExecResult is what a command run inside a container produced.
type ExecResult struct {
	ExitCode int
	Stdout   []byte
	Stderr   []byte
}

// maxExecOutput caps how much of each stream Exec keeps.
const maxExecOutput = 1 << 20

// Exec runs argv inside a running container (all its namespaces, a clean
// environment with PATH set) and waits for it. A cancelled ctx kills the
// command. A non-zero exit is not an error: check ExitCode.
func (h *Host) Exec(ctx context.Context, name string, argv ...string) (ExecResult, error) {
	if len(argv) == 0 {
		return ExecResult{}, fmt.Errorf("running a command in container %q: no command given", name)
	}
	c, err := h.open(name)
	if err != nil {
		return ExecResult{}, err
	}
	defer c.Release()
	if !c.Running() {
		return ExecResult{}, fmt.Errorf("running %q in container %q: container is not running", strings.Join(argv, " "), name)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return ExecResult{}, fmt.Errorf("running %q in container %q: %w", argv[0], name, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return ExecResult{}, fmt.Errorf("running %q in container %q: %w", argv[0], name, err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return ExecResult{}, err
	}
	defer devnull.Close()

	var stdout, stderr bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go drain(&wg, &stdout, outR)
	go drain(&wg, &stderr, errR)

	opts := lxc.DefaultAttachOptions
	opts.ClearEnv = true
	opts.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	opts.StdinFd = devnull.Fd()
	opts.StdoutFd = outW.Fd()
	opts.StderrFd = errW.Fd()
	pid, err := c.RunCommandNoWait(argv, opts)
	outW.Close()
	errW.Close()
	if err != nil {
		wg.Wait()
		return ExecResult{}, fmt.Errorf("running %q in container %q: %s", strings.Join(argv, " "), name, err)
	}

	code, err := waitPID(ctx, pid)
	wg.Wait()
	res := ExecResult{ExitCode: code, Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if err != nil {
		return res, fmt.Errorf("running %q in container %q: %w", strings.Join(argv, " "), name, err)
	}
	return res, nil
}

func drain(wg *sync.WaitGroup, buf *bytes.Buffer, r *os.File) {
	defer wg.Done()
	defer r.Close()
	_, _ = io.Copy(buf, io.LimitReader(r, maxExecOutput))
	_, _ = io.Copy(io.Discard, r)
}

// waitPID waits for a child process (liblxc makes the attached process a
// child of the caller) and returns its exit code, killing it when ctx ends.
func waitPID(ctx context.Context, pid int) (int, error) {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			_ = unix.Kill(pid, unix.SIGKILL)
		case <-done:
		}
	}()
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("waiting for pid %d: %w", pid, err)
		}
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ws.ExitStatus(), nil
	}
}
