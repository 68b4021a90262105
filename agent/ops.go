package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"lxcfleet/lxcctl"
)

// body is what a job does; it returns the job's result.
type body func(ctx context.Context, r *run) (any, error)

// planTimeout bounds the work Submit does before a job starts.
const planTimeout = 30 * time.Second

// planFor checks what req targets and returns the job's body. Unknown
// containers are an InvalidError, before any job exists.
func (a *Agent) planFor(req Request) (body, error) {
	switch req.Kind {
	case KindUpdate, KindRollback, KindCheckUpdate, KindBuild:
		if a.deps.Code == nil {
			return nil, invalidf("%s needs a code origin: set [code] origin in the config", req.Kind)
		}
	}
	var infos []lxcctl.Info
	if req.Kind != KindCheckUpdate && req.Kind != KindBuild {
		ctx, cancel := context.WithTimeout(a.base, planTimeout)
		defer cancel()
		var err error
		infos, err = a.deps.Containers.Select(ctx, req.Names, req.Group)
		if errors.Is(err, lxcctl.ErrNotFound) {
			return nil, InvalidError{err.Error()}
		}
		if err != nil {
			return nil, fmt.Errorf("selecting lockers: %w", err)
		}
	}
	names := namesOf(infos)
	switch req.Kind {
	case KindStopAll:
		return func(ctx context.Context, r *run) (any, error) { return a.stopAllJob(ctx, r, req, names) }, nil
	case KindStartAll:
		return func(ctx context.Context, r *run) (any, error) { return a.startAllJob(ctx, r, req, names) }, nil
	case KindRestart:
		return func(ctx context.Context, r *run) (any, error) { return a.restartJob(ctx, r, req, names) }, nil
	case KindUpdate:
		return func(ctx context.Context, r *run) (any, error) { return a.updateJob(ctx, r, req, infos) }, nil
	case KindRollback:
		return func(ctx context.Context, r *run) (any, error) { return a.rollbackJob(ctx, r, req, infos) }, nil
	case KindCheckUpdate:
		return func(ctx context.Context, r *run) (any, error) { return a.checkUpdateJob(ctx, r, req) }, nil
	case KindBuild:
		return func(ctx context.Context, r *run) (any, error) { return a.buildJob(ctx, r, req) }, nil
	case KindRecover:
		return func(ctx context.Context, r *run) (any, error) { return a.recoverJob(ctx, r, req) }, nil
	}
	return nil, invalidf("unknown job kind %q", req.Kind)
}

func namesOf(infos []lxcctl.Info) []string {
	out := make([]string, len(infos))
	for i, in := range infos {
		out[i] = in.Name
	}
	return out
}

// Outcome is one container's result in a job.
type Outcome struct {
	Name     string   `json:"name"`
	Action   string   `json:"action"`
	Outcome  string   `json:"outcome"`
	Duration Duration `json:"duration"`
	Release  string   `json:"release,omitempty"`
	Downtime Duration `json:"downtime,omitempty"` // from its stop to healthy again
	Error    string   `json:"error,omitempty"`
}

// Failed reports whether the outcome is a failure.
func (o Outcome) Failed() bool {
	switch o.Outcome {
	case string(lxcctl.StopFailed), string(lxcctl.StartUnhealthy), "cancelled": // StopFailed and StartFailed are both "failed"
		return true
	}
	return false
}

// Result is the result of a job that moved containers.
type Result struct {
	Summary  string         `json:"summary"`
	Counts   map[string]int `json:"counts"`
	Failed   []string       `json:"failed,omitempty"`
	Outcomes []Outcome      `json:"outcomes"`
	Seconds  float64        `json:"seconds"`
	// Update-specific fields.
	From       string         `json:"from,omitempty"`
	To         string         `json:"to,omitempty"`
	Build      int            `json:"build,omitempty"`
	Strategy   string         `json:"strategy,omitempty"`
	NpmRan     *bool          `json:"npm_ran,omitempty"`
	Stages     map[string]any `json:"stages,omitempty"`
	RolledBack bool           `json:"rolled_back,omitempty"`
	Paused     bool           `json:"paused,omitempty"`
	Downtime   *DowntimeStats `json:"downtime,omitempty"`
}

// tally builds a Result from outcomes.
func tally(outcomes []Outcome, begin time.Time) *Result {
	res := &Result{Counts: map[string]int{}, Outcomes: outcomes, Seconds: time.Since(begin).Seconds()}
	for _, o := range outcomes {
		res.Counts[o.Outcome]++
		if o.Failed() {
			res.Failed = append(res.Failed, o.Name)
		}
	}
	return res
}

