package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"lxcfleet/heldsock"
	"lxcfleet/lxcctl"
)

// Sleeping lockers (issue 20, part 2). With its socket held by the host, an
// idle locker can be stopped: its socket still takes connections into its
// queue, and the holder tells the agent the moment one is pending. The
// agent then starts it through a start-all job (the same start pacing W
// and failure policy as any start), and the first request waits for the
// start instead of failing.
//
// A locker sleeps after SleepConfig.IdleStop without a connection (no TCP
// connection on its port, TIME_WAIT included, in any sample: see
// heldsock.Activity) through a stop-all job of its own (trigger "idle"): its
// desired state is then "stopped by that job", so supervision leaves it
// and an update does not move it (it wakes on the release current points
// at then). The sleeper records which job put each locker to sleep (in
// heldsock.AsleepFile, in its container folder, which `lxcfleet status`
// reads too): a later job that sets the locker's desired state (an
// operator's stop-all or start-all) ends its sleep, so lxc-stop-all and
// lxc-start-all keep their meaning.

// SleepConfig turns sleeping lockers on.
type SleepConfig struct {
	// IdleStop is how long a held-socket locker may go without a
	// connection before it is stopped to sleep; 0 never.
	IdleStop time.Duration
	// Sample is how often connections are counted (default IdleStop/6,
	// between 1 s and 30 s).
	Sample time.Duration
}

// HeldSockets is what sleeping lockers need from the host's held sockets.
type HeldSockets interface {
	// Specs returns the held socket of every locker that has one.
	Specs() (map[string]heldsock.Spec, error)
	// Watch reports each of names once a connection is pending on its
	// socket (see heldsock.Client.Watch).
	Watch(ctx context.Context, names []string) (<-chan string, error)
}

// sleeper runs sleeping lockers.
type sleeper struct {
	a        *Agent
	cfg      SleepConfig
	held     HeldSockets
	activity func(netns string) (map[int]time.Duration, error)

	mu         sync.Mutex
	sleeping   map[string]heldsock.Asleep // locker -> the idle job that stopped it
	specs      map[string]heldsock.Spec   // the held lockers, as of the last tick
	lastActive map[string]time.Time       // running held lockers
	wake       map[string]bool            // pending connection seen, not started yet
	watched    string                     // the sleeping set the watch runs for (run's own)
	rewatch    bool                       // the watch ended (its holder went away): watch again
	retry      time.Duration              // the pause before the next try of a failed watch
	watchLost  bool                       // a lost watch was logged (once, until it watches again)
	kick       chan struct{}
	waiting    atomic.Bool // a goroutine waits for the job that holds up wake-ups
}

func newSleeper(a *Agent, cfg SleepConfig, held HeldSockets) *sleeper {
	if cfg.Sample <= 0 {
		cfg.Sample = min(max(cfg.IdleStop/6, time.Second), 30*time.Second)
	}
	s := &sleeper{a: a, cfg: cfg, held: held, activity: heldsock.Activity,
		sleeping: map[string]heldsock.Asleep{}, lastActive: map[string]time.Time{}, wake: map[string]bool{}, kick: make(chan struct{}, 1)}
	return s
}

// on reports whether sleeping lockers are configured.
func (s *sleeper) on() bool { return s != nil && s.cfg.IdleStop > 0 && s.held != nil }

// isSleeping reports whether the locker sleeps.
func (s *sleeper) isSleeping(name string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sleeping[name]
	return ok
}

// mark records a locker's sleep (heldsock.AsleepFile, its one record),
// or its end when z is nil. Called with mu held.
func (s *sleeper) mark(name string, z *heldsock.Asleep) {
	sp, ok := s.specs[name]
	if !ok {
		return
	}
	var err error
	if z != nil {
		s.sleeping[name] = *z
		err = heldsock.MarkAsleep(sp, *z)
	} else {
		delete(s.sleeping, name)
		delete(s.wake, name)
		err = heldsock.Awake(sp)
	}
	if err != nil {
		s.a.log.Error("recording a sleeping locker: an agent restart would not know it sleeps", "container", name, "err", err)
	}
}

