// Package bench is lxcfleet's benchmark (issue 7): it measures, side by side
// in one run on one machine, how long a fleet of real lockers is unavailable
// while it is updated from build A to build B by the operators' shell plans
// and by lxcfleet.
//
// The pieces:
//
//   - app (embedded, app/server.js): a Node.js locker that loads a real npm
//     dependency set (express; build B adds more) and burns a fixed amount of
//     CPU before it listens, answering {"build": ...} on /healthz.
//   - origin.go: a bare origin repository with builds A, B (dependencies
//     changed: npm must run) and C (app-only change of B: lockfile unchanged).
//   - fleet.go: N busybox lockers in a private lxcpath with unique names,
//     mounted with the mounts package's layout; Destroy removes every one.
//   - prober.go: the external prober, a separate process (`lockerbench probe`)
//     that polls every locker's /healthz at 20 Hz, watches each locker's
//     cgroup (to see starts and read their CPU time), samples host pressure
//     (load, PSI, memory), and writes everything as JSON lines.
//   - scenarios.go: the five update scenarios and the resets between them.
//   - analyze.go: the figures, computed from the prober's events only.
//   - agentload.go: the agent's idle RSS and GET /v1/containers latency.
//   - report.go, chart.go: results/<timestamp>/ report.json, report.md and
//     healthy.png.
//
// Every figure in a report is measured in that run; targets are compared with
// measured values, never with typed-in ones.
package bench
