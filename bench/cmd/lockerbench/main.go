package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
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
	if len(os.Args) < 2 || os.Args[1] != "run" {
		fmt.Fprintln(os.Stderr, "usage: lockerbench run [flags]   (see lockerbench run -h)\n       lockerbench clean   (containers left by a killed run)")
		os.Exit(2)
	}
	os.Exit(runCmd(os.Args[2:]))
}

func runCmd(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var o bench.Options
	var scen string
	fs.IntVar(&o.N, "n", 300, "number of lockers")
	fs.IntVar(&o.Work, "work", 40, "startup work per locker, thousands of sha256 rounds (40 ≈ 0.3 CPU s)")
	fs.StringVar(&o.Results, "out", "results", "folder for results/<timestamp>/")
	fs.StringVar(&o.LXCFleet, "lxcfleet", "bin/lxcfleet", "the lxcfleet binary (scenarios 4 and 5, agent figures)")
	fs.IntVar(&o.PortBase, "port-base", 12000, "first locker port tried (below the ephemeral range)")
	fs.StringVar(&scen, "scenarios", "1,2,3,4,5", "scenarios to run, comma-separated")
	fs.DurationVar(&o.APIDuration, "api-duration", 20*time.Second, "length of the GET /v1/containers load")
	fs.IntVar(&o.APIRate, "api-rate", 200, "requests a second of the GET /v1/containers load")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Scenarios = strings.Split(scen, ",")
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
