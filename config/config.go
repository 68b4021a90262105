package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"lxcfleet/agent"
	"lxcfleet/fleet"
	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
	"lxcfleet/provision"
	"lxcfleet/rollout"
)

// DefaultPath is where the agent and the CLI read their config.
const DefaultPath = "/etc/lxcfleet/lxcfleet.toml"

// File is the config file (TOML). Every key is optional; see
// packaging/lxcfleet.toml for a commented example.
type File struct {
	LXCPath           string         `toml:"lxcpath"`
	StateDir          string         `toml:"state_dir"`
	KeepReleases      int            `toml:"keep_releases"`
	KeepJobs          int            `toml:"keep_jobs"`
	InventoryInterval agent.Duration `toml:"inventory_interval"`
	HealthInterval    agent.Duration `toml:"health_interval"`

	Listen struct {
		Socket    string `toml:"socket"`
		TCP       string `toml:"tcp"`
		Token     string `toml:"token"`
		TokenFile string `toml:"token_file"`
		TLSCert   string `toml:"tls_cert"`
		TLSKey    string `toml:"tls_key"`
		// ReadTimeout bounds reading one request; IdleTimeout closes a
		// keep-alive connection that sends nothing.
		ReadTimeout agent.Duration `toml:"read_timeout"`
		IdleTimeout agent.Duration `toml:"idle_timeout"`
	} `toml:"listen"`

	Layout struct {
		Root           string `toml:"root"`
		AppPath        string `toml:"app_path"`
		MePath         string `toml:"me_path"`
		ConfigPath     string `toml:"config_path"`
		ConfigReadOnly *bool  `toml:"config_read_only"`
		Templates      string `toml:"templates"`
	} `toml:"layout"`

	Code struct {
		Origin     string         `toml:"origin"`
		Npm        string         `toml:"npm"`
		NpmTimeout agent.Duration `toml:"npm_timeout"`
		// NpmRegistry is the registry npm fetches from ("": npm's own
		// config, e.g. /root/.npmrc); builds prefer the host's npm cache.
		NpmRegistry string `toml:"npm_registry"`
		// FetchStallTimeout, FetchTimeout and MaxPacks: see
		// codeupdate.Options (0: its defaults, 60s, 15m and 32).
		FetchStallTimeout agent.Duration `toml:"fetch_stall_timeout"`
		FetchTimeout      agent.Duration `toml:"fetch_timeout"`
		MaxPacks          int            `toml:"max_packs"`
	} `toml:"code"`

	Provision struct {
		Template     string   `toml:"template"`
		TemplateArgs []string `toml:"template_args"`
		Init         string   `toml:"init"`
		// Tini is the host's static tini, run as PID 1 in front of Init
		// (provision --tini); "" runs the app as PID 1.
		Tini        string   `toml:"tini"`
		HaltSignal  string   `toml:"halt_signal"`
		Network     string   `toml:"network"`
		ExtraConfig []string `toml:"extra_config"`
		PortBase    int      `toml:"port_base"`
		// Socket is how a new locker's app gets its listening socket:
		// "app" (the default: it binds its port itself) or "held" (the
		// host's socket holder keeps it across restarts; the app listens
		// on fd 3, LISTEN_FDS=1). See provision.Options.Socket.
		Socket string `toml:"socket"`
		// SocketAddress is the IP held sockets bind ("127.0.0.1").
		SocketAddress string `toml:"socket_address"`
		// SocketPort is a held socket's port for a fixed-port app
		// (network "empty", no PORT); 0 takes the locker's PORT.
		SocketPort int `toml:"socket_port"`
		// ListenFD is the host's lxcfleet-listenfd: bound into held-socket
		// lockers, and the holder the agent starts when none runs.
		ListenFD string `toml:"listenfd"`
		// HolderDir is the socket holder's folder (its control socket).
		HolderDir string `toml:"holder_dir"`
	} `toml:"provision"`

	// Defaults is the [defaults] section: knobs of the policy by their one
	// name (rollout.Policy's JSON names: max_unavailable, monitor, ...),
	// decoded over rollout.DefaultPolicy, plus target, strategy and
	// downtime_page. Old names (window) still work and are reported by
	// Warnings.
	Defaults map[string]any `toml:"defaults"`

	Schedules []agent.Schedule `toml:"schedule"`

	// Fleet joins the host to a fleet on etcd (FleetSection; agent/fleet.go runs the member).
	Fleet FleetSection `toml:"fleet"`

	// Supervision restarts lockers that stop on their own (see
	// agent.SupervisionConfig).
	Supervision struct {
		Off        bool           `toml:"off"`
		Burst      int            `toml:"burst"`
		Interval   agent.Duration `toml:"interval"`
		Backoff    agent.Duration `toml:"backoff"`
		MaxBackoff agent.Duration `toml:"max_backoff"`
	} `toml:"supervision"`

	// Sleep stops idle held-socket lockers and starts them when a
	// connection is pending (agent.SleepConfig): idle_stop = "0s" (the
	// default) keeps every locker awake.
	Sleep struct {
		IdleStop agent.Duration `toml:"idle_stop"`
		Sample   agent.Duration `toml:"sample"`
	} `toml:"sleep"`

	// Cgroup places the lockers the agent starts under one parent cgroup
	// with a low CPU weight, so that busy lockers cannot starve the agent
	// (lxcctl.CgroupParent). parent = "" leaves them where LXC puts them.
	Cgroup struct {
		Parent    string `toml:"parent"`
		CPUWeight int    `toml:"cpu_weight"`
		// StartCPUWeight is the startup CPU boost
		// (lxcctl.CgroupParent.StartCPUWeight); 0, the default, is off.
		StartCPUWeight int `toml:"start_cpu_weight"`
	} `toml:"cgroup"`
}

