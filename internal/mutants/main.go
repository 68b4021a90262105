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
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
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
	// The releases in use (retention's safety check) and the LXC config parser.
	"retention: a locker whose release is unknown counts as none": {"-run", "^TestReleasesInUse$", "./agent/"},
	"retention: a deleted release no longer counts":               {"-run", "^TestReleasesInUse$", "./agent/"},
	"retention: any failure to read a release holds none":         {"-run", "^TestReleaseOfPID$", "./mounts/"},
	"lxc config: a quoted value keeps its quotes":                 {"-run", "^TestParseConfigLine$", "./mounts/"},
	"retention: prune counts from the last snapshot":              {"-run", "^TestPruneKeepsTheReleasesInUse$", "./agent/"},
	// The pacer's memory signal from the lockers' parent cgroup.
	"gauge: the lockers' cgroup hitting its limit is no signal": {"-run", "^TestLockersMemory$", "./lockerverbs/"},
	"gauge: the lockers' working set is no signal":              {"-run", "^TestLockersMemory$", "./lockerverbs/"},
	// The glue from the flag to the executor and the journaled plan.
	"glue: --soak ignored":                                        {"-run", "^TestKnobFlagsReachThePolicy$", "./cmd/lxcfleet/"},
	"glue: --max-failure-ratio ignored":                           {"-run", "^TestKnobFlagsReachThePolicy$", "./cmd/lxcfleet/"},
	"glue: the policy's soak is lost on the wire":                 {"-run", "^TestKnobFlagsReachThePolicy$", "./cmd/lxcfleet/"},
	"glue: recovery with the default policy":                      {"-run", "^TestRecoveryResumesTheJournaledPlan$", "./agent/"},
	"glue: recovery ignores the lockers left starting":            {"-run", "^TestRecoveryResumesTheJournaledPlan$", "./agent/"},
	"glue: a failed journal write does not stop the job":          {"-run", "^TestJournalFailureStopsTheJob$", "./agent/"},
	"glue: the fleet's fence does not reach the job":              {"-run", "^TestFencedJobStopsMoving$", "./agent/"},
	"glue: the plan's journal write ignored":                      {"-run", "^TestPlanJournalWriteFailsTheJob$", "./agent/"},
	"glue: the recovery planner counts a watched locker done":     {"-run", "^TestRecoveryResumesTheJournaledPlan$", "./agent/"},
	"I4: recovery leaves an interrupted restart half done":        {"-run", "^TestRecoveryFinishesAnInterruptedRestart$", "./agent/"},
	"glue: recovery forgets the restart's lockers not reached":    {"-run", "^TestRecoveryFinishesAnInterruptedRestart$", "./agent/"},
	"watch: no release watch after a recovery finished an update": {"-run", "^TestRecoveryResumesTheJournaledPlan$", "./agent/"},
	"watch: no release watch after an update":                     {"-run", "^TestReleaseWatchGlue$", "./agent/"},
	"watch: a crash counts only at supervision's start limit":     {"-run", "^TestReleaseWatchGlue$", "./agent/"},
	"watch: one failed locker rolls a release back":               {"-run", "^TestReleaseWatchGlue$", "./agent/"},
	"supervision: every crash loop counts as a regression":        {"-run", "^TestSupervisionNeverHealthyLockersAreQuarantined$", "./agent/"},
	"supervision: judges a reading taken across a job's end":      {"-run", "^TestSupervisionLeavesAStopAllAlone$", "./agent/"},
	"release cache: keeps an answer whose folder changed":         {"-run", "^TestReleaseCache$", "./mounts/"},
	"watch: judges a round across an operator's job":              {"-run", "^TestReleaseWatchGlue$", "./agent/"},
	"supervision: judges a reading taken during a job":            {"-run", "^TestJudgeable$", "./agent/"},
	"sleep: judges a reading taken before an operator's job":      {"-run", "^TestSleeperLeavesAStopAllAlone$", "./agent/"},
	"watch: judges a stale snapshot":                              {"-run", "^TestReleaseWatchGlue$", "./agent/"},
	"api: a poll naming the current tag gets the whole list":      {"-run", "^TestContainersETag$", "./agent/"},
	"api: the tag outlives the list it names":                     {"-run", "^TestContainersETag$", "./agent/"},
	"health: every wait polls at the fastest rate":                {"-run", "^TestWaitsShareOneBudget$", "./lxcctl/"},
	"health: one wait alone polls every 100 ms":                   {"-run", "^TestPollInterval$", "./lxcctl/"},
	"held: K stays 4 with held sockets":                           {"-run", "^TestHeldDefaults$", "./config/"},
	"held: the held default overrides the config's own K":         {"-run", "^TestHeldDefaults$", "./config/"},
	"held: a request's K leaves the held default's W":             {"-run", "^TestImpliedMaxStarting$", "./agent/"},
	"held: an offline update's recovery runs at its K":            {"-run", "^TestRecoveryOfAnOfflineUpdate$", "./agent/"},
	"tally: every first step is a canary":                         {"-run", "^TestTallyCanaryOnlyForCanaries$", "./agent/"},
	"tally: a skipped locker has no reason":                       {"-run", "^TestTallyAfterAnAutomaticRollback$", "./agent/"},
	"tally: the way back erases a failure in its step":            {"-run", "^TestTallyAfterAnAutomaticRollback$", "./agent/"},
	"held: the app's socket is not at fd 3":                       {"-run", "^TestExecPutsTheSocketAtFD3$", "./heldsock/"},
	"sleep: a connection does not keep a locker awake":            {"-run", "^TestSleeperIdleRule$", "./agent/"},
	"sleep: a wake-up storm starts every sleeper at once (no W)":  {"-run", "^TestSleeperIdleRule$", "./agent/"},
	"downtime: the page holds held lockers' ports":                {"-run", "^TestDowntimePageSkipsHeldLockers$", "./agent/"},
	"sleep: an update starts sleeping lockers":                    {"-run", "^TestSleepingLockersWakeOnConnection$", "./agent/"},
	// The operator surface's refusals (the tester's findings of 2026-12-06).
	"api: names [] means every locker":                       {"-run", "^TestAPIBadInput$", "./agent/"},
	"api: an unknown group is nothing to do":                 {"-run", "^TestAPIBadInput$", "./agent/"},
	"api: a boot takes names":                                {"-run", "^TestAPIBadInput$", "./agent/"},
	"tally: serving counts by the job's events":              {"-run", "^TestTallyServingCountsWhatRunsNow$", "./agent/"},
	"tally: failures after the trip not told apart":          {"-run", "^TestTallySaysWhoFailedAfterTheTrip$", "./agent/"},
	"config: idle_stop has no floor":                         {"-run", "^TestSleepSection$", "./config/"},
	"clock: job events on the wall clock":                    {"-run", "^TestAgentTimesComeFromItsClock$", "./agent/"},
	"clock: job records on the wall clock":                   {"-run", "^TestAgentTimesComeFromItsClock$", "./agent/"},
	"config: idle_stop without held sockets":                 {"-run", "^TestSleepSection$", "./config/"},
	"sleep: a lost watch is never watched again":             {"-run", "^TestSleepingLockerWakesAfterHolderRestart$", "./agent/"},
	"held: a stop closes the last copy of a held socket":     {"-run", "^TestHeldStopWithDeadHolderRefusesNothing$", "./agent/"},
	"start: a destroyed container waits for the deadline":    {"-run", "^TestStartFailsAtOnceWhenDestroyed$", "./lxcctl/"},
	"boost: a starting locker keeps its weight":              {"-run", "^TestStartupCPUBoost$", "./lxcctl/"},
	"boost: the boost outlives the start":                    {"-run", "^TestStartupCPUBoost$", "./lxcctl/"},
	"watch: every round checks every locker":                 {"-run", "^TestWatchChecksInTurn$", "./agent/"},
	"owner: a remembered proof is not checked again":         {"-run", "^TestOwnerProofIsCheckedAgain$", "./lxcctl/"},
	"owner: the port filter keeps every listener":            {"-run", "^TestPortFilteredListeners$", "./lxcctl/"},
	"health: the attempt the deadline cut names the failure": {"-run", "^TestWaitHealthyKeepsTheLastCompleteCheck$", "./lxcctl/"},
}

