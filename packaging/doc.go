// Package packaging holds how lxcfleet is installed on a host: the systemd
// units (lxcfleet.service, the agent; lxcfleet-lockers.service, the
// lockers' start at boot and graceful stop at shutdown), the default config (lxcfleet.toml), the .deb
// build (build-deb, run by `make deb`) and an example nginx config that
// sends a locker's 502/503 to the agent's downtime page. The Go file here
// embeds the unit (for `lxcfleet service install`) and carries the tests
// that check those files with the real tools.
package packaging
