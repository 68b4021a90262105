package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrNoHolder is returned by Unlock when no slot is held by the host.
var ErrNoHolder = errors.New("no slot held by that host")

// ErrNoChannel is returned when the group has no channel yet (publish a
// release first).
var ErrNoChannel = errors.New("no channel: publish a release first")

// opTimeout bounds one etcd request: an unreachable cluster is reported,
// not waited on forever.
const opTimeout = 5 * time.Second

// Store reads and writes one group's keys. Operators use it directly (the
// CLI and the agent's API); agents through a Member.
type Store struct {
	cli   *clientv3.Client
	k     keys
	group string
}

// NewStore returns the store of group under prefix ("" for DefaultPrefix).
func NewStore(cli *clientv3.Client, prefix, group string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if group == "" {
		group = DefaultGroup
	}
	return &Store{cli: cli, k: newKeys(prefix, group), group: group}
}

// Group is the store's group.
func (s *Store) Group() string { return s.group }

func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, opTimeout)
}

// Channel returns the group's channel and its etcd mod revision, or
// ErrNoChannel.
func (s *Store) Channel(ctx context.Context) (Channel, int64, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.k.channel())
	if err != nil {
		return Channel{}, 0, fmt.Errorf("reading channel %s: %w", s.group, err)
	}
	if len(resp.Kvs) == 0 {
		return Channel{}, 0, ErrNoChannel
	}
	var ch Channel
	if err := json.Unmarshal(resp.Kvs[0].Value, &ch); err != nil {
		return Channel{}, 0, fmt.Errorf("reading channel %s: %w", s.group, err)
	}
	return ch, resp.Kvs[0].ModRevision, nil
}

// updateChannel applies change to the channel in a compare-and-swap loop
// (a concurrent change is read again, never overwritten). With create, a
// missing channel starts from the zero Channel.
func (s *Store) updateChannel(ctx context.Context, what string, create bool, change func(*Channel) error) (Channel, error) {
	for range 20 {
		ch, rev, err := s.Channel(ctx)
		if errors.Is(err, ErrNoChannel) && create {
			err = nil
		}
		if err != nil {
			return Channel{}, err
		}
		if err := change(&ch); err != nil {
			return Channel{}, err
		}
		b, _ := json.Marshal(ch)
		tctx, cancel := withTimeout(ctx)
		resp, err := s.cli.Txn(tctx).If(clientv3.Compare(clientv3.ModRevision(s.k.channel()), "=", rev)).
			Then(clientv3.OpPut(s.k.channel(), string(b))).Commit()
		cancel()
		if err != nil {
			return Channel{}, fmt.Errorf("%s on channel %s: %w", what, s.group, err)
		}
		if resp.Succeeded {
			return ch, nil
		}
	}
	return Channel{}, fmt.Errorf("%s on channel %s: it kept changing under us (20 tries)", what, s.group)
}

// ErrReleaseChanged is returned by PublishIf when the channel's release
// is not the one the operator saw.
var ErrReleaseChanged = errors.New("the channel's release changed")

// Publish sets the channel's release (and, when pol is not nil, its
// policy). A paused channel stays paused: resume it after publishing the
// fix. Hosts build rel.Commit, so it must be a full commit id.
func (s *Store) Publish(ctx context.Context, rel Release, pol *Policy, by string) (Channel, error) {
	return s.PublishIf(ctx, rel, pol, by, "")
}

// PublishIf is Publish only if the channel's release commit is still
// ifCommit (a full id or a prefix of one; "none": no release published
// yet), checked in the same compare-and-swap as the write: of two
// operators publishing at once on what they both saw, the second is told
// (ErrReleaseChanged) instead of silently overwriting the first. ""
// checks nothing.
func (s *Store) PublishIf(ctx context.Context, rel Release, pol *Policy, by, ifCommit string) (Channel, error) {
	if len(rel.Commit) != 40 {
		return Channel{}, fmt.Errorf("publishing %s: want a full 40-digit commit id, got %q", rel.Ref, rel.Commit)
	}
	if pol != nil {
		if err := pol.Validate(); err != nil {
			return Channel{}, fmt.Errorf("publishing %s: %w", rel, err)
		}
	}
	return s.updateChannel(ctx, "publishing "+rel.String(), true, func(ch *Channel) error {
		if ifCommit != "" {
			cur := ch.Release.Commit
			if (ifCommit == "none" && cur != "") || (ifCommit != "none" && (cur == "" || !strings.HasPrefix(cur, ifCommit))) {
				return fmt.Errorf("publishing %s: %w: it is %s (published %s by %s), not %s; look at it again, then publish with --if-release %s",
					rel, ErrReleaseChanged, orNone(ch.Release), ch.PublishedAt.Format(time.RFC3339), ch.PublishedBy, ifCommit, orNoneShort(ch.Release))
			}
		}
		ch.Release, ch.PublishedAt, ch.PublishedBy = rel, time.Now().UTC(), by
		if pol != nil {
			ch.Policy = *pol
		}
		return nil
	})
}

func orNone(r Release) string {
	if r.Commit == "" {
		return "none"
	}
	return r.String()
}

func orNoneShort(r Release) string {
	if r.Commit == "" {
		return "none"
	}
	return r.Short()
}

