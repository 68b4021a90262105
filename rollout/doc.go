// Package rollout owns every decision about moving lockers: small pure
// planners turn a request into a Plan (data: which lockers, in which order,
// to which release, under which Policy), and one executor, Run, carries any
// plan out over three per-locker verbs (stop, start, check) and a release
// store (switch, mark bad, mark proven). Every path that moves lockers —
// update (rolling and offline), start-all, restart, rollback, crash recovery
// and resumption after a graceful stop — runs through Run, so the failure
// policy is written once. The package knows nothing of HTTP, flags, git or
// go-lxc; the agent adapts lxcctl and codeupdate to Host and Releases.
//
// The shape follows the peers: a plan is a value computed by a pure
// function, as nomad's scheduler reconciler returns its results; health is
// judged over time, as Swarm's update monitor and Nomad's min_healthy_time
// (a locker counts as moved only after it stayed healthy for the monitor
// window; the first lockers of an unproven release hold their places in K
// until then, as Kubernetes counts a pod unavailable until
// minReadySeconds passed, and once the release is proven a healthy
// locker gives its place back while its window goes on, as Swarm's
// monitor does not hold the update's parallelism); a release that
// trips the failure ratio is marked bad and rolled back, as Swarm's
// failure_action and Nomad's auto_revert.
//
// # The loop
//
// Run is one loop, in the shape of nomad's deployment watcher: the
// goroutine that calls Run owns the run's whole state (next.go's state:
// every locker's place in K and W, the pacer, the failure policy's
// count); nothing else reads or writes it, so it has no lock. Workers run
// one verb each — a stop, a start to its first healthy check, a monitor
// window, the soak, an OpWatch's checks, the launch delay, the way back's
// stop or start — and report done{item, verb, outcome, took, err} on one
// channel. next(state, event) is a pure function (no Host, Releases,
// Clock or Observe): given a verb's end, a cancel, or the start of a
// phase, it updates the bookkeeping and returns the actions — launch
// item i (its place taken in the same step), emit an event, change W
// (the pacer is fed in the loop, so pacing stages come in the order of
// W's changes), prove, stop launching (trip or halt). The loop carries
// them out in order, and sends every event itself: Observe sees the
// run's state changes in the order they happened, and an event's
// Starting is the places held at that moment. The phases run in order in
// the same goroutine: the stop phase (stop-all), the switch, the
// canaries and their soak, the rest, then the end (trip, undo or
// interruption) and the way back, whose waves next drives too.
//
// An OpWatch item is a locker a dead agent left starting on the target:
// it holds a place in K from the run's beginning and is checked (until
// healthy or the deadline, then its monitor window) before anything new
// launches beyond K (I1 across agent exits).
//
// The invariants below are also checked by a property test
// (property_test.go) after every event of ≥ 10,000 random schedules —
// plans, per-locker outcomes and timings on testing/synctest's virtual
// clock.
//
// # Invariants
//
// Each has table tests against the fake host in internal/fakehost, and at
// least one mutant in internal/mutants (make mutants) that breaks it and
// must make a test fail.
//
//   - I1. At most K (Policy.MaxUnavailable) lockers are down because of the
//     job at any moment, failed ones included: a locker holds its place from
//     its stop until it has passed the monitor window (or, once the release
//     is proven, under MonitorUntilProven, until its first healthy check:
//     the rule below); a failed locker keeps it until the failure policy has
//     brought it back; stopped lockers the plan starts hold a place until
//     they are up (they start first). On the way back, running lockers are
//     replaced only with the places failed ones left; none left, they stay
//     where they are and the run says so. A locker that fails in a window
//     in the background takes a place again from the check that sees it;
//     it lost its place on its own, so for that moment the count can be
//     over K (by the lockers failing so), and the run takes no other
//     locker down until it is under K again.
//   - I2. current points at an unproven release only while a job watches it
//     with a failure policy (or while no locker runs at all, so that the
//     next start applies the policy, I3). Any end of that job other than
//     success — error, cancel, shutdown, a failed switch — puts current back
//     on the last good release (Plan.Fallback); the release that tripped the
//     policy is marked bad.
//   - I3. Every plan that starts lockers on an unproven release applies the
//     failure policy: updates in both strategies (offline stops launching as
//     soon as the ratio trips), start-all, recovery and resumption.
//   - I4. After any agent exit the next agent drives the fleet to one
//     release — the interrupted job's target if proven, else its fallback —
//     with every locker whose desired state is running, running and healthy
//     (PlanRecovery).
//   - I5. A Result never says more than happened: each locker's Outcome is
//     one of moved, started, stopped, killed, already-stopped,
//     already-running, unverified (healthy once, passing its checks; the
//     window was cut by a cancel or a shutdown), failed or skipped (left
//     where it was); its Back says how its way back went (rolled-back or
//     failed); a cancelled or interrupted run says so, even when the
//     policy tripped too.
//   - I6. Rollback always has a target and never moves forward
//     (RollbackTarget: a stack of good releases, each rollback one further
//     back); it moves stopped lockers whose desired state is running too.
//   - I7. No verb here touches a locker's /Me: Host has only stop, start
//     and check.
//
// # The policy
//
// One type, Policy, crosses every layer (as nomad's api.UpdateStrategy and
// structs.UpdateStrategy share their names): the config's [defaults]
// decode over DefaultPolicy, an API request's "policy" object and the
// CLI's flags are a Patch of it under the same names (max_unavailable is
// --max-unavailable), Policy.Apply and Policy.Validate are the one decoder
// and the one check, and the job record holds the resolved policy once,
// in its journaled plan, with durations as strings (Duration). Recovery
// resumes an interrupted plan with that policy, health check included.
//
// # Defaults (DefaultPolicy)
//
// K = 4, stop parallel 8, stop timeout 10 s, health check none, monitor window 10 s (Nomad's min_healthy_time default),
// held until the release is proven (monitor_holds until_proven), probed every
// 500 ms (every 2 s once in the background: Policy.BackgroundInterval;
// 3 failed checks in a row, or one that finds the locker stopped,
// fail it; a window, or the soak, never ends on a failed check: it goes on
// until a check passes), start deadline 60 s, failure ratio 0.1, failure action rollback, release watch 10 min.
// A release is proven once min(K, lockers) of them (W for offline and
// start plans; the canaries, after their soak, when there are canaries)
// passed the monitor window; a watched run that ends with its release
// unproven trips the policy if any locker failed (ratio 1 never trips on
// its own: only a window full of failed lockers or that end does).
// Canaries and soak apply to rolling updates only; a soak without
// canaries does nothing.
//
// # The monitor rule (Policy.MonitorHolds)
//
// The monitor window earns its keep on the first lockers of a release: a
// release that dies or turns unhealthy seconds after its first healthy
// check is caught there, before it runs anywhere else. With
// MonitorUntilProven (the default) those lockers — the proving wave, or
// the canaries when there are canaries — hold their places in K through
// their whole window, as every locker did before, and no other locker is
// taken down until every one of them ended (one launched meanwhile would
// be healthy before the proof and hold its place through its window; the
// wave's windows end within their starts' spread). Once the release is
// proven (and from the
// start when the plan's target is proven already: a restart, a
// rollback, a resumed proven update), a locker gives its place back at
// its first healthy check (PhaseMonitoring) and its window goes on in
// the background: the state counts it as monitoring, not down. A failure
// in that window is recorded as any window's failure (the locker failed
// in its monitor window), counts toward the failure ratio (overall and
// over the last K finished), trips the policy, and takes a place in K
// again while the locker is down. A window in the background checks every
// Policy.BackgroundInterval (monitor ÷ 5, between Interval and 10 s:
// 2 s at the defaults), not every Interval: the checks were 6,000 an update
// at N=300, each costing the agent and the app about 0.5 ms of CPU, and a
// proven release's late failures are the rare ones. A run waits for its windows in the
// background before it ends or goes back, and a rollback brings back
// every locker it moved. This is Swarm's monitor ("failures inside the
// monitor period count toward the failure ratio, but the next batch goes
// on"), kept for the lockers after the proof; Kubernetes'
// minReadySeconds and Nomad's min_healthy_time hold every locker's
// place, and make a rolling update take about N/K × (monitor + restart).
// MonitorAll keeps that: every locker holds its place through its
// window (and an empty MonitorHolds, as plans journaled before the knob).
//
// # Pacing
//
// K bounds the lockers down, W ≤ K the lockers starting (a replace takes
// its start place before its stop). With Policy.Pacing Adaptive (the
// default) the Pacer sets W between 1 and K (all lockers for offline and
// start plans, which have no serving capacity to protect), as TCP finds a
// path's capacity: slow start first (one more per healthy start, so W
// doubles per window of healthy starts and the launches follow the
// starts that ended), then W holds where healthy starts per second stop rising (a
// step that did not raise the rate by half its own size ends the growth:
// the throughput knee, the way Vegas and BBR aim at the bottleneck's rate;
// after a doubling W holds at the W of the higher power, rate² ÷ W,
// Kleinrock's throughput ÷ delay by Little's law; after 4 windows held it
// probes one more, as BBR probes, and each probe that went back doubles
// the next hold, up to 16 windows). W is halved,
// at most once per window, on real distress only: a failed start,
// pressure over target (DefaultPaceTargets: memory — the host's and the
// lockers' parent cgroup's, as the agent's gauge reads it — and IO; CPU
// off, as the system-wide figure is noise on a shared cgroup v1 box), or
// a start past Deadline ÷ Pace.SlowFactor (half the deadline: at risk of
// failing it); not on a start merely slower than others. After a cut W
// grows by one per window. Fixed keeps W =
// MaxStarting (or K); an empty Pacing is Fixed, as journaled plans from
// before pacing ran. The way back always runs fixed (W = MaxStarting, or
// K, for its replaces too). Offline and start plans, whose K is all their
// lockers, take MaxStarting even above the configured K (a K of 1, the
// held-socket default, still starts them at W 4), on the way back too.
// With no health check configured, "healthy" means RUNNING: the monitor
// window still catches a release that exits at start or within 10 s, but
// not one that runs and serves errors.
package rollout
