package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"lxcfleet/bench"
)

func main() {
	if code, ok := bench.Subprocess(os.Args[1:]); ok {
		os.Exit(code)
	}
	if len(os.Args) == 2 && os.Args[1] == "clean" {
		dirs, err := bench.Clean(context.Background())
		for _, d := range dirs {
			fmt.Println("removed", d)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "lockerbench clean:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) < 2 || (os.Args[1] != "run" && os.Args[1] != "scale") {
		fmt.Fprintln(os.Stderr, "usage: lockerbench run [flags]     (see lockerbench run -h)\n       lockerbench scale [flags]   (one cheap run per N; lockerbench scale -h)\n       lockerbench clean           (containers left by a killed run)")
		os.Exit(2)
	}
	if os.Args[1] == "scale" {
		os.Exit(scaleCmd(os.Args[2:]))
	}
	os.Exit(runCmd(os.Args[2:]))
}

// commonFlags are the flags run and scale share.
func commonFlags(fs *flag.FlagSet, o *bench.Options) {
	fs.IntVar(&o.Work, "work", 0, "startup work per locker, thousands of sha256 rounds (0: the app profile's: light 40 ≈ 0.2 CPU s, heavy 400)")
	fs.StringVar(&o.App, "app", bench.AppLight, "the app's profile: light, or heavy (a 192 MiB cache and templates at start, about 1 CPU s and 250 MiB at its peak, then serving on the light app's memory)")
	fs.Func("mem-limit", "memory limit on the lockers' cgroup parent, e.g. 16GiB, or none (default: N x 55 MiB + 1 GiB, room for every locker serving and a few starts, not for N heavy starts at once)", func(v string) error {
		b, err := bench.ParseBytes(v)
		o.MemLimit = b
		return err
	})
	fs.StringVar(&o.Results, "out", "results", "folder for results/<timestamp>/")
	fs.StringVar(&o.LXCFleet, "lxcfleet", "bin/lxcfleet", "the lxcfleet binary (scenarios 4 and 5, agent figures)")
	fs.IntVar(&o.PortBase, "port-base", 12000, "first locker port tried (below the ephemeral range)")
	fs.DurationVar(&o.APIDuration, "api-duration", 20*time.Second, "length of the GET /v1/containers load on the idle fleet")
	fs.IntVar(&o.APIRate, "api-rate", 200, "requests a second of the GET /v1/containers load (idle fleet and during offline updates)")
	fs.BoolVar(&o.APIFull, "api-full", false, "every request of the GET /v1/containers load asks for the whole list (default: each names the last answer's ETag, as the console's polls do, and gets 304 while nothing changed)")
	fs.StringVar(&o.ProbeMode, "probe", bench.ProbeAdaptive, "prober: adaptive, or poll (issue 7's 20 Hz HTTP prober)")
	fs.Float64Var(&o.ProbeServingRate, "serving-rate", 10, "adaptive prober: HTTP probes a second to serving lockers, in all")
	fs.BoolVar(&o.NoCgroupParent, "no-cgroup-parent", false, "leave the lockers' cgroups at the top level (LXC's default) instead of lxcfleet's parent with its low CPU weight")
	fs.BoolVar(&o.NoPollReference, "no-poll-reference", false, "leave out the 20 Hz prober's calibration period and restart breakdown")
	fs.IntVar(&o.MaxStarting, "max-starting", 0, "lxcfleet's max_starting (W) in scenarios 4 to 8 (0: its default): the W of a --pacing fixed update (4f, 5f), the first W of an adaptive one")
	fs.IntVar(&o.MaxUnavailable, "max-unavailable", 0, "lxcfleet's max_unavailable (K) in scenarios 4 to 8 (0: its default, 4; offline with adaptive pacing takes every locker as K)")
	fs.DurationVar(&o.Monitor, "monitor", 0, "lxcfleet's monitor window in scenarios 4 and 5 (0: its default, 10s); with monitor_holds = all (not the default) a rolling update holds each of its K places for it, about N/K x (monitor + restart)")
}

func scaleCmd(args []string) int {
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	var o bench.Options
	var ns, scen string
	fs.StringVar(&ns, "n", "50,100,300", "fleet sizes, comma-separated")
	fs.StringVar(&scen, "scenarios", "2,4", "scenarios each N runs (2 = storm, 4 = lxcfleet offline with pacing)")
	commonFlags(fs, &o)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var sizes []int
	for _, s := range strings.Split(ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "lockerbench scale: bad -n %q\n", ns)
			return 2
		}
		sizes = append(sizes, n)
	}
	o.Scenarios = strings.Split(scen, ",")
	o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sr, dir, err := bench.Scale(ctx, sizes, o)
	if sr != nil {
		fmt.Println(sr.Markdown())
		fmt.Println("results:", dir)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "lockerbench: interrupted; every container it made was destroyed")
			return 130
		}
		fmt.Fprintln(os.Stderr, "lockerbench scale:", err)
		return 1
	}
	return 0
}

func runCmd(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var o bench.Options
	var scen string
	fs.IntVar(&o.N, "n", 300, "number of lockers")
	fs.StringVar(&scen, "scenarios", strings.Join(bench.DefaultScenarios, ","), "scenarios to run, comma-separated (4f: offline --pacing fixed; 5f: rolling --pacing fixed; 6, 7: issue 20's rolling and offline update under a client at each locker, held sockets beside today's; 8: sleeping lockers, density)")
	fs.IntVar(&o.HeldN, "held-n", 0, "lockers of each fleet of scenarios 6 and 7 (0: -n)")
	fs.IntVar(&o.LockersCPUWeight, "lockers-cpu-weight", 0, "scenarios 6-8: [cgroup] cpu_weight, the lockers' parent's CPU weight (0: lxcfleet's default)")
	fs.IntVar(&o.StartCPUWeight, "start-cpu-weight", 0, "scenarios 6-8: [cgroup] start_cpu_weight, the startup CPU boost (0: lxcfleet's default; -1: none)")
	heldSockets := fs.String("held-sockets", "app,held", "scenarios 6 and 7: the socket modes to run, comma-separated (app: today's, the app binds its port; held: the holder keeps it)")
	fs.IntVar(&o.DensityN, "density-n", 0, "lockers of scenario 8, twice what its memory limit lets be awake (0: min(-n, 40))")
	fs.DurationVar(&o.ClientInterval, "client-interval", 500*time.Millisecond, "scenarios 6-8: each client's period (a new connection a request)")
	fs.DurationVar(&o.ClientTimeout, "client-timeout", time.Minute, "scenarios 6-8: how long a request may wait for its answer before it counts as timed out")
	fs.StringVar(&o.ListenFD, "listenfd", "", "the static lxcfleet-listenfd held sockets need (default: beside -lxcfleet)")
	commonFlags(fs, &o)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Scenarios = strings.Split(scen, ",")
	o.HeldSockets = strings.Split(*heldSockets, ",")
	o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, o)
	if rep != nil {
		fmt.Println(rep.Markdown())
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "lockerbench: interrupted; every container it made was destroyed")
			return 130
		}
		fmt.Fprintln(os.Stderr, "lockerbench:", err)
		return 1
	}
	return 0
}
