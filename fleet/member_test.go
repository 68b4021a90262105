package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"lxcfleet/internal/etcdtest"
)

// fakeUpdater stands in for the agent (its jobs are tested in agent/ and
// in the e2e tests): it runs commit, and each Update waits for the test to
// say how it ends, or for its context's end (then it reports ErrNotRun
// with the cause, as the agent does once its job wound down).
type fakeUpdater struct {
	// hung: Update ignores its context (a job that hangs for good).
	hung    bool
	mu      sync.Mutex
	commit  string
	calls   int
	started chan Release
	finish  chan error
	causes  chan error
}

func newFakeUpdater(commit string) *fakeUpdater {
	return &fakeUpdater{commit: commit, started: make(chan Release, 10), finish: make(chan error, 10), causes: make(chan error, 10)}
}

func (u *fakeUpdater) State(context.Context) (HostState, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return HostState{Version: "test", Commit: u.commit, Lockers: map[string]int{}}, nil
}

func (u *fakeUpdater) Update(ctx context.Context, rel Release) (string, error) {
	u.mu.Lock()
	u.calls++
	job := fmt.Sprintf("job-%d", u.calls)
	u.mu.Unlock()
	u.started <- rel
	if u.hung {
		return job, <-u.finish
	}
	select {
	case err := <-u.finish:
		if err == nil {
			u.mu.Lock()
			u.commit = rel.Commit
			u.mu.Unlock()
		}
		return job, err
	case <-ctx.Done():
		u.causes <- context.Cause(ctx)
		return job, fmt.Errorf("%w: %w", ErrNotRun, context.Cause(ctx))
	}
}

func (u *fakeUpdater) Calls() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls
}

// logBuf collects a member's log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type runningMember struct {
	*Member
	up     *fakeUpdater
	log    *logBuf
	cancel context.CancelFunc
	done   chan struct{}
}