// lockerTests are the tests of testsFor that run real lockers: -lockers
// none leaves their mutants out, -lockers only runs just them (make test
// runs the others beside the package tests, and these after them).
var lockerTests = map[string]bool{
	"^TestDowntimePageSkipsHeldLockers$":          true,
	"^TestSleepingLockersWakeOnConnection$":       true,
	"^TestSleepingLockerWakesAfterHolderRestart$": true,
	"^TestHeldStopWithDeadHolderRefusesNothing$":  true,
	"^TestStartFailsAtOnceWhenDestroyed$":         true,
	"^TestStartupCPUBoost$":                       true,
}

// needsLockers says whether mutant m's tests run real lockers.
func needsLockers(m mutant) bool {
	t := testsFor[m.name]
	return len(t) >= 2 && t[0] == "-run" && lockerTests[t[1]]
}

var mutants = []mutant{
	// The five planted by hand in the issue.
	{"per-window ratio check removed", "rollout/next.go",
		"case lastFailed > 0 && float64(lastFailed) > ratio*float64(k):", "case false:"},
	{"soak check removed", "rollout/loop.go",
		`d.who, d.err = holdHealthy(wctx, host, clock, pol.interval(), soak, pol.Soak, "during the soak")`, "d.who, d.err = soak[:0], nil"},
	{"offline failure policy skipped", "rollout/next.go",
		"if failed && s.plan.Watched() {", "if failed && s.plan.Watched() && s.plan.Strategy != Offline {"},
	{"a cancel mid-replace leaves the locker down", "rollout/loop.go",
		"d.start, d.err = host.Start(context.WithoutCancel(wctx), name, pol.Deadline)", "d.start, d.err = host.Start(wctx, name, pol.Deadline)"},
	{"recovery ignores the lockers the job stopped", "rollout/plan.go",
		"if !l.WantRunning && !stoppedByJob[l.Name] {", "if !l.WantRunning {"},
	// One or more per invariant.
	{"I1: a failed locker gives back its place", "rollout/next.go",
		"\tcase failed:\n\t\t// A failed locker is down: it keeps its place in K (I1).\n", "\tcase failed && !it.holdsDown:\n"},
	{"I1: a failed locker frees its place", "rollout/next.go",
		"\tcase failed:\n\t\t// A failed locker is down: it keeps its place in K (I1).\n", "\tcase failed && op != OpStart && op != OpWatch:\n"},
	{"I1: stopped lockers waiting to start do not count against K", "rollout/next.go",
		"case needDown && s.down+s.pending < s.pol.MaxUnavailable && s.starting < s.maxStarting():", "case needDown && s.down < s.pol.MaxUnavailable && s.starting < s.maxStarting():"},
	{"I1: no monitor window", "rollout/loop.go",
		`d.who, d.err = holdHealthy(wctx, host, clock, iv, []string{name}, pol.Monitor, "in its monitor window")`, "_, d.who, d.err = iv, nil, nil"},
	{"I1: the way back replaces K while failed ones are still down", "rollout/loop.go",
		"k := s.pol.MaxUnavailable - stillDown", "k := s.pol.MaxUnavailable + len(down)"},
	{"I1: offline starts every locker at once (a storm)", "rollout/loop.go",
		"\t\ts.pol.MaxStarting = min(plan.Policy.startingAllDown(), max(len(plan.Items), 1))\n", ""},
	{"offline: every locker stops first, each down for the whole start phase", "rollout/loop.go",
		"\tlaunch := s.indices(\"\")\n", "\tx.drive(ctx, mStop, reversed(s.indices(OpReplace)), s.pol.stopping())\n\tlaunch := s.indices(\"\")\n"},
	{"offline: the proving wave holds back launches", "rollout/next.go",
		"MonitorUntilProven && !s.offline() && !s.wave", "MonitorUntilProven && !s.wave"},
	{"I1: OpWatch not held against K", "rollout/loop.go",
		"if op := plan.Items[i].Op; op == OpStart || op == OpWatch {\n\t\t\ts.pending++", "if op := plan.Items[i].Op; op == OpStart {\n\t\t\ts.pending++"},
	{"I1: OpWatch not health-checked", "rollout/loop.go",
		"d.err = watchHealthy(wctx, host, clock, pol, name)", "d.err = nil"},
	{"I4: a watched locker found stopped stays down when the run trips", "rollout/watch.go",
		"it.restart, it.launched = true, false", "it.restart = true"},
	{"lxc.start.delay is not honoured", "rollout/next.go",
		"if wait := max(s.pol.Delay, s.plan.Items[i].Delay); wait > 0", "if wait := s.pol.Delay; wait > 0"},
	{"I2: a tripped policy leaves current on the bad release", "rollout/loop.go",
		"\tif !x.switchBack() {\n\t\tx.res.Paused = true\n\t\treturn\n\t}", "\tif false {\n\t\treturn\n\t}"},
	{"I2: a shutdown leaves current on the unproven release", "rollout/loop.go",
		"\t\tif x.unprovenOnTarget() && s.plan.Fallback != \"\" {\n\t\t\tx.switchBack()\n\t\t}", ""},
	{"I2: a failed switch is not undone", "rollout/loop.go",
		`x.goBack(ctx, false, "the switch failed")`, ""},
	{"I2: the release that tripped is not marked bad", "rollout/loop.go",
		"if tripped && p.Target != \"\" {", "if false {"},
	{"I3: start-all on an unproven release is not watched", "rollout/plan.go",
		"return p.Kind == KindUpdate || p.Unproven", "return p.Kind == KindUpdate"},
	{"I3: launching goes on after the policy tripped", "rollout/next.go",
		`return s.tripped != "" || s.halted != "" || s.cancelled`, `return s.halted != "" || s.cancelled || s.tripped != "" && s.plan.Strategy != Offline`},
	{"I4: recovery resumes an unproven target", "rollout/plan.go",
		`if proven(interrupted.Target) || interrupted.Fallback == "" {`, "if true {"},
	{"I4: stopped lockers of a start plan stay down when it trips", "rollout/loop.go",
		"case !touched && tripped && (p.Items[i].Op == OpStart || p.Items[i].Op == OpWatch):", "case false:"},
	{"I5: lockers never launched are reported moved", "rollout/loop.go",
		"s.out[i] = Outcome{Name: it.Name, Op: it.Op, Outcome: OutSkipped}", "s.out[i] = Outcome{Name: it.Name, Op: it.Op, Outcome: OutMoved}"},
	{"I5: a locker that dies in its monitor window counts as moved", "rollout/next.go",
		"\t\t\tit.o.Outcome, it.o.Error = OutFailed, d.err.Error()\n\t\t\tacts = append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseFailed, Op: \"monitor\"", "\t\t\tit.o.Error = d.err.Error()\n\t\t\tacts = append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseFailed, Op: \"monitor\""},
	{"I5: a monitor window ends on a failed check", "rollout/loop.go",
		"for waited := time.Duration(0); waited < d || failing(); waited += iv {", "for waited := time.Duration(0); waited < d || failing() && false; waited += iv {"},
	{"I5: the soak blames only the first canary that fails", "rollout/loop.go",
		"if m != n && bad[m] > 0 {", "if false {"},
	{"I1: a window cut right after a check failed (the checker frozen through it) counts the locker failed without checking it again", "rollout/loop.go",
		"err := h.Check(context.WithoutCancel(ctx), n)", "err := error(errCut)"},
	{"I1: a window cut while its checks fail counts as healthy once", "rollout/loop.go",
		"\t\t\tif len(who) == 0 {\n\t\t\t\treturn nil, errCut", "\t\t\tif true {\n\t\t\t\treturn nil, errCut"},
	{"I6: a rollback does not pop the releases it went back past", "rollout/plan.go",
		"\t\t\tstack = stack[:i+1]\n", "\t\t\t_ = i\n"},
	{"I6: rollback leaves stopped lockers down", "rollout/plan.go",
		"\t\tcase l.WantRunning:\n\t\t\titems = append(items, Item{l.Name, OpStart, l.StartDelay})", ""},
	{"I4: recovery trusts a locker the dead agent was stopping", "rollout/plan.go",
		"\t\tcase l.Stopping:\n", "\t\tcase false:\n"},
	// The monitor rule (monitor_holds until_proven).
	{"monitor: a window never frees its place once the release is proven", "rollout/next.go",
		"return s.pol.MonitorHolds == MonitorUntilProven && s.mode == mRun && s.wave", "return false"},
	{"monitor: a window frees its place before the release is proven", "rollout/next.go",
		"return s.pol.MonitorHolds == MonitorUntilProven && s.mode == mRun && s.wave", "return s.pol.MonitorHolds == MonitorUntilProven && s.mode == mRun"},
	{"monitor: a failure in the background counts as a pass", "rollout/next.go",
		"\t\tcase d.err != nil:\n\t\t\tit.o.Outcome, it.o.Error = OutFailed, d.err.Error()\n\t\t\tacts = append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseFailed, Op: \"monitor\"",
		"\t\tcase d.err != nil && !it.bg:\n\t\t\tit.o.Outcome, it.o.Error = OutFailed, d.err.Error()\n\t\t\tacts = append(acts, action{kind: aEmit, ev: Event{Container: name, Phase: PhaseFailed, Op: \"monitor\""},
	{"monitor: lockers launched during the proving wave hold their windows", "rollout/next.go",
		"if needDown && s.waveGate() {", "if false {"},
	{"I1: a failure in the background takes no place in K", "rollout/next.go",
		"\t\tif failed {\n\t\t\tit.holdsDown = true\n\t\t\ts.down++\n\t\t}", ""},
	// Pacing (W, the most starting at once).
	{"gauge: the lockers' cgroup hitting its limit is no signal", "lockerverbs/gauge.go",
		"if fc > g.failcnt {", "if false {"},
	{"gauge: the lockers' working set is no signal", "lockerverbs/gauge.go",
		"return max(worst, min(1, max(0, (ws-workingSetShare)/(1-workingSetShare))))", "return max(worst, min(1, max(0, (ws-1)/(1-workingSetShare))))"},
	{"pacing: a failed start does not halve W", "rollout/pace.go",
		"case !ok:\n\t\twhy = \"a start failed\"", "case false:\n\t\twhy = \"a start failed\""},
	{"pacing: pressure over target is ignored", "rollout/pace.go",
		"case pr != nil && over(pr.Memory, p.targets.Memory):", "case false:"},
	{"pacing: IO pressure over target is ignored", "rollout/pace.go",
		"case pr != nil && over(pr.IO, p.targets.IO):", "case false:"},
	{"pacing: W starts at K, not 1, while lockers serve", "rollout/policy.go",
		"\tcase p.Policy.MaxStarting <= 0:\n\t\treturn 1\n", "\tcase p.Policy.MaxStarting <= 0 && false:\n\t\treturn 1\n"},
	{"pacing: an offline update's W starts at 1, not K", "rollout/policy.go",
		"\tcase p.allDown():\n\t\treturn min(", "\tcase p.allDown() && false:\n\t\treturn min("},
	{"pacing: a probe is judged against the hold's last window", "rollout/pace.go",
		"rate = max(p.holdRate, rate)\n", "_ = p.holdRate\n"},
	{"pacing: no slow start (W grows by one per window from the first)", "rollout/pace.go",
		"if p.phase == slowStart && p.w < p.cap {", "if false {"},
	{"pacing: no hold at the throughput knee", "rollout/pace.go",
		"case p.prevRate > 0 && rate > 0 && rate < p.prevRate*(1+riseShare*float64(p.winW-p.prevW)/float64(p.prevW)):", "case false:"},
	{"pacing: the knee goes back to the lower W though the doubling raised its power", "rollout/pace.go",
		"if p.phase == slowStart && rate*rate/float64(p.winW) > p.prevRate*p.prevRate/float64(p.prevW) {", "if false {"},
	{"pacing: the hold never probes one more", "rollout/pace.go",
		"case p.phase == hold && p.w < p.cap:", "case false:"},
	{"pacing: the hold probes every window", "rollout/pace.go",
		"case p.phase == hold && p.held < p.holdFor-1:", "case false:"},
	{"pacing: the knee holds the W that brought nothing", "rollout/pace.go",
		"\t\tknee := p.prevW\n", "\t\tknee := p.winW\n"},
	{"monitor: a background window checks every Interval", "rollout/next.go",
		"acts[len(acts)-1].d = s.pol.BackgroundInterval()", "acts[len(acts)-1].d = 0"},
	{"monitor: a long background window checks rarer than every 10 s", "rollout/policy.go",
		"min(p.Monitor/backgroundChecks, maxBackgroundInterval)", "p.Monitor/backgroundChecks"},
	{"monitor: a background window checks once", "rollout/policy.go",
		"return max(p.interval(), min(p.Monitor/backgroundChecks, maxBackgroundInterval))", "return max(p.interval(), p.Monitor)"},
	{"pacing: the knee holds the higher rate, not the higher power", "rollout/pace.go",
		"rate*rate/float64(p.winW) > p.prevRate*p.prevRate/float64(p.prevW)", "rate > p.prevRate"},
	{"pacing: a probe that went back does not back off", "rollout/pace.go",
		"p.holdFor = min(2*p.holdFor, maxHoldWindows)", "p.holdFor = holdWindows"},
	{"pacing: a new knee keeps the backed-off hold", "rollout/pace.go",
		"\t\t} else {\n\t\t\tp.holdFor = holdWindows\n", "\t\t} else {\n\t\t\tp.holdFor = max(p.holdFor, holdWindows)\n"},
	{"pacing: a probe that earned its step keeps the backoff", "rollout/pace.go",
		"\tp.probing = false // a probe that earned its step\n", "\n"},
	{"pacing: the hold backs off without bound", "rollout/pace.go",
		"p.holdFor = min(2*p.holdFor, maxHoldWindows)", "p.holdFor = 2 * p.holdFor"},
	{"pacing: a window at the cap is not judged", "rollout/pace.go",
		"\tcase p.phase == hold:\n\t\t// Held at the cap", "\tcase p.phase == hold || p.winW >= p.cap:\n\t\t// Held at the cap"},
	{"pacing: a cut does not end slow start", "rollout/pace.go",
		"p.phase, p.prevW, p.prevRate, p.probing = probe, 0, 0, false", "p.prevW, p.prevRate, p.probing = 0, 0, false"},
	{"pacing: an unreadable gauge is not said", "rollout/next.go",
		"if d.gaugeErr != nil && !s.gaugeSaid {", "if false {"},
	{"pacing: a start past its deadline's share is no signal", "rollout/pace.go",
		"case p.atRisk(took):", "case false:"},
	{"pacing: W halved more than once per window", "rollout/pace.go",
		"if seq <= p.cutAt {", "if false {"},
	{"pacing: W grows past its cap", "rollout/pace.go",
		"if p.phase == slowStart && p.w < p.cap {", "if p.phase == slowStart {"},
	{"pacing: the executor ignores W for starts", "rollout/next.go",
		"case !needDown && s.starting < s.maxStarting():", "case !needDown && s.starting < s.pol.MaxUnavailable:"},
	{"pacing: a replace stops before it has a start place", "rollout/next.go",
		"s.down+s.pending < s.pol.MaxUnavailable && s.starting < s.maxStarting():", "s.down+s.pending < s.pol.MaxUnavailable:"},
	{"pacing: starting > W", "rollout/next.go",
		"s.down+s.pending < s.pol.MaxUnavailable && s.starting < s.maxStarting():", "s.down+s.pending < s.pol.MaxUnavailable && s.starting <= s.maxStarting():"},
	// Found by breaker2 (rollout/breaker2_test.go).
	{"pacing: starts launched before a cut count as a window of the new W", "rollout/pace.go",
		"\tif p.launchedBefore(seq) {\n", "\tif false {\n"},
	{"pacing: stages of W's changes may come out of order", "rollout/next.go",
		"before := s.pacer.W()", "before := s.it[d.item].pl.w"},
	{"pacing: the way back replaces more than W at once", "rollout/loop.go",
		"x.drive(ctx, mBack, up, max(min(k, s.pol.starting()), 1))", "x.drive(ctx, mBack, up, max(k, 1))"},
	// Outside the policy: a lock released by close alone stays held by
	// children forked before it was closed (the CI flake of stop 16).
	{"codeupdate: unlock by close alone", "codeupdate/lock.go",
		"\t_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)\n", ""},
	{"retention: a locker whose release is unknown counts as none", "agent/inventory.go",
		"\t\tcase l.ReleaseError != \"\":\n", "\t\tcase false:\n"},
	{"retention: a deleted release no longer counts", "agent/inventory.go",
		"\t\tcase l.Release != \"\":\n\t\t\tinUse[l.Release]++", "\t\tcase l.Release != \"\" && !l.ReleaseDeleted:\n\t\t\tinUse[l.Release]++"},
	{"retention: any failure to read a release holds none", "mounts/mountinfo.go",
		"if errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrNoAppMount) {", "if err != nil || errors.Is(err, fs.ErrNotExist) {"},
	{"lxc config: a quoted value keeps its quotes", "mounts/lxcconfig.go",
		"value = value[1 : len(value)-1]", "_ = value"},
	{"retention: prune counts from the last snapshot", "agent/update.go",
		"lockers, err := a.inv.refreshed(ctx)", "lockers, err := a.inv.snapshot(), error(nil)"},
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
	{"glue: recovery forgets the restart's lockers not reached", "agent/recover.go",
		"\t\tls[i].Restart = pending[ls[i].Name]\n", "\t\t_ = pending\n"},
	{"watch: no release watch after a recovery finished an update", "agent/recover.go",
		"a.proven(plan.Target) && a.watch.begin(", "false && a.watch.begin("},
	{"I4: recovery leaves an interrupted restart half done", "rollout/plan.go",
		"\t\tcase l.Restart:\n", "\t\tcase false:\n"},
	{"glue: the plan's journal write ignored", "agent/moves.go",
		"\tif err := r.update(func(j *Job) {\n\t\tp := plan", "\tif err := func(fn func(*Job)) error { _ = r.update(fn); return nil }(func(j *Job) {\n\t\tp := plan"},
	{"glue: a failed journal write does not stop the job", "agent/jobs.go",
		"\t\tr.cancel(errJournalWrite)\n", "\t\t_ = errJournalWrite\n"},
	{"fence: a failed fence is not asked", "rollout/loop.go",
		"if err := x.env.Fence(); err != nil {", "if err := error(nil); err != nil {"},
	{"glue: the fleet's fence does not reach the job", "agent/moves.go",
		"\tif req.Fence != nil {\n\t\tenv.Fence", "\tif false {\n\t\tenv.Fence"},
	{"glue: the recovery planner counts a watched locker done", "rollout/plan.go",
		"\t\t\tp.Items = append(p.Items, Item{l.Name, OpWatch, l.StartDelay})", "\t\t\t_ = l"},
	// The release watch after an update (issue 22 item 7).
	{"watch: no release watch after an update", "agent/watch.go",
		"if pol.ReleaseWatch <= 0 || len(lockers) == 0 || w.a.sup.cfg.Off {", "if true {"},
	{"watch: a crash counts only at supervision's start limit", "agent/watch.go",
		"\t\tcase w.crashed[n] != \"\":\n\t\t\tfailed = append(failed, n+\" (\"+w.crashed[n]+\")\")\n", ""},
	{"watch: one failed locker rolls a release back", "agent/watch.go",
		"return failed >= 2 && float64(failed) > ratio*float64(watched)", "return failed >= 1"},
	// Supervision's rollback counts regressions only (issue 22 item 5).
	{"supervision: every crash loop counts as a regression", "agent/supervise.go",
		"\treturn ok && p.Healthy\n", "\t_, _ = p, ok\n\treturn true\n"},
	// The inventory's release cache (issue 19: a tenth of the agent's CPU).
	{"release cache: keeps an answer whose folder changed", "mounts/releasecache.go",
		"if id, ok := c.dirOf(a.release); ok && id == a.dir {", "if true {"},
	// Judging only readings with no job boundary inside (CI, 2026-12-06).
	{"supervision: judges a reading taken across a job's end", "agent/supervise.go",
		"\tif !s.a.judgeable(seq) {", "\tif false && !s.a.judgeable(seq) {"},
	{"watch: judges a round across an operator's job", "agent/watch.go",
		"\tif w.a.jobsMovedSince(seq) {", "\tif false && w.a.jobsMovedSince(seq) {"},
	{"watch: judges a stale snapshot", "agent/watch.go",
		"fresh := v.at.After(rw.Since) && v.seq == seq", "fresh := v.at.After(rw.Since)"},
	{"supervision: judges a reading taken during a job", "agent/inventory.go",
		"return seq%2 == 0 && !a.jobsMovedSince(seq)", "return !a.jobsMovedSince(seq)"},
	{"sleep: judges a reading taken before an operator's job", "agent/sleep.go",
		"ctx.Err() != nil || !s.a.judgeable(seq) {", "ctx.Err() != nil || (false && !s.a.judgeable(seq)) {"},
	// Conditional polls of the locker list and the health waits' shared
	// budget (issue 19: the API load and the starts' detection).
	{"api: a poll naming the current tag gets the whole list", "agent/api.go",
		"if etagMatches(r.Header.Get(\"If-None-Match\"), etag) {", "if false && etagMatches(r.Header.Get(\"If-None-Match\"), etag) {"},
	{"api: the tag outlives the list it names", "agent/inventory.go",
		"inv.etagBase + \"-\" + strconv.FormatUint(gen, 10)", "inv.etagBase + \"-\" + strconv.FormatUint(0, 10)"},
	{"health: every wait polls at the fastest rate", "lxcctl/health.go",
		"time.Duration(waiters)*pollPerWaiter", "time.Duration(1)*pollPerWaiter"},
	{"health: one wait alone polls every 100 ms", "lxcctl/health.go",
		"\tpollMin       = 10 * time.Millisecond", "\tpollMin       = 100 * time.Millisecond"},
	// Held sockets' default K (issue 20): one restart at a time, unless
	// the config names K; offline and start plans keep W above it.
	{"held: K stays 4 with held sockets", "config/config.go",
		"\t\td.Policy.MaxUnavailable = HeldMaxUnavailable\n", "\t\td.Policy.MaxUnavailable = d.Policy.MaxStarting\n"},
	{"held: the held default overrides the config's own K", "config/config.go",
		"_, k := c.Defaults[\"max_unavailable\"]", "k := false"},
	{"pacing: an offline update's W is capped at the configured K", "rollout/loop.go",
		"s.pol.MaxStarting = min(plan.Policy.startingAllDown(), max(len(plan.Items), 1))", "s.pol.MaxStarting = min(plan.Policy.starting(), max(len(plan.Items), 1))"},
	{"pacing: an offline update's first W is capped at the configured K", "rollout/policy.go",
		"\t\treturn min(p.Policy.startingAllDown(), max(len(p.Items), 1))", "\t\treturn min(p.Policy.starting(), max(len(p.Items), 1))"},
	{"held: a request's K leaves the held default's W", "agent/request.go",
		"\t\tbase.MaxStarting = 0\n", "\t\tbase.MaxStarting = base.MaxStarting\n"},
	{"held: an offline update's recovery runs at its K", "agent/recover.go",
		"\t\tplan.Strategy = rollout.Offline\n", "\t\tplan.Strategy = plan.Strategy\n"},
	{"pacing: a boot's recovery starts at the configured K", "rollout/plan.go",
		"\t\tp.Policy.MaxStarting = min(p.Policy.startingAllDown(), n)\n\t\tp.Policy.MaxUnavailable = n\n", "\t\t_ = n\n"},
	{"policy: the failure window is K even where W is above it", "rollout/next.go",
		"k := max(s.plan.Policy.MaxUnavailable, s.plan.Policy.MaxStarting)", "k := s.plan.Policy.MaxUnavailable"},
	{"way back: an offline plan's way back keeps the configured K", "rollout/loop.go",
		"\tk := s.pol.MaxUnavailable - stillDown", "\tk := s.plan.Policy.MaxUnavailable - stillDown"},
	// The one account of a job (agent.Tally) that the console, the CLI's
	// tail and the history render (issue 22 item 11).
	{"tally: every first step is a canary", "agent/tally.go",
		"\tcase p.Kind == rollout.KindUpdate:\n\t\treturn \"rollout\"", "\tcase p.Kind == rollout.KindUpdate:\n\t\treturn \"canary\""},
	{"tally: a skipped locker has no reason", "agent/tally.go",
		"\t\tl.Reason += \": \" + orDash(cause)", "\t\tl.Reason = \"\""},
	{"tally: the way back erases a failure in its step", "agent/tally.go",
		"\tif failed {\n\t\tsl.failed[name] = true\n\t}", "\tif failed {\n\t\tsl.failed[name] = true\n\t} else {\n\t\tfor _, o := range t.steps {\n\t\t\tdelete(o.failed, name)\n\t\t}\n\t}"},
	// Held sockets and sleeping lockers (issue 20).
	{"held: the app's socket is not at fd 3", "heldsock/fetch.go",
		"unix.Dup3(fd, ListenFD, 0)", "unix.Dup3(fd, ListenFD+1, 0)"},
	{"sleep: a connection does not keep a locker awake", "agent/sleep.go",
		"if age, active := m[sp.Port]; active && now.Add(-age).After(last) {", "if age, active := m[sp.Port]; false && active && now.Add(-age).After(last) {"},
	{"sleep: a wake-up storm starts every sleeper at once (no W)", "agent/sleep.go",
		"Request{Kind: KindStartAll, Names: names, Trigger:", "Request{Kind: KindStartAll, Names: names, Policy: map[string]any{\"max_starting\": len(names) + 100, \"pacing\": \"fixed\"}, Trigger:"},
	{"downtime: the page holds held lockers' ports", "agent/downtime.go",
		"\t\tif held[in.Name] {\n", "\t\tif false && held[in.Name] {\n"},
	{"sleep: a lost watch is never watched again", "agent/sleep.go",
		"if ctx.Err() == nil && got < len(names) {", "if false && ctx.Err() == nil && got < len(names) {"},
	{"held: a stop closes the last copy of a held socket", "lxcctl/stop.go",
		"\tif h.before != nil {\n\t\tif err := h.before(ctx, name); err != nil {\n\t\t\th.log.Warn(\"holding a container's socket", "\tif false && h.before != nil {\n\t\tif err := h.before(ctx, name); err != nil {\n\t\t\th.log.Warn(\"holding a container's socket"},
	{"boost: a starting locker keeps its weight", "lxcctl/cgroup.go",
		"if err := os.WriteFile(file, []byte(weightValue(p.StartCPUWeight)), 0o644); err != nil {", "if err := os.WriteFile(file, before, 0o644); err != nil {"},
	{"boost: the boost outlives the start", "lxcctl/events.go",
		"\tendBoost()\n", "\t_ = endBoost\n"},
	{"watch: every round checks every locker", "agent/watch.go",
		"probed := func(i int) bool { return budget >= len(names) ||", "probed := func(i int) bool { return true ||"},
	{"health: the attempt the deadline cut names the failure", "lxcctl/health.go",
		"if last == nil || ctx.Err() == nil {", "if true {"},
	{"owner: a remembered proof is not checked again", "lxcctl/owner.go",
		"\tif procsock.StillHolds(h) {\n", "\tif true {\n"},
	{"owner: the port filter keeps every listener", "lxcctl/sockdiag.go",
		"\tif port <= 0 || port > 0xffff {\n\t\treturn nil", "\tif true {\n\t\treturn nil"},
	{"start: a destroyed container waits for the deadline", "lxcctl/health.go",
		"if errors.Is(serr, ErrNotFound) {", "if false && errors.Is(serr, ErrNotFound) {"},
	{"sleep: an update starts sleeping lockers", "agent/moves.go",
		"l.WantRunning = !ok && l.Running || d.Running", "l.WantRunning = !ok && l.Running || d.Running || a.sleep.isSleeping(l.Name)"},
	// The operator surface's refusals and the tally's serving line.
	{"api: names [] means every locker", "agent/request.go",
		"if r.Names != nil && len(r.Names) == 0 {", "if false {"},
	{"api: an unknown group is nothing to do", "agent/ops.go",
		"if len(infos) == 0 && req.Group != \"\" {", "if false {"},
	{"api: a boot takes names", "agent/request.go",
		"if r.Boot && (len(r.Names) > 0 || r.Group != \"\") {", "if false {"},
	{"tally: serving counts by the job's events", "agent/agent.go",
		"r.now = a.releasesNow(r.snapshot().Plan)", "r.now = nil"},
	{"tally: failures after the trip not told apart", "agent/tally.go",
		"if t.tripFailed >= 0 && t.Failed > t.tripFailed {", "if false {"},
	{"config: idle_stop has no floor", "config/config.go",
		"case s.IdleStop.D() < MinIdleStop:", "case false:"},
	{"config: idle_stop without held sockets", "config/config.go",
		"case c.Provision.Socket != provision.SocketHeld:", "case false:"},
	// The agent's one clock (Deps.Clock).
	{"clock: job events on the wall clock", "agent/jobs.go", "e.Time = r.timeNow()", "e.Time = time.Now()"},
	{"clock: job records on the wall clock", "agent/agent.go", "now := a.deps.Clock.Now()", "now := time.Now()"},
}