// run samples and watches until ctx ends.
func (s *sleeper) run(ctx context.Context) {
	if !s.on() {
		return
	}
	t := time.NewTicker(s.cfg.Sample)
	defer t.Stop()
	var stopWatch context.CancelFunc
	defer func() {
		if stopWatch != nil {
			stopWatch()
		}
	}()
	for {
		s.tick(ctx)
		s.wakeDue(ctx)
		if set := s.sleepingSet(); set != s.watched || s.takeRewatch() {
			if stopWatch != nil {
				stopWatch()
			}
			wctx, cancel := context.WithCancel(ctx)
			stopWatch = cancel
			s.watch(wctx, set)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
	}
}

// sleepingSet returns the sleeping lockers as one sorted string (the
// watch's identity).
func (s *sleeper) sleepingSet() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.sleeping))
	for n := range s.sleeping {
		names = append(names, n)
	}
	sort.Strings(names)
	b, _ := json.Marshal(names)
	return string(b)
}

// takeRewatch reports (once) that the watch ended without being asked to.
func (s *sleeper) takeRewatch() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rewatch
	s.rewatch = false
	return r
}

// Bounds of the pause between tries of a watch the holder did not take
// (it restarts: systemd's Restart=always, or an agent's start of it).
const (
	watchRetryFirst = 50 * time.Millisecond
	watchRetryMost  = 2 * time.Second
)

// watch asks the holder to report pending connections of the sleeping
// lockers in set; each report queues a wake-up and kicks run. When the
// holder goes away (its watch connection ends, or it does not answer),
// the watch is tried again after a pause that doubles from 50 ms to 2 s,
// logged once until it watches again: a restarted holder is watched at
// once.
func (s *sleeper) watch(ctx context.Context, set string) {
	var names []string
	_ = json.Unmarshal([]byte(set), &names)
	s.watched = set
	if len(names) == 0 {
		return
	}
	ch, err := s.held.Watch(ctx, names)
	if err != nil {
		s.watched = "" // again after the pause
		s.lostWatch(ctx, "watching sleeping lockers' sockets: trying again", err, names)
		return
	}
	s.mu.Lock()
	if s.watchLost {
		s.a.log.Info("watching sleeping lockers' sockets again", "containers", joinNames(names, 10))
	}
	s.watchLost, s.retry = false, 0
	s.mu.Unlock()
	go func() {
		got := 0
		for n := range ch {
			got++
			s.mu.Lock()
			if _, ok := s.sleeping[n]; ok {
				s.wake[n] = true
			}
			s.mu.Unlock()
			s.kickRun()
		}
		// Not run's cancel, nor the holder's end of a watch that reported
		// every name: the holder went away.
		if ctx.Err() == nil && got < len(names) {
			s.lostWatch(ctx, "the socket holder's watch of sleeping lockers ended (the holder went away): watching again", nil, names)
		}
	}()
}

