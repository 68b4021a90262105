package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"lxcfleet/heldsock"
)

// DefaultSocket is where a locker finds its held socket's Unix socket.
const DefaultSocket = "/run/lxcfleet/" + heldsock.SocketFile

func main() {
	if len(os.Args) > 1 && os.Args[1] == "hold" {
		os.Exit(hold(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:]))
}

// hold runs the holder until SIGTERM or SIGINT.
func hold(args []string) int {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	dir := fs.String("dir", "/run/lxcfleet-holder", "the holder's folder (control socket, pid file)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The agent's session may end (its terminal, its process group): the
	// holder lives on.
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	if err := heldsock.NewHolder(*dir, log).Run(ctx); err != nil {
		log.Error("socket holder", "err", err)
		return 1
	}
	return 0
}

// run fetches the held socket and execs the app.
func run(args []string) int {
	fs := flag.NewFlagSet("lxcfleet-listenfd", flag.ContinueOnError)
	sock := fs.String("socket", DefaultSocket, "the Unix socket the holder serves this locker's socket on")
	wait := fs.Duration("wait", 10*time.Second, "how long to wait for a holder that is restarting")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: lxcfleet-listenfd [-socket PATH] [-wait D] -- APP [ARGS...]\n       lxcfleet-listenfd hold -dir DIR\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	f, err := heldsock.FetchWait(*sock, *wait)
	if err != nil {
		fmt.Fprintf(os.Stderr, "lxcfleet-listenfd: %v\n", err)
		return 1
	}
	err = heldsock.Exec(f, os.Getenv("LOCKER"), fs.Args())
	fmt.Fprintf(os.Stderr, "lxcfleet-listenfd: %v\n", err)
	return 1
}
