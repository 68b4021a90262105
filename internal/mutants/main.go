package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// mutant replaces old with new in file (relative to the module root).
type mutant struct {
	name, file, old, new string
}

// testsFor names, for mutants outside rollout, the `go test` target that
// must kill them (a package and -run flags: their packages' whole tests are
// slow); every other mutant must be killed by the rollout package's tests.
var testsFor = map[string][]string{
	"codeupdate: unlock by close alone": {"-run", "^TestLockReleasedUnderForks$", "./codeupdate/"},
	// The glue from the flag to the executor and the journaled plan.
	"glue: --soak ignored":                                    {"-run", "^TestKnobFlagsReachThePolicy$", "./cmd/lxcfleet/"},
	"glue: --max-failure-ratio ignored":                       {"-run", "^TestKnobFlagsReachThePolicy$", "./cmd/lxcfleet/"},
	"glue: the policy's soak is lost on the wire":             {"-run", "^TestKnobFlagsReachThePolicy$", "./cmd/lxcfleet/"},
	"glue: recovery with the default policy":                  {"-run", "^TestRecoveryResumesTheJournaledPlan$", "./agent/"},
	"glue: recovery ignores the lockers left starting":        {"-run", "^TestRecoveryResumesTheJournaledPlan$", "./agent/"},
	"glue: the plan's journal write ignored":                  {"-run", "^TestPlanJournalWriteFailsTheJob$", "./agent/"},
	"glue: the recovery planner counts a watched locker done": {"-run", "^TestRecoveryResumesTheJournaledPlan$", "./agent/"},
}

