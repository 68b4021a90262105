package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Machine is the facts of the machine a run was measured on.
type Machine struct {
	CPU         string  `json:"cpu,omitempty"`
	Cores       int     `json:"cores"`
	MemoryGiB   float64 `json:"memory_gib"`
	Kernel      string  `json:"kernel"`
	LXC         string  `json:"lxc"`
	Node        string  `json:"node"`
	Npm         string  `json:"npm"`
	GOOS        string  `json:"goos"`
	PSI         bool    `json:"psi"`
	LoadAtStart string  `json:"load_at_start"`
}

// Report is one run's results.
type Report struct {
	Started          time.Time   `json:"started"`
	Finished         time.Time   `json:"finished"`
	Command          string      `json:"command"`
	N                int         `json:"n"`
	Machine          Machine     `json:"machine"`
	LXCFleet         lxcfleetCLI `json:"lxcfleet"`
	ProvisionSeconds float64     `json:"provision_seconds"`
	// Alone is one locker restarted with the rest idle (three times);
	// AloneRestartSeconds is the median of its unavailability.
	Alone               []Figures   `json:"alone"`
	AloneRestartSeconds float64     `json:"alone_restart_seconds"`
	Scenarios           []Figures   `json:"scenarios"`
	Agent               AgentFigure `json:"agent"`
	// ProberCPUPercent is the prober's CPU use over its life, in % of one
	// core (from /proc/<pid>/stat).
	ProberCPUPercent float64 `json:"prober_cpu_percent"`
	// Probing is what measuring costs (the prober and the lockers
	// answering it); Breakdown one locker's restart in its parts.
	Probing   ProbingFigure `json:"probing"`
	Breakdown []Breakdown   `json:"restart_breakdown,omitempty"`
	Targets   []Goal        `json:"targets"`
}

// Goal is one performance target of issue 7 and whether this run met it.
type Goal struct {
	Name     string `json:"name"`
	Want     string `json:"want"`
	Measured string `json:"measured"`
	// Met is "met", "not met" or "not measured".
	Met string `json:"met"`
	// Note says what limits the figure, from other measured figures.
	Note string `json:"note,omitempty"`
}

func (rep *Report) scenario(id string) *Figures {
	for i := range rep.Scenarios {
		if rep.Scenarios[i].ID == id && rep.Scenarios[i].Skipped == "" && !rep.Scenarios[i].T0.IsZero() {
			return &rep.Scenarios[i]
		}
	}
	return nil
}