func main() {
	run := flag.String("run", "", "only mutants whose name matches this regexp")
	verbose := flag.Bool("v", false, "print the test output of each mutant")
	jobs := flag.Int("j", runtime.NumCPU(), "mutants tested at once (each its own go test, its own overlay)")
	lockers := flag.String("lockers", "all", "the mutants whose tests run real lockers: all, none (leave them out) or only")
	flag.Parse()
	if *lockers != "all" && *lockers != "none" && *lockers != "only" {
		fmt.Fprintf(os.Stderr, "mutants: -lockers %q: want all, none or only\n", *lockers)
		os.Exit(2)
	}
	for name := range lockerTests {
		if !slices.ContainsFunc(mutants, func(m mutant) bool { t := testsFor[m.name]; return len(t) >= 2 && t[1] == name }) {
			fmt.Fprintf(os.Stderr, "mutants: lockerTests names %s, which no mutant's testsFor runs (keep the two in step)\n", name)
			os.Exit(2)
		}
	}
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
	var todo []int
	for i, m := range mutants {
		if re != nil && !re.MatchString(m.name) {
			continue
		}
		if l := needsLockers(m); l && *lockers == "none" || !l && *lockers == "only" {
			continue
		}
		todo = append(todo, i)
	}
	// The mutants whose tests are slowest (those testsFor names, real
	// lockers among them) start first, so that the quick rollout ones
	// fill the other workers meanwhile; results print in the list's order.
	order := slices.Clone(todo)
	sort.SliceStable(order, func(a, b int) bool {
		return testsFor[mutants[order[a]].name] != nil && testsFor[mutants[order[b]].name] == nil
	})
	results := make([]chan result, len(mutants))
	for _, i := range todo {
		results[i] = make(chan result, 1)
	}
	next := make(chan int)
	go func() {
		for _, i := range order {
			next <- i
		}
		close(next)
	}()
	var wg sync.WaitGroup
	for range max(*jobs, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i] <- try(tmp, i, mutants[i])
			}
		}()
	}
	survived, broken, killed := 0, 0, 0
	for _, i := range todo {
		r := <-results[i]
		if r.fatal != nil {
			fmt.Fprintln(os.Stderr, "mutants:", r.fatal)
			os.Exit(2)
		}
		fmt.Println(r.line)
		switch r.verdict {
		case "killed":
			killed++
		case "survived":
			survived++
		default:
			broken++
		}
		if *verbose {
			fmt.Println(r.out)
		}
	}
	wg.Wait()
	fmt.Printf("mutants: %d killed, %d survived, %d broken\n", killed, survived, broken)
	if survived > 0 || broken > 0 || killed == 0 {
		os.Exit(1)
	}
}