// Default returns the settings used where the file is silent.
func Default() File {
	var c File
	c.LXCPath = "/var/lib/lxc"
	c.StateDir = "/var/lib/lxcfleet/state"
	c.KeepReleases = 5
	c.KeepJobs = 500
	c.InventoryInterval = agent.Duration(5 * time.Second)
	c.HealthInterval = agent.Duration(15 * time.Second)
	c.Listen.Socket = agent.DefaultSocket
	c.Listen.ReadTimeout = agent.Duration(agent.DefaultReadTimeout)
	c.Listen.IdleTimeout = agent.Duration(agent.DefaultIdleTimeout)
	c.Layout.Root = "/var/lib/lxcfleet"
	c.Code.Npm = "npm"
	c.Code.NpmTimeout = agent.Duration(10 * time.Minute)
	c.Provision.Template = "download"
	c.Provision.Network = "none"
	c.Provision.HaltSignal = "SIGTERM"
	c.Provision.Tini = provision.DefaultTini
	c.Provision.PortBase = 4100
	c.Provision.Socket = provision.SocketApp
	c.Provision.SocketAddress = provision.DefaultSocketAddress
	c.Provision.ListenFD = provision.DefaultListenFD
	c.Provision.HolderDir = DefaultHolderDir
	c.Cgroup.Parent = lxcctl.DefaultCgroupParent
	c.Cgroup.CPUWeight = lxcctl.DefaultLockersCPUWeight
	c.Cgroup.StartCPUWeight = lxcctl.DefaultStartCPUWeight
	return c
}

