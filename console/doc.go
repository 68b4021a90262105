// Package console is lxcfleet's web admin console: one page of plain
// HTML, CSS and JavaScript embedded in the binary (no build step, nothing
// from a CDN), served by the agent at / on its TCP listener. The operator
// signs in with the agent's bearer token (kept in sessionStorage for the
// tab); every call to the API sends it. The page shows the host, the
// current build, whether an update is available, every locker, the
// schedules and the job history; it runs stop-all, update-code, start-all,
// rollback and per-locker restarts behind confirmations, and follows a
// running job live from its event stream (read with fetch, so that the
// token goes in a header) with a grid of lockers coloured by state.
//
// The console also serves the maintenance page (package downtime) at
// /maintenance, for a proxy to show in place of a locker's 502/503.
package console