var mutants = []mutant{
	// The five planted by hand in the issue.
	{"per-window ratio check removed", "rollout/run.go",
		"case lastFailed > 0 && float64(lastFailed) > ratio*float64(k):", "case false:"},
	{"soak check removed", "rollout/run.go",
		`who, err := x.holdHealthy(ctx, names, x.pol.Soak, "during the soak")`, `who, err := "", error(nil)`},
	{"offline failure policy skipped", "rollout/run.go",
		"if failed && x.plan.Watched() {", "if failed && x.plan.Watched() && x.plan.Strategy != Offline {"},
	{"a cancel mid-replace leaves the locker down", "rollout/run.go",
		"st, err := x.env.Host.Start(context.WithoutCancel(ctx), it.Name, x.pol.Deadline)", "st, err := x.env.Host.Start(ctx, it.Name, x.pol.Deadline)"},
	{"recovery ignores the lockers the job stopped", "rollout/plan.go",
		"if !l.WantRunning && !stoppedByJob[l.Name] {", "if !l.WantRunning {"},
	// One or more per invariant.
	{"I1: a failed locker gives back its place", "rollout/run.go",
		"\tcase failed:\n\t\t// A failed locker is down: it keeps its place in K (I1).\n\tcase holdsDown:", "\tcase holdsDown:"},
	{"I1: stopped lockers waiting to start do not count against K", "rollout/run.go",
		"if needDown && x.down+x.pending < x.pol.MaxUnavailable && x.starting < x.maxStarting() {", "if needDown && x.down < x.pol.MaxUnavailable && x.starting < x.maxStarting() {"},
	{"I1: no monitor window", "rollout/run.go",
		`_, err := x.holdHealthy(ctx, []string{name}, x.pol.Monitor, "in its monitor window")`, "var err error"},
	{"I1: the way back replaces K while failed ones are still down", "rollout/run.go",
		"k := x.plan.Policy.MaxUnavailable - stillDown", "k := x.plan.Policy.MaxUnavailable + len(down)"},
	{"I1: offline starts every locker at once (a storm)", "rollout/run.go",
		"\t\tx.pol.MaxStarting = x.plan.Policy.starting()\n", ""},
	{"lxc.start.delay is not honoured", "rollout/run.go",
		"wait = max(x.pol.Delay, x.plan.Items[i].Delay)", "wait = x.pol.Delay"},
	{"I2: a tripped policy leaves current on the bad release", "rollout/run.go",
		"\tif !x.switchBack() {\n\t\tx.res.Paused = true\n\t\treturn\n\t}", "\tif false {\n\t\treturn\n\t}"},
	{"I2: a shutdown leaves current on the unproven release", "rollout/run.go",
		"\t\tif x.unprovenOnTarget() && x.plan.Fallback != \"\" {\n\t\t\tx.switchBack()\n\t\t}", ""},
	{"I2: a failed switch is not undone", "rollout/run.go",
		`x.goBack(ctx, false, "the switch failed")`, ""},
	{"I2: the release that tripped is not marked bad", "rollout/run.go",
		"if tripped && x.plan.Target != \"\" {", "if false {"},
	{"I3: start-all on an unproven release is not watched", "rollout/plan.go",
		"return p.Kind == KindUpdate || p.Unproven", "return p.Kind == KindUpdate"},
	{"I3: launching goes on after the policy tripped", "rollout/run.go",
		`if x.tripped != "" || x.halted != "" || ctx.Err() != nil {`, `if x.halted != "" || ctx.Err() != nil || x.tripped != "" && x.plan.Strategy != Offline {`},
	{"I4: recovery resumes an unproven target", "rollout/plan.go",
		`if proven(interrupted.Target) || interrupted.Fallback == "" {`, "if true {"},
	{"I4: stopped lockers of a start plan stay down when it trips", "rollout/run.go",
		"case !touched && tripped && x.plan.Items[i].Op == OpStart:", "case false:"},
	{"I5: lockers never launched are reported moved", "rollout/run.go",
		"x.out[i] = Outcome{Name: it.Name, Op: it.Op, Outcome: OutSkipped}", "x.out[i] = Outcome{Name: it.Name, Op: it.Op, Outcome: OutMoved}"},
	{"I5: a locker that dies in its monitor window counts as moved", "rollout/run.go",
		"\t\to.Outcome, o.Error = OutFailed, err.Error()\n\t\tx.observe(Event{Container: it.Name, Phase: PhaseFailed, Op: \"monitor\"", "\t\to.Error = err.Error()\n\t\tx.observe(Event{Container: it.Name, Phase: PhaseFailed, Op: \"monitor\""},
	{"I6: a rollback does not pop the releases it went back past", "rollout/plan.go",
		"\t\t\tstack = stack[:i+1]\n", "\t\t\t_ = i\n"},
	{"I6: rollback leaves stopped lockers down", "rollout/plan.go",
		"\t\tcase l.WantRunning:\n\t\t\titems = append(items, Item{l.Name, OpStart, l.StartDelay})", ""},
	{"I4: recovery trusts a locker the dead agent was stopping", "rollout/plan.go",
		"\t\tcase l.Stopping:\n", "\t\tcase false:\n"},
	// Pacing (W, the most starting at once).
	{"pacing: a failed start does not halve W", "rollout/pace.go",
		"case !ok:\n\t\twhy = \"a start failed\"", "case false:\n\t\twhy = \"a start failed\""},
	{"pacing: pressure over target is ignored", "rollout/pace.go",
		"case pr != nil && over(pr.Memory, p.targets.Memory):", "case false:"},
	{"pacing: one lucky start sets the baseline", "rollout/pace.go",
		"return p.best[len(p.best)-1]", "return p.best[0]"},
	{"pacing: the baseline follows the load up", "rollout/pace.go",
		"p.best = p.best[:baselineRank]", "p.best = p.best[1:]"},
	{"pacing: an unreadable gauge is not said", "rollout/run.go",
		"if gaugeErr != nil && !x.gaugeFailed {", "if false {"},
	{"pacing: a slow start is no signal", "rollout/pace.go",
		"case p.slow(took):", "case false:"},
	{"pacing: W halved more than once per window", "rollout/pace.go",
		"if seq <= p.cutAt {", "if false {"},
	{"pacing: W grows past its cap", "rollout/pace.go",
		"if p.acks++; p.acks < p.w || p.w == p.cap {", "if p.acks++; p.acks < p.w {"},
	{"pacing: the executor ignores W for starts", "rollout/run.go",
		"if !needDown && x.starting < x.maxStarting() {", "if !needDown && x.starting < x.pol.MaxUnavailable {"},
	{"pacing: a replace stops before it has a start place", "rollout/run.go",
		"x.down+x.pending < x.pol.MaxUnavailable && x.starting < x.maxStarting() {", "x.down+x.pending < x.pol.MaxUnavailable {"},
	// Found by breaker2 (rollout/breaker2_test.go).
	{"pacing: starts launched before a cut count as a window of the new W", "rollout/pace.go",
		"\tif p.launchedBefore(seq) {\n", "\tif false {\n"},
	{"pacing: stages of W's changes may come out of order", "rollout/run.go",
		"\tx.pmu.Lock()\n\tdefer x.pmu.Unlock()\n", ""},
	{"pacing: the way back replaces more than W at once", "rollout/run.go",
		"x.backWave(ctx, up, release, min(k, x.plan.Policy.starting()))", "x.backWave(ctx, up, release, k)"},
	// Outside the policy: a lock released by close alone stays held by
	// children forked before it was closed (the CI flake of stop 16).
	{"codeupdate: unlock by close alone", "codeupdate/lock.go",
		"\t_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)\n", ""},
	// The glue (testsFor names their tests).
	{"glue: --soak ignored", "cmd/lxcfleet/policyflags.go",
		"return rollout.Duration(*p.durs[name])", "if name == \"soak\" {\n\t\t\treturn rollout.Duration(0)\n\t\t}\n\t\treturn rollout.Duration(*p.durs[name])"},
	{"glue: --max-failure-ratio ignored", "cmd/lxcfleet/policyflags.go",
		"return *p.floats[name]", "return 0.1"},
	{"glue: the policy's soak is lost on the wire", "rollout/policy.go",
		"w.Canary, w.Soak.D(), w.MaxFailureRatio", "w.Canary, 0, w.MaxFailureRatio"},
	{"glue: recovery with the default policy", "agent/recover.go",
		"\t\tpol = interrupted.Policy\n", ""},
	{"glue: recovery ignores the lockers left starting", "agent/recover.go",
		"\t\tls[i].Starting = starting[ls[i].Name]\n", "\t\t_ = starting\n"},
	{"glue: the plan's journal write ignored", "agent/moves.go",
		"\tif err := r.update(func(j *Job) {\n\t\tp := plan", "\tif err := func(fn func(*Job)) error { _ = r.update(fn); return nil }(func(j *Job) {\n\t\tp := plan"},
	{"glue: the recovery planner counts a watched locker done", "rollout/plan.go",
		"\t\t\tp.Items = append(p.Items, Item{l.Name, OpWatch, l.StartDelay})", "\t\t\t_ = l"},
}