// targets compares the measured figures with the targets.
func (rep *Report) targets() {
	add := func(name, want, measured string, met *bool) {
		t := Goal{Name: name, Want: want, Measured: measured, Met: "not measured"}
		if met != nil {
			t.Met = map[bool]string{true: "met", false: "not met"}[*met]
		}
		rep.Targets = append(rep.Targets, t)
	}
	b := func(v bool) *bool { return &v }
	roll, s1, off, app := rep.scenario("5"), rep.scenario("1"), rep.scenario("4"), rep.scenario("5c")
	rep.Targets = nil
	if roll != nil && rep.AloneRestartSeconds > 0 {
		lim := 1.5 * rep.AloneRestartSeconds
		add("rolling unavailability p99 ≤ 1.5× one locker's restart alone", fmt.Sprintf("≤ %.2f s (1.5 × %.2f s)", lim, rep.AloneRestartSeconds),
			fmt.Sprintf("%.2f s", roll.UnavailP99), b(roll.UnavailP99 <= lim))
		if cores := rep.Machine.Cores; roll.Window > cores {
			rep.Targets[len(rep.Targets)-1].Note = fmt.Sprintf("K=%d starts share %d cores: each gets at most %.2f of a core, so a start takes ≥ %.1f× its time alone (a start costs %.2f CPU s here, %.2f alone); peak load1 %.1f",
				roll.Window, cores, float64(cores)/float64(roll.Window), float64(roll.Window)/float64(cores), roll.StartCPUMedian, aloneCPUMedian(rep.Alone), roll.PeakLoad1)
		}
	} else {
		add("rolling unavailability p99 ≤ 1.5× one locker's restart alone", "≤ 1.5 × alone", "—", nil)
	}
	if roll != nil && s1 != nil && roll.UnavailP99 > 0 {
		x := s1.UnavailP99 / roll.UnavailP99
		add("p99 unavailability ≥ 20× lower than scenario 1", "≥ 20×", fmt.Sprintf("%.1f× (%.2f s vs %.2f s)", x, s1.UnavailP99, roll.UnavailP99), b(x >= 20))
		rep.Targets[len(rep.Targets)-1].Note = fmt.Sprintf("scenario 1 keeps every locker down through all N stops, npm (%s s) and the starts, so its p99 grows with N; rolling's is one locker's replacement under K concurrent starts", fmtPtr(s1.NpmSeconds))
	} else {
		add("p99 unavailability ≥ 20× lower than scenario 1", "≥ 20×", "—", nil)
	}
	if roll != nil && roll.CPUFloorSeconds > 0 {
		m := fmt.Sprintf("%.2f× (%.1f s / %.1f s)", roll.FloorRatio, roll.WindowSeconds, roll.CPUFloorSeconds)
		if roll.RestartRatio != nil {
			m += fmt.Sprintf("; restart phase alone %.2f×", *roll.RestartRatio)
		}
		add("rolling window ≤ 1.25× CPU floor", "≤ 1.25×", m, b(roll.FloorRatio <= 1.25))
		if roll.FirstDownSeconds != nil {
			rep.Targets[len(rep.Targets)-1].Note = fmt.Sprintf("the window includes lxcfleet's build step (%.1f s to the first stop, npm included), done while every locker serves; the floor counts start CPU only", *roll.FirstDownSeconds)
		}
	} else {
		add("rolling window ≤ 1.25× CPU floor", "≤ 1.25×", "—", nil)
	}
	for _, f := range []*Figures{off, roll, app} {
		if f == nil || f.Window == 0 {
			continue
		}
		add("never more than K starting at once ("+f.ID+")", fmt.Sprintf("≤ %d", f.Window), fmt.Sprintf("%d", f.MaxStarting), b(f.MaxStarting <= f.Window))
	}
	if off == nil && roll == nil {
		add("never more than K starting at once", "≤ K", "—", nil)
	}
	failed, any := 0, false
	for _, f := range []*Figures{off, roll, app} {
		if f != nil {
			failed += f.FailedStarts
			any = true
		}
	}
	if any {
		add("0 failed starts (lxcfleet scenarios)", "0", fmt.Sprintf("%d", failed), b(failed == 0))
	} else {
		add("0 failed starts (lxcfleet scenarios)", "0", "—", nil)
	}
	if app != nil {
		var v float64
		src := "lxcfleet's build_seconds"
		switch {
		case app.BuildSeconds != nil:
			v = *app.BuildSeconds
		case app.FirstDownSeconds != nil:
			v, src = *app.FirstDownSeconds, "command start → first locker down"
		}
		add("app-only update build step ≤ 2 s", "≤ 2 s", fmt.Sprintf("%.2f s (%s; npm %s)", v, src, orDash(app.Npm)), b(v <= 2 && v > 0))
	} else {
		add("app-only update build step ≤ 2 s", "≤ 2 s", "—", nil)
	}
	if rep.Agent.IdleRSSMiB > 0 {
		add("agent idle RSS ≤ 30 MB", "≤ 30 MB", fmt.Sprintf("%.1f MB", rep.Agent.IdleRSSMiB*1.048576), b(rep.Agent.IdleRSSMiB*1.048576 <= 30))
	} else {
		add("agent idle RSS ≤ 30 MB", "≤ 30 MB", orDash(rep.Agent.Err), nil)
	}
	if rep.Agent.Requests > 0 {
		add("GET /v1/containers p99 ≤ 20 ms", "≤ 20 ms", fmt.Sprintf("%.2f ms (p50 %.2f ms, %d requests, %d errors)", rep.Agent.P99ms, rep.Agent.P50ms, rep.Agent.Requests, rep.Agent.Errors), b(rep.Agent.P99ms <= 20 && rep.Agent.Errors == 0))
	} else {
		add("GET /v1/containers p99 ≤ 20 ms", "≤ 20 ms", orDash(rep.Agent.Err), nil)
	}
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// Write writes report.json, report.md and healthy.png into dir.
func (rep *Report) Write(dir string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), b, 0o644); err != nil {
		return err
	}
	chartErr := Chart(rep, filepath.Join(dir, "healthy.png"))
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(rep.Markdown()), 0o644); err != nil {
		return err
	}
	return chartErr
}