// result is what one mutant's test run found.
type result struct {
	verdict   string // killed, survived or broken
	line, out string // the line printed for it, and its test output
	fatal     error  // the runner itself failed (not the mutant)
}

// try applies mutant m (the i-th) through a go test overlay of its own, so
// that the tree is never changed and several mutants run at once, and runs
// the tests that must kill it.
func try(tmp string, i int, m mutant) result {
	src, err := os.ReadFile(m.file)
	if err != nil {
		return result{fatal: fmt.Errorf("reading %s: %w (run from the module root)", m.file, err)}
	}
	if n := strings.Count(string(src), m.old); n != 1 {
		return result{verdict: "broken", line: fmt.Sprintf("BROKEN   %-60s its text occurs %d times in %s, want once", m.name, n, m.file)}
	}
	mutated := filepath.Join(tmp, fmt.Sprintf("m%d.go", i))
	if err := os.WriteFile(mutated, []byte(strings.Replace(string(src), m.old, m.new, 1)), 0o644); err != nil {
		return result{fatal: fmt.Errorf("writing mutant %q: %w", m.name, err)}
	}
	abs, _ := filepath.Abs(m.file)
	ov, _ := json.Marshal(map[string]map[string]string{"Replace": {abs: mutated}})
	ovFile := filepath.Join(tmp, fmt.Sprintf("o%d.json", i))
	if err := os.WriteFile(ovFile, ov, 0o644); err != nil {
		return result{fatal: fmt.Errorf("writing overlay of mutant %q: %w", m.name, err)}
	}
	begin := time.Now()
	target := testsFor[m.name]
	if target == nil {
		target = []string{"./rollout/"}
	}
	// -vet=off: make test vets the real tree; a mutant only needs to build.
	// -timeout 5m: make test runs most mutants at idle CPU priority beside
	// the package tests, so a run may wait for the CPU; no mutant is meant
	// to be killed by the timeout (firstFail says so when one is).
	cmd := exec.Command("go", append([]string{"test", "-count=1", "-failfast", "-vet=off", "-overlay", ovFile, "-timeout", "5m"}, target...)...)
	// rollout's property test: no fail files in the tree, and a
	// short search for the smallest failing schedule.
	cmd.Env = append(os.Environ(), "RAPID_NOFAILFILE=1", "RAPID_SHRINKTIME=1s")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	switch {
	case err == nil:
		return result{verdict: "survived", line: fmt.Sprintf("SURVIVED %-60s no test failed", m.name), out: out.String()}
	case strings.Contains(out.String(), "[build failed]") || strings.Contains(out.String(), "[setup failed]"):
		return result{verdict: "broken", line: fmt.Sprintf("BROKEN   %-60s the mutant does not build", m.name), out: out.String()}
	default:
		return result{verdict: "killed", line: fmt.Sprintf("killed   %-60s in %.1fs (%s)", m.name, time.Since(begin).Seconds(), firstFail(out.String())), out: out.String()}
	}
}

// firstFail names the first failing test in go test's output.
func firstFail(out string) string {
	if strings.Contains(out, "panic: test timed out") {
		return "timed out, no test failed first"
	}
	for _, line := range strings.Split(out, "\n") {
		if t := strings.TrimSpace(line); strings.HasPrefix(t, "--- FAIL: ") {
			return strings.Fields(t)[2]
		}
	}
	return "the package failed"
}
