package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ScaleRow is one N of a scaling run: how the window, the agent's RSS and
// its CPU grow with the fleet.
type ScaleRow struct {
	N   int    `json:"n"`
	Dir string `json:"dir"` // that run's results folder
	// Minutes is the whole run for this N (provisioning, resets, cleanup).
	Minutes float64 `json:"minutes"`
	// StormWindow and OfflineWindow: scenario 2 and 4 windows (s);
	// OfflineRestart is scenario 4's restart phase (first down → last up).
	StormWindow    float64 `json:"storm_window_s"`
	OfflineWindow  float64 `json:"offline_window_s"`
	OfflineRestart float64 `json:"offline_restart_s"`
	OfflineP50     float64 `json:"offline_p50_s"`
	OfflineP99     float64 `json:"offline_p99_s"`
	OfflinePacing  string  `json:"offline_pacing"`
	// The agent: idle RSS with the fleet idle; during the offline update
	// its peak RSS, CPU seconds and share of a core, and the API's p99.
	AgentIdleRSSMiB float64 `json:"agent_idle_rss_mib"`
	AgentPeakRSSMiB float64 `json:"agent_update_peak_rss_mib"`
	AgentCPUSeconds float64 `json:"agent_update_cpu_s"`
	AgentCPUPct     float64 `json:"agent_update_cpu_pct"`
	AgentVia        string  `json:"agent_via"`
	APIP99ms        float64 `json:"api_p99_ms"`
	// APICPUPerRequestMs is the agent's CPU per GET /v1/containers on the
	// idle fleet: with the API rate, the API's share of the CPU above.
	APICPUPerRequestMs float64 `json:"api_cpu_per_request_ms"`
	APIErrors          int     `json:"api_errors"`
	// One restart alone (prober running) and its parts' sum (nothing
	// probing); probing's cost over the run (% of one core).
	AloneSeconds float64 `json:"alone_s"`
	PartsSum     float64 `json:"parts_sum_s"`
	ProbingPct   float64 `json:"probing_pct"`
	LoadAtStart  string  `json:"load_at_start"`
	Err          string  `json:"error,omitempty"`
}

// ScaleReport is a scaling run.
type ScaleReport struct {
	Started time.Time  `json:"started"`
	Command string     `json:"command"`
	Rows    []ScaleRow `json:"rows"`
}

// Scale runs the benchmark once per N (default scenarios: the storm and
// lxcfleet's offline update with pacing) and writes scale.json and
// scale.md into o.Results/scale-<timestamp>/. Each N's own report goes
// into a folder beside them.
func Scale(ctx context.Context, ns []int, o Options) (*ScaleReport, string, error) {
	if len(o.Scenarios) == 0 {
		o.Scenarios = []string{"2", "4"}
	}
	if o.Results == "" {
		o.Results = "results"
	}
	dir := filepath.Join(o.Results, "scale-"+time.Now().UTC().Format("20060102-150405"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	sr := &ScaleReport{Started: time.Now(), Command: strings.Join(os.Args, " ")}
	var firstErr error
	for _, n := range ns {
		if ctx.Err() != nil {
			break
		}
		oo := o
		oo.N = n
		oo.Results = filepath.Join(dir, fmt.Sprintf("n%d", n))
		t := time.Now()
		rep, err := Run(ctx, oo)
		row := ScaleRow{N: n, Minutes: time.Since(t).Minutes()}
		if d, _ := filepath.Glob(filepath.Join(oo.Results, "*")); len(d) > 0 {
			row.Dir, _ = filepath.Rel(dir, d[0])
		}
		if err != nil {
			row.Err = err.Error()
			if firstErr == nil {
				firstErr = err
			}
		}
		if rep != nil {
			row.fill(rep)
		}
		sr.Rows = append(sr.Rows, row)
		if werr := sr.write(dir); werr != nil && firstErr == nil {
			firstErr = werr
		}
	}
	return sr, dir, firstErr
}

func (row *ScaleRow) fill(rep *Report) {
	row.LoadAtStart = rep.Machine.LoadAtStart
	if f := rep.scenario("2"); f != nil {
		row.StormWindow = f.WindowSeconds
	}
	if f := rep.scenario("4"); f != nil {
		row.OfflineWindow, row.OfflineP50, row.OfflineP99 = f.WindowSeconds, f.UnavailP50, f.UnavailP99
		row.OfflinePacing = orDash(f.Pacing)
		if f.FirstDownSeconds != nil {
			row.OfflineRestart = f.WindowSeconds - *f.FirstDownSeconds
		}
		if a := f.Agent; a != nil {
			row.AgentPeakRSSMiB, row.AgentCPUSeconds, row.AgentCPUPct, row.AgentVia = a.PeakRSSMiB, a.CPUSeconds, a.CPUPct, a.Via
			row.APIP99ms, row.APIErrors = a.P99ms, a.Errors
		}
	}
	row.AgentIdleRSSMiB = rep.Agent.IdleRSSMiB
	row.APICPUPerRequestMs = rep.Agent.CPUPerRequestMs
	row.AloneSeconds = rep.AloneRestartSeconds
	for _, b := range rep.Breakdown {
		if b.Load == "none" {
			row.PartsSum = b.Median.Sum
		}
	}
	row.ProbingPct = rep.Probing.RunTotalPct
}

func (sr *ScaleReport) write(dir string) error {
	b, err := json.MarshalIndent(sr, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "scale.json"), b, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "scale.md"), []byte(sr.Markdown()), 0o644)
}

// Markdown renders the scaling table.
func (sr *ScaleReport) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## lockerbench scale, %s\n\nCommand: `%s`. One run per N (storm and lxcfleet offline); each N's full report is in its folder.\n\n", sr.Started.UTC().Format("2006-01-02 15:04 UTC"), sr.Command)
	b.WriteString("| N | storm window s | offline window s (restart phase) | offline p50 / p99 s | pacing | agent idle RSS MiB | agent during offline: peak RSS MiB / CPU s / % of a core | API p99 ms (errors); agent CPU ms per GET | one restart alone s (parts) | probing % of a core | load at start | run min |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range sr.Rows {
		if r.Err != "" && r.StormWindow == 0 && r.OfflineWindow == 0 {
			fmt.Fprintf(&b, "| %d | failed: %s |||||||||||\n", r.N, r.Err)
			continue
		}
		fmt.Fprintf(&b, "| %d | %.1f | %.1f (%.1f) | %.2f / %.2f | %s | %.1f | %.1f / %.2f / %.0f (%s) | %.1f (%d); %.2f | %.2f (%.2f) | %.1f | %s | %.1f |\n",
			r.N, r.StormWindow, r.OfflineWindow, r.OfflineRestart, r.OfflineP50, r.OfflineP99, r.OfflinePacing, r.AgentIdleRSSMiB,
			r.AgentPeakRSSMiB, r.AgentCPUSeconds, r.AgentCPUPct, orDash(r.AgentVia), r.APIP99ms, r.APIErrors, r.APICPUPerRequestMs, r.AloneSeconds, r.PartsSum, r.ProbingPct, r.LoadAtStart, r.Minutes)
	}
	return b.String()
}
