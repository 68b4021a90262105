package heldsock

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

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
