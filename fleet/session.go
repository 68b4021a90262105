package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrLeaseLost is the cause (context.Cause) of the context a Member gives
// its Updater when the host's slot is no longer surely its own: the
// session lease expired, or no keep-alive was answered before the lease's
// deadline (etcd unreachable, or this process was stopped), or the slot
// key was deleted (an operator's unlock) or taken by another session. The
// wrapping error says which.
var ErrLeaseLost = errors.New("the fleet slot's lease is lost")

// ErrUpdateTimeout is the cause of the Updater's context when the update
// ran past the channel's update_timeout: it counts as failed.
var ErrUpdateTimeout = errors.New("the fleet update ran past its update_timeout")

// StopsJob reports whether cause (of the context given to Updater.Update)
// asks the update job to stop moving lockers and wind down: the slot was
// lost, or the update timed out. Any other cause (the agent stops) does
// not.
func StopsJob(cause error) bool {
	return errors.Is(cause, ErrLeaseLost) || errors.Is(cause, ErrUpdateTimeout)
}

// sessionLease is one session lease of a Member, kept alive by its own
// loop of single keep-alives (not a keep-alive stream), so that the host
// knows by its own clock until when etcd surely holds the lease: the send
// time of the last answered keep-alive plus the TTL it granted. etcd
// expires the lease TTL after it received that keep-alive, never earlier,
// and refuses to renew an expired lease; so when the local deadline passes
// (etcd unreachable, or this process was frozen by SIGSTOP or a long GC
// pause), the session is over here no later than etcd may give its keys
// to someone else. A session that is over never comes back: the member
// starts (or adopts) another.
type sessionLease struct {
	cli  *clientv3.Client
	id   clientv3.LeaseID
	ttl  time.Duration
	done chan struct{}
	stop context.CancelFunc

	mu       sync.Mutex
	deadline time.Time
	cause    error // set when done is closed: wraps ErrLeaseLost
	expired  bool  // etcd answered that the lease is gone (not: unreachable)
}

// keepSession starts keeping lease id alive; sent is the time the request
// that granted or renewed it (with ttl) was sent.
func keepSession(cli *clientv3.Client, id clientv3.LeaseID, ttl time.Duration, sent time.Time) *sessionLease {
	ctx, stop := context.WithCancel(context.Background())
	s := &sessionLease{cli: cli, id: id, ttl: ttl, done: make(chan struct{}), stop: stop, deadline: sent.Add(ttl)}
	go s.loop(ctx)
	return s
}

// Lease is the lease's id.
func (s *sessionLease) Lease() clientv3.LeaseID { return s.id }

// Done is closed when the session is over.
func (s *sessionLease) Done() <-chan struct{} { return s.done }

// Err is nil while the lease is surely alive in etcd (checked against the
// deadline now, not only when the loop notices), otherwise why not,
// wrapping ErrLeaseLost.
func (s *sessionLease) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cause != nil {
		return s.cause
	}
	if !time.Now().Before(s.deadline) {
		return s.unansweredLocked()
	}
	return nil
}

// Expired reports whether the session ended because etcd said the lease
// was gone (etcd answered), rather than for want of an answer.
func (s *sessionLease) Expired() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expired
}

func (s *sessionLease) unansweredLocked() error {
	return fmt.Errorf("%w: no keep-alive of session lease %s was answered within its %s ttl (etcd unreachable, or this process was stopped)", ErrLeaseLost, leaseHex(s.id), s.ttl)
}

// end closes the session once, with cause.
func (s *sessionLease) end(cause error, expired bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cause != nil {
		return
	}
	s.cause, s.expired = cause, expired
	close(s.done)
}

// orphan stops keeping the lease alive and ends the session (the lease is
// left to expire in etcd, or to be adopted by the next session).
func (s *sessionLease) orphan() {
	s.stop()
	s.end(fmt.Errorf("%w: session lease %s was given up", ErrLeaseLost, leaseHex(s.id)), false)
}

