package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"lxcfleet/lxcctl"
)

func main() {
	// The re-exec through which containers are started (see
	// lxcctl.ForkStartCommand) bypasses cobra: it must be fast and quiet.
	if len(os.Args) > 1 && os.Args[1] == lxcctl.ForkStartCommand {
		os.Exit(lxcctl.ForkStartMain(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	endProfile := startProfile(os.Getenv("LXCFLEET_CPUPROFILE"))
	code := run(ctx, os.Args[1:])
	endProfile()
	stop()
	os.Exit(code)
}

// startProfile writes a Go CPU profile of this process to path.PID (for
// `go tool pprof`) until the returned func is called: a debugging aid,
// set through the environment (LXCFLEET_CPUPROFILE) so that it reaches an
// agent or update-code run by a script or by the benchmark unchanged. An
// empty path profiles nothing; a profile that cannot start is reported
// and the command runs without it.
func startProfile(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid()))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "lxcfleet: cpu profile (LXCFLEET_CPUPROFILE): %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// run executes the CLI with args and returns the process exit code.
func run(ctx context.Context, args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ue usageError
	var fe failedError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "lxcfleet: %v\n", err)
		return 2
	case errors.As(err, &fe):
		// the command printed its own summary
		return 1
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "lxcfleet: interrupted")
		return 130
	default:
		fmt.Fprintf(os.Stderr, "lxcfleet: %v\n", err)
		return 1
	}
}

// usageError is bad input: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// failedError means the command ran and reported failures itself: exit 1.
type failedError struct{ n int }

func (e failedError) Error() string { return fmt.Sprintf("%d failed", e.n) }
