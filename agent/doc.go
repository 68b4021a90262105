// Package agent is lxcfleet's daemon: it runs every operation on a host's
// lockers as a job (stop-all, start-all, restart, update-code, rollback,
// check-update, recover), one mutating job at a time, and journals each
// step in a bbolt file before and after it runs, so that a crash can be
// recovered: on restart the agent marks the interrupted job and drives
// every locker back to its desired state.
//
// The data path reads top to bottom: a Request (from the HTTP API, a cron
// schedule or the CLI's --local mode; its Policy is a patch of
// rollout.Policy's knobs over the config's defaults) becomes a Job; its
// planner in rollout turns it into a Plan, journaled as the job's first
// record (no plan, no moves); rollout.Run's one loop carries the plan out
// over the per-locker verbs (lockerverbs over lxcctl) and, for updates,
// builds and switches releases through the Code interface (codeupdate);
// every step is journaled by type (StepReplaceStop, StepStart, ...) before
// and after it runs and streamed as an Event (Server-Sent Events on the
// API). After an agent exit, recovery resumes the interrupted plan with
// its own policy, watching the lockers it left starting (OpWatch). The
// config file and the wiring of a host live in config/.
//
// Between jobs, supervision (supervise.go) keeps desired-running lockers
// running, and the release watch (watch.go) keeps judging a release for a
// while after the update that proved it: too many of its lockers crashed
// or unhealthy roll it back through a job. A host shutdown and boot
// (hostpower.go) stop every locker keeping desired states, and start
// those that should run. An offline update's maintenance page says when
// each locker is back, from the job's measured starts (downtime.go).
//
// Reads (lockers, their release and health) come from an inventory that is
// refreshed in the background, so the API and /metrics cost the host
// nothing per request. The agent never calls go-lxc or git directly.
package agent