// startMember runs a member of group g1 under prefix /lxcfleet-m on the
// cluster's endpoints until the test ends (or crash/stop is called).
func startMember(t *testing.T, endpoints []string, host string, ttl time.Duration, stateFile string, up *fakeUpdater) *runningMember {
	t.Helper()
	lb := &logBuf{}
	log := slog.New(slog.NewTextHandler(lb, nil))
	m, err := NewMember(Config{Endpoints: endpoints, Group: "g1", HostID: host, TTL: ttl, Prefix: "/lxcfleet-m", StateFile: stateFile}, up, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rm := &runningMember{Member: m, up: up, log: lb, cancel: cancel, done: make(chan struct{})}
	go func() { m.Run(ctx); close(rm.done) }()
	t.Cleanup(func() {
		rm.cancel()
		<-rm.done
		m.Close()
		if t.Failed() {
			t.Logf("log of member %s:\n%s", host, lb.String())
		}
	})
	return rm
}

// crash ends the member as a killed agent would: its client goes first,
// so nothing is revoked and its lease lives until the TTL.
func (rm *runningMember) crash() {
	rm.Close()
	rm.cancel()
	<-rm.done
}

func testStore(t *testing.T, endpoints []string) *Store {
	t.Helper()
	cli, err := Dial(Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return NewStore(cli, "/lxcfleet-m", "g1")
}

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	begin := time.Now()
	for !ok() {
		if time.Since(begin) > d {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond) // paces the poll of etcd state; the wait is also measured
	}
	return time.Since(begin)
}

func hostRecord(ctx context.Context, s *Store, id string) (HostRecord, bool) {
	hs, err := s.Hosts(ctx)
	if err != nil {
		return HostRecord{}, false
	}
	for _, h := range hs {
		if h.ID == id {
			return h, true
		}
	}
	return HostRecord{}, false
}

func readJournal(t *testing.T, path string) journalState {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st journalState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestFailureDuringQuorumLossIsNotForgotten: the canary's update fails
// while a 3-member etcd cluster has no quorum. Its outcome lands in its own
// journal at once; once quorum is back the host writes it to etcd before
// deciding anything, with the pause it implies; its slot and FAILED mark
// survive the outage; no other host takes the release; the host does not
// retry it.
func TestFailureDuringQuorumLossIsNotForgotten(t *testing.T) {
	c := etcdtest.Start(t, 3)
	s := testStore(t, c.Endpoints())
	ctx := t.Context()
	if _, err := s.Publish(ctx, Release{Ref: "main", Commit: cNew}, &Policy{MaxHosts: 2, SafeMode: true, MaxFailedHosts: 1}, "test"); err != nil {
		t.Fatal(err)
	}
	const ttl = 2 * time.Second
	jf := filepath.Join(t.TempDir(), "fleet.json")
	u1, u2 := newFakeUpdater(cOld), newFakeUpdater(cOld)
	m1 := startMember(t, c.Endpoints(), "h1", ttl, jf, u1)
	select {
	case <-u1.started:
	case <-time.After(30 * time.Second):
		t.Fatal("h1 did not start its update")
	}
	m2 := startMember(t, c.Endpoints(), "h2", ttl, "", u2)
	waitUntil(t, 30*time.Second, "h2 waiting behind the canary", func() bool {
		h, ok := hostRecord(ctx, s, "h2")
		return ok && h.State == StateWaiting && strings.Contains(h.Note, "safe mode")
	})

	c.Kill(1)
	c.Kill(2)
	lost := time.Now()
	u1.finish <- errors.New("boom: the release does not start")
	waitUntil(t, 30*time.Second, "h1's failure in its own journal", func() bool {
		st := readJournal(t, jf)
		return len(st.Pending) == 1 && !st.Pending[0].Result.OK && len(st.Failed) == 1
	})
	// Both hosts see their sessions end (no keep-alive answered for the TTL).
	waitUntil(t, 30*time.Second, "both members to say etcd is unreachable", func() bool {
		return !m1.Status().Connected && !m2.Status().Connected
	})
	t.Logf("quorum lost for %s before it returns", time.Since(lost).Round(100*time.Millisecond))

	c.Restart(1, 2)
	c.Ready(60 * time.Second)
	back := time.Now()
	var ch Channel
	tPause := waitUntil(t, 30*time.Second, "the channel paused", func() bool {
		var err error
		ch, _, err = s.Channel(ctx)
		return err == nil && ch.Paused
	})
	if !strings.Contains(ch.PausedReason, "h1: boom") {
		t.Errorf("paused because %q, want h1's failure", ch.PausedReason)
	}
	waitUntil(t, 30*time.Second, "h1 registered failed, holding its slot marked FAILED", func() bool {
		h, ok := hostRecord(ctx, s, "h1")
		hs, err := s.Holders(ctx)
		return ok && h.State == StateFailed && err == nil && len(hs) == 1 && hs[0].Host == "h1" && strings.Contains(hs[0].Failed, "boom")
	})
	t.Logf("after quorum returned (every member ready): channel paused within %s, h1 registered failed with its slot marked within %s",
		tPause.Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
	rs, err := s.Results(ctx, cNew)
	if err != nil || len(rs) != 1 || rs[0].Host != "h1" || rs[0].OK {
		t.Errorf("results on the release: %+v %v, want h1's failure only", rs, err)
	}
	if st := readJournal(t, jf); len(st.Pending) != 0 {
		t.Errorf("journal still has pending outcomes once etcd took them: %+v", st.Pending)
	}
	// h2 decides on the paused channel: it takes nothing; h1 does not
	// retry the release; the slot and its mark stay.
	waitUntil(t, 30*time.Second, "h2 to see the pause", func() bool {
		h, ok := hostRecord(ctx, s, "h2")
		return ok && h.State == StateWaiting && strings.Contains(h.Note, "paused")
	})
	if u2.Calls() != 0 || u1.Calls() != 1 {
		t.Errorf("updates after the failure: h1 %d (want 1), h2 %d (want 0)", u1.Calls(), u2.Calls())
	}
	if hs, _ := s.Holders(ctx); len(hs) != 1 || hs[0].Failed == "" {
		t.Errorf("holders %+v: want h1's slot, marked failed", hs)
	}
	if strings.Contains(m1.log.String(), "requested lease not found") {
		t.Errorf("h1's log blames etcd for an expired lease:\n%s", m1.log.String())
	}
}

// TestRestartAdoptsOwnLease: an agent that crashed (its lease not revoked)
// holding a slot mid-update: the next agent of the same host adopts the
// lease from its journal at once, so it is not locked out by its own
// previous session for the TTL; it keeps the slot (same fencing token) and
// goes on with the update.
func TestRestartAdoptsOwnLease(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := testStore(t, c.Endpoints())
	ctx := t.Context()
	if _, err := s.Publish(ctx, Release{Ref: "main", Commit: cNew}, &Policy{MaxHosts: 1}, "test"); err != nil {
		t.Fatal(err)
	}
	const ttl = 10 * time.Second
	jf := filepath.Join(t.TempDir(), "fleet.json")
	u1 := newFakeUpdater(cOld)
	m1 := startMember(t, c.Endpoints(), "h1", ttl, jf, u1)
	<-u1.started
	hs, err := s.Holders(ctx)
	if err != nil || len(hs) != 1 {
		t.Fatalf("holders: %+v %v", hs, err)
	}
	slot := hs[0]
	m1.crash()

	restart := time.Now()
	u1b := newFakeUpdater(cOld)
	m1b := startMember(t, c.Endpoints(), "h1", ttl, jf, u1b)
	select {
	case <-u1b.started:
	case <-time.After(ttl):
		t.Fatalf("the restarted agent did not resume its update within the ttl; log:\n%s", m1b.log.String())
	}
	took := time.Since(restart)
	t.Logf("restarted agent following the channel (its update resumed) %s after its start (ttl %s)", took.Round(time.Millisecond), ttl)
	if took > 2*time.Second {
		t.Errorf("the restarted agent took %s to follow the channel, want at most 2s", took)
	}
	hs, _ = s.Holders(ctx)
	if len(hs) != 1 || hs[0].Host != "h1" || hs[0].CreateRevision != slot.CreateRevision || hs[0].Lease != slot.Lease {
		t.Errorf("holders after the restart: %+v, want h1's slot kept under its adopted lease %s", hs, slot.Lease)
	}
	if h, ok := hostRecord(ctx, s, "h1"); !ok || h.State != StateUpdating || h.Lease != slot.Lease {
		t.Errorf("registry after the restart: %+v, want h1 updating under lease %s", h, slot.Lease)
	}
	if !strings.Contains(m1b.log.String(), "adopted this host's previous session lease") {
		t.Errorf("log of the restarted agent does not say it adopted its lease:\n%s", m1b.log.String())
	}
	u1b.finish <- nil
	waitUntil(t, 30*time.Second, "h1 idle on the release, slot freed", func() bool {
		h, ok := hostRecord(ctx, s, "h1")
		hs, err := s.Holders(ctx)
		return ok && h.State == StateIdle && err == nil && len(hs) == 0
	})
}

// TestLeaseExpiredIsNotAnOutage: etcd answers but the session lease is
// gone (revoked here, as an expiry during a partition looks once the host
// is back): the host says "lease expired", not "etcd unreachable", stays
// connected, starts a new session at once and is registered again with no
// stale entry; the update it was running is told at once (ErrLeaseLost)
// and it takes a slot again before going on.
func TestLeaseExpiredIsNotAnOutage(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := testStore(t, c.Endpoints())
	ctx := t.Context()
	if _, err := s.Publish(ctx, Release{Ref: "main", Commit: cNew}, &Policy{MaxHosts: 1}, "test"); err != nil {
		t.Fatal(err)
	}
	const ttl = 10 * time.Second
	u := newFakeUpdater(cOld)
	m := startMember(t, c.Endpoints(), "h1", ttl, filepath.Join(t.TempDir(), "fleet.json"), u)
	<-u.started
	old := m.Status().Lease
	id, _ := parseLease(old)
	revoked := time.Now()
	if _, err := s.cli.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	select {
	case cause := <-u.causes:
		t.Logf("the running update was told %s after the lease was revoked: %v", time.Since(revoked).Round(time.Millisecond), cause)
		if !errors.Is(cause, ErrLeaseLost) {
			t.Errorf("cause %v, want ErrLeaseLost", cause)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the running update was not told that its slot is gone")
	}
	select {
	case <-u.started:
		t.Logf("took a slot again and resumed the update %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	case <-time.After(ttl):
		t.Fatalf("no new slot within the ttl; log:\n%s", m.log.String())
	}
	st := m.Status()
	h, ok := hostRecord(ctx, s, "h1")
	if !st.Connected || st.Lease == old || !ok || h.Lease != st.Lease || h.State != StateUpdating {
		t.Errorf("after the lease expired: status %+v, registry %+v (found %v); want connected on a new lease, registered updating under it", st, h, ok)
	}
	log := m.log.String()
	if !strings.Contains(log, "lease expired") || strings.Contains(log, "etcd unreachable") {
		t.Errorf("log should say the lease expired and not that etcd is unreachable:\n%s", log)
	}
	u.finish <- nil
}

// TestHoldLostOnUnlock: an operator's unlock of the holder's slot cancels
// the running update's context at once, with ErrLeaseLost.
func TestHoldLostOnUnlock(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := testStore(t, c.Endpoints())
	ctx := t.Context()
	if _, err := s.Publish(ctx, Release{Ref: "main", Commit: cNew}, &Policy{MaxHosts: 1}, "test"); err != nil {
		t.Fatal(err)
	}
	u := newFakeUpdater(cOld)
	startMember(t, c.Endpoints(), "h1", 10*time.Second, "", u)
	<-u.started
	at := time.Now()
	if _, err := s.Unlock(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	select {
	case cause := <-u.causes:
		t.Logf("unlock to the update's context cancelled: %s (%v)", time.Since(at).Round(time.Millisecond), cause)
		if !errors.Is(cause, ErrLeaseLost) || !strings.Contains(cause.Error(), "deleted") {
			t.Errorf("cause %v, want ErrLeaseLost naming the deleted slot", cause)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the update was not told that its slot was unlocked")
	}
}

func parseLease(h string) (clientv3.LeaseID, error) {
	var id int64
	_, err := fmt.Sscanf(h, "%x", &id)
	return clientv3.LeaseID(id), err
}

// TestUpdateTimeoutCountsAsFailed: an update past the channel's
// update_timeout counts as failed at once (result, slot marked FAILED,
// channel paused), even when the job hangs for good and ignores being
// told to stop; a job that does stop is told why (ErrUpdateTimeout).
func TestUpdateTimeoutCountsAsFailed(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := testStore(t, c.Endpoints())
	ctx := t.Context()
	if _, err := s.Publish(ctx, Release{Ref: "main", Commit: cNew}, &Policy{MaxHosts: 2, MaxFailedHosts: 2, UpdateTimeout: Duration(time.Second)}, "test"); err != nil {
		t.Fatal(err)
	}
	hung := newFakeUpdater(cOld)
	hung.hung = true
	stops := newFakeUpdater(cOld)
	startMember(t, c.Endpoints(), "h1", 10*time.Second, "", hung)
	startMember(t, c.Endpoints(), "h2", 10*time.Second, "", stops)
	<-hung.started
	<-stops.started
	began := time.Now()
	select {
	case cause := <-stops.causes:
		if !errors.Is(cause, ErrUpdateTimeout) {
			t.Errorf("the job was told %v, want ErrUpdateTimeout", cause)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the job past its update_timeout was not told to stop")
	}
	waitUntil(t, 10*time.Second, "both hosts failed, slots marked, the channel paused", func() bool {
		ch, _, err := s.Channel(ctx)
		hs, herr := s.Holders(ctx)
		rs, rerr := s.Results(ctx, cNew)
		if err != nil || herr != nil || rerr != nil || !ch.Paused || len(hs) != 2 || len(rs) != 2 {
			return false
		}
		for _, h := range hs {
			if !strings.Contains(h.Failed, "update_timeout") {
				return false
			}
		}
		return true
	})
	t.Logf("update_timeout 1s: both hosts counted failed and the channel paused %s after the jobs began", time.Since(began).Round(10*time.Millisecond))
	hung.finish <- nil // let the hung job end, for the cleanup
}

// TestCorruptJournalIsMovedAside: an unreadable fleet journal does not
// stop the agent: it is moved aside, named in the log, and the member
// starts empty.
func TestCorruptJournalIsMovedAside(t *testing.T) {
	jf := filepath.Join(t.TempDir(), "fleet.json")
	if err := os.WriteFile(jf, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	j, lost, err := openJournal(jf)
	if err != nil || lost == nil || !strings.Contains(lost.Error(), jf+".corrupt") || len(j.snapshot().Pending) != 0 {
		t.Fatalf("openJournal of a corrupt file: %v %v", lost, err)
	}
	if _, err := os.Stat(jf + ".corrupt"); err != nil {
		t.Errorf("the corrupt journal was not kept aside: %v", err)
	}
	if err := j.change(func(st *journalState) { st.Lease = "abc" }); err != nil {
		t.Fatal(err)
	}
	if st := readJournal(t, jf); st.Lease != "abc" {
		t.Errorf("journal after a change: %+v", st)
	}
}

// TestChangedIdentityRevokesOldLease: an agent restarted with another
// host id (same state folder) does not adopt the lease of its previous
// identity, which would keep that identity's registry entry alive under
// its own keep-alives: it revokes it.
func TestChangedIdentityRevokesOldLease(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := testStore(t, c.Endpoints())
	ctx := t.Context()
	jf := filepath.Join(t.TempDir(), "fleet.json")
	old := startMember(t, c.Endpoints(), "old-name", 30*time.Second, jf, newFakeUpdater(cOld))
	waitUntil(t, 10*time.Second, "old-name registered", func() bool { _, ok := hostRecord(ctx, s, "old-name"); return ok })
	old.crash()
	m := startMember(t, c.Endpoints(), "new-name", 30*time.Second, jf, newFakeUpdater(cOld))
	waitUntil(t, 10*time.Second, "new-name registered and old-name gone", func() bool {
		_, gone := hostRecord(ctx, s, "old-name")
		h, ok := hostRecord(ctx, s, "new-name")
		return ok && !gone && h.Lease == m.Status().Lease
	})
	if !strings.Contains(m.log.String(), "revoked the session lease of this host's previous fleet identity") {
		t.Errorf("log does not say the old identity's lease was revoked:\n%s", m.log.String())
	}
}
