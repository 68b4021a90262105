package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"lxcfleet/internal/etcdtest"
)

// realStore starts a real etcd (one member, its own process) and returns a
// store of a fresh group on it.
func realStore(t *testing.T) (*Store, *clientv3.Client) {
	t.Helper()
	c := etcdtest.Start(t, 1)
	cli, err := Dial(Config{Endpoints: c.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return NewStore(cli, "/lxcfleet-unit", "g1"), cli
}

func session(t *testing.T, cli *clientv3.Client, ttl int) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl))
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// tryTake is one host's read-decide-take round, as Member.step does it.
func tryTake(ctx context.Context, s *Store, host string, lease clientv3.LeaseID) (int64, Decision, error) {
	v, err := s.View(ctx)
	if err != nil {
		return 0, Decision{}, err
	}
	d := Decide(v, host, cOld, time.Now())
	if d.Action != Take {
		return 0, d, nil
	}
	cr, err := s.take(ctx, v, d.Slot, host, lease, time.Now())
	return cr, d, err
}

// TestSemaphoreOnRealEtcd: racing hosts never hold more than K slots; a
// revoked or expired lease frees its slot; K changes at run time; a slot
// moves to a host's new session (re-entrant); unlock goes by holder id;
// reports are fenced on the holder's slot.
func TestSemaphoreOnRealEtcd(t *testing.T) {
	s, cli := realStore(t)
	ctx := t.Context()
	top := t // sessions made in subtests live as long as the whole test
	if _, err := s.Publish(ctx, Release{Ref: "main", Commit: cNew}, &Policy{MaxHosts: 2}, "test"); err != nil {
		t.Fatal(err)
	}
	sess := map[string]*concurrency.Session{}
	for i := range 8 {
		sess[fmt.Sprintf("h%d", i)] = session(t, cli, 30)
	}

	t.Run("8 hosts race for K=2 slots, 5 rounds each", func(t *testing.T) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := map[string]bool{}
		for h, se := range sess {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 5 {
					cr, _, err := tryTake(ctx, s, h, se.Lease())
					if err != nil {
						t.Errorf("%s: %v", h, err)
						return
					}
					if cr != 0 {
						mu.Lock()
						won[h] = true
						mu.Unlock()
						return
					}
				}
			}()
		}
		wg.Wait()
		hs, err := s.Holders(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(hs) != 2 || len(won) != 2 {
			t.Fatalf("holders %v, winners %v: want exactly K=2", hs, won)
		}
	})

	hs, _ := s.Holders(ctx)
	first, second := hs[0], hs[1]

	t.Run("a stale view takes nothing", func(t *testing.T) {
		v, _ := s.View(ctx)
		if _, err := s.SetPolicy(ctx, func(p *Policy) { p.MaxHosts = 3 }); err != nil {
			t.Fatal(err)
		}
		cr, err := s.take(ctx, v, 2, "h7", sess["h7"].Lease(), time.Now())
		if err != nil || cr != 0 {
			t.Fatalf("take on a view older than a policy change: %d %v, want refused", cr, err)
		}
	})

	t.Run("K raised at run time: a third slot", func(t *testing.T) {
		var who string
		for h, se := range sess {
			if h == first.Host || h == second.Host {
				continue
			}
			cr, _, err := tryTake(ctx, s, h, se.Lease())
			if err != nil {
				t.Fatal(err)
			}
			if cr != 0 {
				who = h
				break
			}
		}
		hs, _ := s.Holders(ctx)
		if who == "" || len(hs) != 3 {
			t.Fatalf("after K=3: holders %v, want 3", hs)
		}
		// K lowered: nobody new gets one, the holders keep theirs.
		if _, err := s.SetPolicy(ctx, func(p *Policy) { p.MaxHosts = 1 }); err != nil {
			t.Fatal(err)
		}
		for h, se := range sess {
			if cr, _, _ := tryTake(ctx, s, h, se.Lease()); cr != 0 {
				t.Errorf("%s took a slot with 3 held and K=1", h)
			}
		}
		// The third holder's session ends (revoked): its slot goes with it.
		if err := sess[who].Close(); err != nil {
			t.Fatal(err)
		}
		if hs, _ := s.Holders(ctx); len(hs) != 2 {
			t.Errorf("after revoking %s: holders %v, want 2", who, hs)
		}
	})

	t.Run("re-entrant: a new session of the same host takes its slot over", func(t *testing.T) {
		newSess := session(top, cli, 30)
		v, _ := s.View(ctx)
		d := Decide(v, first.Host, cOld, time.Now())
		if d.Action != Update || d.Held == nil || d.Held.Slot != first.Slot {
			t.Fatalf("decision of holder %s: %+v, want Update with slot %d", first.Host, d, first.Slot)
		}
		ok, err := s.rebind(ctx, *d.Held, newSess.Lease())
		if err != nil || !ok {
			t.Fatalf("rebind: %v %v", ok, err)
		}
		old := sess[first.Host]
		sess[first.Host] = newSess
		if err := old.Close(); err != nil { // the old session ends: the slot stays
			t.Fatal(err)
		}
		hs, _ := s.Holders(ctx)
		found := false
		for _, h := range hs {
			if h.Host == first.Host {
				found = h.CreateRevision == first.CreateRevision && h.Lease == leaseHex(newSess.Lease())
			}
		}
		if !found {
			t.Errorf("holders after rebind and the old session's end: %+v; want %s on the new lease, same fencing token", hs, first.Host)
		}
	})

	t.Run("unlock by holder id; the unlocked host's report is fenced", func(t *testing.T) {
		if _, err := s.Unlock(ctx, "nobody"); !errors.Is(err, ErrNoHolder) {
			t.Errorf("unlock of a non-holder: %v, want ErrNoHolder", err)
		}
		if _, err := s.SetPolicy(ctx, func(p *Policy) { p.MaxHosts = 2 }); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Unlock(ctx, second.Host); err != nil {
			t.Fatalf("unlock %s: %v", second.Host, err)
		}
		// Someone else takes the freed slot.
		var taker string
		for h, se := range sess {
			if h == first.Host || h == second.Host {
				continue
			}
			if cr, _, _ := tryTake(ctx, s, h, se.Lease()); cr != 0 {
				taker = h
				break
			}
		}
		if taker == "" {
			t.Fatal("nobody took the unlocked slot")
		}
		// The unlocked host reports a failure: its result is written, but
		// it neither marks the new holder's slot nor pauses the channel.
		rel := Release{Ref: "main", Commit: cNew}
		held, err := s.report(ctx, second, rel, Result{Host: second.Host, Error: "boom"})
		if err != nil || held {
			t.Fatalf("report of an unlocked host: held=%v err=%v, want held=false", held, err)
		}
		paused, err := s.pauseIfFailed(ctx, second, rel, "boom", 0)
		if err != nil || paused {
			t.Errorf("pause by an unlocked host: %v %v, want none", paused, err)
		}
		hs, _ := s.Holders(ctx)
		for _, h := range hs {
			if h.Failed != "" {
				t.Errorf("slot %d of %s marked failed by someone else's report", h.Slot, h.Host)
			}
		}
		rs, _ := s.Results(ctx, cNew)
		if len(rs) != 1 || rs[0].Host != second.Host {
			t.Errorf("results: %+v, want the unlocked host's", rs)
		}
		// The holder fails for real: it keeps its slot, marked, and pauses.
		var fh Holder
		for _, h := range hs {
			if h.Host == first.Host {
				fh = h
			}
		}
		if _, err := s.SetPolicy(ctx, func(p *Policy) { p.MaxFailedHosts = 2 }); err != nil {
			t.Fatal(err)
		}
		held, err = s.report(ctx, fh, rel, Result{Host: first.Host, Error: "bad release"})
		if err != nil || !held {
			t.Fatalf("report of the holder %+v: held=%v err=%v (holders %+v)", fh, held, err, hs)
		}
		if paused, err := s.pauseIfFailed(ctx, fh, rel, "bad release", 0); err != nil || !paused {
			t.Fatalf("pause after 2 failed hosts: %v %v", paused, err)
		}
		ch, _, _ := s.Channel(ctx)
		hs, _ = s.Holders(ctx)
		kept := false
		for _, h := range hs {
			kept = kept || (h.Host == first.Host && h.Failed == "bad release")
		}
		if !ch.Paused || !kept {
			t.Errorf("after the holder failed: paused=%v holders %+v; want paused, slot kept and marked", ch.Paused, hs)
		}
	})

	t.Run("an expired lease frees the slot", func(t *testing.T) {
		if _, err := s.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Publish(ctx, Release{Ref: "main", Commit: cNew[:39] + "2"}, &Policy{MaxHosts: 5}, "test"); err != nil {
			t.Fatal(err)
		}
		lr, err := cli.Grant(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := s.View(ctx)
		d := Decide(v, "hx", cOld, time.Now())
		if d.Action != Take {
			t.Fatalf("decision: %+v", d)
		}
		if cr, err := s.take(ctx, v, d.Slot, "hx", lr.ID, time.Now()); err != nil || cr == 0 {
			t.Fatalf("take: %d %v", cr, err)
		}
		// No keep-alive (a dead host): gone within the TTL, plus slack.
		deadline := time.Now().Add(10 * time.Second)
		for {
			hs, err := s.Holders(ctx)
			if err == nil && !holds(hs, "hx") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("slot of hx still held 10s after its 2s lease stopped being kept alive: %+v", hs)
			}
			// Paces the poll: the lease's expiry is etcd's own decision,
			// read here as the holders list; 200 ms is the resolution.
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// TestHostIDBelongsToOneSession: a second live agent with the same host
// id is refused (it would share the first one's slots); the same session
// re-registers freely; once the first session ends the id is free.
func TestHostIDBelongsToOneSession(t *testing.T) {
	s, cli := realStore(t)
	ctx := t.Context()
	a, b := session(t, cli, 30), session(t, cli, 30)
	rec := HostRecord{ID: "box-1", Group: "g1", State: StateIdle}
	if err := s.register(ctx, rec, a.Lease()); err != nil {
		t.Fatalf("first registration: %v", err)
	}
	if err := s.register(ctx, rec, a.Lease()); err != nil {
		t.Fatalf("the same session again: %v", err)
	}
	if err := s.register(ctx, rec, b.Lease()); !errors.Is(err, ErrHostIDTaken) {
		t.Fatalf("a second session with the same id: %v, want ErrHostIDTaken", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.register(ctx, rec, b.Lease()); err != nil {
		t.Fatalf("after the first session ended: %v", err)
	}
	hs, err := s.Hosts(ctx)
	if err != nil || len(hs) != 1 || hs[0].ID != "box-1" {
		t.Errorf("registry: %+v %v, want box-1 once", hs, err)
	}
}

func holds(hs []Holder, host string) bool {
	for _, h := range hs {
		if h.Host == host {
			return true
		}
	}
	return false
}

// TestPerPeriodLimitIgnoresHostClocks: with at most 1 update per 3 s, a
// host whose clock is an hour ahead (its decision's now faked) cannot take
// a second start within the period: the start record lives under a lease
// that etcd expires by its own clock. Once etcd deleted it, the next host
// takes a slot.
func TestPerPeriodLimitIgnoresHostClocks(t *testing.T) {
	s, cli := realStore(t)
	ctx := t.Context()
	if _, err := s.Publish(ctx, Release{Ref: "main", Commit: cNew}, &Policy{MaxHosts: 5, MaxPerPeriod: 1, Period: Duration(3 * time.Second)}, "test"); err != nil {
		t.Fatal(err)
	}
	a, b := session(t, cli, 30), session(t, cli, 30)
	take := func(host string, lease clientv3.LeaseID, now time.Time) (int64, Decision) {
		t.Helper()
		v, err := s.View(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d := Decide(v, host, cOld, now)
		if d.Action != Take {
			return 0, d
		}
		cr, err := s.take(ctx, v, d.Slot, host, lease, now)
		if err != nil {
			t.Fatal(err)
		}
		return cr, d
	}
	if cr, d := take("ha", a.Lease(), time.Now()); cr == 0 {
		t.Fatalf("first start: %+v", d)
	}
	taken := time.Now()
	ahead := time.Now().Add(time.Hour)
	if cr, d := take("hb", b.Lease(), ahead); cr != 0 || !strings.Contains(d.Why, "max_per_period 1") {
		t.Fatalf("a host an hour ahead took a second start within the period: %d %+v", cr, d)
	}
	waitUntil(t, 30*time.Second, "the start record to expire", func() bool {
		cr, _ := take("hb", b.Lease(), ahead)
		return cr != 0
	})
	if since := time.Since(taken); since < 3*time.Second {
		t.Errorf("a second start %s after the first, within the 3s period", since)
	}
	t.Logf("second start allowed %s after the first (period 3s; etcd's lease expiry)", (time.Since(taken)).Round(10*time.Millisecond))
}
