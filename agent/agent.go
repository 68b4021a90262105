package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"lxcfleet/fleet"
	"lxcfleet/lxcctl"
	"lxcfleet/rollout"
)

// errCancelled is the cause of an operator's cancel.
var errCancelled = errors.New("cancelled by the operator")

// Containers is what the agent needs from LXC; *lxcctl.Host provides it.
type Containers interface {
	Select(ctx context.Context, names []string, group string) ([]lxcctl.Info, error)
	// The per-locker verbs of the rollout executor.
	Stop(ctx context.Context, name string, timeout time.Duration) (lxcctl.StopOutcome, error)
	StartHealthy(ctx context.Context, name string, hc lxcctl.HealthCheck, deadline time.Duration) lxcctl.StartResult
	CheckRunning(ctx context.Context, name string, hc lxcctl.HealthCheck) error
}

// Deps are the agent's collaborators.
type Deps struct {
	Containers Containers
	// Code manages releases; nil leaves update-code, rollback and
	// check-update unavailable.
	Code Code
	// ReleaseOf says which release a running locker's init really uses
	// (from its mountinfo); nil when the host has no layout.
	ReleaseOf func(initPID int) (release string, deleted bool, err error)
	// Gauge reads the host's pressure for adaptive pacing; nil: starts
	// and failures alone set W.
	Gauge rollout.Gauge
	// Held is the host's held sockets, for sleeping lockers (see
	// SleepConfig); nil leaves every locker awake.
	Held HeldSockets
	// Clock is the agent's time: every time it reads for a decision or a
	// record (job and step times, schedules, supervision, estimates) and
	// the executor's (rollout.Env.Clock); nil is the wall clock.
	Clock  rollout.Clock
	Logger *slog.Logger
}

// Config is the agent's configuration (see config.Load for the file).
type Config struct {
	// LXCPath is shown in the host overview.
	LXCPath string
	// StateDir holds the journal.
	StateDir string
	// Version is the agent's version, shown in the host overview.
	Version string
	// Schedules are cron maintenance windows.
	Schedules []Schedule
	// InventoryInterval is how often the locker snapshot is refreshed.
	InventoryInterval time.Duration
	// HealthInterval is how often running lockers are health-checked (with
	// Defaults.Health); 0 turns the background checks off.
	HealthInterval time.Duration
	// Listen is where Run serves the API.
	Listen Listen
	// Defaults fill the zero fields of requests.
	Defaults Defaults
	// KeepJobs is how many finished jobs the journal keeps.
	KeepJobs int
	// KeepReleases is how many releases a successful update keeps (besides
	// any a running locker uses); 0 keeps all.
	KeepReleases int
	// Supervision restarts lockers that stop on their own while Run runs.
	Supervision SupervisionConfig
	// Fleet, when it has endpoints, joins the host to a fleet on etcd.
	Fleet fleet.Config
	// Sleep stops idle held-socket lockers and wakes them on a connection.
	Sleep SleepConfig
}

// finishedRunTTL is how long a finished job's events stay in memory.
const finishedRunTTL = 15 * time.Minute

// Agent runs jobs on the host's lockers, one mutating job at a time, and
// journals each step so that a crash can be recovered.
type Agent struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	jr   *Journal

	// heldPageSaid: the log said once that held-socket lockers need no
	// maintenance page (agent/downtime.go).
	heldPageSaid atomic.Bool

	mu     sync.Mutex
	active *run            // the running mutating job, if any
	runs   map[string]*run // jobs of this process, for subscriptions
	wg     sync.WaitGroup
	base   context.Context // jobs run under it, not under the request's
	stop   context.CancelCauseFunc
	// jobSeq counts mutating jobs' starts and ends (written under mu, so
	// it is odd while one runs): a reading
	// of the host begun under one value and used under another may mix
	// states from before a job's end with records from after it (see
	// jobsMovedSince).
	jobSeq atomic.Uint64

	inv     *inventory
	sup     *supervisor
	watch   *watcher
	hold    atomic.Pointer[portHold] // the running offline update's port hold
	sleep   *sleeper
	metrics *metrics
	sched   *scheduler

	fleet *fleet.Member // nil without [fleet]

	ready chan struct{} // closed once Run listens
	addrs []net.Addr
}