// loop renews the lease every ttl/3, and retries a failed renewal every
// 200 ms, until the deadline passes or etcd says the lease is gone.
func (s *sessionLease) loop(ctx context.Context) {
	every := max(s.ttl/3, 100*time.Millisecond)
	next := time.Now().Add(every)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		s.mu.Lock()
		deadline := s.deadline
		s.mu.Unlock()
		now := time.Now()
		if !now.Before(deadline) {
			s.mu.Lock()
			cause := s.unansweredLocked()
			s.mu.Unlock()
			s.end(cause, false)
			return
		}
		t.Reset(min(next.Sub(now), deadline.Sub(now)))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Now().Before(next) {
			continue // woken for the deadline: checked above
		}
		sent := time.Now()
		if !sent.Before(deadline) {
			continue // never renew past the deadline
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		resp, err := s.cli.KeepAliveOnce(rctx, s.id)
		cancel()
		switch {
		case err == nil && resp.TTL > 0:
			s.mu.Lock()
			if d := sent.Add(time.Duration(resp.TTL) * time.Second); d.After(s.deadline) && s.cause == nil {
				s.deadline = d
			}
			s.mu.Unlock()
			next = sent.Add(every)
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0):
			s.end(fmt.Errorf("%w: session lease %s expired (etcd answered: lease not found)", ErrLeaseLost, leaseHex(s.id)), true)
			return
		case ctx.Err() != nil:
			return
		default:
			next = time.Now().Add(200 * time.Millisecond)
		}
	}
}

// holdKey carries a job's hold in its context (see CheckHold).
type holdKey struct{}

type hold struct {
	sess *sessionLease
	slot int
}

// CheckHold reports whether the fleet slot of the update running under
// ctx (the context a Member passes to Updater.Update) is still surely the
// host's: nil while it is, or when ctx carries no slot (an update not run
// by the fleet); otherwise an error wrapping ErrLeaseLost. Unlike
// ctx.Err(), it compares the lease's deadline with the clock at the call,
// so it is right even in the instant after this process was resumed from
// SIGSTOP, before the context's cancellation has run. Call it just before
// each step that moves a locker.
func CheckHold(ctx context.Context) error {
	if h, ok := ctx.Value(holdKey{}).(*hold); ok {
		if err := h.sess.Err(); err != nil {
			return err
		}
	}
	if c := context.Cause(ctx); errors.Is(c, ErrLeaseLost) {
		return c
	}
	return nil
}

// holdSlot returns a context for the update that runs with slot h under
// sess: it is cancelled, with a cause wrapping ErrLeaseLost, as soon as
// the session ends (see sessionLease) or the slot key is deleted or
// re-created by another session (an etcd watch from the slot's create
// revision). stop releases the watch, cancelling hctx with its cause.
func holdSlot(ctx context.Context, cli *clientv3.Client, key string, sess *sessionLease, h Holder) (hctx context.Context, stop context.CancelCauseFunc) {
	hctx, cancel := context.WithCancelCause(context.WithValue(ctx, holdKey{}, &hold{sess: sess, slot: h.Slot}))
	wctx, wstop := context.WithCancel(hctx)
	go func() {
		defer wstop()
		rev := h.CreateRevision
		for wctx.Err() == nil {
			wch := cli.Watch(wctx, key, clientv3.WithRev(rev))
			for wr := range wch {
				if err := wr.Err(); err != nil {
					break // compacted or broken: check with a read below
				}
				for _, ev := range wr.Events {
					rev = ev.Kv.ModRevision + 1
					if ev.Type == clientv3.EventTypeDelete {
						cancel(fmt.Errorf("%w: slot %d was deleted (an operator's unlock, or its lease ended)", ErrLeaseLost, h.Slot))
						return
					}
					if ev.Kv.CreateRevision != h.CreateRevision {
						cancel(fmt.Errorf("%w: slot %d was taken by another session", ErrLeaseLost, h.Slot))
						return
					}
				}
			}
			if wctx.Err() != nil {
				return
			}
			// Read the key once, then watch from after that read.
			gctx, gcancel := withTimeout(wctx)
			resp, err := cli.Get(gctx, key)
			gcancel()
			if err == nil {
				if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != h.CreateRevision {
					cancel(fmt.Errorf("%w: slot %d is no longer this host's", ErrLeaseLost, h.Slot))
					return
				}
				rev = resp.Header.Revision + 1
			}
			select {
			case <-wctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	go func() {
		select {
		case <-wctx.Done():
		case <-sess.Done():
			cancel(sess.Err())
		}
	}()
	return hctx, cancel
}
