package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
	"lxcfleet/provision"
)

// DefaultConfigPath is where the agent and the CLI read their config.
const DefaultConfigPath = "/etc/lxcfleet/lxcfleet.toml"

// FileConfig is the config file (TOML). Every key is optional; see
// packaging/lxcfleet.toml for a commented example.
type FileConfig struct {
	LXCPath           string   `toml:"lxcpath"`
	StateDir          string   `toml:"state_dir"`
	KeepReleases      int      `toml:"keep_releases"`
	KeepJobs          int      `toml:"keep_jobs"`
	InventoryInterval Duration `toml:"inventory_interval"`
	HealthInterval    Duration `toml:"health_interval"`

	Listen struct {
		Socket    string `toml:"socket"`
		TCP       string `toml:"tcp"`
		Token     string `toml:"token"`
		TokenFile string `toml:"token_file"`
		TLSCert   string `toml:"tls_cert"`
		TLSKey    string `toml:"tls_key"`
		// ReadTimeout bounds reading one request; IdleTimeout closes a
		// keep-alive connection that sends nothing.
		ReadTimeout Duration `toml:"read_timeout"`
		IdleTimeout Duration `toml:"idle_timeout"`
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
		Origin     string   `toml:"origin"`
		Npm        string   `toml:"npm"`
		NpmTimeout Duration `toml:"npm_timeout"`
		// FetchStallTimeout, FetchTimeout and MaxPacks: see
		// codeupdate.Options (0: its defaults, 60s, 15m and 32).
		FetchStallTimeout Duration `toml:"fetch_stall_timeout"`
		FetchTimeout      Duration `toml:"fetch_timeout"`
		MaxPacks          int      `toml:"max_packs"`
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
	} `toml:"provision"`

	Defaults struct {
		StopParallel    int      `toml:"stop_parallel"`
		StopTimeout     Duration `toml:"stop_timeout"`
		Window          int      `toml:"window"`
		Deadline        Duration `toml:"deadline"`
		Delay           Duration `toml:"delay"`
		Health          string   `toml:"health"`
		Monitor         Duration `toml:"monitor"`
		Pacing          string   `toml:"pacing"`
		Target          string   `toml:"target"`
		Strategy        string   `toml:"strategy"`
		MaxFailureRatio *float64 `toml:"max_failure_ratio"`
		FailureAction   string   `toml:"failure_action"`
		Canary          *int     `toml:"canary"`
		Soak            Duration `toml:"soak"`
		DowntimePage    bool     `toml:"downtime_page"`
	} `toml:"defaults"`

	Schedules []Schedule `toml:"schedule"`

	// Fleet joins the host to a fleet on etcd (see agent/fleet.go).
	Fleet FleetFileConfig `toml:"fleet"`

	// Supervision restarts lockers that stop on their own (see
	// SupervisionConfig).
	Supervision struct {
		Off        bool     `toml:"off"`
		Burst      int      `toml:"burst"`
		Interval   Duration `toml:"interval"`
		Backoff    Duration `toml:"backoff"`
		MaxBackoff Duration `toml:"max_backoff"`
	} `toml:"supervision"`

	// Cgroup places the lockers the agent starts under one parent cgroup
	// with a low CPU weight, so that busy lockers cannot starve the agent
	// (lxcctl.CgroupParent). parent = "" leaves them where LXC puts them.
	Cgroup struct {
		Parent    string `toml:"parent"`
		CPUWeight int    `toml:"cpu_weight"`
	} `toml:"cgroup"`
}

// DefaultFileConfig returns the settings used where the file is silent.
func DefaultFileConfig() FileConfig {
	var c FileConfig
	c.LXCPath = "/var/lib/lxc"
	c.StateDir = "/var/lib/lxcfleet/state"
	c.KeepReleases = 5
	c.KeepJobs = 500
	c.InventoryInterval = Duration(5 * time.Second)
	c.HealthInterval = Duration(15 * time.Second)
	c.Listen.Socket = DefaultSocket
	c.Listen.ReadTimeout = Duration(DefaultReadTimeout)
	c.Listen.IdleTimeout = Duration(DefaultIdleTimeout)
	c.Layout.Root = "/var/lib/lxcfleet"
	c.Code.Npm = "npm"
	c.Code.NpmTimeout = Duration(10 * time.Minute)
	c.Provision.Template = "download"
	c.Provision.Network = "none"
	c.Provision.HaltSignal = "SIGTERM"
	c.Provision.Tini = provision.DefaultTini
	c.Provision.PortBase = 4100
	c.Cgroup.Parent = lxcctl.DefaultCgroupParent
	c.Cgroup.CPUWeight = lxcctl.DefaultLockersCPUWeight
	d := DefaultDefaults()
	c.Defaults.StopParallel = d.StopParallel
	c.Defaults.StopTimeout = Duration(d.StopTimeout)
	c.Defaults.Window = d.Window
	c.Defaults.Deadline = Duration(d.Deadline)
	c.Defaults.Health = d.Health
	c.Defaults.Target = d.Target
	c.Defaults.Strategy = d.Strategy
	c.Defaults.FailureAction = d.FailureAction
	return c
}

