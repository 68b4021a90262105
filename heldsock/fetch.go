package heldsock

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ListenFD is the descriptor the app finds its socket at (SD_LISTEN_FDS_START).
const ListenFD = 3

// Fetch connects to the Unix socket at path and receives the listening
// socket the holder sends there (SCM_RIGHTS). It uses plain system calls,
// not the runtime's poller: Exec moves the socket to fd 3, where the
// poller's epoll descriptor could otherwise be.
func Fetch(path string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fetching the held socket from %s: %w", path, err)
	}
	defer unix.Close(fd)
	short, done, err := shortPath(path)
	if err != nil {
		return nil, fmt.Errorf("fetching the held socket: %w", err)
	}
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: short})
	done()
	if err != nil {
		return nil, fmt.Errorf("fetching the held socket from %s: %w", path, err)
	}
	buf := make([]byte, 256)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("fetching the held socket from %s: %w", path, err)
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, fmt.Errorf("fetching the held socket from %s: %w", path, err)
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil || len(fds) == 0 {
				continue
			}
			for _, extra := range fds[1:] {
				unix.Close(extra)
			}
			return os.NewFile(uintptr(fds[0]), "held:"+string(buf[:n])), nil
		}
		if n == 0 {
			return nil, fmt.Errorf("fetching the held socket from %s: the holder sent no socket", path)
		}
		msg := strings.TrimSpace(string(buf[:n]))
		return nil, fmt.Errorf("fetching the held socket from %s: %s", path, msg)
	}
}

// FetchWait is Fetch, tried again while the Unix socket is missing or not
// answering (a holder that restarts) until wait has passed.
func FetchWait(path string, wait time.Duration) (*os.File, error) {
	deadline := time.Now().Add(wait)
	pause := 10 * time.Millisecond
	for {
		f, err := Fetch(path)
		if err == nil || time.Now().After(deadline) ||
			!(errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED)) {
			return f, err
		}
		time.Sleep(pause) // pacing retries of a holder that restarts
		pause = min(2*pause, 500*time.Millisecond)
	}
}

// Exec puts sock at fd 3 (ListenFD), sets LISTEN_FDS=1, LISTEN_PID (this
// process, which the app becomes) and LISTEN_FDNAMES, and replaces the
// process with argv (looked up in PATH). It returns only on failure.
func Exec(sock *os.File, name string, argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("running the app with its held socket: no command given")
	}
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("running %q with its held socket: %w", argv[0], err)
	}
	fd := int(sock.Fd())
	if fd == ListenFD {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("running %q with its held socket: clearing close-on-exec: %w", argv[0], err)
		}
	} else if err := unix.Dup3(fd, ListenFD, 0); err != nil {
		return fmt.Errorf("running %q with its held socket: moving it to fd %d: %w", argv[0], ListenFD, err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LISTEN_") {
			env = append(env, kv)
		}
	}
	env = append(env, "LISTEN_FDS=1", "LISTEN_PID="+strconv.Itoa(os.Getpid()), "LISTEN_FDNAMES="+name)
	err = syscall.Exec(bin, argv, env)
	return fmt.Errorf("running %q with its held socket: %w", bin, err)
}
