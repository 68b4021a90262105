package bench

import (
	"encoding/json"
	"fmt"
	"math"
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
	// CgroupParent is where every scenario's lockers sit (lxc.cgroup.dir in
	// their configs) and its CPU weight.
	CgroupParent string `json:"cgroup_parent"`
	// App is the app's profile (AppLight, AppHeavy), Work its WORK;
	// MemLimitMiB the memory limit on the cgroup parent (0: none).
	App         string  `json:"app"`
	Work        int     `json:"work"`
	MemLimitMiB float64 `json:"mem_limit_mib,omitempty"`
	// ServingMemMiB is the cgroup's memory use (page cache included) with
	// every locker serving, before the scenarios.
	ServingMemMiB float64 `json:"serving_mem_mib,omitempty"`
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
	// Issue 20: a client at each locker during updates, held sockets
	// beside today's (scenarios 6 and 7), one locker of each restarted
	// alone, and the density scenario (8).
	Held      []HeldFigures   `json:"held,omitempty"`
	HeldAlone []HeldAlone     `json:"held_alone,omitempty"`
	Density   *DensityFigures `json:"density,omitempty"`
	Targets   []Goal          `json:"targets"`
}

// Goal is one performance target of issue 7 and whether this run met it.
type Goal struct {
	Name     string `json:"name"`
	Want     string `json:"want"`
	Measured string `json:"measured"`
	// Met is "met", "not met" or "not measured"; "measured" for a figure
	// reported without a target (the storm's failures with the heavy app).
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

// targets compares the measured figures with issue 13's targets (and two
// of issue 7's), each met / not met / not measured with what limits it.
func (rep *Report) targets() {
	add := func(name, want, measured string, met *bool, note string) {
		t := Goal{Name: name, Want: want, Measured: measured, Met: "not measured", Note: note}
		if met != nil {
			t.Met = map[bool]string{true: "met", false: "not met"}[*met]
		}
		rep.Targets = append(rep.Targets, t)
	}
	b := func(v bool) *bool { return &v }
	rep.Targets = nil
	storm, off, offF, roll, app := rep.scenario("2"), rep.scenario("4"), rep.scenario("4f"), rep.scenario("5"), rep.scenario("5c")
	paced := func(f *Figures) string {
		if f == nil {
			return ""
		}
		if f.Pacing == "" {
			return " (this lxcfleet has no --pacing: measured with its fixed window K=" + fmt.Sprint(f.Window) + ")"
		}
		return ""
	}
	restart := func(f *Figures) string {
		if f.FirstDownSeconds == nil {
			return ""
		}
		return fmt.Sprintf("%.1f s of it before the first locker went down (build, lockers serving), restart phase %.1f s", *f.FirstDownSeconds, f.WindowSeconds-*f.FirstDownSeconds)
	}
	// Offline with pacing against the storm.
	if off != nil && storm != nil && storm.WindowSeconds > 0 {
		lim := 1.1 * storm.WindowSeconds
		note := restart(off)
		if storm.FirstDownSeconds != nil {
			note += fmt.Sprintf("; the storm's restart phase %.1f s (npm %s s)", storm.WindowSeconds-*storm.FirstDownSeconds, fmtPtr(storm.NpmSeconds))
		}
		if offF != nil {
			note += fmt.Sprintf("; with --pacing fixed: %.1f s", offF.WindowSeconds)
		}
		add("offline with pacing: window ≤ 1.1× the storm's", fmt.Sprintf("≤ %.1f s (1.1 × %.1f s)", lim, storm.WindowSeconds),
			fmt.Sprintf("%.1f s (%.2f×)%s", off.WindowSeconds, off.WindowSeconds/storm.WindowSeconds, paced(off)), b(off.WindowSeconds <= lim), note)
		note = fmt.Sprintf("most starting at once %d (storm %d); peak load1 %.1f (storm %.1f)", off.MaxStarting, storm.MaxStarting, off.PeakLoad1, storm.PeakLoad1)
		if offF != nil {
			note += fmt.Sprintf("; with --pacing fixed: p50 %.2f s", offF.UnavailP50)
		}
		add("offline with pacing: per-locker p50 unavailability ≤ the storm's", fmt.Sprintf("≤ %.2f s", storm.UnavailP50),
			fmt.Sprintf("%.2f s%s", off.UnavailP50, paced(off)), b(off.UnavailP50 <= storm.UnavailP50), note)
	} else {
		add("offline with pacing: window ≤ 1.1× the storm's", "≤ 1.1× storm", "—", nil, "scenario 2 or 4 not run")
		add("offline with pacing: per-locker p50 unavailability ≤ the storm's", "≤ storm", "—", nil, "scenario 2 or 4 not run")
	}
	if off != nil {
		note := fmt.Sprintf("%d starts died before answering, %d lockers not on B at the end, %d failed commands", off.DiedStarting, off.NotOnTarget, off.CmdFailures)
		add("offline with pacing: 0 failed starts", "0", fmt.Sprintf("%d", off.FailedStarts), b(off.FailedStarts == 0), note)
		switch {
		case off.CtlStarts == 0:
			add("offline with pacing: most starting at once never above the controller's cap", "≤ W (≤ K)", fmt.Sprintf("prober: %d starting at most", off.MaxStarting), nil,
				"lxcfleet's --json output had no container events to count the controller's starts from")
		case off.CtlMaxW > 0:
			add("offline with pacing: most starting at once never above the controller's cap", "never above W", fmt.Sprintf("%d at most; %d events above the W of the moment (W up to %d, %d changes)", off.CtlMaxStarting, off.CtlOverCap, off.CtlMaxW, off.CtlWChanges),
				b(off.CtlOverCap == 0), fmt.Sprintf("from lxcfleet's own events (starting → healthy/failed); the prober saw %d containers running and not yet answering at most", off.MaxStarting))
		default:
			add("offline with pacing: most starting at once never above the controller's cap", fmt.Sprintf("≤ K = %d (W not reported)", off.Window), fmt.Sprintf("%d", off.CtlMaxStarting),
				b(off.CtlOverCap == 0), fmt.Sprintf("lxcfleet's events do not state the controller's W, only K is checked; the prober saw %d starting at most", off.MaxStarting))
		}
	} else {
		add("offline with pacing: 0 failed starts", "0", "—", nil, "scenario 4 not run")
		add("offline with pacing: most starting at once never above the controller's cap", "≤ W", "—", nil, "scenario 4 not run")
	}
	// Rolling with pacing.
	if roll != nil && rep.AloneRestartSeconds > 0 {
		lim := 1.5 * rep.AloneRestartSeconds
		note := fmt.Sprintf("most starting at once %d (K=%d); a start costs %.2f CPU s here, %.2f alone; peak load1 %.1f", roll.MaxStarting, roll.Window, roll.StartCPUMedian, aloneCPUMedian(rep.Alone), roll.PeakLoad1)
		add("rolling with pacing: p99 unavailability ≤ 1.5× one locker's restart alone", fmt.Sprintf("≤ %.2f s (1.5 × %.2f s)", lim, rep.AloneRestartSeconds),
			fmt.Sprintf("%.2f s%s", roll.UnavailP99, paced(roll)), b(roll.UnavailP99 <= lim), note)
	} else {
		add("rolling with pacing: p99 unavailability ≤ 1.5× one locker's restart alone", "≤ 1.5 × alone", "—", nil, "scenario 5 not run")
	}
	if roll != nil && off != nil && off.WindowSeconds > 0 {
		lim := 1.5 * off.WindowSeconds
		add("rolling with pacing: window ≤ 1.5× offline-with-pacing's", fmt.Sprintf("≤ %.1f s (1.5 × %.1f s)", lim, off.WindowSeconds),
			fmt.Sprintf("%.1f s (%.2f×)%s", roll.WindowSeconds, roll.WindowSeconds/off.WindowSeconds, paced(roll)), b(roll.WindowSeconds <= lim), restart(roll)+"; rolling keeps K lockers down at most, offline all of them")
	} else {
		add("rolling with pacing: window ≤ 1.5× offline-with-pacing's", "≤ 1.5× offline", "—", nil, "scenario 4 or 5 not run")
	}
	// The API during the offline update.
	if off != nil && off.Agent != nil && off.Agent.Via == "daemon" && off.Agent.Requests > 0 {
		a := off.Agent
		add("GET /v1/containers p99 ≤ 50 ms with 0 errors at 200 req/s during the offline update", "≤ 50 ms, 0 errors",
			fmt.Sprintf("p99 %.1f ms (p50 %.1f, max %.1f), %d errors of %d at %d req/s (%s)", a.P99ms, a.P50ms, a.MaxMs, a.Errors, a.Requests, a.Rate, apiLoadKind(a.NotModified, a.Requests)),
			b(a.P99ms <= 50 && a.Errors == 0), fmt.Sprintf("the agent used %.0f%% of one core during the update (%.1f CPU s), peak RSS %.1f MiB; peak load1 %.1f, PSI cpu some %.0f%%", a.CPUPct, a.CPUSeconds, a.PeakRSSMiB, off.PeakLoad1, off.PeakCPUSome))
	} else {
		why := "scenario 4 not run"
		if off != nil && off.Agent != nil && off.Agent.Err != "" {
			why = off.Agent.Err
		} else if off != nil {
			why = "the update did not run through an agent daemon"
		}
		add("GET /v1/containers p99 ≤ 50 ms with 0 errors at 200 req/s during the offline update", "≤ 50 ms, 0 errors", "—", nil, why)
	}
	// Probing.
	pf := rep.Probing
	if pf.RunSeconds > 0 {
		note := fmt.Sprintf("N=%d. Idle calibration (%.0f s each): prober %.1f%% + lockers answering %.1f%% (%.1f req/s) = %.1f%%; the 20 Hz prober it replaces: %.1f%% + %.1f%% (%.0f req/s; %.2f ms of a locker's CPU per request). Over the run the prober sent %d requests. The lockers' share is capped by the serving rate (%.0f req/s at any N: ≈ %.1f%% at %.2f ms a request); the prober's own is mostly its 40 scans a second and grows little with N",
			rep.N, pf.Seconds, pf.AdaptiveProberPct, pf.AdaptiveLockerPct, pf.AdaptiveReqPerSec, pf.AdaptiveProberPct+pf.AdaptiveLockerPct,
			pf.PollProberPct, pf.PollLockerPct, pf.PollReqPerSec, pf.LockerCPUPerRequestMs, pf.RunRequests, pf.ServingRate, pf.ServingRate*pf.LockerCPUPerRequestMs/10, pf.LockerCPUPerRequestMs)
		add("probing ≤ 10% of one core (the prober + the lockers answering it)", "≤ 10%",
			fmt.Sprintf("%.1f%% over the run (prober %.1f%%, lockers %.1f%%)", pf.RunTotalPct, pf.RunProberPct, pf.RunLockerPct), b(pf.RunTotalPct <= 10), note)
	} else {
		add("probing ≤ 10% of one core (the prober + the lockers answering it)", "≤ 10%", "—", nil, orDash(pf.Err))
	}
	// The prober's accuracy: its figure for each restart alone against the
	// runner's own 2 ms timing of the same restart.
	var worst float64
	nAcc := 0
	for _, f := range rep.Alone {
		if f.Parts != nil && f.Parts.Err == "" {
			worst = max(worst, math.Abs(f.UnavailMax-f.Parts.Sum))
			nAcc++
		}
	}
	if nAcc > 0 {
		add("the prober measures each locker's unavailability to within 100 ms", "≤ 100 ms", fmt.Sprintf("%.0f ms at worst over %d restarts", 1000*worst, nAcc), b(worst <= 0.1),
			"each restart alone timed both by the prober and by the runner (port closed → first answer, 2 ms scans)")
	}
	// One restart alone against its parts.
	var parts *RestartParts
	for i := range rep.Breakdown {
		if rep.Breakdown[i].Load == "none" && rep.Breakdown[i].Median.Err == "" {
			parts = &rep.Breakdown[i].Median
		}
	}
	if parts != nil && rep.AloneRestartSeconds > 0 {
		lim := 1.5 * parts.Sum
		note := fmt.Sprintf("parts with nothing probing: stop %.3f s + LXC start %.3f s + app ready %.3f s (its CPU %.3f s) + detection %.3f s", parts.Stop, parts.LXCStart, parts.AppReady, parts.AppCPU, parts.Detect)
		for _, bd := range rep.Breakdown {
			if bd.Load != "none" && bd.Median.Err == "" {
				note += fmt.Sprintf("; under the %s: %.2f s (app ready %.2f s)", bd.Load, bd.Median.Sum, bd.Median.AppReady)
			}
		}
		add("one restart alone ≤ 1.5× the sum of its measured parts", fmt.Sprintf("≤ %.2f s (1.5 × %.2f s)", lim, parts.Sum),
			fmt.Sprintf("%.2f s (median of %d, prober running)", rep.AloneRestartSeconds, len(rep.Alone)), b(rep.AloneRestartSeconds <= lim), note)
	} else {
		add("one restart alone ≤ 1.5× the sum of its measured parts", "≤ 1.5 × parts", "—", nil, "no breakdown measured")
	}
	// Two of issue 7's.
	if app != nil {
		var v float64
		src := "lxcfleet's build_seconds"
		switch {
		case app.BuildSeconds != nil:
			v = *app.BuildSeconds
		case app.FirstDownSeconds != nil:
			v, src = *app.FirstDownSeconds, "command start → first locker down"
		}
		add("(issue 7) app-only update build step ≤ 2 s", "≤ 2 s", fmt.Sprintf("%.2f s (%s; npm %s)", v, src, orDash(app.Npm)), b(v <= 2 && v > 0), "")
	}
	rep.targets19(add, storm, off, roll)
	rep.targets20(add)
	if rep.Agent.IdleRSSMiB > 0 {
		add("(issue 7) agent idle RSS ≤ 30 MB", "≤ 30 MB", fmt.Sprintf("%.1f MB", rep.Agent.IdleRSSMiB*1.048576), b(rep.Agent.IdleRSSMiB*1.048576 <= 30), "")
	}
}

// targets19 adds issue 19's targets that issue 13's do not cover, and
// the heavy app's: its shape, lxcfleet without failed starts or OOM
// kills, and the storm as measured.
func (rep *Report) targets19(add func(name, want, measured string, met *bool, note string), storm, off, roll *Figures) {
	b := func(v bool) *bool { return &v }
	oom := func(f *Figures) (int, string) {
		if f.Memory == nil {
			return 0, "no memory limit: OOM kills not counted"
		}
		m := f.Memory
		note := fmt.Sprintf("limit %.0f MiB, peak %.0f MiB, limit hit %d times, host OOM kills %d", m.LimitMiB, m.PeakMiB, m.LimitHits, m.HostOOMKills)
		if m.Err != "" {
			note += "; " + m.Err
		}
		return m.OOMKills, note
	}
	if off != nil && off.CPUFloorSeconds > 0 {
		add("(19) offline with pacing: window ≤ 1.15× the CPU floor", fmt.Sprintf("≤ %.1f s (1.15 × %.1f s)", 1.15*off.CPUFloorSeconds, off.CPUFloorSeconds),
			fmt.Sprintf("%.1f s (%.2f×)", off.WindowSeconds, off.FloorRatio), b(off.FloorRatio <= 1.15), restartNote(off))
		add("(19) offline with pacing: per-locker p50 unavailability ≤ 1 s", "≤ 1 s", fmt.Sprintf("%.2f s (p99 %.2f, max %.2f)", off.UnavailP50, off.UnavailP99, off.UnavailMax),
			b(off.UnavailP50 <= 1), fmt.Sprintf("most starting at once %d", off.MaxStarting))
	} else {
		add("(19) offline with pacing: window ≤ 1.15× the CPU floor", "≤ 1.15× floor", "—", nil, "scenario 4 not run or no start CPU measured")
	}
	if roll != nil && roll.Window > 0 {
		add("(19) rolling: never more than K down", fmt.Sprintf("≤ K = %d", roll.Window), fmt.Sprintf("%d at most", roll.MaxUnavailable), b(roll.MaxUnavailable <= roll.Window), "")
	}
	if rep.App != AppHeavy {
		return
	}
	// The heavy app's shape, from the restarts alone.
	var peak, anon, rss []float64
	for _, f := range rep.Alone {
		if a := f.AppMemory; a != nil && a.Err == "" {
			peak, anon, rss = append(peak, a.PeakMiB), append(anon, a.ServingAnonMiB), append(rss, a.ServingMiB)
		}
	}
	if cpu := aloneCPUMedian(rep.Alone); len(peak) > 0 {
		p, a, r := quantile(peak, 0.5), quantile(anon, 0.5), quantile(rss, 0.5)
		add("(19) heavy app: a start ≥ 1 CPU s, peak ≥ 150 MB RSS, ≤ 50 MB of its own once serving", "≥ 1 s, ≥ 150 MB, ≤ 50 MB",
			fmt.Sprintf("%.2f CPU s, peak %.0f MB (VmHWM), serving %.0f MB own (RssAnon; VmRSS %.0f MB)", cpu, p*1.048576, a*1.048576, r*1.048576),
			b(cpu >= 1 && p*1.048576 >= 150 && a*1.048576 <= 50),
			"medians of the restarts alone; the rest of VmRSS (RssFile) is the node binary's pages, shared by every locker and counted once in the cgroup")
	} else {
		add("(19) heavy app: a start ≥ 1 CPU s, peak ≥ 150 MB RSS, ≤ 50 MB of its own once serving", "≥ 1 s, ≥ 150 MB, ≤ 50 MB", "—", nil, "no restart alone measured")
	}
	for _, sc := range []struct {
		name string
		f    *Figures
	}{{"offline with pacing", off}, {"rolling with pacing", roll}} {
		name := "(19) heavy app: lxcfleet " + sc.name + " finishes with 0 failed starts and no OOM kill"
		if sc.f == nil {
			add(name, "0 and 0", "—", nil, "scenario not run")
			continue
		}
		k, note := oom(sc.f)
		met := b(sc.f.FailedStarts == 0 && k == 0 && !sc.f.TimedOut)
		if sc.f.Memory == nil {
			met = nil
		}
		add(name, "0 failed starts, 0 OOM kills", fmt.Sprintf("%d failed starts (%d died starting, %d not up at the end), %d OOM kills", sc.f.FailedStarts, sc.f.DiedStarting, sc.f.NotOnTarget, k),
			met, fmt.Sprintf("%s; most starting at once %d", note, sc.f.MaxStarting))
	}
	if storm != nil {
		k, note := oom(storm)
		t := Goal{Name: "(19) heavy app: the storm, as measured", Want: "reported", Met: "measured",
			Measured: fmt.Sprintf("%d failed starts (%d died starting, %d not up at the end%s), %d OOM kills, %d starting at once at most, peak PSI mem some %.0f%%, io %.0f%%",
				storm.FailedStarts, storm.DiedStarting, storm.NotOnTarget, map[bool]string{true: ", timed out"}[storm.TimedOut], k, storm.MaxStarting, storm.PeakMemSome, storm.PeakIOSome),
			Note: note}
		rep.Targets = append(rep.Targets, t)
	}
}

// restartNote is the part of a window before the first locker went down.
func restartNote(f *Figures) string {
	if f.FirstDownSeconds == nil {
		return ""
	}
	return fmt.Sprintf("%.1f s of it before the first locker went down; restart phase %.1f s (%s× the floor)", *f.FirstDownSeconds, f.WindowSeconds-*f.FirstDownSeconds, fmtPtr(f.RestartRatio))
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
	fmt.Fprintf(&b, "Command: `%s`; lxcfleet: `%s` (update-code: %v, agent: %v, --pacing: %v). Every scenario's lockers sit in the cgroup parent %s.  \n", rep.Command, rep.LXCFleet.Bin, rep.LXCFleet.UpdateCode, rep.LXCFleet.Agent, rep.LXCFleet.Pacing, orDash(rep.CgroupParent))
	limit := "none"
	if rep.MemLimitMiB > 0 {
		limit = FormatBytes(int64(rep.MemLimitMiB * (1 << 20)))
	}
	fmt.Fprintf(&b, "App: %s (WORK %d); the lockers' memory limit (on their cgroup parent, every scenario): %s; with every locker serving they used %.0f MiB (page cache included).  \n", orDash(rep.App), rep.Work, limit, rep.ServingMemMiB)
	fmt.Fprintf(&b, "One locker restarted alone: %.2f s unavailable (median of %d); a start costs %s CPU s; %s.\n\n", rep.AloneRestartSeconds, len(rep.Alone), aloneCPU(rep.Alone), appMemText(rep.Alone))
	b.WriteString("| scenario | window s | unavail p50 / p99 / max s | most unavail at once | most starting at once | failed starts (died starting, not up at the end) | OOM kills (limit hits) | peak memory: lockers MiB / host GiB | peak load1 | peak PSI some cpu / mem / io % (avg10) | npm s | CPU floor s | window / floor |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range rep.Scenarios {
		if f.Skipped != "" {
			fmt.Fprintf(&b, "| %s | not run: %s |||||||||||| \n", f.Title, f.Skipped)
			continue
		}
		if f.T0.IsZero() {
			fmt.Fprintf(&b, "| %s | failed: %s |||||||||||| \n", f.Title, orDash(f.Err))
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
		oom, peak := "—", "—"
		if mf := f.Memory; mf != nil {
			oom = fmt.Sprintf("%d (%d)", mf.OOMKills, mf.LimitHits)
			if mf.Err != "" {
				oom = fmt.Sprintf("not read (%d)", mf.LimitHits)
			}
			peak = fmt.Sprintf("%.0f", mf.PeakMiB)
		}
		fmt.Fprintf(&b, "| %s | %s | %.2f / %.2f / %.2f | %d | %d | %d (%d, %d) | %s | %s / %.1f | %.2f | %.0f / %.0f / %.0f (%.0f / %.0f / %.0f) | %s | %.1f | %s |\n",
			title, win, f.UnavailP50, f.UnavailP99, f.UnavailMax, f.MaxUnavailable, f.MaxStarting, f.FailedStarts, f.DiedStarting, f.NotOnTarget,
			oom, peak, f.PeakMemUsed, f.PeakLoad1, f.PeakCPUSome, f.PeakMemSome, f.PeakIOSome, f.PeakCPUAvg10, f.PeakMemAvg10, f.PeakIOAvg10, npm, f.CPUFloorSeconds, ratio)
	}
	b.WriteString("\n")
	// The agent that ran each lxcfleet update.
	var ags []Figures
	for _, f := range rep.Scenarios {
		if f.Agent != nil && f.Skipped == "" && !f.T0.IsZero() {
			ags = append(ags, f)
		}
	}
	if len(ags) > 0 {
		b.WriteString("The agent during each lxcfleet update (daemon: `lxcfleet agent` running the job, GET /v1/containers loaded meanwhile; local: the `update-code --local` process):\n\n")
		b.WriteString("| scenario | via | agent CPU s | % of one core | RSS idle / peak MiB | API p50 / p99 / max ms | API errors / requests (304s) | controller: most starting / W max / above cap |\n|---|---|---|---|---|---|---|---|\n")
		for _, f := range ags {
			a := f.Agent
			api := "—"
			apiErr := "—"
			if a.Requests > 0 {
				api = fmt.Sprintf("%.1f / %.1f / %.1f", a.P50ms, a.P99ms, a.MaxMs)
				apiErr = fmt.Sprintf("%d / %d (%d)", a.Errors, a.Requests, a.NotModified)
			}
			idle := "—"
			if a.IdleRSSMiB > 0 {
				idle = fmt.Sprintf("%.1f", a.IdleRSSMiB)
			}
			w := "—"
			if f.CtlMaxW > 0 {
				w = fmt.Sprint(f.CtlMaxW)
			}
			fmt.Fprintf(&b, "| %s | %s | %.2f | %.0f | %s / %.1f | %s | %s | %d / %s / %d |\n", f.ID, a.Via, a.CPUSeconds, a.CPUPct, idle, a.PeakRSSMiB, api, apiErr, f.CtlMaxStarting, w, f.CtlOverCap)
		}
		b.WriteString("\n")
	}
	a := rep.Agent
	if a.Err == "" {
		fmt.Fprintf(&b, "Agent (%s) with %d lockers, idle fleet: idle RSS %.1f MiB; GET /v1/containers at %d req/s for %.0f s (%s): p50 %.2f ms, p99 %.2f ms, max %.2f ms, %d errors; the agent used %.2f CPU s for them (%.2f ms a request).\n\n",
			a.Source, rep.N, a.IdleRSSMiB, a.Rate, a.Seconds, apiLoadKind(a.NotModified, a.Requests), a.P50ms, a.P99ms, a.MaxMs, a.Errors, a.CPUSeconds, a.CPUPerRequestMs)
		if f := a.Full; f != nil {
			fmt.Fprintf(&b, "The same load asking for the whole list every time (issue 7's, `-api-full`), right after: p50 %.2f ms, p99 %.2f ms, max %.2f ms, %d errors of %d; the agent used %.2f CPU s for them.\n\n",
				f.P50ms, f.P99ms, f.MaxMs, f.Errors, f.Requests, f.CPUSeconds)
		}
	} else {
		fmt.Fprintf(&b, "Agent: not measured: %s\n\n", a.Err)
	}
	pf := rep.Probing
	if pf.Seconds > 0 {
		b.WriteString("What probing costs, in % of one core (idle fleet, every locker serving, calibrated periods of ")
		fmt.Fprintf(&b, "%.0f s; lockers' CPU from their cgroups, the prober's from /proc/PID/stat):\n\n", pf.Seconds)
		b.WriteString("| prober | prober's CPU | lockers answering | total | requests/s |\n|---|---|---|---|---|\n")
		fmt.Fprintf(&b, "| adaptive (tick %.0f ms, serving lockers every %.0f s) | %.1f | %.1f | %.1f | %.0f |\n", pf.TickMs, pf.ServingSeconds, pf.AdaptiveProberPct, pf.AdaptiveLockerPct, pf.AdaptiveProberPct+pf.AdaptiveLockerPct, pf.AdaptiveReqPerSec)
		if pf.PollReqPerSec > 0 {
			fmt.Fprintf(&b, "| 20 Hz HTTP (issue 7's) | %.1f | %.1f | %.1f | %.0f |\n", pf.PollProberPct, pf.PollLockerPct, pf.PollProberPct+pf.PollLockerPct, pf.PollReqPerSec)
		}
		if pf.RunSeconds > 0 {
			fmt.Fprintf(&b, "| adaptive, over the whole run (%.0f s, %d requests) | %.1f | %.1f | %.1f | %.1f |\n", pf.RunSeconds, pf.RunRequests, pf.RunProberPct, pf.RunLockerPct, pf.RunTotalPct, float64(pf.RunRequests)/pf.RunSeconds)
		}
		fmt.Fprintf(&b, "\nThe lockers idle without probing: %.2f%%. A locker spends %.2f ms of CPU per answered probe.\n\n", pf.LockersIdlePct, pf.LockerCPUPerRequestMs)
	}
	if len(rep.Breakdown) > 0 || len(rep.Alone) > 0 {
		b.WriteString("One locker's restart in its parts (s; medians; the runner times it itself, 2 ms scans of the listening ports): stop = app gone → lxc-stop returned, LXC start = lxcctl Start call → RUNNING, app ready = RUNNING → port listening, detection = listening → first HTTP answer. The fleet is otherwise idle.\n\n")
		b.WriteString("| what else ran | stop call (app gone at) | stop | LXC start | app ready (its CPU) | detection | sum = unavailable | load1 |\n|---|---|---|---|---|---|---|---|\n")
		row := func(label string, m RestartParts) {
			if m.Err != "" {
				fmt.Fprintf(&b, "| %s | %s |||||||\n", label, m.Err)
				return
			}
			fmt.Fprintf(&b, "| %s | %.3f (%.3f) | %.3f | %.3f | %.3f (%.3f) | %.3f | %.3f | %.2f |\n", label, m.StopCall, m.AppGone, m.Stop, m.LXCStart, m.AppReady, m.AppCPU, m.Detect, m.Sum, m.Load1)
		}
		for _, bd := range rep.Breakdown {
			label := "nothing (prober stopped)"
			if bd.Load != "none" {
				label = bd.Load
			}
			row(label, bd.Median)
		}
		var alone []RestartParts
		for _, f := range rep.Alone {
			if f.Parts != nil {
				alone = append(alone, *f.Parts)
			}
		}
		if len(alone) > 0 {
			row("the adaptive prober (the restarts alone)", medianParts(alone))
		}
		b.WriteString("\n")
	}
	rep.markdown20(&b)
	b.WriteString("| target | want | measured | | what limits it |\n|---|---|---|---|---|\n")
	for _, t := range rep.Targets {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", t.Name, t.Want, t.Measured, t.Met, t.Note)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "How to read it: unavailability is, per locker, the time during the window in which it did not answer /healthz with the old or the new build. The prober (a separate process) is adaptive: every 25 ms it lists the listening TCP ports (one sock_diag netlink dump) and the containers' cgroups (one getdents); a serving locker whose port closes is down from that scan, a down locker whose port opens is asked over HTTP at once and is up from that scan when it answers its build; serving lockers are asked over HTTP only every few seconds (at most %.0f requests a second in all). Both edges are seen to within 25 ms plus scheduling (checked against the runner's own timing of the restarts alone, above). The window runs from the command's start to the last locker answering the new build. Starting = container running (its cgroup exists) and not yet answering. The CPU floor is the CPU its containers' cgroups used from start to first answer, summed over the starts of the scenario, divided by the cores. For lxcfleet, npm is timed from its own stage events, and its whole build step (mirror fetch, checkout, npm ci or linked node_modules) is shown beside it: it runs while every locker still serves. The machine is shared: other work on it shows in the load at start and the peak load.\n\n", rep.Probing.ServingRate)
	if len(rep.Scenarios) > 0 {
		b.WriteString("![lockers healthy over time](healthy.png)\n")
	}
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

// appMemText is the restarts alone's app memory: peak, then serving.
func appMemText(fs []Figures) string {
	var peak, rss, anon []float64
	for _, f := range fs {
		if a := f.AppMemory; a != nil && a.Err == "" {
			peak, rss, anon = append(peak, a.PeakMiB), append(rss, a.ServingMiB), append(anon, a.ServingAnonMiB)
		}
	}
	if len(peak) == 0 {
		return "its memory not measured"
	}
	return fmt.Sprintf("its app's RSS peaks at %.0f MiB (VmHWM) and serves on %.0f MiB (VmRSS; %.0f MiB of it its own, RssAnon) 3 s after it answers (medians)",
		quantile(peak, 0.5), quantile(rss, 0.5), quantile(anon, 0.5))
}

// apiLoadKind says what the GET /v1/containers load asked: conditional
// polls (as the console's) and how many were answered 304, or whole lists.
func apiLoadKind(notModified, requests int) string {
	if notModified == 0 {
		return "every answer a whole list"
	}
	return fmt.Sprintf("polls naming the last ETag, as the console's: %d of %d answered 304", notModified, requests)
}