// LoadConfig reads a config file over the defaults. A missing file at the
// default path is not an error (the defaults apply); a missing file named
// explicitly is. Unknown keys and invalid values are errors naming the key.
func LoadConfig(path string, explicit bool) (FileConfig, error) {
	c := DefaultFileConfig()
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
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return c, fmt.Errorf("config %s: unknown key %s", path, strings.Join(keys, ", "))
	}
	if c.Listen.Token != "" {
		if err := CheckSecretFile(path); err != nil {
			return c, fmt.Errorf("config %s holds listen.token: %w (or move the token to listen.token_file)", path, err)
		}
	}
	if c.Listen.Token == "" && c.Listen.TokenFile != "" {
		if err := CheckSecretFile(c.Listen.TokenFile); err != nil {
			return c, fmt.Errorf("config %s: listen.token_file: %w", path, err)
		}
		tb, err := os.ReadFile(c.Listen.TokenFile)
		if err != nil {
			return c, fmt.Errorf("config %s: listen.token_file: %w", path, err)
		}
		c.Listen.Token = strings.TrimSpace(string(tb))
	}
	if c.Listen.TLSKey != "" {
		if err := CheckSecretFile(c.Listen.TLSKey); err != nil {
			return c, fmt.Errorf("config %s: listen.tls_key: %w", path, err)
		}
	}
	if err := c.validate(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// validate checks values, naming the key of the first bad one.
func (c FileConfig) validate() error {
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
	case c.Listen.Token != "" && len(c.Listen.Token) < MinTokenBytes:
		return fmt.Errorf("listen.token is %d bytes, want at least %d: %s", len(c.Listen.Token), MinTokenBytes, MakeTokenHint)
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
	for i, l := range c.Provision.ExtraConfig {
		if err := lxcctl.CheckConfigLine(l); err != nil {
			return fmt.Errorf("provision.extra_config[%d]: %w", i, err)
		}
	}
	if err := c.FleetConfig().Validate(); err != nil {
		return err
	}
	if _, err := (Request{Kind: KindStartAll}).withDefaults(c.AgentDefaults()); err != nil {
		return fmt.Errorf("defaults: %w", err)
	}
	names := map[string]bool{}
	for i, s := range c.Schedules {
		if err := ValidateSchedule(s, c.AgentDefaults()); err != nil {
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
func (c FileConfig) CgroupParent() lxcctl.CgroupParent {
	return lxcctl.CgroupParent{Path: c.Cgroup.Parent, CPUWeight: c.Cgroup.CPUWeight}
}

// MountLayout returns the [layout] section as a mounts.Layout: the one place
// the layout is computed from the config.
func (c FileConfig) MountLayout() mounts.Layout {
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
func (c FileConfig) AgentConfig() Config {
	return Config{
		LXCPath:           c.LXCPath,
		StateDir:          c.StateDir,
		Schedules:         c.Schedules,
		InventoryInterval: c.InventoryInterval.D(),
		HealthInterval:    c.HealthInterval.D(),
		Listen: Listen{
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
		Supervision: SupervisionConfig{Off: c.Supervision.Off, Burst: c.Supervision.Burst, Interval: c.Supervision.Interval.D(),
			Backoff: c.Supervision.Backoff.D(), MaxBackoff: c.Supervision.MaxBackoff.D()},
		Fleet: c.FleetConfig(),
	}
}

// AgentDefaults returns the [defaults] section as request defaults.
func (c FileConfig) AgentDefaults() Defaults {
	d := DefaultDefaults()
	x := c.Defaults
	set := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	setD := func(dst *time.Duration, v Duration) {
		if v != 0 {
			*dst = v.D()
		}
	}
	setS := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&d.StopParallel, x.StopParallel)
	setD(&d.StopTimeout, x.StopTimeout)
	set(&d.Window, x.Window)
	setD(&d.Deadline, x.Deadline)
	setD(&d.Delay, x.Delay)
	setS(&d.Health, x.Health)
	setD(&d.Monitor, x.Monitor)
	setS(&d.Pacing, x.Pacing)
	setS(&d.Target, x.Target)
	setS(&d.Strategy, x.Strategy)
	if x.MaxFailureRatio != nil {
		d.MaxFailureRatio = *x.MaxFailureRatio
	}
	setS(&d.FailureAction, x.FailureAction)
	if x.Canary != nil {
		d.Canary = *x.Canary
	}
	setD(&d.Soak, x.Soak)
	d.DowntimePage = x.DowntimePage
	return d
}

// MinTokenBytes is the shortest bearer token the agent accepts.
const MinTokenBytes = 32

// MakeTokenHint says how to make a token the agent accepts.
const MakeTokenHint = "make one with `install -m 600 /dev/null /etc/lxcfleet/token && head -c 32 /dev/urandom | base64 > /etc/lxcfleet/token` and set listen.token_file = \"/etc/lxcfleet/token\""

// CheckSecretFile refuses a file holding a secret (a token, a TLS key, a
// config with a token) that its group or others may read or write.
func CheckSecretFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("%s is readable or writable by group or others (mode %04o): run chmod 600 %s", path, m, path)
	}
	return nil
}

// UnmarshalText reads a duration like "10s" (for the TOML file).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. 10s, 1m30s)", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as "10s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }
