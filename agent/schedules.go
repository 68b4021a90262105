package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule runs a job on a cron spec: a maintenance window.
type Schedule struct {
	// Name identifies the schedule in logs and the API.
	Name string `json:"name" toml:"name"`
	// Cron is a cron spec: five fields ("0 4 * * SUN"), six with seconds,
	// or a descriptor ("@hourly", "@every 30s").
	Cron string `json:"cron" toml:"cron"`
	// Request is the job to run; its Kind is required.
	Request Request `json:"request" toml:"request"`
}

// ScheduleInfo is a schedule's state.
type ScheduleInfo struct {
	Name    string    `json:"name"`
	Cron    string    `json:"cron"`
	Kind    JobKind   `json:"kind"`
	Next    time.Time `json:"next,omitzero"`
	Prev    time.Time `json:"prev,omitzero"`
	LastJob string    `json:"last_job,omitempty"`
	Last    string    `json:"last,omitempty"` // running, succeeded, failed: ..., skipped: ..., no news
	LastAt  time.Time `json:"last_at,omitzero"`
	Skipped int       `json:"skipped"` // runs skipped because a job ran
}

// cronParser accepts 5 or 6 fields and descriptors.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ValidateSchedule checks a schedule's spec and request.
func ValidateSchedule(s Schedule, d Defaults) error {
	if s.Name == "" {
		return errors.New("schedule without a name")
	}
	if _, err := cronParser.Parse(s.Cron); err != nil {
		return fmt.Errorf("schedule %q: invalid cron %q: %w", s.Name, s.Cron, err)
	}
	if _, err := s.Request.withDefaults(d); err != nil {
		return fmt.Errorf("schedule %q: %w", s.Name, err)
	}
	return nil
}

// scheduler runs the configured schedules with robfig/cron.
type scheduler struct {
	a    *Agent
	c    *cron.Cron
	mu   sync.Mutex
	info map[string]*ScheduleInfo
	ids  map[string]cron.EntryID
	list []Schedule
}

func newScheduler(a *Agent, list []Schedule) (*scheduler, error) {
	s := &scheduler{a: a, c: cron.New(cron.WithParser(cronParser)), info: map[string]*ScheduleInfo{}, ids: map[string]cron.EntryID{}, list: list}
	for _, sc := range list {
		if err := ValidateSchedule(sc, a.cfg.Defaults); err != nil {
			return nil, err
		}
		if _, dup := s.info[sc.Name]; dup {
			return nil, fmt.Errorf("schedule %q defined twice", sc.Name)
		}
		s.info[sc.Name] = &ScheduleInfo{Name: sc.Name, Cron: sc.Cron, Kind: sc.Request.Kind}
		// The last run and its result outlive the agent (journal meta).
		if raw, err := a.jr.Meta(scheduleMetaKey(sc.Name)); err == nil && raw != "" {
			var last ScheduleInfo
			if json.Unmarshal([]byte(raw), &last) == nil {
				in := s.info[sc.Name]
				in.Last, in.LastJob, in.LastAt, in.Skipped = last.Last, last.LastJob, last.LastAt, last.Skipped
			}
		}
		id, err := s.c.AddFunc(sc.Cron, func() { s.fire(sc) })
		if err != nil {
			return nil, fmt.Errorf("schedule %q: %w", sc.Name, err)
		}
		s.ids[sc.Name] = id
	}
	return s, nil
}