// New opens the journal and returns an agent. Jobs that were running when
// a previous agent died are marked interrupted (Recover drives their
// lockers back to their desired state).
func New(cfg Config, deps Deps) (*Agent, error) {
	if deps.Containers == nil {
		return nil, errors.New("creating agent: no container host")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("creating agent: no state folder")
	}
	if cfg.Defaults == (Defaults{}) {
		cfg.Defaults = DefaultDefaults()
	}
	if cfg.KeepJobs <= 0 {
		cfg.KeepJobs = 500
	}
	if deps.Clock == nil {
		deps.Clock = rollout.RealClock{}
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	jr, err := OpenJournal(filepath.Join(cfg.StateDir, "journal.db"))
	if err != nil {
		return nil, err
	}
	if lost := jr.Lost(); lost != "" {
		// The job history is gone; the desired state was kept beside it,
		// and Run drives the lockers back to it.
		deps.Logger.Error("the job journal was lost; starting with a new one", "err", lost)
	}
	base, stop := context.WithCancelCause(context.Background())
	a := &Agent{cfg: cfg, deps: deps, log: deps.Logger, jr: jr, runs: map[string]*run{}, base: base, stop: stop, ready: make(chan struct{})}
	a.inv = newInventory(a, cfg.InventoryInterval)
	a.sup = newSupervisor(a, cfg.Supervision)
	a.watch = newWatcher(a)
	a.sleep = newSleeper(a, cfg.Sleep, deps.Held)
	a.metrics = newMetrics(a)
	fail := func(err error) (*Agent, error) {
		jr.Close()
		stop(nil)
		return nil, err
	}
	sched, err := newScheduler(a, cfg.Schedules)
	if err != nil {
		return fail(err)
	}
	a.sched = sched
	if err := a.initFleet(); err != nil {
		return fail(err)
	}
	if err := a.markInterrupted(); err != nil {
		return fail(err)
	}
	return a, nil
}

// Close stops running jobs with rollout.Shutdown as the cause (they stop
// launching, let lockers in flight finish their start, put current back
// when their target is unproven, and are recorded interrupted for the next
// agent's recovery), waits for them and closes the journal.
func (a *Agent) Close() error {
	a.stop(rollout.Shutdown)
	a.wg.Wait()
	a.closeFleet()
	return a.jr.Close()
}

// Journal returns the agent's journal (read-only use).
func (a *Agent) Journal() *Journal { return a.jr }

// markInterrupted turns jobs a dead agent left "running" into "interrupted".
func (a *Agent) markInterrupted() error {
	jobs, err := a.jr.Jobs(0)
	if err != nil {
		return fmt.Errorf("reading journal: %w", err)
	}
	for _, j := range jobs {
		if j.State != JobRunning {
			continue
		}
		j.State = JobInterrupted
		j.Finished = a.deps.Clock.Now()
		j.Error = "the agent stopped while this job ran; its lockers are driven back to their desired state"
		if err := a.jr.PutJob(j); err != nil {
			return fmt.Errorf("marking job %s interrupted: %w", j.ID, err)
		}
		a.log.Warn("job was interrupted by an agent crash", "job", j.ID, "kind", j.Kind)
	}
	return nil
}

// Submit validates req, starts it as a job and returns the job record at
// once. A mutating job while another runs gets a BusyError naming it.
func (a *Agent) Submit(req Request) (Job, error) {
	req, err := req.withDefaults(a.cfg.Defaults)
	if err != nil {
		return Job{}, err
	}
	body, err := a.planFor(req)
	if err != nil {
		return Job{}, err
	}
	a.mu.Lock()
	if req.Kind.mutating() && a.active != nil {
		id := a.active.job.ID
		a.mu.Unlock()
		return Job{}, BusyError{JobID: id}
	}
	if a.base.Err() != nil {
		a.mu.Unlock()
		return Job{}, errors.New("the agent is shutting down")
	}
	now := a.deps.Clock.Now()
	ctx, cancel := context.WithCancelCause(a.base)
	record := req
	record.Policy = nil // the resolved policy is the plan's, once
	r := &run{
		job:    Job{ID: newJobID(now), Kind: req.Kind, Request: record, State: JobRunning, Trigger: req.Trigger, Created: now},
		subs:   map[chan Event]struct{}{},
		done:   make(chan struct{}),
		cancel: cancel,
		jr:     a.jr,
		log:    a.log,
		clock:  a.deps.Clock,
	}
	if err := a.jr.PutJob(r.job); err != nil {
		a.mu.Unlock()
		cancel(nil)
		return Job{}, fmt.Errorf("journaling job: %w", err)
	}
	if req.Kind.mutating() {
		a.active = r
		a.jobSeq.Add(1)
	}
	a.runs[r.job.ID] = r
	a.wg.Add(1)
	a.mu.Unlock()

	log := a.log.With("job", r.job.ID, "kind", req.Kind)
	log.Info("job started", "trigger", req.Trigger)
	for _, k := range req.deprecated {
		msg := fmt.Sprintf("knob %s at the request's top level is deprecated: put it under \"policy\"", k)
		if now, ok := rollout.Deprecated[k]; ok {
			msg = fmt.Sprintf("knob %s is deprecated: use %s", k, now)
		}
		log.Warn(msg)
		r.stage("deprecated", msg) // journaled with the job, and on its stream
	}
	go func() {
		defer a.wg.Done()
		defer cancel(nil)
		result, err := body(ctx, r)
		state := JobSucceeded
		jerr := r.journalError()
		switch {
		case jerr != nil:
			// The job stopped because its journal could not be written:
			// it failed, and says why (the record on disk may still say
			// running: the next agent then recovers from what it holds).
			state = JobFailed
			err = errors.Join(fmt.Errorf("job stopped: %w", jerr), err)
			log.Error("job failed: its journal cannot be written", "err", err)
		case errors.Is(context.Cause(ctx), errFenced):
			state = JobCancelled
			log.Warn("job stopped by its fence: it begins no new locker move", "err", context.Cause(ctx))
		case errors.Is(err, rollout.Shutdown) || (err != nil && errors.Is(context.Cause(ctx), rollout.Shutdown)):
			// The next agent recovers it (NeedsRecovery).
			state = JobInterrupted
			log.Warn("job interrupted by the agent's stop", "err", err)
		case err != nil && isCancel(err):
			state = JobCancelled
			log.Info("job cancelled")
		case err != nil:
			state = JobFailed
			log.Error("job failed", "err", err)
		default:
			log.Info("job succeeded")
		}
		a.mu.Lock()
		if a.active == r {
			a.active = nil
			a.jobSeq.Add(1)
		}
		a.mu.Unlock()
		logFailedLockers(log, result)
		if state == JobSucceeded || state == JobFailed {
			// A job that moved current leaves the last update check stale:
			// check again before the job ends, so that whoever shows the
			// job's end (the console) reads the new answer.
			a.refreshUpdateCheck(a.base, req.Kind)
		}
		r.now = a.releasesNow(r.snapshot().Plan)
		r.finish(state, result, err)
		a.metrics.jobDone(r.snapshot())
		a.inv.refreshSoon()
		// Keep the finished run (and its events, for late followers) a
		// while, then serve it from the journal alone.
		time.AfterFunc(finishedRunTTL, func() {
			a.mu.Lock()
			delete(a.runs, r.job.ID)
			a.mu.Unlock()
		})
		if _, err := a.jr.PruneJobs(a.cfg.KeepJobs); err != nil {
			log.Warn("pruning job history", "err", err)
		}
	}()
	return r.snapshot(), nil
}

// jobsMovedSince reports whether a mutating job started or ended since
// jobSeq read seq. Supervision and the release watch judge the lockers
// only on readings taken with no job boundary inside them: a stop-all
// stops its lockers first and records their desired state (stopped) at
// its end, so a reading of states taken before that end and of desired
// states after it would see "should run, is stopped", and restart
// lockers the operator just stopped (seen in CI, 2026-12-06).
func (a *Agent) jobsMovedSince(seq uint64) bool { return a.jobSeq.Load() != seq }

// Running returns the running mutating job, if any.
func (a *Agent) Running() (Job, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.active == nil {
		return Job{}, false
	}
	return a.active.snapshot(), true
}

// Job returns a job's record, live when this agent runs it.
func (a *Agent) Job(id string) (Job, error) {
	a.mu.Lock()
	r := a.runs[id]
	a.mu.Unlock()
	if r != nil {
		return r.snapshot(), nil
	}
	return a.jr.Job(id)
}

// Jobs returns up to limit jobs, newest first: a running job as Job gives
// it (its live record, tally included), the others from the journal.
func (a *Agent) Jobs(limit int) ([]Job, error) {
	jobs, err := a.jr.Jobs(limit)
	if err != nil {
		return nil, err
	}
	live := make([]*run, len(jobs))
	a.mu.Lock()
	for i := range jobs {
		live[i] = a.runs[jobs[i].ID]
	}
	a.mu.Unlock()
	for i, r := range live {
		if r != nil {
			jobs[i] = r.snapshot()
		}
	}
	return jobs, nil
}

// Steps returns a job's journaled steps.
func (a *Agent) Steps(id string) ([]Step, error) {
	if _, err := a.Job(id); err != nil {
		return nil, err
	}
	return a.jr.Steps(id)
}

// Cancel asks a running job to stop. Containers already being stopped or
// started finish that step; nothing new begins.
func (a *Agent) Cancel(id string) (Job, error) {
	a.mu.Lock()
	r := a.runs[id]
	a.mu.Unlock()
	if r == nil {
		job, err := a.jr.Job(id)
		if err != nil {
			return Job{}, err
		}
		return job, invalidf("job %s is not running (state %s)", id, job.State)
	}
	if r.snapshot().State.Done() {
		return r.snapshot(), invalidf("job %s is not running (state %s)", id, r.snapshot().State)
	}
	r.cancel(errCancelled)
	return r.snapshot(), nil
}

// Follow returns a job's events so far and a channel of the next ones,
// closed when the job ends. For a job this process does not run (a finished
// one), the channel is closed at once and the events are empty.
func (a *Agent) Follow(id string) ([]Event, <-chan Event, func(), error) {
	a.mu.Lock()
	r := a.runs[id]
	a.mu.Unlock()
	if r == nil {
		if _, err := a.jr.Job(id); err != nil {
			return nil, nil, nil, err
		}
		ch := make(chan Event)
		close(ch)
		return nil, ch, func() {}, nil
	}
	past, ch, unsub := r.subscribe()
	return past, ch, unsub, nil
}

// Wait blocks until the job ends or ctx is done, and returns its record.
func (a *Agent) Wait(ctx context.Context, id string) (Job, error) {
	a.mu.Lock()
	r := a.runs[id]
	a.mu.Unlock()
	if r == nil {
		return a.jr.Job(id)
	}
	select {
	case <-r.done:
		return r.snapshot(), nil
	case <-ctx.Done():
		return r.snapshot(), ctx.Err()
	}
}

// logFailedLockers logs each locker a job failed to move, with the reason.
func logFailedLockers(log *slog.Logger, result any) {
	if result == nil {
		return
	}
	b, err := json.Marshal(result)
	if err != nil {
		return
	}
	var res Result
	if json.Unmarshal(b, &res) != nil {
		return
	}
	for _, o := range res.Outcomes {
		if o.Failed() {
			log.Error("locker failed", "container", o.Name, "outcome", o.Outcome, "err", o.Error, "back", o.Back, "back_err", o.BackError)
		}
	}
}
