package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"lxcfleet/lxcctl"
)

// progress shows a bulk operation's events: a progress bar on a terminal,
// JSON lines with --json, and otherwise one line per failure.
type progress struct {
	mu      sync.Mutex
	bar     *progressbar.ProgressBar
	enc     *json.Encoder
	plain   io.Writer
	done    map[lxcctl.Phase]bool // phases that finish a container
	counted map[string]bool
}

// newProgress makes a progress display for total containers; the phases in
// done mark a container finished.
func newProgress(g *globals, verb string, total int, done ...lxcctl.Phase) *progress {
	p := &progress{done: map[lxcctl.Phase]bool{}, counted: map[string]bool{}}
	for _, ph := range done {
		p.done[ph] = true
	}
	switch {
	case g.jsonOut:
		p.enc = json.NewEncoder(g.stdout)
	case isTerminal(g.stderr):
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(g.stderr),
			progressbar.OptionSetDescription(verb),
			progressbar.OptionShowCount(),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionThrottle(65_000_000),
		)
	default:
		p.plain = g.stderr
	}
	return p
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// event is the OnEvent callback of lxcctl's bulk operations.
func (p *progress) event(e lxcctl.Event) { p.eventPaced(e, 0, 0) }

// eventPaced is event with a job event's W and start places held (see
// eventLine), passed on in --json lines.
func (p *progress) eventPaced(e lxcctl.Event, maxStarting, starting int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.enc != nil {
		_ = p.enc.Encode(eventLine{Type: "event", Time: e.Time, Container: e.Container, Phase: string(e.Phase), Outcome: e.Outcome,
			Seconds: e.Duration.Seconds(), Error: e.Error, MaxStarting: maxStarting, Starting: starting})
		return
	}
	finished := p.done[e.Phase] || e.Phase == lxcctl.PhaseFailed || e.Phase == lxcctl.PhaseSkipped
	if finished && !p.counted[e.Container] {
		p.counted[e.Container] = true
		if p.bar != nil {
			_ = p.bar.Add(1)
		}
	}
	if e.Phase == lxcctl.PhaseFailed {
		msg := fmt.Sprintf("%s: %s: %s", e.Container, e.Outcome, e.Error)
		if p.bar != nil {
			_ = p.bar.Clear()
			fmt.Fprintln(os.Stderr, msg)
		} else if p.plain != nil {
			fmt.Fprintln(p.plain, msg)
		}
	}
}

// eventLine is one container event of a --json stream (see the README's
// JSON convention: RFC 3339 times, seconds as numbers).
type eventLine struct {
	Type      string    `json:"type"`
	Time      time.Time `json:"time"`
	Container string    `json:"container"`
	Phase     string    `json:"phase"`
	Outcome   string    `json:"outcome,omitempty"`
	Seconds   float64   `json:"seconds,omitempty"`
	Error     string    `json:"error,omitempty"`
	// MaxStarting and Starting: W when this locker's start place was
	// taken, and the places held then (starting and stopping events).
	MaxStarting int `json:"max_starting,omitempty"`
	Starting    int `json:"starting,omitempty"`
}

// lockerLine is one container's outcome in the result of stop-all or
// start-all with --json.
type lockerLine struct {
	Name    string  `json:"name"`
	Outcome string  `json:"outcome"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

func lockerLines[R lxcctl.StopResult | lxcctl.StartResult](res []R) []lockerLine {
	out := make([]lockerLine, 0, len(res))
	for _, r := range res {
		var l lockerLine
		switch r := any(r).(type) {
		case lxcctl.StopResult:
			l = lockerLine{Name: r.Name, Outcome: string(r.Outcome), Seconds: r.Duration.Seconds()}
			if r.Err != nil {
				l.Error = r.Err.Error()
			}
		case lxcctl.StartResult:
			l = lockerLine{Name: r.Name, Outcome: string(r.Outcome), Seconds: r.Duration.Seconds()}
			if r.Err != nil {
				l.Error = r.Err.Error()
			}
		}
		out = append(out, l)
	}
	return out
}

// finish removes the bar.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

// result prints the final JSON line (with --json).
func (p *progress) result(v any) {
	if p.enc != nil {
		_ = p.enc.Encode(struct {
			Type   string `json:"type"`
			Result any    `json:"result"`
		}{"result", v})
	}
}
