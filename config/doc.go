// Package config is the config file (/etc/lxcfleet/lxcfleet.toml): its
// sections, their defaults, its validation (every key named when it is
// wrong or unknown), and Wire, the one place that builds a host's stack
// from it — the container host, the release manager, the agent's
// dependencies and config — for every command, the daemon and the
// benchmark alike (the layout, app_path, [cgroup], the fetch limits and
// the pressure gauge are read here once).
package config