// failedErr is the job error when containers failed.
func (res *Result) failedErr(verb string) error {
	if len(res.Failed) == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d lockers failed to %s: %s", len(res.Failed), len(res.Outcomes), verb, joinNames(res.Failed, 10))
}

// tracker bridges lxcctl's per-container events to the journal and the
// job's event stream, and counts progress.
type tracker struct {
	r      *run
	m      *metrics
	action string // stop or start
	wave   int
	mu     sync.Mutex
	done   map[string]bool
}

func (a *Agent) track(r *run, action string, wave int) *tracker {
	return &tracker{r: r, m: a.metrics, action: action, wave: wave, done: map[string]bool{}}
}

// onEvent journals begin/end steps and emits the event.
func (t *tracker) onEvent(e lxcctl.Event) {
	begin := e.Phase == lxcctl.PhaseStopping || e.Phase == lxcctl.PhaseStarting
	end := e.Phase == lxcctl.PhaseStopped || e.Phase == lxcctl.PhaseHealthy || e.Phase == lxcctl.PhaseFailed || e.Phase == lxcctl.PhaseSkipped
	if begin || end {
		s := Step{Container: e.Container, Action: t.action, Phase: "begin"}
		if end {
			s.Phase, s.Outcome, s.Error = "end", e.Outcome, e.Error
		}
		if err := t.r.step(s); err != nil {
			// The step still runs: a lost record beats a stranded locker.
			t.r.emit(Event{Type: "stage", Stage: "journal", Error: err.Error()})
		}
	}
	if end {
		t.m.containerOp(strings.TrimPrefix(t.action, "replace-"), e.Outcome)
	}
	if end && t.countsDone() {
		t.mu.Lock()
		first := !t.done[e.Container]
		t.done[e.Container] = true
		t.mu.Unlock()
		if first {
			_ = t.r.update(func(j *Job) {
				j.Progress.Done++
				if e.Phase == lxcctl.PhaseFailed {
					j.Progress.Failed++
				}
			})
		}
	}
	t.r.markDown(e)
	t.r.emit(Event{Type: "container", Container: e.Container, Phase: string(e.Phase), Outcome: e.Outcome,
		Error: e.Error, Duration: Duration(e.Duration), Wave: t.wave})
}

// countsDone reports whether this tracker's end events advance progress
// (a replace counts a locker done after its start, not its stop).
func (t *tracker) countsDone() bool { return t.action != "replace-stop" }

func (a *Agent) stopAllJob(ctx context.Context, r *run, req Request, names []string) (any, error) {
	begin := time.Now()
	_ = r.update(func(j *Job) { j.Progress = Progress{Total: len(names)} })
	t := a.track(r, "stop", 0)
	opts := req.stopOptions()
	opts.OnEvent = t.onEvent
	res, err := a.deps.Containers.StopAll(ctx, names, opts)
	if err != nil {
		return nil, err
	}
	// The stopped lockers' desired state changes only once the job has
	// ended with the agent alive: when the agent dies mid-job, recovery
	// starts again every locker the interrupted job stopped.
	var stopped []string
	for _, x := range res {
		if x.Err == nil {
			stopped = append(stopped, x.Name)
		}
	}
	if err := a.jr.SetDesired(stopped, Desired{Running: false, JobID: r.job.ID, Since: time.Now()}); err != nil {
		return nil, fmt.Errorf("recording desired state: %w", err)
	}
	out := tally(stopOutcomes(res), begin)
	out.Summary = fmt.Sprintf("stopped %d lockers in %.1fs: %d clean, %d killed, %d already stopped, %d failed",
		len(names), out.Seconds, out.Counts[string(lxcctl.StoppedClean)], out.Counts[string(lxcctl.StoppedKilled)],
		out.Counts[string(lxcctl.AlreadyStopped)], len(out.Failed))
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	return out, out.failedErr("stop")
}

func stopOutcomes(res []lxcctl.StopResult) []Outcome {
	out := make([]Outcome, len(res))
	for i, r := range res {
		out[i] = Outcome{Name: r.Name, Action: "stop", Outcome: string(r.Outcome), Duration: Duration(r.Duration), Error: errString(r.Err)}
	}
	return out
}

func startOutcomes(res []lxcctl.StartResult) []Outcome {
	out := make([]Outcome, len(res))
	for i, r := range res {
		out[i] = Outcome{Name: r.Name, Action: "start", Outcome: string(r.Outcome), Duration: Duration(r.Duration), Error: errString(r.Err)}
	}
	return out
}

