// Package agent is lxcfleet's daemon: it runs every operation on a host's
// lockers as a job (stop-all, start-all, restart, update-code, rollback,
// check-update, recover), one mutating job at a time, and journals each
// step in a bbolt file before and after it runs, so that a crash can be
// recovered: on restart the agent marks the interrupted job and drives
// every locker back to its desired state.
//
// The data path reads top to bottom: a Request (from the HTTP API, a cron
// schedule or the CLI's --local mode) becomes a Job; planFor turns it into
// a body; the body moves lockers in bounded waves through the Containers
// interface (lxcctl) and, for updates, builds and switches releases through
// the Code interface (codeupdate); every container step is journaled and
// streamed as an Event (Server-Sent Events on the API).
//
// Reads (lockers, their release and health) come from an inventory that is
// refreshed in the background, so the API and /metrics cost the host
// nothing per request. The agent never calls go-lxc or git directly.
package agent
