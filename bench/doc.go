// Package bench is lxcfleet's benchmark (issues 7, 13, 19 and 20): it measures, side by side
// in one run on one machine, how long a fleet of real lockers is unavailable
// while it is updated from build A to build B by the operators' shell plans
// and by lxcfleet.
//
// The pieces:
//
//   - app (embedded, app/server.js): a Node.js locker that loads a real npm
//     dependency set (express; build B adds more) and burns a fixed amount of
//     CPU before it listens, answering {"build": ...} on /healthz. Its
//     heavy profile (profile.go, issue 19) warms a cache and compiles
//     templates first: a peak far above its serving memory.
//   - memcg.go: the run's own cgroup parent in the memory controller, its
//     limit, and what happened in it per scenario (peak, OOM kills).
//   - origin.go: a bare origin repository with builds A, B (dependencies
//     changed: npm must run) and C (app-only change of B: lockfile unchanged).
//   - fleet.go: N busybox lockers in a private lxcpath with unique names,
//     mounted with the mounts package's layout; Destroy removes every one.
//   - prober.go, adaptive.go, listen.go: the external prober, a separate
//     process (`lockerbench probe`). Adaptive: every 25 ms one sock_diag
//     dump of the listening ports and one getdents of the containers'
//     cgroups give both edges of each locker's unavailability; HTTP only
//     at each up edge and for serving lockers at 10 requests a second in
//     all. (Issue 7's 20 Hz HTTP poll stays as a mode, the reference.) It
//     samples host pressure (load, PSI, memory) and writes JSON lines.
//   - probing.go: what probing costs (prober and lockers, calibrated on
//     the idle fleet); breakdown.go: one restart in its parts.
//   - scenarios.go: the update scenarios (with --pacing adaptive / fixed
//     where the binary has it) and the resets between them.
//   - scale.go: one cheap run per N (lockerbench scale).
//   - held.go, client.go, density.go, report20.go (issue 20): fleets
//     lxcfleet provisions itself, with held sockets and today's, a client
//     at each locker (a new connection per request) during a rolling and
//     an offline update; sleeping lockers at twice what fits awake.
//   - analyze.go: the figures, computed from the prober's events only.
//   - agentload.go: the agent's idle RSS and GET /v1/containers latency.
//   - report.go, chart.go: results/<timestamp>/ report.json, report.md and
//     healthy.png.
//
// Every figure in a report is measured in that run; targets are compared with
// measured values, never with typed-in ones.
package bench
