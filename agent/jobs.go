package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"lxcfleet/rollout"
)

// JobKind names an operation.
type JobKind string

// The operations the agent runs as jobs.
const (
	KindStopAll     JobKind = "stop-all"
	KindStartAll    JobKind = "start-all"
	KindRestart     JobKind = "restart"
	KindUpdate      JobKind = "update-code"
	KindRollback    JobKind = "rollback"
	KindCheckUpdate JobKind = "check-update"
	KindRecover     JobKind = "recover"
	// KindBuild builds a release (fetch, checkout, npm) without switching
	// current or touching a locker, e.g. ahead of a maintenance window.
	KindBuild JobKind = "build"
)

// mutating reports whether a kind changes lockers or code (one at a time).
func (k JobKind) mutating() bool { return k != KindCheckUpdate }

// JobState is where a job is in its life.
type JobState string

// The states of a job.
const (
	JobRunning     JobState = "running"
	JobSucceeded   JobState = "succeeded"
	JobFailed      JobState = "failed"
	JobCancelled   JobState = "cancelled"
	JobInterrupted JobState = "interrupted" // the agent died while it ran
)

// Done reports whether the job has ended.
func (s JobState) Done() bool { return s != JobRunning }

// Progress counts a job's containers.
type Progress struct {
	Total  int `json:"total"`
	Done   int `json:"done"`
	Failed int `json:"failed"`
}

// Job is one operation's record.
type Job struct {
	ID       string          `json:"id"`
	Kind     JobKind         `json:"kind"`
	Request  Request         `json:"request"`
	State    JobState        `json:"state"`
	Trigger  string          `json:"trigger,omitempty"` // cli, api, cron, console, boot, recovery
	Created  time.Time       `json:"created"`
	Finished time.Time       `json:"finished,omitzero"`
	Progress Progress        `json:"progress"`
	Error    string          `json:"error,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	// Plan is what the job set out to do (journaled before it begins), so
	// that recovery resumes or undoes this plan after an agent exit.
	Plan *rollout.Plan `json:"plan,omitempty"`
	// Tally is the account of the plan's lockers that every view renders
	// (see Tally): live while the job runs, settled by its result.
	Tally *Tally `json:"tally,omitempty"`
}

// Step is one journaled step of a job: written with Phase "begin" before it
// runs and "end" after.
type Step struct {
	Time      time.Time `json:"time"`
	Container string    `json:"container,omitempty"`
	Action    string    `json:"action"` // stop, start, build, switch, mark-bad, ...
	Phase     string    `json:"phase"`  // begin or end
	Outcome   string    `json:"outcome,omitempty"`
	Release   string    `json:"release,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// Event is one line of a job's live progress (the SSE stream).
type Event struct {
	Seq       int       `json:"seq"`
	Time      time.Time `json:"time"`
	Job       string    `json:"job"`
	Type      string    `json:"type"` // container, stage, state
	Container string    `json:"container,omitempty"`
	Phase     string    `json:"phase,omitempty"`
	Outcome   string    `json:"outcome,omitempty"`
	Stage     string    `json:"stage,omitempty"`
	Wave      int       `json:"wave,omitempty"`
	Message   string    `json:"message,omitempty"`
	Error     string    `json:"error,omitempty"`
	Duration  Duration  `json:"duration,omitempty"`
	// MaxStarting is W, the most lockers starting at once, when this
	// locker's start place was taken (its stopping or starting event),
	// and Starting how many places were held then, this one included.
	MaxStarting int      `json:"max_starting,omitempty"`
	Starting    int      `json:"starting,omitempty"`
	Progress    Progress `json:"progress"`
	State       JobState `json:"state,omitempty"`
	// Back marks a step of the way back (rollback, undo); Release is the
	// release a locker starts or ended on, when known.
	Back    bool   `json:"back,omitempty"`
	Release string `json:"release,omitempty"`
}

// BusyError is returned when a mutating job is submitted while another runs.
type BusyError struct{ JobID string }

func (e BusyError) Error() string {
	return fmt.Sprintf("another job is running: %s (follow it with 'lxcfleet jobs %s --follow')", e.JobID, e.JobID)
}

// run is a job in flight: its record, its cancel, and its event log.
type run struct {
	mu     sync.Mutex
	job    Job
	events []Event
	subs   map[chan Event]struct{}
	done   chan struct{}
	cancel context.CancelCauseFunc
	jr     *Journal
	log    *slog.Logger
	clock  rollout.Clock // the agent's (Deps.Clock); nil is the wall clock
	// journalErr is the first journal write of the job that failed.
	journalErr error
	// tally reduces the events of the job's plan (tallyOf is its plan).
	tally   *Tally
	tallyOf *rollout.Plan
	// now is the release each running locker of the plan runs at the
	// job's end (Agent.releasesNow), for the tally's serving line.
	now map[string]string
}

// timeNow is the run's clock's time.
func (r *run) timeNow() time.Time {
	if r.clock == nil {
		return time.Now()
	}
	return r.clock.Now()
}

// errFenced wraps the cause of a job that stopped because its fence
// failed (a fleet host's slot is gone): launching stopped at once, as on
// the agent's stop, and the job ends cancelled, not interrupted (the
// agent runs on; the fleet member takes a slot again before it moves
// another locker).
var errFenced = errors.New("fenced")

// fencedCause is the cancel cause of a job whose fence failed with err:
// errFenced, the error, and rollout.Shutdown's wind-down.
func fencedCause(err error) error {
	return fmt.Errorf("%w: %w (%w)", errFenced, err, rollout.Shutdown)
}

// errJournalWrite is the cause a job is stopped with when its journal
// cannot be written. It wraps rollout.Shutdown: as on the agent's stop,
// launching stops, the lockers in flight finish, an unproven current goes
// back on its fallback, and the next agent recovers from what was
// journaled; no locker moves without its record.
var errJournalWrite = fmt.Errorf("the job's journal cannot be written: %w", rollout.Shutdown)

// journalFailed records the job's first failed journal write: it is
// logged, sent as a "journal" stage, and stops the job (errJournalWrite).
func (r *run) journalFailed(err error) {
	r.mu.Lock()
	first := r.journalErr == nil
	if first {
		r.journalErr = err
	}
	r.mu.Unlock()
	if !first {
		return
	}
	if r.log != nil {
		r.log.Error("journal write failed: the job stops launching; lockers in flight finish", "job", r.job.ID, "err", err)
	}
	r.emit(Event{Type: "stage", Stage: "journal", Error: "journal write failed: " + err.Error() + "; the job stops launching, lockers in flight finish"})
	if r.cancel != nil {
		r.cancel(errJournalWrite)
	}
}

// journalError is the job's first failed journal write, if any.
func (r *run) journalError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.journalErr
}