// Load reads a config file over the defaults. A missing file at the
// default path is not an error (the defaults apply); a missing file named
// explicitly is. Unknown keys and invalid values are errors naming the key.
func Load(path string, explicit bool) (File, error) {
	c := Default()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return c, c.validate()
	}
	if err != nil {
		return c, fmt.Errorf("reading config %s: %w", path, err)
	}
	md, err := toml.Decode(string(b), &c)
	if err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	var keys []string
	for _, k := range md.Undecoded() {
		// Tables inside [defaults] (pace = {memory = 0.2}) are the
		// policy's to judge (rollout.Policy.Apply names unknown knobs).
		if len(k) > 2 && k[0] == "defaults" {
			continue
		}
		keys = append(keys, k.String())
	}
	if len(keys) > 0 {
		return c, fmt.Errorf("config %s: unknown key %s", path, strings.Join(keys, ", "))
	}
	if c.Listen.Token != "" {
		if err := agent.CheckSecretFile(path); err != nil {
			return c, fmt.Errorf("config %s holds listen.token: %w (or move the token to listen.token_file)", path, err)
		}
	}
	if c.Listen.Token == "" && c.Listen.TokenFile != "" {
		if err := agent.CheckSecretFile(c.Listen.TokenFile); err != nil {
			return c, fmt.Errorf("config %s: listen.token_file: %w", path, err)
		}
		tb, err := os.ReadFile(c.Listen.TokenFile)
		if err != nil {
			return c, fmt.Errorf("config %s: listen.token_file: %w", path, err)
		}
		c.Listen.Token = strings.TrimSpace(string(tb))
	}
	if c.Listen.TLSKey != "" {
		if err := agent.CheckSecretFile(c.Listen.TLSKey); err != nil {
			return c, fmt.Errorf("config %s: listen.tls_key: %w", path, err)
		}
	}
	if err := c.validate(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// validate checks values, naming the key of the first bad one.
func (c File) validate() error {
	abs := []struct{ key, v string }{{"lxcpath", c.LXCPath}, {"state_dir", c.StateDir}, {"layout.root", c.Layout.Root},
		{"listen.socket", c.Listen.Socket}, {"listen.tls_cert", c.Listen.TLSCert}, {"listen.tls_key", c.Listen.TLSKey}, {"layout.templates", c.Layout.Templates}}
	for _, x := range abs {
		if x.v != "" && !filepath.IsAbs(x.v) {
			return fmt.Errorf("%s must be an absolute path, got %q", x.key, x.v)
		}
	}
	if c.StateDir == "" {
		return errors.New("state_dir must be set")
	}
	if err := c.CgroupParent().Validate(); err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	if c.Listen.Socket == "" && c.Listen.TCP == "" {
		return errors.New("listen.socket and listen.tcp are both empty: the agent would serve nowhere")
	}
	switch {
	case c.KeepReleases < 0:
		return fmt.Errorf("keep_releases must not be negative, got %d", c.KeepReleases)
	case c.KeepJobs < 0:
		return fmt.Errorf("keep_jobs must not be negative, got %d", c.KeepJobs)
	case c.InventoryInterval < 0:
		return fmt.Errorf("inventory_interval must not be negative")
	case c.HealthInterval < 0:
		return fmt.Errorf("health_interval must not be negative")
	case c.Code.NpmTimeout < 0:
		return fmt.Errorf("code.npm_timeout must not be negative")
	case c.Code.FetchStallTimeout < 0:
		return fmt.Errorf("code.fetch_stall_timeout must not be negative")
	case c.Code.FetchTimeout < 0:
		return fmt.Errorf("code.fetch_timeout must not be negative")
	case c.Code.MaxPacks < 0:
		return fmt.Errorf("code.max_packs must not be negative, got %d", c.Code.MaxPacks)
	case c.Listen.TCP != "" && c.Listen.Token == "":
		return fmt.Errorf("listen.tcp is set but listen.token (or listen.token_file) is not: the TCP listener refuses every request without a token")
	case c.Listen.Token != "" && len(c.Listen.Token) < agent.MinTokenBytes:
		return fmt.Errorf("listen.token is %d bytes, want at least %d: %s", len(c.Listen.Token), agent.MinTokenBytes, agent.MakeTokenHint)
	case c.Listen.ReadTimeout < 0 || c.Listen.IdleTimeout < 0:
		return fmt.Errorf("listen.read_timeout and listen.idle_timeout must not be negative")
	case (c.Listen.TLSCert == "") != (c.Listen.TLSKey == ""):
		return fmt.Errorf("listen.tls_cert and listen.tls_key go together")
	case c.Provision.PortBase < 0 || c.Provision.PortBase > 65000:
		return fmt.Errorf("provision.port_base must be between 0 and 65000, got %d", c.Provision.PortBase)
	}
	// What provision writes into a container's config, judged by LXC's own
	// parser: a value LXC refuses makes a container no command can load.
	if c.Provision.HaltSignal != "" {
		if err := lxcctl.CheckConfigItem("lxc.signal.halt", c.Provision.HaltSignal); err != nil {
			return fmt.Errorf("provision.halt_signal: halt signal %q: %w", c.Provision.HaltSignal, err)
		}
	}
	switch c.Provision.Network {
	case "", provision.NetworkNone, provision.NetworkEmpty, provision.NetworkTemplate:
	default:
		return fmt.Errorf("provision.network %q: want %s, %s or %s", c.Provision.Network, provision.NetworkNone, provision.NetworkEmpty, provision.NetworkTemplate)
	}
	switch c.Provision.Socket {
	case "", provision.SocketApp, provision.SocketHeld:
	default:
		return fmt.Errorf("provision.socket %q: want %s or %s", c.Provision.Socket, provision.SocketApp, provision.SocketHeld)
	}
	if a := c.Provision.SocketAddress; a != "" && net.ParseIP(a) == nil {
		return fmt.Errorf("provision.socket_address %q: not an IP address (e.g. 127.0.0.1)", a)
	}
	if p := c.Provision.SocketPort; p < 0 || p > 65535 {
		return fmt.Errorf("provision.socket_port must be between 0 and 65535, got %d", p)
	}
	if c.Provision.Socket == provision.SocketHeld && (c.Provision.HolderDir == "" || !filepath.IsAbs(c.Provision.HolderDir)) {
		return fmt.Errorf("provision.holder_dir %q: want an absolute path (the socket holder's folder)", c.Provision.HolderDir)
	}
	if err := c.checkSleep(); err != nil {
		return err
	}
	for i, l := range c.Provision.ExtraConfig {
		if err := lxcctl.CheckConfigLine(l); err != nil {
			return fmt.Errorf("provision.extra_config[%d]: %w", i, err)
		}
	}
	if err := c.FleetConfig().Validate(); err != nil {
		return err
	}
	if _, _, err := c.defaults(); err != nil {
		return err
	}
	if _, err := agent.ResolvePolicy(agent.Request{Kind: agent.KindStartAll}, c.AgentDefaults()); err != nil {
		return fmt.Errorf("defaults: %w", err)
	}
	names := map[string]bool{}
	for i, s := range c.Schedules {
		if err := agent.ValidateSchedule(s, c.AgentDefaults()); err != nil {
			return fmt.Errorf("schedule[%d]: %w", i, err)
		}
		if names[s.Name] {
			return fmt.Errorf("schedule[%d]: name %q used twice", i, s.Name)
		}
		names[s.Name] = true
	}
	return nil
}

// CgroupParent is the [cgroup] section for lxcctl.
func (c File) CgroupParent() lxcctl.CgroupParent {
	return lxcctl.CgroupParent{Path: c.Cgroup.Parent, CPUWeight: c.Cgroup.CPUWeight, StartCPUWeight: c.Cgroup.StartCPUWeight}
}

// MountLayout returns the [layout] section as a mounts.Layout: the one place
// the layout is computed from the config.
func (c File) MountLayout() mounts.Layout {
	root := c.Layout.Root
	if root == "" {
		root = mounts.DefaultRoot
	}
	l := mounts.LayoutAt(root)
	if c.Layout.AppPath != "" {
		l.AppPath = c.Layout.AppPath
	}
	if c.Layout.MePath != "" {
		l.MePath = c.Layout.MePath
	}
	if c.Layout.ConfigPath != "" {
		l.ConfigPath = c.Layout.ConfigPath
	}
	if c.Layout.ConfigReadOnly != nil {
		l.ConfigReadOnly = *c.Layout.ConfigReadOnly
	}
	l.Templates = c.Layout.Templates
	return l
}

// AgentConfig returns the agent's Config for this file (Version and
// Listen.Console are the caller's to fill).
func (c File) AgentConfig() agent.Config {
	return agent.Config{
		LXCPath:           c.LXCPath,
		StateDir:          c.StateDir,
		Schedules:         c.Schedules,
		InventoryInterval: c.InventoryInterval.D(),
		HealthInterval:    c.HealthInterval.D(),
		Listen: agent.Listen{
			Socket:      c.Listen.Socket,
			TCP:         c.Listen.TCP,
			Token:       c.Listen.Token,
			TLSCert:     c.Listen.TLSCert,
			TLSKey:      c.Listen.TLSKey,
			ReadTimeout: c.Listen.ReadTimeout.D(),
			IdleTimeout: c.Listen.IdleTimeout.D(),
		},
		Defaults:     c.AgentDefaults(),
		KeepJobs:     c.KeepJobs,
		KeepReleases: c.KeepReleases,
		Supervision: agent.SupervisionConfig{Off: c.Supervision.Off, Burst: c.Supervision.Burst, Interval: c.Supervision.Interval.D(),
			Backoff: c.Supervision.Backoff.D(), MaxBackoff: c.Supervision.MaxBackoff.D()},
		Fleet: c.FleetConfig(),
		Sleep: agent.SleepConfig{IdleStop: c.Sleep.IdleStop.D(), Sample: c.Sleep.Sample.D()},
	}
}

// AgentDefaults returns the [defaults] section as request defaults (the
// built-in ones where it is invalid: Load refuses such a file).
func (c File) AgentDefaults() agent.Defaults {
	d, _, _ := c.defaults()
	return d
}

// Warnings says what in the file still works but is deprecated (old knob
// names), one sentence each.
func (c File) Warnings() []string {
	_, old, _ := c.defaults()
	var out []string
	for _, k := range old {
		out = append(out, fmt.Sprintf("config: defaults.%s is deprecated: use defaults.%s", k, rollout.Deprecated[k]))
	}
	return out
}

// HeldMaxUnavailable is K where [provision] socket = "held" and
// [defaults] sets neither max_unavailable nor its old name window: one
// locker restarting at a time. A held socket refuses no connection while
// its locker restarts; the connections made meanwhile wait in its queue
// for the whole start, so what a rolling update costs its clients is how
// long one start takes, and starts that overlap on a busy box take longer
// each. Measured (README, issue 20 at N=300, a client at each locker):
// the p99 request latency of a held rolling update was 219-1,029 ms at
// K 4 (the pacer's W 2-4; the target of one restart alone + 100 ms met
// in 1 of 7 runs) and 266, 393 and 392 ms at K 1 (met in 2 of 3; in the
// third the requests to lockers not restarting had 347 ms alone), with
// windows in K 4's range. W stays rollout.DefaultPolicy's K (4) there,
// which only offline updates, start-all, wake-ups and a boot's recovery
// use (their K is all lockers: rollout's Plan.allDown), so those do not
// start at W 1; a request that sets K and not W drops it
// (agent.Defaults.ImpliedMaxStarting).
const HeldMaxUnavailable = 1

// defaults decodes [defaults] over DefaultDefaults: the policy's knobs
// through rollout.Policy.Apply (the one decoder and validator of a
// policy), the rest by name. Held sockets change the built-in K and W
// (HeldMaxUnavailable) where [defaults] leaves K out.
func (c File) defaults() (agent.Defaults, []string, error) {
	d := agent.DefaultDefaults()
	_, k := c.Defaults["max_unavailable"]
	_, oldK := c.Defaults["window"]
	_, w := c.Defaults["max_starting"]
	if c.Provision.Socket == provision.SocketHeld && !k && !oldK {
		d.Policy.MaxStarting = d.Policy.MaxUnavailable
		d.Policy.MaxUnavailable = HeldMaxUnavailable
		d.ImpliedMaxStarting = !w
	}
	patch := rollout.Patch{}
	for k, v := range c.Defaults {
		var ok bool
		switch k {
		case "target":
			d.Target, ok = v.(string)
		case "strategy":
			d.Strategy, ok = v.(string)
		case "downtime_page":
			d.DowntimePage, ok = v.(bool)
		default:
			patch[k], ok = v, true
		}
		if !ok {
			return d, nil, fmt.Errorf("defaults.%s: wrong type %T", k, v)
		}
	}
	pol, old, err := d.Policy.Apply(patch)
	if err != nil {
		return d, old, fmt.Errorf("defaults: %w", err)
	}
	if _, err := lxcctl.ParseHealthCheck(pol.Health); err != nil {
		return d, old, fmt.Errorf("defaults.health: %w", err)
	}
	d.Policy = pol
	return d, old, nil
}

// FleetSection is the [fleet] section of the config file. Without
// endpoints the host is not in a fleet: no etcd client is made and
// nothing below runs (the single-host path is unchanged).
type FleetSection struct {
	Endpoints []string       `toml:"endpoints"`
	Group     string         `toml:"group"`
	HostID    string         `toml:"host_id"`
	TTL       agent.Duration `toml:"ttl"`
	Prefix    string         `toml:"prefix"`
	CA        string         `toml:"ca"`
	Cert      string         `toml:"cert"`
	Key       string         `toml:"key"`
}

// FleetConfig returns the [fleet] section as a fleet.Config.
func (c File) FleetConfig() fleet.Config {
	x := c.Fleet
	return fleet.Config{Endpoints: x.Endpoints, Group: x.Group, HostID: x.HostID, TTL: x.TTL.D(), Prefix: x.Prefix, CA: x.CA, Cert: x.Cert, Key: x.Key}
}

// MinIdleStop is the shortest [sleep] idle_stop: below it a locker would
// stop between two requests of one visit, and each visitor would wait for
// a start (0.1-3 s) far more often than sleep saves memory. (The
// connection count sees a closed connection for 60 s, TIME_WAIT, so an
// idle_stop below a minute already sleeps a locker idle_stop plus up to a
// minute after its last request.)
const MinIdleStop = 10 * time.Second

// checkSleep checks the [sleep] section: no negative durations, an
// idle_stop of at least MinIdleStop, and held sockets to wake on.
func (c File) checkSleep() error {
	s := c.Sleep
	switch {
	case s.IdleStop < 0:
		return fmt.Errorf("sleep.idle_stop = %q must not be negative (\"0s\" keeps every locker awake)", s.IdleStop.D())
	case s.Sample < 0:
		return fmt.Errorf("sleep.sample = %q must not be negative", s.Sample.D())
	case s.IdleStop == 0:
		return nil
	case s.IdleStop.D() < MinIdleStop:
		return fmt.Errorf("sleep.idle_stop = %q is below %v: a locker would stop between the requests of one visit (\"0s\" keeps every locker awake)", s.IdleStop.D(), MinIdleStop)
	case c.Provision.Socket != provision.SocketHeld:
		return fmt.Errorf("sleep.idle_stop = %q needs held sockets: set [provision] socket = %q (a locker whose app binds its own port cannot be woken by a connection), or idle_stop = \"0s\"", s.IdleStop.D(), provision.SocketHeld)
	}
	return nil
}
