package heldsock

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// init keeps the process's main thread for the main goroutine alone (an
// init that locks it: main then runs on it, and no other goroutine ever
// does). /proc/self/ns/net is the main thread's: liblxc's attach compares
// it with a container's init to decide whether to join its network
// namespace, and lxcctl compares lockers' namespaces with it. A goroutine
// of InNetNS on the main thread made both see a locker's namespace as the
// process's own while its function ran: an exec check attached into a
// locker on network "empty" then ran wget in the host's namespace and was
// refused (the held-on-empty bug of 2026-12-06, 2 to 4 restarts in 8
// under a test client dialing through InNetNS; none with the same client
// as a process of its own).
func init() { runtime.LockOSThread() }

// InNetNS runs fn on a thread of its own in the network namespace file
// netns ("" runs it in the caller's), and puts the thread back into its
// own namespace after. The thread goes back to the scheduler only once it
// is back: a thread left in another namespace, the main thread above all
// (/proc/self/ns/net is the main thread's, which lxcctl compares lockers'
// namespaces with), would make every later socket and comparison of
// whatever runs on it wrong. Where it cannot go back, the thread stays
// locked and ends with the goroutine.
func InNetNS(netns string, fn func() error) error {
	if netns == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() { // never: init keeps it (see init)
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("joining network namespace %s: refused on the process's main thread", netns)
			return
		}
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(netns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening network namespace %s: %w", netns, err)
			return
		}
		err = unix.Setns(int(target.Fd()), unix.CLONE_NEWNET)
		target.Close()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("joining network namespace %s: %w", netns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Still locked: the thread ends with this goroutine.
			errc <- fmt.Errorf("leaving network namespace %s: %w (after: %v)", netns, err, ferr)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
