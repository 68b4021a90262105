package fleet

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"lxcfleet/internal/etcdtest"
)

// holderChildEnv carries the etcd endpoints to the child process of
// TestSIGSTOPpedHolderIsFenced.
const holderChildEnv = "LXCFLEET_TEST_HOLDER_ENDPOINTS"

// loopUpdater is the child's update job: it busily "moves lockers", each
// only after CheckHold said the slot is still the host's, and prints "work
// <unix ns>" (stamped before the check) at most once a millisecond; it
// prints "lost <unix ns> <cause>" and ends once CheckHold refuses. Busy,
// so that on SIGCONT it runs before the lease's timer does: only a check
// against the clock fences it then.
type loopUpdater struct{}

func (loopUpdater) State(context.Context) (HostState, error) {
	return HostState{Version: "test", Commit: cOld, Lockers: map[string]int{}}, nil
}

func (loopUpdater) Update(ctx context.Context, rel Release) (string, error) {
	var last time.Time
	for {
		at := time.Now()
		if err := CheckHold(ctx); err != nil {
			fmt.Printf("lost %d %v\n", time.Now().UnixNano(), err)
			return "job", fmt.Errorf("%w: %w", ErrNotRun, err)
		}
		if at.Sub(last) >= time.Millisecond {
			fmt.Printf("work %d\n", at.UnixNano())
			last = at
		}
	}
}

// TestHolderChildProcess is the child of TestSIGSTOPpedHolderIsFenced: a
// member holding a slot with loopUpdater as its job. It does nothing when
// run on its own.
func TestHolderChildProcess(t *testing.T) {
	ep := os.Getenv(holderChildEnv)
	if ep == "" {
		return
	}
	m, err := NewMember(Config{Endpoints: strings.Split(ep, ","), Group: "g1", HostID: "child", TTL: 2 * time.Second, Prefix: "/lxcfleet-m"}, loopUpdater{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Run(t.Context()) // until the parent's SIGKILL
}

// TestSIGSTOPpedHolderIsFenced: the slot holder's process is frozen with
// SIGSTOP past its lease's TTL, so etcd frees its slot; on SIGCONT its
// running job is told at once (CheckHold, and the context's ErrLeaseLost)
// and moves no locker after the moment etcd freed the slot: every "work"
// stamp of the child is earlier than the slot's deletion.
func TestSIGSTOPpedHolderIsFenced(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := testStore(t, c.Endpoints())
	ctx := t.Context()
	if _, err := s.Publish(ctx, Release{Ref: "main", Commit: cNew}, &Policy{MaxHosts: 1}, "test"); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHolderChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), holderChildEnv+"="+strings.Join(c.Endpoints(), ","))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	})
	type line struct {
		text string
		at   time.Time
	}
	lines := make(chan line, 10000)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- line{sc.Text(), time.Now()}
		}
		close(lines)
	}()
	var works []time.Time
	next := func(prefix string, d time.Duration) line {
		t.Helper()
		timeout := time.After(d)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the child exited before printing %q", prefix)
				}
				f := strings.Fields(l.text)
				if len(f) >= 2 && (f[0] == "work" || f[0] == "lost") {
					ns, _ := strconv.ParseInt(f[1], 10, 64)
					if f[0] == "work" {
						works = append(works, time.Unix(0, ns))
					}
				}
				if strings.HasPrefix(l.text, prefix) {
					return l
				}
			case <-timeout:
				t.Fatalf("no %q line from the child within %s", prefix, d)
			}
		}
	}
	next("work ", 30*time.Second)
	hs, err := s.Holders(ctx)
	if err != nil || len(hs) != 1 || hs[0].Host != "child" {
		t.Fatalf("holders: %+v %v, want the child", hs, err)
	}
	key := s.k.slot(hs[0].Slot)
	wch := s.cli.Watch(ctx, key, clientv3.WithRev(hs[0].CreateRevision+1))

	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	var deleted time.Time
	for deleted.IsZero() {
		select {
		case wr := <-wch:
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					deleted = time.Now()
				}
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the stopped holder's slot was not freed within 30s")
		}
	}
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	cont := time.Now()
	lost := next("lost ", 10*time.Second)
	t.Logf("SIGSTOP to slot freed by etcd %s (ttl 2s); SIGCONT to the job told %s: %s",
		deleted.Sub(stopped).Round(time.Millisecond), lost.at.Sub(cont).Round(time.Millisecond), lost.text)
	if !strings.Contains(lost.text, ErrLeaseLost.Error()) {
		t.Errorf("the job's refusal %q does not name ErrLeaseLost", lost.text)
	}
	late := 0
	for _, w := range works {
		if !w.Before(deleted) {
			late++
		}
	}
	if late > 0 || len(works) == 0 {
		t.Errorf("%d of %d locker moves were begun after etcd freed the slot; want none", late, len(works))
	}
}