// lostWatch logs a lost watch (once, until it watches again) and kicks
// run to watch again after the pause.
func (s *sleeper) lostWatch(ctx context.Context, msg string, err error, names []string) {
	s.mu.Lock()
	if !s.watchLost {
		s.watchLost = true
		args := []any{"containers", joinNames(names, 10)}
		if err != nil {
			args = append(args, "err", err)
		}
		s.a.log.Warn(msg, args...)
	}
	pause := s.retry
	s.retry = min(max(2*s.retry, watchRetryFirst), watchRetryMost)
	s.mu.Unlock()
	go func() {
		if pause > 0 {
			t := time.NewTimer(pause)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		s.mu.Lock()
		s.rewatch = true
		s.mu.Unlock()
		s.kickRun()
	}()
}

// kickRun wakes run (sample, wake, watch) without waiting.
func (s *sleeper) kickRun() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// wakeDue starts the lockers with a pending connection: one start-all job
// for all of them (the start pacing W holds across it). While another job
// runs, they wait for it.
func (s *sleeper) wakeDue(ctx context.Context) {
	s.mu.Lock()
	var names []string
	for n := range s.wake {
		names = append(names, n)
	}
	s.mu.Unlock()
	if len(names) == 0 {
		return
	}
	sort.Strings(names)
	j, err := s.a.Submit(Request{Kind: KindStartAll, Names: names, Trigger: fmt.Sprintf("wake: a connection is pending for %s", joinNames(names, 5))})
	var busy BusyError
	if errors.As(err, &busy) {
		// The running job first; its end kicks run (one waiter at a time).
		if s.waiting.CompareAndSwap(false, true) {
			go func() {
				defer s.waiting.Store(false)
				_, _ = s.a.Wait(ctx, busy.JobID)
				select {
				case s.kick <- struct{}{}:
				default:
				}
			}()
		}
		return
	}
	if err != nil {
		s.a.log.Warn("waking sleeping lockers", "err", err, "containers", joinNames(names, 10))
		return
	}
	s.a.log.Info("waking sleeping lockers: a connection is pending", "job", j.ID, "containers", joinNames(names, 10))
	s.mu.Lock()
	now := s.a.deps.Clock.Now()
	for _, n := range names {
		s.mark(n, nil)
		s.lastActive[n] = now
	}
	s.mu.Unlock()
}

// tick ends the sleep of lockers another job took over, samples the
// running held lockers' connections, and puts the idle ones to sleep.
func (s *sleeper) tick(ctx context.Context) {
	specs, err := s.held.Specs()
	if err != nil {
		s.a.log.Warn("reading held sockets for sleeping lockers", "err", err)
		return
	}
	snap, seq := s.a.inv.snapshotSeq()
	now := s.a.deps.Clock.Now()
	s.mu.Lock()
	s.specs = specs
	// The records of sleep (an earlier agent's too).
	for n, sp := range specs {
		if z, ok := heldsock.AsleepIn(filepath.Dir(sp.Dir)); ok {
			s.sleeping[n] = z
		} else {
			delete(s.sleeping, n)
		}
	}
	for n := range s.sleeping {
		if _, ok := specs[n]; !ok {
			delete(s.sleeping, n)
		}
	}
	s.mu.Unlock()
	// Connections, one sample per network namespace.
	byNS := map[string]map[int]time.Duration{}
	for _, l := range snap {
		sp, ok := specs[l.Name]
		if !ok || l.State != lxcctl.StateRunning {
			continue
		}
		if _, done := byNS[sp.NetNS]; !done {
			m, err := s.activity(sp.NetNS)
			if err != nil {
				s.a.log.Warn("counting held lockers' connections", "netns", sp.NetNS, "err", err)
				m = nil
			}
			byNS[sp.NetNS] = m
		}
	}
	_, busy := s.a.Running()
	var idle []string
	s.mu.Lock()
	for _, l := range snap {
		sp, held := specs[l.Name]
		// Another job set its desired state after it fell asleep (an
		// operator's start-all or stop-all): the sleep ends.
		if z, ok := s.sleeping[l.Name]; ok && held && l.Desired != nil && l.Desired.JobID != z.Job && l.Desired.Since.After(z.At) {
			s.mark(l.Name, nil)
		}
		if !held || l.State != lxcctl.StateRunning || l.Desired == nil || !l.Desired.Running {
			delete(s.lastActive, l.Name)
			continue
		}
		m := byNS[sp.NetNS]
		if m == nil {
			continue // no sample: never idle
		}
		last, seen := s.lastActive[l.Name]
		if age, active := m[sp.Port]; active && now.Add(-age).After(last) {
			last = now.Add(-age)
		}
		if !seen {
			last = now
		}
		s.lastActive[l.Name] = last
		if now.Sub(last) >= s.cfg.IdleStop && !busy {
			idle = append(idle, l.Name)
		}
	}
	s.mu.Unlock()
	// Lockers go to sleep only on a reading no job ran through or since:
	// an operator's stop-all that ended after it would otherwise see its
	// locker put to sleep (and woken by the next connection).
	if len(idle) == 0 || ctx.Err() != nil || !s.a.judgeable(seq) {
		return
	}
	sort.Strings(idle)
	j, err := s.a.Submit(Request{Kind: KindStopAll, Names: idle, Trigger: fmt.Sprintf("idle: no connection for %v to %s", s.cfg.IdleStop, joinNames(idle, 5))})
	if err != nil {
		s.a.log.Info("putting idle lockers to sleep: later", "err", err)
		return
	}
	s.a.log.Info("idle lockers go to sleep", "job", j.ID, "containers", joinNames(idle, 10), "idle", s.cfg.IdleStop)
	s.mu.Lock()
	for _, n := range idle {
		s.mark(n, &heldsock.Asleep{Job: j.ID, At: now})
		delete(s.lastActive, n)
	}
	s.mu.Unlock()
}
