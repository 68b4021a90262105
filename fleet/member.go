package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Updater is what a Member needs from its host's agent.
type Updater interface {
	// State says what the host runs now (its current release's commit,
	// build, lockers, last job).
	State(ctx context.Context) (HostState, error)
	// Update runs the host's update job to rel.Commit (the agent's own
	// job, journaled, never overlapping another job) and returns the job's
	// id; an error is the job's failure. ErrNotRun (wrapped) means the job
	// did not run to an end (the agent is stopping): no result is recorded.
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
	cli, err := Dial(cfg)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	m := &Member{cfg: cfg, cli: cli, store: NewStore(cli, cfg.Prefix, cfg.Group), up: up,
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
// holds is freed). While etcd is unreachable it retries and says so
// (Status, one log line per change), and starts no update.
func (m *Member) Run(ctx context.Context) {
	backoff := min(m.cfg.TTL/3, 2*time.Second)
	for ctx.Err() == nil {
		sess, err := m.session(ctx)
		if err != nil {
			m.unreachable(err)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			continue
		}
		m.serve(ctx, sess)
		m.mu.Lock()
		cut := m.cutShort
		m.mu.Unlock()
		if ctx.Err() != nil && !cut {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = m.cli.Revoke(cctx, sess.Lease())
			cancel()
		}
		sess.Orphan()
	}
}

// session grants a lease of the configured TTL (bounded, so that an
// unreachable cluster is noticed) and keeps it alive.
func (m *Member) session(ctx context.Context) (*concurrency.Session, error) {
	gctx, cancel := withTimeout(ctx)
	defer cancel()
	ttl := int64((m.cfg.TTL + time.Second - 1) / time.Second)
	lr, err := m.cli.Grant(gctx, ttl)
	if err != nil {
		return nil, fmt.Errorf("granting a %ds session lease: %w", ttl, err)
	}
	s, err := concurrency.NewSession(m.cli, concurrency.WithLease(lr.ID), concurrency.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("keeping session lease %s alive: %w", leaseHex(lr.ID), err)
	}
	m.mu.Lock()
	m.st.Lease = leaseHex(lr.ID)
	m.regAt, m.owns = time.Time{}, false
	m.mu.Unlock()
	m.log.Info("fleet session started", "lease", leaseHex(lr.ID), "ttl", m.cfg.TTL)
	return s, nil
}

// serve follows the channel under one session until it ends.
func (m *Member) serve(ctx context.Context, sess *concurrency.Session) {
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
			m.unreachable(fmt.Errorf("session lease %s expired or was revoked", leaseHex(sess.Lease())))
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
func (m *Member) step(ctx context.Context, sess *concurrency.Session) {
	hs, herr := m.up.State(ctx)
	v, err := m.store.View(ctx)
	if err != nil {
		m.unreachable(err)
		return
	}
	m.reachable(v.Channel)
	if !m.owned(ctx, sess, hs) {
		return
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
	d := Decide(v, m.cfg.HostID, hs.Commit, now)
	lease := sess.Lease()
	if d.Held != nil && d.Held.Lease != leaseHex(lease) {
		ok, err := m.store.rebind(ctx, *d.Held, lease)
		if err != nil {
			m.unreachable(err)
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
			m.unreachable(err)
			return
		}
		m.log.Info("released the fleet slot", "slot", d.Held.Slot, "why", d.Why)
		d.Held = nil
	case Take:
		cr, err := m.store.take(ctx, v, d.Slot, m.cfg.HostID, lease, now)
		if err != nil {
			m.unreachable(err)
			return
		}
		if cr == 0 {
			d.Why = "another host changed the rollout state first; deciding again"
			break
		}
		h := Holder{Slot: d.Slot, Host: m.cfg.HostID, Lease: leaseHex(lease), Release: v.Channel.Release, Since: now.UTC(), CreateRevision: cr}
		m.log.Info("took a fleet slot", "slot", d.Slot, "release", v.Channel.Release.String())
		_ = m.store.pruneStarts(ctx, now.Add(-max(v.Channel.Policy.Defaults().Period.D(), 24*time.Hour)))
		m.update(ctx, sess, hs, h, *v.Channel)
		return
	case Update:
		m.update(ctx, sess, hs, *d.Held, *v.Channel)
		return
	}
	m.setDecision(d)
	m.register(ctx, sess, hs, d.State, d.Why, false)
}

// update runs the host's update job with slot h, then reports.
func (m *Member) update(ctx context.Context, sess *concurrency.Session, hs HostState, h Holder, ch Channel) {
	rel := ch.Release
	m.setDecision(Decision{State: StateUpdating, Why: "updating to " + rel.String(), Held: &h})
	m.register(ctx, sess, hs, StateUpdating, "updating to "+rel.String(), true)
	begin := time.Now()
	job, err := m.up.Update(ctx, rel)
	if errors.Is(err, ErrNotRun) || ctx.Err() != nil {
		m.mu.Lock()
		m.cutShort = true
		m.mu.Unlock()
		m.log.Warn("the fleet update did not run to an end; the slot stays held until this host's session ends", "release", rel.String(), "err", err)
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
	held, rerr := m.store.report(ctx, h, rel, r)
	if rerr != nil {
		m.unreachable(rerr)
		return
	}
	if !held {
		m.log.Warn("the fleet slot was lost while updating (the session expired, or an operator unlocked it); the result is recorded", "release", rel.String(), "ok", r.OK)
	}
	state, note := StateIdle, "updated to "+rel.String()
	if !r.OK {
		state, note = StateFailed, fmt.Sprintf("the update to %s failed (job %s): %s", rel, job, r.Error)
		m.log.Error("fleet update failed; keeping the slot", "release", rel.String(), "job", job, "err", r.Error)
		if held {
			paused, perr := m.store.pauseIfFailed(ctx, h, rel, m.cfg.HostID+": "+r.Error)
			if perr != nil {
				m.log.Error("pausing the channel after a failed update", "err", perr)
			} else if paused {
				m.log.Warn("paused the channel: too many hosts failed on its release", "release", rel.String())
			}
		}
	} else {
		m.log.Info("fleet update done; slot released", "release", rel.String(), "job", job, "duration", r.End.Sub(r.Begin))
	}
	if hs3, err := m.up.State(ctx); err == nil {
		hs2 = hs3
	}
	m.setDecision(Decision{State: state, Why: note})
	m.register(ctx, sess, hs2, state, note, true)
}

// register writes the host's entry when it changed, or every TTL/2.
func (m *Member) register(ctx context.Context, sess *concurrency.Session, hs HostState, state, note string, force bool) {
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
		m.unreachable(err)
		return
	}
	rec.Updated = time.Time{}
	m.mu.Lock()
	m.lastReg, m.regAt, m.owns = rec, time.Now(), true
	m.mu.Unlock()
}

// owned registers the host if it has not yet under this session, and
// reports whether the host id is this session's.
func (m *Member) owned(ctx context.Context, sess *concurrency.Session, hs HostState) bool {
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
		m.log.Warn("etcd unreachable: this host starts no update until it is back; its lockers keep running", "err", err)
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