// SetPolicy changes the channel's policy at run time (K included); hosts
// apply it at their next decision.
func (s *Store) SetPolicy(ctx context.Context, change func(*Policy)) (Channel, error) {
	return s.updateChannel(ctx, "setting the policy", false, func(ch *Channel) error {
		p := ch.Policy
		change(&p)
		if err := p.Validate(); err != nil {
			return err
		}
		ch.Policy = p
		return nil
	})
}

// Pause stops every host of the group from starting an update (the ones
// running finish).
func (s *Store) Pause(ctx context.Context, reason string) (Channel, error) {
	return s.updateChannel(ctx, "pausing", false, func(ch *Channel) error {
		ch.Paused, ch.PausedAt, ch.PausedReason = true, time.Now().UTC(), reason
		return nil
	})
}

// Resume lets hosts start updates again. Hosts that failed on the release
// are not retried (their failure stays recorded): unlock them, or publish
// another release. Raise max_failed_hosts to let others go on.
func (s *Store) Resume(ctx context.Context) (Channel, error) {
	return s.updateChannel(ctx, "resuming", false, func(ch *Channel) error {
		ch.Paused, ch.PausedAt, ch.PausedReason = false, time.Time{}, ""
		return nil
	})
}

// Hosts lists the registry: every live host of the group, by id.
func (s *Store) Hosts(ctx context.Context) ([]HostRecord, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.k.hosts(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("listing hosts of %s: %w", s.group, err)
	}
	out := make([]HostRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var h HostRecord
		if err := json.Unmarshal(kv.Value, &h); err != nil {
			return nil, fmt.Errorf("reading host %s: %w", kv.Key, err)
		}
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Holders lists the taken slots, by slot number.
func (s *Store) Holders(ctx context.Context) ([]Holder, error) {
	v, err := s.View(ctx)
	if err != nil {
		return nil, err
	}
	return v.Holders, nil
}

// Results lists the hosts' outcomes on a commit.
func (s *Store) Results(ctx context.Context, commit string) ([]Result, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.k.results(commit), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("reading results of %s: %w", commit, err)
	}
	return decodeResults(resp.Kvs)
}

// Unlock force-frees the slot held by host (an operator's decision: the
// host is gone for good, or its failure is understood). It deletes the
// slot only if that host still holds it (compare on the key's create
// revision): an unlock by holder id never frees someone else's slot
// (Deployer's lesson: release a lock by its owner, never by name).
func (s *Store) Unlock(ctx context.Context, host string) (Holder, error) {
	hs, err := s.Holders(ctx)
	if err != nil {
		return Holder{}, err
	}
	for _, h := range hs {
		if h.Host != host {
			continue
		}
		key := s.k.slot(h.Slot)
		tctx, cancel := withTimeout(ctx)
		resp, err := s.cli.Txn(tctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", h.CreateRevision)).
			Then(clientv3.OpDelete(key)).Commit()
		cancel()
		if err != nil {
			return Holder{}, fmt.Errorf("unlocking slot %d of %s: %w", h.Slot, host, err)
		}
		if !resp.Succeeded {
			return Holder{}, fmt.Errorf("unlocking slot %d of %s: %w (it changed hands meanwhile)", h.Slot, host, ErrNoHolder)
		}
		return h, nil
	}
	return Holder{}, fmt.Errorf("unlocking %s in group %s: %w", host, s.group, ErrNoHolder)
}

// View reads the channel, the slots, the starts and the results on the
// channel's release at one revision.
func (s *Store) View(ctx context.Context) (View, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.k.channel()),
		clientv3.OpGet(s.k.sem(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return View{}, fmt.Errorf("reading the rollout state of %s: %w", s.group, err)
	}
	v := View{Revision: resp.Header.Revision}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		var ch Channel
		if err := json.Unmarshal(kvs[0].Value, &ch); err != nil {
			return View{}, fmt.Errorf("reading channel %s: %w", s.group, err)
		}
		v.Channel = &ch
		v.ChannelRev = kvs[0].ModRevision
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		key := string(kv.Key)
		switch {
		case strings.HasPrefix(key, s.k.slots()):
			var h Holder
			if err := json.Unmarshal(kv.Value, &h); err != nil {
				return View{}, fmt.Errorf("reading slot %s: %w", key, err)
			}
			h.Slot, _ = strconv.Atoi(strings.TrimPrefix(key, s.k.slots()))
			h.CreateRevision = kv.CreateRevision
			v.Holders = append(v.Holders, h)
		case strings.HasPrefix(key, s.k.starts()):
			var st Start
			if json.Unmarshal(kv.Value, &st) == nil {
				v.Starts = append(v.Starts, st)
			}
		}
	}
	if v.Channel != nil && v.Channel.Release.Commit != "" {
		// Read at the same revision as the rest.
		r, err := s.cli.Get(ctx, s.k.results(v.Channel.Release.Commit), clientv3.WithPrefix(), clientv3.WithRev(v.Revision))
		if err != nil {
			return View{}, fmt.Errorf("reading results of %s: %w", v.Channel.Release, err)
		}
		if v.Results, err = decodeResults(r.Kvs); err != nil {
			return View{}, err
		}
	}
	return v, nil
}

func decodeResults(kvs []*mvccpb.KeyValue) ([]Result, error) {
	out := make([]Result, 0, len(kvs))
	for _, kv := range kvs {
		var r Result
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return nil, fmt.Errorf("reading result %s: %w", kv.Key, err)
		}
		out = append(out, r)
	}
	return out, nil
}
