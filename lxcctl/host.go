package lxcctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	lxc "github.com/lxc/go-lxc"

	"lxcfleet/internal/atomicfile"
)

// DefaultLXCPath is where LXC keeps system containers unless told otherwise.
const DefaultLXCPath = "/var/lib/lxc"

// ErrNotFound is returned (wrapped) when a named container is not defined in
// the host's lxcpath.
var ErrNotFound = errors.New("container not found")

// State is a container's run state as LXC reports it ("RUNNING", "STOPPED",
// "STARTING", "STOPPING", "ABORTING", "FREEZING", "FROZEN", "THAWED").
type State string

// The states lxcfleet branches on.
const (
	StateRunning  State = "RUNNING"
	StateStopped  State = "STOPPED"
	StateStarting State = "STARTING"
	StateStopping State = "STOPPING"
)

// Options configures a Host.
type Options struct {
	// LXCPath is the folder holding the containers; default DefaultLXCPath.
	LXCPath string
	// Exe is the binary re-executed to start containers (it must handle
	// ForkStartCommand); default /proc/self/exe.
	Exe string
	// Logger receives debug logs; default slog.Default().
	Logger *slog.Logger
	// Cgroup places started containers under a parent cgroup (see
	// CgroupParent); zero leaves them where LXC puts them. The first Start
	// creates the parent and sets its weight; when it cannot (a read-only
	// cgroup file system), it logs a warning once and starts containers
	// where LXC puts them: a locker that does not start is worse.
	Cgroup CgroupParent
	// BeforeStart, when set, runs before every start of a container that
	// is not running (lxcfleet's held sockets: the holder must hold the
	// locker's socket before its init fetches it); its error fails the
	// start. It also runs before every stop of a running container (a
	// held socket's last copy may be the app's when its holder died: the
	// holder takes it back, so the stop refuses nothing); there its error
	// is logged and the stop goes on.
	BeforeStart func(ctx context.Context, name string) error
}

// Host is one lxcpath on this machine and the operations lxcfleet performs on
// the containers in it. It is safe for concurrent use: every call works on
// its own go-lxc Container object.
type Host struct {
	lxcpath string
	exe     string
	log     *slog.Logger
	cgroup  CgroupParent
	before  func(ctx context.Context, name string) error

	cgroupOnce sync.Once

	checkOnce sync.Once
	check     *checker

	brokenMu sync.Mutex
	broken   map[string]brokenEntry // containers LXC cannot load
}