func (a *Agent) startAllJob(ctx context.Context, r *run, req Request, names []string) (any, error) {
	begin := time.Now()
	_ = r.update(func(j *Job) { j.Progress = Progress{Total: len(names)} })
	if err := a.jr.SetDesired(names, Desired{Running: true, JobID: r.job.ID, Since: begin}); err != nil {
		return nil, fmt.Errorf("recording desired state: %w", err)
	}
	res, err := a.startWave(ctx, r, req, names, 0)
	if err != nil {
		return nil, err
	}
	out := tally(startOutcomes(res), begin)
	out.Summary = fmt.Sprintf("started %d lockers in %.1fs: %d healthy, %d already running, %d failed",
		len(names), out.Seconds, out.Counts[string(lxcctl.Started)], out.Counts[string(lxcctl.AlreadyRunning)], len(out.Failed))
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	return out, out.failedErr("start")
}

// startWave starts names with the request's window and health check,
// journaling and emitting each step.
func (a *Agent) startWave(ctx context.Context, r *run, req Request, names []string, wave int) ([]lxcctl.StartResult, error) {
	t := a.track(r, "start", wave)
	opts := req.startOptions()
	opts.OnEvent = t.onEvent
	return a.deps.Containers.StartAll(ctx, names, opts)
}

// restartJob replaces each locker (stop, start, healthy) with at most
// Window lockers down at once.
func (a *Agent) restartJob(ctx context.Context, r *run, req Request, names []string) (any, error) {
	begin := time.Now()
	_ = r.update(func(j *Job) { j.Progress = Progress{Total: len(names)} })
	if err := a.jr.SetDesired(names, Desired{Running: true, JobID: r.job.ID, Since: begin}); err != nil {
		return nil, fmt.Errorf("recording desired state: %w", err)
	}
	outcomes := a.replace(ctx, r, req, names, 0, nil)
	out := tally(outcomes, begin)
	out.Summary = fmt.Sprintf("restarted %d lockers in %.1fs: %d healthy, %d failed", len(names), out.Seconds, out.Counts[string(lxcctl.Started)], len(out.Failed))
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	return out, out.failedErr("restart")
}

// replace restarts each locker (graceful stop, start, wait healthy), with at
// most req.Window lockers being replaced at once: a sliding window, so a
// slow locker holds one place, not a whole wave. Before each launch,
// shouldStop (when set) may end the rollout (a failure policy); lockers not
// launched are reported "skipped". The outcome of each launched locker is
// that of its start (or of its stop when the stop failed).
func (a *Agent) replace(ctx context.Context, r *run, req Request, names []string, wave int, shouldStop func(done []Outcome) bool) []Outcome {
	outcomes := make([]Outcome, len(names))
	stopT := a.track(r, "replace-stop", wave)
	startT := a.track(r, "start", wave)
	slots := make(chan struct{}, req.Window)
	var mu sync.Mutex
	var finished []Outcome
	var wg sync.WaitGroup
	halted := false
	for i, name := range names {
		outcomes[i] = Outcome{Name: name, Action: "replace", Outcome: "skipped"}
		if halted {
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			halted = true
			continue
		}
		mu.Lock()
		if shouldStop != nil && shouldStop(finished) {
			halted = true
		}
		mu.Unlock()
		if halted {
			<-slots
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			o := a.replaceOne(ctx, req, name, stopT, startT)
			mu.Lock()
			outcomes[i] = o
			finished = append(finished, o)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return outcomes
}

// replaceOne stops and starts one locker.
func (a *Agent) replaceOne(ctx context.Context, req Request, name string, stopT, startT *tracker) Outcome {
	begin := time.Now()
	so := req.stopOptions()
	so.Parallel = 1
	so.OnEvent = stopT.onEvent
	sres, err := a.deps.Containers.StopAll(ctx, []string{name}, so)
	if err == nil && len(sres) == 1 && sres[0].Outcome == lxcctl.StopFailed {
		err = sres[0].Err
	}
	if err != nil {
		return Outcome{Name: name, Action: "replace", Outcome: string(lxcctl.StopFailed), Duration: Duration(time.Since(begin)), Error: errString(err)}
	}
	st := req.startOptions()
	st.Window = 1
	st.OnEvent = startT.onEvent
	// Once stopped, the locker is started even if the job is cancelled
	// meanwhile: a cancel never leaves a locker down.
	res, err := a.deps.Containers.StartAll(context.WithoutCancel(ctx), []string{name}, st)
	if err == nil && len(res) != 1 {
		err = fmt.Errorf("starting %s: no result", name)
	}
	if err != nil {
		return Outcome{Name: name, Action: "replace", Outcome: string(lxcctl.StartFailed), Duration: Duration(time.Since(begin)), Error: errString(err)}
	}
	return Outcome{Name: name, Action: "replace", Outcome: string(res[0].Outcome), Duration: Duration(time.Since(begin)), Error: errString(res[0].Err)}
}