// maxEventsKept bounds the replay buffer of one job.
const maxEventsKept = 20000

// emit stamps, stores and broadcasts one event. Subscribers that do not
// keep up lose events (they can re-read the job).
func (r *run) emit(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.Seq = len(r.events) + 1
	e.Time = r.timeNow()
	e.Job = r.job.ID
	e.Progress = r.job.Progress
	if r.job.Plan != nil && r.tallyOf != r.job.Plan {
		r.tally, r.tallyOf = newTally(r.job.Plan), r.job.Plan
	}
	if r.tally != nil {
		r.tally.apply(e)
	}
	if len(r.events) < maxEventsKept {
		r.events = append(r.events, e)
	}
	for ch := range r.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// subscribe returns the events so far and a channel of the next ones; the
// channel is closed when the job ends.
func (r *run) subscribe() ([]Event, chan Event, func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	past := append([]Event(nil), r.events...)
	ch := make(chan Event, 1024)
	if r.job.State.Done() {
		close(ch)
		return past, ch, func() {}
	}
	r.subs[ch] = struct{}{}
	return past, ch, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if _, ok := r.subs[ch]; ok {
			delete(r.subs, ch)
			close(ch)
		}
	}
}

// step journals a step of the job. A failed write stops the job
// (journalFailed): the step in flight still ends (losing a record beats
// stranding a locker), nothing new begins.
func (r *run) step(s Step) error {
	s.Time = r.timeNow()
	err := r.jr.AddStep(r.job.ID, s)
	if err != nil {
		r.journalFailed(fmt.Errorf("journaling step %s of %s: %w", s.Action, orDash(s.Container), err))
	}
	return err
}

// update changes the job record under the lock and persists it; a failed
// write stops the job as step's does.
func (r *run) update(fn func(*Job)) error {
	r.mu.Lock()
	fn(&r.job)
	job := r.job
	r.mu.Unlock()
	err := r.jr.PutJob(job)
	if err != nil && !job.State.Done() {
		r.journalFailed(fmt.Errorf("journaling job record %s: %w", job.ID, err))
	}
	return err
}

// snapshot returns a copy of the job record.
func (r *run) snapshot() Job {
	r.mu.Lock()
	defer r.mu.Unlock()
	j := r.job
	if j.Tally == nil {
		j.Tally = r.tally.copyOf()
	}
	return j
}

// finish records the end state and wakes subscribers.
func (r *run) finish(state JobState, result any, err error) {
	var raw json.RawMessage
	if result != nil {
		raw, _ = json.Marshal(result)
	}
	_ = r.update(func(j *Job) {
		j.State = state
		j.Finished = r.timeNow()
		j.Result = raw
		if j.Plan != nil && r.tallyOf != j.Plan {
			r.tally, r.tallyOf = newTally(j.Plan), j.Plan
		}
		if r.tally != nil {
			res, _ := result.(*Result)
			r.tally.settle(res, state, errString(err), r.now)
			j.Tally = r.tally.copyOf()
		}
		if err != nil {
			j.Error = err.Error()
		}
	})
	r.emit(Event{Type: "state", State: state, Error: errString(err)})
	r.mu.Lock()
	for ch := range r.subs {
		close(ch)
	}
	r.subs = map[chan Event]struct{}{}
	r.mu.Unlock()
	close(r.done)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// newJobID returns a sortable, unique job id.
func newJobID(now time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return now.UTC().Format("20060102T150405.000Z") + "-" + hex.EncodeToString(b)
}

// Duration is rollout's one duration type: "1.5s" in JSON and TOML.
type Duration = rollout.Duration

// isCancel reports whether err is a normal stop rather than a failure.
func isCancel(err error) bool {
	return errors.Is(err, context.Canceled)
}

// joinNames lists names for messages.
func joinNames(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:max], ", ") + fmt.Sprintf(" and %d more", len(names)-max)
}
