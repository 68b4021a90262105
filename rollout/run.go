package rollout

import (
	"encoding/json"
	"time"
)

// The per-locker outcomes of a run (I5).
const (
	OutMoved          = "moved"      // replaced, then healthy through the monitor window
	OutStarted        = "started"    // started, then healthy through the monitor window
	OutUnverified     = "unverified" // healthy once; the agent stopped before the window ended
	OutStopped        = "stopped"    // stopped cleanly
	OutKilled         = "killed"     // the stop timed out: killed
	OutAlreadyStopped = "already-stopped"
	OutAlreadyRunning = "already-running"
	OutFailed         = "failed"
	OutSkipped        = "skipped" // not touched: left where it was
)

// The outcomes of a locker's way back (Outcome.Back).
const (
	BackRolledBack = "rolled-back"
	BackFailed     = "failed"
)

// Outcome is one locker's result in a run.
type Outcome struct {
	Name    string `json:"name"`
	Op      Op     `json:"op"`
	Outcome string `json:"outcome"`
	// Release is the release it ended on, when known.
	Release string `json:"release,omitempty"`
	// Stop is how its stop went (replace and stop); Start how its start
	// went (healthy, unhealthy: running but never healthy, or failed).
	Stop  StopOutcome  `json:"stop,omitempty"`
	Start StartOutcome `json:"start,omitempty"`
	Error string       `json:"error,omitempty"`
	// Duration is the whole operation; Downtime from its stop (or start)
	// to its first healthy check.
	Duration time.Duration `json:"duration,omitempty"`
	Downtime time.Duration `json:"downtime,omitempty"`
	// Back is the result of its way back (rollback or undo), if any.
	Back      string `json:"back,omitempty"`
	BackError string `json:"back_error,omitempty"`
}

// Failed reports whether the locker failed in the run or on its way back.
func (o Outcome) Failed() bool { return o.Outcome == OutFailed || o.Back == BackFailed }

// outcomeJSON is Outcome on the wire: its durations as strings
// ("1.5s"), the job record's one convention.
type outcomeJSON struct {
	plainOutcome
	Duration Duration `json:"duration,omitempty"`
	Downtime Duration `json:"downtime,omitempty"`
}

type plainOutcome Outcome

// MarshalJSON writes the outcome with its durations as strings.
func (o Outcome) MarshalJSON() ([]byte, error) {
	return json.Marshal(outcomeJSON{plainOutcome(o), Duration(o.Duration), Duration(o.Downtime)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (o *Outcome) UnmarshalJSON(b []byte) error {
	var w outcomeJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*o = Outcome(w.plainOutcome)
	o.Duration, o.Downtime = w.Duration.D(), w.Downtime.D()
	return nil
}

// Result is what a run did, and no more (I5).
type Result struct {
	Outcomes []Outcome `json:"outcomes"`
	// Switched is true when current was pointed at the target (or may
	// have been: a switch that failed after its rename).
	Switched bool `json:"switched,omitempty"`
	// Current is where current points at the end, as far as the run knows.
	Current string `json:"current,omitempty"`
	// Proven is true when this run proved the target.
	Proven bool `json:"proven,omitempty"`
	// Tripped is the failure policy's reason, when it tripped.
	Tripped    string `json:"tripped,omitempty"`
	MarkedBad  bool   `json:"marked_bad,omitempty"`
	RolledBack bool   `json:"rolled_back,omitempty"`
	Paused     bool   `json:"paused,omitempty"`
	// Halted says why launching stopped early without a tripped policy.
	Halted string `json:"halted,omitempty"`
	// Cancelled: an operator's cancel; Undone: it moved lockers back.
	Cancelled bool `json:"cancelled,omitempty"`
	Undone    bool `json:"undone,omitempty"`
	// Interrupted: the agent stopped (Shutdown); the next agent recovers.
	Interrupted bool `json:"interrupted,omitempty"`
	// Err is a failure of the run itself (a switch that failed).
	Err error `json:"-"`
}

// Counts counts outcomes, and way-back outcomes under "back-" keys.
func (r Result) Counts() map[string]int {
	c := map[string]int{}
	for _, o := range r.Outcomes {
		c[o.Outcome]++
		if o.Back != "" {
			c["back-"+o.Back]++
		}
	}
	return c
}

// Failed returns the lockers that failed in the run or on the way back.
func (r Result) Failed() []string {
	var out []string
	for _, o := range r.Outcomes {
		if o.Failed() {
			out = append(out, o.Name)
		}
	}
	return out
}

// OK reports whether the run did all it planned: nothing failed, tripped,
// halted, cancelled or interrupted.
func (r Result) OK() bool {
	return r.Err == nil && r.Tripped == "" && r.Halted == "" && !r.Cancelled && !r.Interrupted && len(r.Failed()) == 0
}
