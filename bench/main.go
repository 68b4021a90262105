package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"lxcfleet/lxcctl"
)

// Subprocess runs the subcommands the benchmark starts as separate
// processes of its own binary: lxcctl's forkstart, "probe" and "agent".
// It reports whether args named one of them, and its exit code. Both
// lockerbench's main and the smoke test's TestMain call it first.
func Subprocess(args []string) (code int, handled bool) {
	if len(args) < 1 {
		return 0, false
	}
	switch args[0] {
	case lxcctl.ForkStartCommand:
		return lxcctl.ForkStartMain(args[1:]), true
	case "probe":
		return ProbeMain(args[1:]), true
	case "agent":
		return AgentMain(args[1:]), true
	case "update-code":
		return UpdateMain(args[1:]), true
	}
	return 0, false
}

// ProbeMain is the prober process: it reads its ProbeConfig from the JSON
// file named in args and probes until SIGTERM or SIGINT.
func ProbeMain(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: probe CONFIG.json")
		return 2
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var cfg ProbeConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "reading %s: %v\n", args[0], err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// LOCKERBENCH_PROBER_CPUPROFILE names a file for the prober's CPU
	// profile (to see where its own cost goes).
	if path := os.Getenv("LOCKERBENCH_PROBER_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			defer f.Close()
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	if err := RunProber(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
