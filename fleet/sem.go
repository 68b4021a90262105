package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseHex formats a lease id as etcdctl does.
func leaseHex(id clientv3.LeaseID) string { return strconv.FormatInt(int64(id), 16) }

// take tries to take slot d.Slot for host under lease, in one transaction
// that holds only if nothing the decision read has changed since v was
// read: no slot or start under the semaphore prefix, not the channel
// (K, pause), no result on the release (a new failure). So at most K
// slots are ever held, and at most MaxPerPeriod starts land per period,
// however many hosts race. It returns the slot's create revision (the
// holder's fencing token), or 0 when the race was lost.
func (s *Store) take(ctx context.Context, v View, slot int, host string, lease clientv3.LeaseID, now time.Time) (int64, error) {
	rel := v.Channel.Release
	h := Holder{Host: host, Lease: leaseHex(lease), Release: rel, Since: now.UTC()}
	hb, _ := json.Marshal(h)
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	then := []clientv3.Op{clientv3.OpPut(s.k.slot(slot), string(hb), clientv3.WithLease(lease))}
	// A start record, while a per-period limit is set, under its own
	// lease: etcd deletes it after the period.
	var sl *clientv3.LeaseGrantResponse
	if p := v.Channel.Policy.Defaults(); p.MaxPerPeriod > 0 {
		var err error
		sl, err = s.cli.Grant(ctx, int64((p.Period.D()+time.Second-1)/time.Second))
		if err != nil {
			return 0, fmt.Errorf("taking slot %d for %s: granting the start record's lease: %w", slot, host, err)
		}
		sb, _ := json.Marshal(Start{Host: host, Commit: rel.Commit, At: now.UTC(), TTL: Duration(time.Duration(sl.TTL) * time.Second)})
		then = append(then, clientv3.OpPut(s.k.start(now, host), string(sb), clientv3.WithLease(sl.ID)))
	}
	next := v.Revision + 1
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(s.k.sem()), "<", next).WithPrefix(),
		clientv3.Compare(clientv3.ModRevision(s.k.channel()), "<", next),
		clientv3.Compare(clientv3.ModRevision(s.k.results(rel.Commit)), "<", next).WithPrefix(),
		clientv3.Compare(clientv3.CreateRevision(s.k.slot(slot)), "=", 0),
	).Then(then...).Commit()
	if sl != nil && (err != nil || !resp.Succeeded) {
		// The unused lease holds nothing; revoke it (or it expires).
		rctx, rcancel := withTimeout(context.WithoutCancel(ctx))
		_, _ = s.cli.Revoke(rctx, sl.ID)
		rcancel()
	}
	if err != nil {
		return 0, fmt.Errorf("taking slot %d for %s: %w", slot, host, err)
	}
	if !resp.Succeeded {
		return 0, nil
	}
	return resp.Header.Revision, nil
}

// rebind moves a slot the host holds under an older lease (a previous
// session of the same host id: the agent restarted) to lease: locking is
// re-entrant per host id, as FleetLock's. Fenced on the slot's create
// revision.
func (s *Store) rebind(ctx context.Context, h Holder, lease clientv3.LeaseID) (bool, error) {
	h.Lease = leaseHex(lease)
	b, _ := json.Marshal(h)
	key := s.k.slot(h.Slot)
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", h.CreateRevision)).
		Then(clientv3.OpPut(key, string(b), clientv3.WithLease(lease))).Commit()
	if err != nil {
		return false, fmt.Errorf("taking slot %d over for %s: %w", h.Slot, h.Host, err)
	}
	return resp.Succeeded, nil
}

// free deletes the host's slot if it still holds it (fenced on its create
// revision).
func (s *Store) free(ctx context.Context, h Holder) error {
	key := s.k.slot(h.Slot)
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", h.CreateRevision)).
		Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("releasing slot %d of %s: %w", h.Slot, h.Host, err)
	}
	return nil
}