// fire submits the schedule's job; a busy agent skips this run.
func (s *scheduler) fire(sc Schedule) {
	req := sc.Request
	req.Trigger = "cron:" + sc.Name
	var job Job
	var err error
	// Any running job (a check too: it fetches the same mirror) makes this
	// run skip; Submit refuses a second mutating job on its own as well.
	before, _ := s.a.LastUpdateCheck()
	if id, ok := s.a.anyRunning(); ok {
		err = BusyError{JobID: id}
	} else {
		job, err = s.a.Submit(req)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.info[sc.Name]
	var busy BusyError
	switch {
	case errors.As(err, &busy):
		in.Last = "skipped: job " + busy.JobID + " was running"
		in.Skipped++
		s.a.log.Warn("scheduled run skipped: another job is running", "schedule", sc.Name, "kind", sc.Request.Kind, "job", busy.JobID)
	case err != nil:
		in.Last = "failed to start: " + err.Error()
		s.a.log.Error("scheduled run failed to start", "schedule", sc.Name, "err", err)
	default:
		in.Last, in.LastJob = "running", job.ID
		s.a.log.Info("scheduled run started", "schedule", sc.Name, "job", job.ID)
		go s.follow(sc, job.ID, before)
	}
	in.LastAt = s.a.deps.Clock.Now()
	s.save(in)
}

// scheduleMetaKey is where a schedule's last run is kept in the journal.
func scheduleMetaKey(name string) string { return "schedule/" + name }

// save persists a schedule's last run (called with mu held).
func (s *scheduler) save(in *ScheduleInfo) {
	b, err := json.Marshal(in)
	if err == nil {
		err = s.a.jr.SetMeta(scheduleMetaKey(in.Name), string(b))
	}
	if err != nil {
		s.a.log.Warn("recording a schedule's last run", "schedule", in.Name, "err", err)
	}
}

// follow records the end of a scheduled job as the schedule's last result.
// A scheduled check-update with no news (the same answer as the check
// before it) leaves no row in the job history: only checks that say
// something new, and failures, stay.
func (s *scheduler) follow(sc Schedule, id string, before json.RawMessage) {
	j, err := s.a.Wait(s.a.base, id)
	if err != nil {
		return
	}
	last := string(j.State)
	if j.Error != "" {
		last += ": " + j.Error
	}
	if sc.Request.Kind == KindCheckUpdate && j.State == JobSucceeded {
		if after, _ := s.a.LastUpdateCheck(); sameCheck(before, after) {
			last = "no news"
			if err := s.a.jr.DeleteJob(id); err != nil {
				s.a.log.Warn("dropping a scheduled check with no news from the history", "job", id, "err", err)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.info[sc.Name]
	if in.LastJob != id {
		return // a later run already reported
	}
	in.Last, in.LastAt = last, s.a.deps.Clock.Now()
	s.save(in)
}

// sameCheck reports whether two recorded update checks say the same thing
// (their time aside).
func sameCheck(a, b json.RawMessage) bool {
	strip := func(raw json.RawMessage) string {
		var m map[string]any
		if json.Unmarshal(raw, &m) != nil {
			return string(raw)
		}
		delete(m, "checked_at")
		out, _ := json.Marshal(m)
		return string(out)
	}
	return a != nil && b != nil && strip(a) == strip(b)
}

// infos returns every schedule with its next and previous run.
func (s *scheduler) infos() []ScheduleInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ScheduleInfo, 0, len(s.list))
	for _, sc := range s.list {
		in := *s.info[sc.Name]
		e := s.c.Entry(s.ids[sc.Name])
		in.Next, in.Prev = e.Next, e.Prev
		if in.Next.IsZero() { // not started yet: compute it
			if sched, err := cronParser.Parse(sc.Cron); err == nil {
				in.Next = sched.Next(s.a.deps.Clock.Now())
			}
		}
		out = append(out, in)
	}
	return out
}

// anyRunning returns the id of a job this agent is running, if any.
func (a *Agent) anyRunning() (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.active != nil {
		return a.active.job.ID, true
	}
	for id, r := range a.runs {
		if !r.snapshot().State.Done() {
			return id, true
		}
	}
	return "", false
}

// Schedules returns the schedules with their next runs.
func (a *Agent) Schedules() []ScheduleInfo {
	if a.sched == nil {
		return []ScheduleInfo{}
	}
	return a.sched.infos()
}

// PlanSchedules validates schedules and returns when each would run next,
// for a client with no agent running them.
func PlanSchedules(list []Schedule) ([]ScheduleInfo, error) {
	out := make([]ScheduleInfo, 0, len(list))
	for _, sc := range list {
		sched, err := cronParser.Parse(sc.Cron)
		if err != nil {
			return nil, fmt.Errorf("schedule %q: invalid cron %q: %w", sc.Name, sc.Cron, err)
		}
		out = append(out, ScheduleInfo{Name: sc.Name, Cron: sc.Cron, Kind: sc.Request.Kind, Next: sched.Next(time.Now())})
	}
	return out, nil
}
