package lxcctl

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	lxc "github.com/lxc/go-lxc"

	"lxcfleet/mounts"
)

// StateBroken is not one of LXC's states: it marks a container whose config
// LXC cannot load (a typo'd key, a key from a newer LXC, a value LXC
// refuses). lxc-ls skips such a container; lxcfleet lists it, with
// Info.Error saying why, and acts on every other container. Its run state
// is unknown.
const StateBroken State = "BROKEN"

// ErrCannotLoad is returned (wrapped, by a *LoadError) when LXC cannot load
// a container's config.
var ErrCannotLoad = errors.New("LXC cannot load the container's config")

// LoadError says why LXC cannot load one container's config.
type LoadError struct {
	Name   string
	Config string // the config file
	// Reason is LXC's verdict: the first line of the config (includes
	// followed) that LXC refuses, and whether it does not know the key.
	Reason string
}

func (e *LoadError) Error() string {
	return fmt.Sprintf("container %q: LXC cannot load its config %s: %s", e.Name, e.Config, e.Reason)
}

// Unwrap makes errors.Is(err, ErrCannotLoad) true.
func (e *LoadError) Unwrap() error { return ErrCannotLoad }

// Broken reports whether LXC cannot load the container's config (see
// StateBroken).
func (i Info) Broken() bool { return i.State == StateBroken }

// brokenRecheck is how long a container known to be broken is not handed
// to LXC again while its config file is unchanged: every failed load makes
// liblxc print "Failed to load config for NAME" on stderr, and the agent
// lists every container every few seconds.
const brokenRecheck = time.Minute

type brokenEntry struct {
	mod   time.Time
	size  int64
	at    time.Time
	info  Info
	cause *LoadError
}

// knownBroken returns the cached verdict for name when its config file is
// unchanged since it was found broken, less than brokenRecheck ago.
func (h *Host) knownBroken(name string) (Info, *LoadError, bool) {
	st, err := os.Stat(h.ConfigPath(name))
	if err != nil {
		return Info{}, nil, false
	}
	h.brokenMu.Lock()
	defer h.brokenMu.Unlock()
	e, ok := h.broken[name]
	if !ok || !e.mod.Equal(st.ModTime()) || e.size != st.Size() || time.Since(e.at) > brokenRecheck {
		return Info{}, nil, false
	}
	return e.info, e.cause, true
}

// loadError explains why LXC could not make a container object for name
// whose config file exists: it returns what LXC can read of the config
// (state StateBroken, Error set) and a *LoadError. It returns nil when the
// config file is gone (the container was destroyed meanwhile).
func (h *Host) loadError(name string) (Info, *LoadError) {
	path := h.ConfigPath(name)
	st, err := os.Stat(path)
	if err != nil {
		return Info{}, nil
	}
	in, reason := diagnoseConfig(path)
	in.Name, in.State = name, StateBroken
	le := &LoadError{Name: name, Config: path, Reason: reason}
	in.Error = fmt.Sprintf("LXC cannot load its config %s: %s", path, reason)
	h.brokenMu.Lock()
	if h.broken == nil {
		h.broken = map[string]brokenEntry{}
	}
	h.broken[name] = brokenEntry{mod: st.ModTime(), size: st.Size(), at: time.Now(), info: in, cause: le}
	h.brokenMu.Unlock()
	h.log.Debug("LXC cannot load a container's config", "container", name, "config", path, "err", reason)
	return in, le
}

// forgetBroken drops name from the cache (it loaded fine).
func (h *Host) forgetBroken(name string) {
	h.brokenMu.Lock()
	delete(h.broken, name)
	h.brokenMu.Unlock()
}

// scratchPath is the lxcpath of the container objects that only parse
// config lines; nothing is ever written there.
const scratchPath = "/nonexistent/lxcfleet-scratch"

// diagnoseConfig hands the config file at path to LXC's own parser line by
// line (lxc.include lines load their file, as LXC does) on a container
// object that is never saved, and returns the settings LXC accepted and the
// first line it refused (and how many more it refused). A config that LXC
// loads line by line gets a reason saying so.
func diagnoseConfig(path string) (Info, string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Info{}, fmt.Sprintf("reading it: %v", err)
	}
	c, err := lxc.NewContainer("lxcfleet-scratch", scratchPath)
	if err != nil {
		return Info{}, fmt.Sprintf("LXC refuses it (no scratch container to tell why: %s)", err)
	}
	defer c.Release()
	var first string
	refused := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		why := refusal(c, line)
		if why == "" {
			continue
		}
		refused++
		if first == "" {
			first = fmt.Sprintf("line %d %q: %s", n, line, why)
		}
	}
	var in Info
	settingsOf(c, &in)
	switch {
	case refused == 0:
		first = "LXC refuses it, though it accepts each line alone (see lxc-info -n NAME -P LXCPATH -l ERROR -o /dev/stderr)"
	case refused > 1:
		first += fmt.Sprintf(" (and %d more lines)", refused-1)
	}
	return in, first
}

// refusal returns why LXC refuses one config line, or "" when it takes it.
func refusal(c *lxc.Container, line string) string {
	k, v, ok := mounts.ParseConfigLine(line)
	if !ok {
		return "not a KEY = VALUE line"
	}
	if err := checkItem(c, k, v); err != nil {
		return err.Error()
	}
	return ""
}

// checkItem sets one config item on c and says what LXC thinks of it.
func checkItem(c *lxc.Container, key, value string) error {
	if err := c.SetConfigItem(key, value); err != nil {
		// lxc_config_item_is_supported knows only unindexed keys
		// (lxc.net.0.type is "not supported" to it).
		if !lxc.IsSupportedConfigItem(key) && !strings.HasPrefix(key, "lxc.net.") {
			return fmt.Errorf("LXC %s does not know the key %s", lxc.Version(), key)
		}
		return fmt.Errorf("LXC %s refuses the value %q for %s", lxc.Version(), value, key)
	}
	if strings.HasPrefix(key, "lxc.signal.") {
		// LXC takes any number as a signal and fails only when it sends it.
		if n, err := strconv.Atoi(value); err == nil && (n < 1 || n > 64) {
			return fmt.Errorf("signal %s=%q: no such signal (1-64)", key, value)
		}
	}
	return nil
}

// CheckConfigItem reports whether LXC accepts value for key in a
// container's config, by LXC's own parser (a signal number also has to
// name a signal): the error names the key and the value. Provisioning
// checks what it will write with it, so that LXC never meets a config it
// cannot load.
func CheckConfigItem(key, value string) error {
	c, err := lxc.NewContainer("lxcfleet-scratch", scratchPath)
	if err != nil {
		return fmt.Errorf("checking %s = %q: no scratch container: %s", key, value, err)
	}
	defer c.Release()
	return checkItem(c, key, value)
}

// CheckConfigLine is CheckConfigItem for a "KEY = VALUE" line.
func CheckConfigLine(line string) error {
	c, err := lxc.NewContainer("lxcfleet-scratch", scratchPath)
	if err != nil {
		return fmt.Errorf("checking config line %q: no scratch container: %s", line, err)
	}
	defer c.Release()
	if t := strings.TrimSpace(line); t == "" || t[0] == '#' {
		return nil
	}
	if why := refusal(c, strings.TrimSpace(line)); why != "" {
		return fmt.Errorf("config line %q: %s", line, why)
	}
	return nil
}
