package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Updater is what a Member needs from its host's agent.
type Updater interface {
	// State says what the host runs now (its current release's commit,
	// build, lockers, last job).
	State(ctx context.Context) (HostState, error)
	// Update runs the host's update job to rel.Commit (the agent's own
	// job, journaled, never overlapping another job) and returns the job's
	// id; an error is the job's failure. ErrNotRun (wrapped) means the job
	// did not run to an end (the agent is stopping, or the slot was lost):
	// no result is recorded.
	//
	// ctx is cancelled with a cause wrapping ErrLeaseLost as soon as the
	// host's slot is no longer surely its own (see CheckHold), or
	// ErrUpdateTimeout past the channel's update_timeout (StopsJob): the
	// job must then stop moving lockers and wind down under its policy,
	// and Update still waits for its end.
	Update(ctx context.Context, rel Release) (job string, err error)
}

// ErrNotRun is wrapped by an Updater's error when the update did not run
// to an end, so that it is neither a success nor a failure of the release.
var ErrNotRun = errors.New("the update did not run to an end")

// Status is a member's own view, for the agent's API and logs.
type Status struct {
	Group  string `json:"group"`
	HostID string `json:"host_id"`
	// Connected is false while etcd is unreachable: the host then starts
	// no update (its lockers keep running); Error is the last etcd error
	// and Since the time of the last change of Connected.
	Connected bool      `json:"connected"`
	Error     string    `json:"error,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	Lease     string    `json:"lease,omitempty"`
	// State and Note are the last decision (as in the registry).
	State   string   `json:"state"`
	Note    string   `json:"note,omitempty"`
	Slot    *Holder  `json:"slot,omitempty"`
	Channel *Channel `json:"channel,omitempty"`
}

// Member is one host in a fleet: it keeps the host's registry entry under
// a session lease and follows its group's channel (take a slot, update,
// report, release). Run it for the agent's lifetime.
type Member struct {
	cfg   Config
	cli   *clientv3.Client
	store *Store
	up    Updater
	log   *slog.Logger

	// journal is the member's own record on the host (Config.StateFile):
	// its last lease, outcomes not yet in etcd, releases it failed on.
	journal *journal

	mu sync.Mutex
	st Status
	// cutShort is set when an update was left running at ctx's end: the
	// lease is then left to expire (TTL) rather than revoked, so the slot
	// stays taken while the job winds down.
	cutShort bool
	lastReg  HostRecord
	regAt    time.Time
	// owns is set once this session registered the host id (see
	// Store.register): only then does the host take slots.
	owns bool
}

// NewMember dials etcd (lazily: an unreachable cluster is not an error
// here) and returns the member of cfg.Group.
func NewMember(cfg Config, up Updater, log *slog.Logger) (*Member, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	if err := ValidID(cfg.HostID); err != nil {
		return nil, fmt.Errorf("fleet.host_id (default: the hostname): %w", err)
	}
	j, lost, err := openJournal(cfg.StateFile)
	if err != nil {
		return nil, err
	}
	cli, err := Dial(cfg)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	if lost != nil {
		log.Error("starting with an empty fleet journal: outcomes not yet in etcd and the previous lease are forgotten", "err", lost)
	}
	m := &Member{cfg: cfg, cli: cli, store: NewStore(cli, cfg.Prefix, cfg.Group), up: up, journal: j,
		log: log.With("fleet_group", cfg.Group, "host_id", cfg.HostID)}
	m.st = Status{Group: cfg.Group, HostID: cfg.HostID, State: StateWaiting, Note: "connecting to etcd"}
	return m, nil
}

// Store is the member's store (for operators' requests through the agent).
func (m *Member) Store() *Store { return m.store }

// Close closes the etcd client.
func (m *Member) Close() error { return m.cli.Close() }

// Status returns the member's view.
func (m *Member) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.st
	return st
}

// Run keeps a session and follows the channel until ctx ends; then it
// revokes the session (the host leaves the registry at once and a slot it
// holds is freed). While etcd is unreachable it retries, backing off from
// 250 ms to min(TTL/3, 2 s), and says so (Status, one log line per
// change), and starts no update.
func (m *Member) Run(ctx context.Context) {
	const first = 250 * time.Millisecond
	backoff := first
	for ctx.Err() == nil {
		sess, err := m.session(ctx)
		if err != nil {
			m.unreachable(err)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, max(first, min(m.cfg.TTL/3, 2*time.Second)))
			continue
		}
		backoff = first
		m.serve(ctx, sess)
		m.mu.Lock()
		cut := m.cutShort
		m.mu.Unlock()
		sess.orphan()
		if ctx.Err() != nil && !cut {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if _, err := m.cli.Revoke(cctx, sess.Lease()); err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound) {
				_ = m.journal.change(func(st *journalState) { st.Lease = "" })
			}
			cancel()
		}
	}
}

// session adopts the host's previous lease while etcd still holds it (this
// process's last session, ended here by an outage, or, after a crash, the
// previous agent's, from the journal), so that the host keeps its registry
// entry and its slot; otherwise it grants a new lease of the configured
// TTL. Either way it keeps the lease alive (see sessionLease).
func (m *Member) session(ctx context.Context) (*sessionLease, error) {
	gctx, cancel := withTimeout(ctx)
	defer cancel()
	js := m.journal.snapshot()
	if prev, err := strconv.ParseInt(js.Lease, 16, 64); err == nil && prev != 0 && js.LeaseOf != m.identity() {
		if _, err := m.cli.Revoke(gctx, clientv3.LeaseID(prev)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return nil, fmt.Errorf("revoking the session lease %s of this host's previous identity %s: %w", leaseHex(clientv3.LeaseID(prev)), js.LeaseOf, err)
		}
		m.log.Info("revoked the session lease of this host's previous fleet identity (the config changed)", "lease", leaseHex(clientv3.LeaseID(prev)), "was", js.LeaseOf)
		_ = m.journal.change(func(st *journalState) { st.Lease, st.LeaseOf = "", "" })
	} else if err == nil && prev != 0 {
		sent := time.Now()
		resp, err := m.cli.KeepAliveOnce(gctx, clientv3.LeaseID(prev))
		switch {
		case err == nil && resp.TTL > 0:
			m.started(clientv3.LeaseID(prev))
			m.log.Info("fleet session resumed: adopted this host's previous session lease (etcd still held it)", "lease", leaseHex(clientv3.LeaseID(prev)), "ttl", time.Duration(resp.TTL)*time.Second)
			return keepSession(m.cli, clientv3.LeaseID(prev), time.Duration(resp.TTL)*time.Second, sent), nil
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || err == nil:
			// Renewing an expired lease waits for its revocation: its keys
			// (registry entry, slot) are gone already.
			m.log.Info("this host's previous fleet session lease expired; starting a new session", "lease", leaseHex(clientv3.LeaseID(prev)))
			_ = m.journal.change(func(st *journalState) { st.Lease = "" })
		default:
			return nil, fmt.Errorf("renewing the previous session lease %s: %w", leaseHex(clientv3.LeaseID(prev)), err)
		}
	}
	ttl := int64((m.cfg.TTL + time.Second - 1) / time.Second)
	sent := time.Now()
	lr, err := m.cli.Grant(gctx, ttl)
	if err != nil {
		return nil, fmt.Errorf("granting a %ds session lease: %w", ttl, err)
	}
	if err := m.journal.change(func(st *journalState) { st.Lease, st.LeaseOf = leaseHex(lr.ID), m.identity() }); err != nil {
		m.log.Warn("the fleet session lease is not journaled: after a crash this host waits up to the ttl for it", "err", err)
	}
	m.started(lr.ID)
	m.log.Info("fleet session started", "lease", leaseHex(lr.ID), "ttl", time.Duration(lr.TTL)*time.Second)
	return keepSession(m.cli, lr.ID, time.Duration(lr.TTL)*time.Second, sent), nil
}

// identity names the keys this member's lease holds.
func (m *Member) identity() string {
	return strings.TrimRight(m.cfg.Prefix, "/") + "/" + m.cfg.Group + "/" + m.cfg.HostID
}

func (m *Member) started(id clientv3.LeaseID) {
	m.mu.Lock()
	m.st.Lease = leaseHex(id)
	m.regAt, m.owns = time.Time{}, false
	m.mu.Unlock()
}

// serve follows the channel under one session until it ends.
func (m *Member) serve(ctx context.Context, sess *sessionLease) {
	tick := time.NewTicker(min(2*time.Second, m.cfg.TTL/2))
	defer tick.Stop()
	wctx, wstop := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wstop()
	var wch clientv3.WatchChan
	for {
		if wch == nil {
			wch = m.cli.Watch(wctx, m.store.k.base, clientv3.WithPrefix())
		}
		m.step(ctx, sess)
		select {
		case <-ctx.Done():
			return
		case <-sess.Done():
			if sess.Expired() {
				// etcd answered: not an outage.
				m.log.Warn("fleet session lease expired; starting a new session", "err", sess.Err())
			} else {
				m.unreachable(sess.Err())
			}
			return
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				wch = nil
				select { // no leader, or a broken stream: do not spin
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
				continue
			}
			// Other hosts' registry refreshes change nothing here.
			relevant := false
			for _, ev := range wr.Events {
				if !strings.HasPrefix(string(ev.Kv.Key), m.store.k.hosts()) {
					relevant = true
				}
			}
			if !relevant {
				continue
			}
			// A freed slot wakes every waiting host at once: a random
			// pause of up to 200 ms spreads them (the transaction lets one
			// win anyway; the others would only re-read and lose).
			select {
			case <-ctx.Done():
				return
			case <-time.After(rand.N(200 * time.Millisecond)):
			}
		case <-tick.C:
		}
	}
}

// step reads, decides and acts once.
func (m *Member) step(ctx context.Context, sess *sessionLease) {
	hs, herr := m.up.State(ctx)
	v, err := m.store.View(ctx)
	if err != nil {
		m.etcdError(sess, err)
		return
	}
	m.reachable(v.Channel)
	if !m.owned(ctx, sess, hs) {
		return
	}
	// Outcomes not yet in etcd go first: nothing is decided before etcd
	// knows them (and the pause they imply).
	if len(m.journal.snapshot().Pending) > 0 {
		if err := m.flush(ctx); err != nil {
			m.etcdError(sess, err)
			return
		}
		if v, err = m.store.View(ctx); err != nil {
			m.etcdError(sess, err)
			return
		}
	}
	if herr != nil {
		// A host that cannot say what it runs takes no part (it would
		// take a slot and fail): it waits, and says why.
		why := "cannot read this host's state: " + herr.Error()
		if m.Status().Note != why {
			m.log.Warn("not following the channel", "err", herr)
		}
		m.setDecision(Decision{State: StateWaiting, Why: why})
		m.register(ctx, sess, hs, StateWaiting, why, false)
		return
	}
	now := time.Now()
	if v.Channel != nil {
		// This host's own journal says it failed on the release: it never
		// takes it again, whatever etcd says.
		if r, ok := m.journal.snapshot().failedOn(v.Channel.Release.Commit); ok && !hasResult(v.Results, m.cfg.HostID) {
			v.Results = append(v.Results, r)
		}
	}
	d := Decide(v, m.cfg.HostID, hs.Commit, now)
	lease := sess.Lease()
	if d.Held != nil && d.Held.Lease != leaseHex(lease) {
		ok, err := m.store.rebind(ctx, *d.Held, lease)
		if err != nil {
			m.etcdError(sess, err)
			return
		}
		if ok {
			m.log.Info("took over this host's slot from its previous session", "slot", d.Held.Slot, "old_lease", d.Held.Lease)
			d.Held.Lease = leaseHex(lease)
		}
	}
	switch d.Action {
	case Free:
		if err := m.store.free(ctx, *d.Held); err != nil {
			m.etcdError(sess, err)
			return
		}
		m.log.Info("released the fleet slot", "slot", d.Held.Slot, "why", d.Why)
		d.Held = nil
	case Take:
		cr, err := m.store.take(ctx, v, d.Slot, m.cfg.HostID, lease, now)
		if err != nil {
			m.etcdError(sess, err)
			return
		}
		if cr == 0 {
			d.Why = "another host changed the rollout state first; deciding again"
			break
		}
		h := Holder{Slot: d.Slot, Host: m.cfg.HostID, Lease: leaseHex(lease), Release: v.Channel.Release, Since: now.UTC(), CreateRevision: cr}
		m.log.Info("took a fleet slot", "slot", d.Slot, "release", v.Channel.Release.String())
		m.update(ctx, sess, hs, h, *v.Channel, v.ChannelRev)
		return
	case Update:
		m.update(ctx, sess, hs, *d.Held, *v.Channel, v.ChannelRev)
		return
	}
	m.setDecision(d)
	m.register(ctx, sess, hs, d.State, d.Why, false)
}

// update runs the host's update job with slot h, then reports: the
// outcome goes to the host's journal first, then to etcd (see flush).
func (m *Member) update(ctx context.Context, sess *sessionLease, hs HostState, h Holder, ch Channel, chanRev int64) {
	rel := ch.Release
	m.setDecision(Decision{State: StateUpdating, Why: "updating to " + rel.String(), Held: &h})
	m.register(ctx, sess, hs, StateUpdating, "updating to "+rel.String(), true)
	begin := time.Now()
	hctx, stop := holdSlot(ctx, m.cli, m.store.k.slot(h.Slot), sess, h)
	done := make(chan updateOutcome, 1)
	go func() {
		job, err := m.up.Update(hctx, rel)
		done <- updateOutcome{job, err}
	}()
	var timeout <-chan time.Time
	if d := ch.Policy.UpdateTimeout.D(); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	var o updateOutcome
	select {
	case o = <-done:
	case <-timeout:
		m.timedOut(ctx, sess, hs, h, ch, chanRev, begin, stop, done)
		return
	}
	job, err := o.job, o.err
	lost := CheckHold(hctx)
	stop(nil)
	if ctx.Err() != nil || (errors.Is(err, ErrNotRun) && lost == nil) {
		m.mu.Lock()
		m.cutShort = true
		m.mu.Unlock()
		m.log.Warn("the fleet update did not run to an end; the slot stays held until this host's session ends", "release", rel.String(), "err", err)
		return
	}
	if errors.Is(err, ErrNotRun) {
		m.log.Warn("the fleet slot was lost during the update; the job was told to stop moving lockers; deciding again", "release", rel.String(), "job", job, "why", lost)
		return
	}
	r := Result{Host: m.cfg.HostID, OK: err == nil, Job: job, Begin: begin.UTC(), End: time.Now().UTC()}
	if err != nil {
		r.Error = err.Error()
	}
	hs2, serr := m.up.State(ctx)
	if serr != nil {
		hs2 = hs
	}
	if r.OK && serr == nil && hs2.Commit != rel.Commit {
		// A job that succeeded without putting the host on the commit
		// would be retried for ever: it counts as a failure.
		r.OK, r.Error = false, fmt.Sprintf("job %s succeeded but the host runs commit %s, not %s", job, hs2.Commit, rel.Commit)
	}
	if lost != nil {
		m.log.Warn("the fleet slot was lost while updating; the outcome is recorded", "release", rel.String(), "ok", r.OK, "why", lost)
	}
	m.record(ctx, sess, hs2, h, rel, r, chanRev)
}

// record journals an update's outcome, writes it to etcd (see flush) and
// registers the host's new state.
func (m *Member) record(ctx context.Context, sess *sessionLease, hs HostState, h Holder, rel Release, r Result, chanRev int64) {
	jerr := m.journal.change(func(st *journalState) {
		st.Pending = append(st.Pending, pendingReport{Holder: h, Release: rel, Result: r, ChannelRev: chanRev})
		if !r.OK {
			st.Failed = append(st.Failed, ownFailure{Commit: rel.Commit, Result: r})
			st.Failed = st.Failed[max(0, len(st.Failed)-maxOwnFailures):]
		}
	})
	if jerr != nil {
		m.log.Error("journaling the fleet update's outcome (it is kept in memory and written to etcd)", "err", jerr)
	}
	state, note := StateIdle, "updated to "+rel.String()
	if !r.OK {
		state, note = StateFailed, fmt.Sprintf("the update to %s failed (job %s): %s", rel, r.Job, r.Error)
	}
	m.setDecision(Decision{State: state, Why: note})
	if err := m.flush(ctx); err != nil {
		m.etcdError(sess, err)
		return
	}
	if hs2, err := m.up.State(ctx); err == nil {
		hs = hs2
	}
	m.register(ctx, sess, hs, state, note, true)
}

// updateOutcome is what Updater.Update returned.
type updateOutcome struct {
	job string
	err error
}

// timedOut handles an update past the channel's update_timeout: it counts
// as failed at once (result, FAILED mark, pause: written before the job
// ends, so a job that hangs for good holds nothing up), the job is told to
// stop (ErrUpdateTimeout), and its end is then waited for.
func (m *Member) timedOut(ctx context.Context, sess *sessionLease, hs HostState, h Holder, ch Channel, chanRev int64, begin time.Time, stop context.CancelCauseFunc, done <-chan updateOutcome) {
	d := ch.Policy.UpdateTimeout.D()
	why := fmt.Errorf("%w (%s)", ErrUpdateTimeout, d)
	m.log.Error("the fleet update ran past its update_timeout: it counts as failed; stopping the job", "release", ch.Release.String(), "update_timeout", d)
	stop(why)
	r := Result{Host: m.cfg.HostID, Error: why.Error(), Begin: begin.UTC(), End: time.Now().UTC()}
	m.record(ctx, sess, hs, h, ch.Release, r, chanRev)
	select {
	case o := <-done:
		m.log.Warn("the timed-out fleet update job ended", "job", o.job, "err", o.err)
	case <-ctx.Done():
	}
}

// flush writes the journaled outcomes to etcd, oldest first, each with the
// pause it implies, and drops each from the journal once written. The
// first etcd error stops it (the caller retries at its next step).
func (m *Member) flush(ctx context.Context) error {
	for _, p := range m.journal.snapshot().Pending {
		rel, r := p.Release, p.Result
		held, err := m.store.report(ctx, p.Holder, rel, r)
		if err != nil {
			return err
		}
		if !held {
			m.log.Warn("the fleet slot was lost while updating (the session expired, or an operator unlocked it); the result is recorded", "release", rel.String(), "ok", r.OK)
		}
		if r.OK {
			m.log.Info("fleet update done; slot released", "release", rel.String(), "job", r.Job, "duration", r.End.Sub(r.Begin))
		} else {
			m.log.Error("fleet update failed; keeping the slot", "release", rel.String(), "job", r.Job, "err", r.Error)
			paused, err := m.store.pauseIfFailed(ctx, p.Holder, rel, m.cfg.HostID+": "+r.Error, p.ChannelRev)
			if err != nil {
				return err
			}
			if paused {
				m.log.Warn("paused the channel: too many hosts failed on its release", "release", rel.String())
			}
		}
		if err := m.journal.change(func(st *journalState) {
			st.Pending = slices.DeleteFunc(st.Pending, func(q pendingReport) bool {
				return q.Release == rel && q.Result.Job == r.Job && q.Result.Begin.Equal(r.Begin)
			})
		}); err != nil {
			m.log.Warn("dropping a written outcome from the fleet journal (it will be written again, harmlessly)", "err", err)
		}
	}
	return nil
}

func hasResult(rs []Result, host string) bool {
	for _, r := range rs {
		if r.Host == host {
			return true
		}
	}
	return false
}

// etcdError records an etcd error of a step. An error saying the session
// lease is not found means etcd answered and the lease expired: the
// session ends (a new one follows at once), and it is not an outage.
func (m *Member) etcdError(sess *sessionLease, err error) {
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		sess.end(fmt.Errorf("%w: session lease %s expired (etcd answered: %v)", ErrLeaseLost, leaseHex(sess.Lease()), err), true)
		return
	}
	m.unreachable(err)
}

// register writes the host's entry when it changed, or every TTL/2.
func (m *Member) register(ctx context.Context, sess *sessionLease, hs HostState, state, note string, force bool) {
	rec := HostRecord{ID: m.cfg.HostID, Group: m.cfg.Group, HostState: hs, State: state, Note: note, Lease: leaseHex(sess.Lease())}
	m.mu.Lock()
	same := reflect.DeepEqual(rec, m.lastReg) && time.Since(m.regAt) < m.cfg.TTL/2
	m.mu.Unlock()
	if same && !force {
		return
	}
	rec.Updated = time.Now().UTC()
	err := m.store.register(ctx, rec, sess.Lease())
	if errors.Is(err, ErrHostIDTaken) {
		m.mu.Lock()
		was := m.owns
		m.owns = false
		m.mu.Unlock()
		if was || m.Status().Note != err.Error() {
			m.log.Warn("not following the channel: the host id is registered by another live session (two agents with one host_id, or this agent's previous run until its lease expires within the ttl)", "err", err)
		}
		m.setDecision(Decision{State: StateWaiting, Why: err.Error()})
		return
	}
	if err != nil {
		m.etcdError(sess, err)
		return
	}
	rec.Updated = time.Time{}
	m.mu.Lock()
	m.lastReg, m.regAt, m.owns = rec, time.Now(), true
	m.mu.Unlock()
}

// owned registers the host if it has not yet under this session, and
// reports whether the host id is this session's.
func (m *Member) owned(ctx context.Context, sess *sessionLease, hs HostState) bool {
	m.mu.Lock()
	owns := m.owns
	m.mu.Unlock()
	if owns {
		return true
	}
	m.register(ctx, sess, hs, StateWaiting, "joining", true)
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.owns
}

func (m *Member) setDecision(d Decision) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st.State, m.st.Note = d.State, d.Why
	if d.Held != nil {
		h := *d.Held
		m.st.Slot = &h
	} else {
		m.st.Slot = nil
	}
}

// unreachable records an etcd error; the first of a run is logged.
func (m *Member) unreachable(err error) {
	m.mu.Lock()
	was := m.st.Connected || m.st.Since.IsZero()
	m.st.Error = err.Error()
	if was {
		m.st.Connected, m.st.Since = false, time.Now()
		m.st.State, m.st.Note = StateWaiting, "etcd unreachable: not updating; the lockers keep running"
	}
	m.mu.Unlock()
	if was {
		m.log.Warn("etcd unreachable: this host starts no update until it is back; its lockers keep running", "endpoints", strings.Join(m.cfg.Endpoints, ","), "err", err)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if perr := Probe(ctx, m.cfg); perr != nil {
				m.log.Warn("etcd unreachable: what the endpoints say", "probe", perr.Error())
			}
		}()
	}
}

func (m *Member) reachable(ch *Channel) {
	m.mu.Lock()
	was := m.st.Connected
	m.st.Channel = ch
	if !was {
		m.st.Connected, m.st.Since, m.st.Error = true, time.Now(), ""
	}
	m.mu.Unlock()
	if !was {
		m.log.Info("etcd reachable: following the channel")
	}
}
