package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
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
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
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