// Markdown renders the report as the table the README shows.
func (rep *Report) Markdown() string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "## lockerbench: %d lockers, %s\n\n", rep.N, rep.Started.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Machine: %d cores (%s), %.1f GiB, kernel %s, LXC %s, node %s, npm %s, PSI %v, load at start %s.  \n",
		m.Cores, orDash(m.CPU), m.MemoryGiB, m.Kernel, m.LXC, m.Node, m.Npm, m.PSI, m.LoadAtStart)
	fmt.Fprintf(&b, "Command: `%s`; lxcfleet: `%s` (update-code: %v, agent: %v).  \n", rep.Command, rep.LXCFleet.Bin, rep.LXCFleet.UpdateCode, rep.LXCFleet.Agent)
	fmt.Fprintf(&b, "One locker restarted alone: %.2f s unavailable (median of %d); a start costs %s CPU s.\n\n", rep.AloneRestartSeconds, len(rep.Alone), aloneCPU(rep.Alone))
	b.WriteString("| scenario | window s | unavail p50 / p99 / max s | most unavail at once | most starting at once | failed starts | peak load1 | peak PSI cpu / mem % | npm s | CPU floor s | window / floor |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range rep.Scenarios {
		if f.Skipped != "" {
			fmt.Fprintf(&b, "| %s | not run: %s |||||||||| \n", f.Title, f.Skipped)
			continue
		}
		if f.T0.IsZero() {
			fmt.Fprintf(&b, "| %s | failed: %s |||||||||| \n", f.Title, orDash(f.Err))
			continue
		}
		win := fmt.Sprintf("%.1f", f.WindowSeconds)
		if f.TimedOut {
			win += " (timed out)"
		}
		npm := "—"
		if f.NpmSeconds != nil {
			npm = fmt.Sprintf("%.1f", *f.NpmSeconds)
		}
		if f.BuildSeconds != nil {
			// lxcfleet reports its whole build step (fetch, checkout, npm).
			if f.NpmSeconds == nil {
				npm = "0"
			}
			npm += fmt.Sprintf(" (build %.1f, npm %s)", *f.BuildSeconds, orDash(f.Npm))
		}
		ratio := fmt.Sprintf("%.2f", f.FloorRatio)
		if f.RestartRatio != nil {
			ratio += fmt.Sprintf(" (restart %.2f)", *f.RestartRatio)
		}
		title := f.Title
		if f.Window > 0 {
			title += fmt.Sprintf(" (K=%d)", f.Window)
		}
		fmt.Fprintf(&b, "| %s | %s | %.2f / %.2f / %.2f | %d | %d | %d | %.2f | %.0f / %.0f | %s | %.1f | %s |\n",
			title, win, f.UnavailP50, f.UnavailP99, f.UnavailMax, f.MaxUnavailable, f.MaxStarting, f.FailedStarts,
			f.PeakLoad1, f.PeakCPUSome, f.PeakMemSome, npm, f.CPUFloorSeconds, ratio)
	}
	b.WriteString("\n")
	a := rep.Agent
	if a.Err == "" {
		fmt.Fprintf(&b, "Agent (%s) with %d lockers: idle RSS %.1f MiB; GET /v1/containers at %d req/s for %.0f s: p50 %.2f ms, p99 %.2f ms, max %.2f ms, %d errors.\n\n",
			a.Source, rep.N, a.IdleRSSMiB, a.Rate, a.Seconds, a.P50ms, a.P99ms, a.MaxMs, a.Errors)
	} else {
		fmt.Fprintf(&b, "Agent: not measured: %s\n\n", a.Err)
	}
	b.WriteString("| target | want | measured | | what limits it |\n|---|---|---|---|---|\n")
	for _, t := range rep.Targets {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", t.Name, t.Want, t.Measured, t.Met, t.Note)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "How to read it: unavailability is, per locker, the time during the window in which it did not answer /healthz with the old or the new build (prober at 20 Hz on 127.0.0.1, a separate process). The window runs from the command's start to the last locker answering the new build. Starting = container running (its cgroup exists) and not yet answering. The CPU floor is the CPU its containers' cgroups used from start to first answer, summed over the starts of the scenario, divided by the cores. For lxcfleet, npm is timed from its own stage events, and its whole build step (mirror fetch, checkout, npm ci or linked node_modules) is shown beside it: it runs while every locker still serves. The prober itself used %.0f%% of one core during the run (its load falls on every scenario alike).\n\n", rep.ProberCPUPercent)
	b.WriteString("![lockers healthy over time](healthy.png)\n")
	return b.String()
}

func fmtPtr(v *float64) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf("%.1f", *v)
}

func aloneCPUMedian(fs []Figures) float64 {
	var xs []float64
	for _, f := range fs {
		if f.StartCPUMedian > 0 {
			xs = append(xs, f.StartCPUMedian)
		}
	}
	return quantile(xs, 0.5)
}

func aloneCPU(fs []Figures) string {
	var xs []float64
	for _, f := range fs {
		if f.StartCPUMedian > 0 {
			xs = append(xs, f.StartCPUMedian)
		}
	}
	if len(xs) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", quantile(xs, 0.5))
}