// NewHost checks that the lxcpath exists and returns a Host for it.
func NewHost(opts Options) (*Host, error) {
	if opts.LXCPath == "" {
		opts.LXCPath = DefaultLXCPath
	}
	if opts.Exe == "" {
		opts.Exe = "/proc/self/exe"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	abs, err := filepath.Abs(opts.LXCPath)
	if err != nil {
		return nil, fmt.Errorf("resolving lxcpath %q: %w", opts.LXCPath, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("opening lxcpath %s: %w", abs, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("opening lxcpath %s: not a directory", abs)
	}
	if err := opts.Cgroup.Validate(); err != nil {
		return nil, fmt.Errorf("opening lxcpath %s: %w", abs, err)
	}
	return &Host{lxcpath: abs, exe: opts.Exe, log: opts.Logger, cgroup: opts.Cgroup, before: opts.BeforeStart}, nil
}

// LXCPath returns the absolute lxcpath of the host.
func (h *Host) LXCPath() string { return h.lxcpath }

// Info describes one container as lxcfleet needs it.
type Info struct {
	Name       string            `json:"name"`
	State      State             `json:"state"`
	InitPID    int               `json:"init_pid,omitempty"`
	StartOrder int               `json:"start_order"`
	StartDelay time.Duration     `json:"start_delay,omitempty"`
	Groups     []string          `json:"groups,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	HaltSignal string            `json:"halt_signal,omitempty"`
	// Error says why LXC cannot load the container's config (State is
	// StateBroken); the other fields are what LXC accepted of it.
	Error string `json:"error,omitempty"`
}

// InGroup reports whether the container belongs to group g.
func (i Info) InGroup(g string) bool {
	for _, x := range i.Groups {
		if x == g {
			return true
		}
	}
	return false
}

// open returns a fresh Container object for name; the caller releases it.
// A container whose config LXC cannot load is a *LoadError.
func (h *Host) open(name string) (*lxc.Container, error) {
	c, _, err := h.load(name)
	return c, err
}

// load is open that also returns, for a container LXC cannot load, what
// LXC accepted of its config (see StateBroken).
func (h *Host) load(name string) (*lxc.Container, Info, error) {
	if err := ValidName(name); err != nil {
		return nil, Info{}, err
	}
	if in, le, ok := h.knownBroken(name); ok {
		return nil, in, le
	}
	c, err := lxc.NewContainer(name, h.lxcpath)
	if err != nil {
		if in, le := h.loadError(name); le != nil {
			return nil, in, le
		}
		return nil, Info{}, fmt.Errorf("opening container %q: %s", name, err)
	}
	if !c.Defined() {
		_ = c.Release()
		return nil, Info{}, fmt.Errorf("container %q in %s: %w", name, h.lxcpath, ErrNotFound)
	}
	h.forgetBroken(name)
	return c, Info{}, nil
}

// ValidName checks that name can be an LXC container name: letters, digits,
// '.', '_' and '-', not starting with '.' or '-', at most 64 bytes.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("invalid container name: empty")
	case len(name) > 64:
		return fmt.Errorf("invalid container name %q: longer than 64 bytes", name)
	case name[0] == '.' || name[0] == '-':
		return fmt.Errorf("invalid container name %q: must not start with %q", name, name[0])
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("invalid container name %q: character %q not allowed", name, r)
		}
	}
	return nil
}

// Names returns the names of the containers defined in the lxcpath, sorted.
func (h *Host) Names() []string {
	names := lxc.DefinedContainerNames(h.lxcpath)
	sort.Strings(names)
	return names
}

// Info returns the state and start settings of one container. For a
// container whose config LXC cannot load it returns a *LoadError (errors.Is
// ErrCannotLoad) and, beside it, what LXC accepted of the config with state
// StateBroken and Error set.
func (h *Host) Info(ctx context.Context, name string) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	c, broken, err := h.load(name)
	if err != nil {
		return broken, err
	}
	defer c.Release()
	return infoOf(c), nil
}

func infoOf(c *lxc.Container) Info {
	in := Info{Name: c.Name(), State: State(c.State().String())}
	if in.State == StateRunning || in.State == StateStopping || in.State == StateStarting {
		in.InitPID = c.InitPid()
	}
	settingsOf(c, &in)
	return in
}

// settingsOf reads the start settings lxcfleet uses from c's config.
func settingsOf(c *lxc.Container, in *Info) {
	if v := first(c.ConfigItem("lxc.start.order")); v != "" {
		in.StartOrder, _ = strconv.Atoi(v)
	}
	if v := first(c.ConfigItem("lxc.start.delay")); v != "" {
		if s, err := strconv.Atoi(v); err == nil {
			in.StartDelay = time.Duration(s) * time.Second
		}
	}
	for _, g := range c.ConfigItem("lxc.group") {
		for _, f := range strings.FieldsFunc(g, func(r rune) bool { return r == ',' || r == ' ' }) {
			in.Groups = append(in.Groups, f)
		}
	}
	in.Env = parseEnv(c.ConfigItem("lxc.environment"))
	in.HaltSignal = first(c.ConfigItem("lxc.signal.halt"))
}

// parseEnv turns lxc.environment values ("K=V") into a map.
func parseEnv(items []string) map[string]string {
	var env map[string]string
	for _, kv := range items {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			continue
		}
		if env == nil {
			env = map[string]string{}
		}
		env[k] = v
	}
	return env
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return strings.TrimSpace(v[0])
}

// List returns every container of the lxcpath, ordered the way lxc-autostart
// starts them: lxc.start.order ascending, then name. A container whose
// config LXC cannot load is listed with state StateBroken and its Error
// (lxc-ls skips it): callers act on the others and report it.
func (h *Host) List(ctx context.Context) ([]Info, error) {
	var out []Info
	for _, name := range h.Names() {
		in, err := h.Info(ctx, name)
		if errors.Is(err, ErrNotFound) {
			continue // destroyed while we listed
		}
		if errors.Is(err, ErrCannotLoad) {
			out = append(out, in)
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	SortStartOrder(out)
	return out, nil
}

// Select returns the containers named (all of them when names is empty),
// restricted to group when group is not empty, in start order. An unknown
// name is an error naming it. Containers LXC cannot load are among them,
// broken (see List), by the groups LXC could read of their config.
func (h *Host) Select(ctx context.Context, names []string, group string) ([]Info, error) {
	var infos []Info
	if len(names) == 0 {
		all, err := h.List(ctx)
		if err != nil {
			return nil, err
		}
		infos = all
	} else {
		seen := map[string]bool{}
		var missing []string
		for _, n := range names {
			if seen[n] {
				continue
			}
			seen[n] = true
			in, err := h.Info(ctx, n)
			if errors.Is(err, ErrNotFound) {
				missing = append(missing, n)
				continue
			}
			if err != nil && !errors.Is(err, ErrCannotLoad) {
				return nil, err
			}
			infos = append(infos, in)
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("unknown containers in %s: %s: %w", h.lxcpath, strings.Join(missing, ", "), ErrNotFound)
		}
	}
	if group != "" {
		kept := infos[:0]
		for _, in := range infos {
			if in.InGroup(group) {
				kept = append(kept, in)
			}
		}
		infos = kept
	}
	SortStartOrder(infos)
	return infos, nil
}

// SortStartOrder sorts infos the way lxc-autostart starts containers:
// lxc.start.order ascending, ties by name.
func SortStartOrder(infos []Info) {
	sort.SliceStable(infos, func(i, j int) bool {
		if infos[i].StartOrder != infos[j].StartOrder {
			return infos[i].StartOrder < infos[j].StartOrder
		}
		return infos[i].Name < infos[j].Name
	})
}

// State returns the container's current state.
func (h *Host) State(ctx context.Context, name string) (State, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	c, err := h.open(name)
	if err != nil {
		return "", err
	}
	defer c.Release()
	return State(c.State().String()), nil
}

// ConfigItem returns the values of one configuration key of a container.
func (h *Host) ConfigItem(name, key string) ([]string, error) {
	c, err := h.open(name)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	return c.ConfigItem(key), nil
}

// ConfigPath returns the path of the container's config file.
func (h *Host) ConfigPath(name string) string {
	return filepath.Join(h.lxcpath, name, "config")
}

// SetConfigItem sets one configuration key of a container and saves its
// config file. Note that go-lxc rewrites (and reorders) the whole file; use
// EditConfig to change lines while keeping the rest of the file as it is.
func (h *Host) SetConfigItem(name, key, value string) error {
	c, err := h.open(name)
	if err != nil {
		return err
	}
	defer c.Release()
	if err := c.SetConfigItem(key, value); err != nil {
		return fmt.Errorf("setting %s of container %q: %s", key, name, err)
	}
	if err := c.SaveConfigFile(h.ConfigPath(name)); err != nil {
		return fmt.Errorf("saving config of container %q: %s", name, err)
	}
	return nil
}

// EditConfig rewrites the container's config file through edit, keeping a
// copy of the previous file as config.lxcfleet.bak the first time it changes
// and replacing the file atomically. It returns whether the file changed.
func (h *Host) EditConfig(name string, edit func(old []byte) ([]byte, error)) (bool, error) {
	if err := ValidName(name); err != nil {
		return false, err
	}
	path := h.ConfigPath(name)
	old, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("container %q in %s: %w", name, h.lxcpath, ErrNotFound)
	}
	if err != nil {
		return false, fmt.Errorf("reading config of container %q: %w", name, err)
	}
	updated, err := edit(old)
	if err != nil {
		return false, fmt.Errorf("editing config of container %q: %w", name, err)
	}
	if string(updated) == string(old) {
		return false, nil
	}
	backup := path + ".lxcfleet.bak"
	if _, err := os.Stat(backup); errors.Is(err, os.ErrNotExist) {
		if err := atomicfile.WriteFile(backup, old, 0o640); err != nil {
			return false, fmt.Errorf("backing up config of container %q: %w", name, err)
		}
	}
	if err := atomicfile.WriteFile(path, updated, 0o640); err != nil {
		return false, fmt.Errorf("writing config of container %q: %w", name, err)
	}
	return true, nil
}
