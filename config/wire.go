package config

import (
	"fmt"
	"log/slog"

	"lxcfleet/agent"
	"lxcfleet/codeupdate"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
)

// Stack is a host wired from a config file: the layout (with app_path),
// the container host (the lxcpath and [cgroup]), and on demand the release
// manager and the agent's dependencies. Every command, the daemon and the
// benchmark build theirs with Wire: no second copy of the wiring.
type Stack struct {
	File   File
	Layout mounts.Layout
	Host   *lxcctl.Host
	Log    *slog.Logger
}

// Wire builds the stack of f. An lxcpath that cannot be used is an error
// naming it.
func Wire(f File, log *slog.Logger) (*Stack, error) {
	if log == nil {
		log = slog.Default()
	}
	var h *lxcctl.Host
	h, err := lxcctl.NewHost(lxcctl.Options{LXCPath: f.LXCPath, Logger: log, Cgroup: f.CgroupParent(), BeforeStart: f.holdSocket(&h)})
	if err != nil {
		return nil, fmt.Errorf("lxcpath: %w", err)
	}
	return &Stack{File: f, Layout: f.MountLayout(), Host: h, Log: log}, nil
}

// Code returns the release manager over the layout's root ([code]: the
// origin, npm, its registry and timeout, the fetch limits; the target of
// [defaults]); nil, nil when code.origin is not set.
func (s *Stack) Code() (*codeupdate.Manager, error) {
	c := s.File.Code
	if c.Origin == "" {
		return nil, nil
	}
	m, err := codeupdate.New(codeupdate.Options{Root: s.Layout.Root, Origin: c.Origin, Npm: c.Npm, NpmTimeout: c.NpmTimeout.D(), NpmRegistry: c.NpmRegistry,
		Target: s.File.AgentDefaults().Target, FetchStallTimeout: c.FetchStallTimeout.D(), FetchTimeout: c.FetchTimeout.D(), MaxPacks: c.MaxPacks, Logger: s.Log})
	if err != nil {
		return nil, fmt.Errorf("code.origin: %w", err)
	}
	return m, nil
}

// AgentDeps returns the agent's dependencies: the container host, the
// release manager and ReleaseOf over the layout (when code.origin is set),
// and the pressure gauge for adaptive pacing (the host's PSI and the
// lockers' parent cgroup's memory; none where /proc/pressure cannot be
// read: starts and failures alone set W then, and the log says so).
func (s *Stack) AgentDeps() (agent.Deps, error) {
	deps := agent.Deps{Containers: s.Host, Logger: s.Log, Held: heldSockets{host: s.Host, holder: s.File.Holder()}}
	if g, err := lockerverbs.NewPSIGauge(""); err == nil {
		// Memory: the host's and the lockers' parent cgroup's (its
		// memory.pressure, or on cgroup v1 its limit and failcnt).
		deps.Gauge = g.Lockers(lxcctl.CgroupRoot, s.File.CgroupParent().Path)
	} else {
		s.Log.Info("adaptive pacing without pressure: starts and failures alone set W", "err", err)
	}
	code, err := s.Code()
	if err != nil {
		return deps, err
	}
	if code != nil {
		deps.Code = code
		deps.ReleaseOf = mounts.NewReleaseCache(s.Layout).ReleaseOfLocker
	}
	return deps, nil
}