func main() {
	run := flag.String("run", "", "only mutants whose name matches this regexp")
	verbose := flag.Bool("v", false, "print the test output of each mutant")
	flag.Parse()
	var re *regexp.Regexp
	if *run != "" {
		re = regexp.MustCompile(*run)
	}
	tmp, err := os.MkdirTemp("", "mutants")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutants:", err)
		os.Exit(2)
	}
	defer os.RemoveAll(tmp)
	survived, broken, killed := 0, 0, 0
	for i, m := range mutants {
		if re != nil && !re.MatchString(m.name) {
			continue
		}
		src, err := os.ReadFile(m.file)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mutants: reading %s: %v (run from the module root)\n", m.file, err)
			os.Exit(2)
		}
		if n := strings.Count(string(src), m.old); n != 1 {
			fmt.Printf("BROKEN   %-60s its text occurs %d times in %s, want once\n", m.name, n, m.file)
			broken++
			continue
		}
		mutated := filepath.Join(tmp, fmt.Sprintf("m%d.go", i))
		if err := os.WriteFile(mutated, []byte(strings.Replace(string(src), m.old, m.new, 1)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "mutants:", err)
			os.Exit(2)
		}
		abs, _ := filepath.Abs(m.file)
		ov, _ := json.Marshal(map[string]map[string]string{"Replace": {abs: mutated}})
		ovFile := filepath.Join(tmp, fmt.Sprintf("o%d.json", i))
		if err := os.WriteFile(ovFile, ov, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "mutants:", err)
			os.Exit(2)
		}
		begin := time.Now()
		target := testsFor[m.name]
		if target == nil {
			target = []string{"./rollout/"}
		}
		cmd := exec.Command("go", append([]string{"test", "-count=1", "-overlay", ovFile, "-timeout", "60s"}, target...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err = cmd.Run()
		switch {
		case err == nil:
			fmt.Printf("SURVIVED %-60s no test failed\n", m.name)
			survived++
		case strings.Contains(out.String(), "[build failed]") || strings.Contains(out.String(), "[setup failed]"):
			fmt.Printf("BROKEN   %-60s the mutant does not build\n", m.name)
			broken++
		default:
			fmt.Printf("killed   %-60s in %.1fs (%s)\n", m.name, time.Since(begin).Seconds(), firstFail(out.String()))
			killed++
		}
		if *verbose {
			fmt.Println(out.String())
		}
	}
	fmt.Printf("mutants: %d killed, %d survived, %d broken\n", killed, survived, broken)
	if survived > 0 || broken > 0 || killed == 0 {
		os.Exit(1)
	}
}

// firstFail names the first failing test in go test's output.
func firstFail(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if t := strings.TrimSpace(line); strings.HasPrefix(t, "--- FAIL: ") {
			return strings.Fields(t)[2]
		}
	}
	return "the package failed"
}