// report records the host's result on rel. On success the slot is freed
// in the same transaction; on failure the slot is kept, marked failed
// (host dead is not release bad). Both slot writes are fenced on the slot's
// create revision; the result itself is the host's own record and is
// written either way. held reports whether the host still held its slot.
func (s *Store) report(ctx context.Context, h Holder, rel Release, r Result) (held bool, err error) {
	key := s.k.slot(h.Slot)
	rb, _ := json.Marshal(r)
	resKey := s.k.result(rel.Commit, r.Host)
	then := []clientv3.Op{clientv3.OpPut(resKey, string(rb))}
	if r.OK {
		then = append(then, clientv3.OpDelete(key))
	} else {
		h.Failed = r.Error
		if h.Failed == "" {
			h.Failed = "failed"
		}
		hb, _ := json.Marshal(h)
		// The slot keeps whatever lease it is under now (a report written
		// after an outage may come from a later session of the host).
		then = append(then, clientv3.OpPut(key, string(hb), clientv3.WithIgnoreLease()))
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", h.CreateRevision)).
		Then(then...).Else(clientv3.OpPut(resKey, string(rb))).Commit()
	if err != nil {
		return false, fmt.Errorf("recording the result of %s on %s: %w", r.Host, rel, err)
	}
	return resp.Succeeded, nil
}

// pauseIfFailed pauses the channel when at least max hosts failed on rel
// and it still asks for rel, fenced on the reporting host's slot: a host
// whose slot an operator unlocked meanwhile pauses nothing (its result
// still counts in every other host's decision). A host whose slot went
// with its lease during an outage still pauses a channel nobody changed
// since its update began (its mod revision is still chanRev): an
// operator who acted on the channel meanwhile is not overridden.
func (s *Store) pauseIfFailed(ctx context.Context, h Holder, rel Release, why string, chanRev int64) (bool, error) {
	for range 20 {
		ch, rev, err := s.Channel(ctx)
		if err != nil {
			return false, err
		}
		if ch.Paused || ch.Release.Commit != rel.Commit {
			return false, nil
		}
		rs, err := s.Results(ctx, rel.Commit)
		if err != nil {
			return false, err
		}
		failed := 0
		for _, r := range rs {
			if !r.OK {
				failed++
			}
		}
		if failed < ch.Policy.Defaults().MaxFailedHosts {
			return false, nil
		}
		ch.Paused, ch.PausedAt = true, time.Now().UTC()
		ch.PausedReason = fmt.Sprintf("%d %s failed on %s (max_failed_hosts %d); last: %s", failed, pluralHosts(failed), rel, ch.Policy.Defaults().MaxFailedHosts, why)
		b, _ := json.Marshal(ch)
		conds := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.k.channel()), "=", rev)}
		if chanRev == 0 || rev != chanRev {
			conds = append(conds, clientv3.Compare(clientv3.CreateRevision(s.k.slot(h.Slot)), "=", h.CreateRevision))
		}
		tctx, cancel := withTimeout(ctx)
		resp, err := s.cli.Txn(tctx).If(conds...).Then(clientv3.OpPut(s.k.channel(), string(b))).Else(clientv3.OpGet(s.k.slot(h.Slot))).Commit()
		cancel()
		if err != nil {
			return false, fmt.Errorf("pausing channel %s: %w", s.group, err)
		}
		if resp.Succeeded {
			return true, nil
		}
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(conds) == 2 && (len(kvs) == 0 || kvs[0].CreateRevision != h.CreateRevision) {
			return false, nil // no longer the holder: fenced out
		}
	}
	return false, fmt.Errorf("pausing channel %s: it kept changing (20 tries)", s.group)
}

// ErrHostIDTaken is returned by register when another live session holds
// the host id (two agents configured with one id, e.g. cloned machines
// with the same hostname; or this agent's previous session, which expires
// within the TTL).
var ErrHostIDTaken = errors.New("another live agent is registered with this host id")

// register writes the host's registry entry under its session lease, only
// if the entry is absent or already under that lease: a host id belongs to
// one live session at a time (slots are re-entrant per host id, so two
// agents sharing an id would share slots).
func (s *Store) register(ctx context.Context, rec HostRecord, lease clientv3.LeaseID) error {
	b, _ := json.Marshal(rec)
	key := s.k.host(rec.ID)
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b), clientv3.WithLease(lease))).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return fmt.Errorf("registering host %s: %w", rec.ID, err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 1 && clientv3.LeaseID(kvs[0].Lease) != lease {
		return fmt.Errorf("registering host %s: %w (lease %s)", rec.ID, ErrHostIDTaken, leaseHex(clientv3.LeaseID(kvs[0].Lease)))
	}
	resp, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(key), "=", lease)).
		Then(clientv3.OpPut(key, string(b), clientv3.WithLease(lease))).Commit()
	if err != nil {
		return fmt.Errorf("registering host %s: %w", rec.ID, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("registering host %s: %w (it changed hands meanwhile)", rec.ID, ErrHostIDTaken)
	}
	return nil
}
