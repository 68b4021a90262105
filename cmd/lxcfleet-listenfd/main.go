// Command lxcfleet-listenfd passes a host-held listening socket to a
// locker's app (see package heldsock). It is a small static binary
// (CGO_ENABLED=0) with two roles:
//
//	lxcfleet-listenfd hold -dir DIR
//
// runs the host's socket holder: it keeps every held locker's listening
// socket and serves each over a Unix socket, controlled through
// DIR/control.sock. It runs as a process of its own (the agent starts it in
// a session of its own when none answers, or systemd runs it as
// lxcfleet-holder.service), so the agent's restart or crash closes no
// socket.
//
//	lxcfleet-listenfd [-socket PATH] [-wait D] -- APP [ARGS...]
//
// runs inside a locker (bound read-only at /sbin/lxcfleet-listenfd, in
// front of the app in lxc.init.cmd): it fetches the listening socket from
// PATH (default /run/lxcfleet/listen.sock, the holder's folder bound into
// the container), puts it at fd 3, sets LISTEN_FDS=1 and LISTEN_PID
// (systemd's convention) and execs the app.
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
