package provision

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// DefaultTini is where Debian's tini package puts its static binary, the
// one that runs in any rootfs (busybox's has no libc of the host's).
const DefaultTini = "/usr/bin/tini-static"

// tiniTarget is where tini is bound inside a locker (relative to its
// rootfs, as lxc.mount.entry wants it).
const tiniTarget = "sbin/tini"

// tiniPrefix starts the lxc.init.cmd of a locker run under tini: -s makes
// it a subreaper should it not be PID 1, "--" ends its options.
const tiniPrefix = "/sbin/tini -s -- "

// initCmd returns the lxc.init.cmd that runs app, under tini when withTini.
func initCmd(app string, withTini bool) string {
	if !withTini {
		return app
	}
	return tiniPrefix + app
}

// tiniEntry is the lxc.mount.entry value binding the host's tini read-only.
func tiniEntry(hostTini string) string {
	return hostTini + " " + tiniTarget + " none bind,ro,create=file 0 0"
}

// checkHostFile checks that p is an absolute path without blanks (it goes
// into an lxc.mount.entry) of a regular file on this host.
func checkHostFile(what, p string) error {
	if !filepath.IsAbs(p) || strings.ContainsAny(p, " \t\\#") {
		return invalidf("%s %q: want an absolute path without blanks", what, p)
	}
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		if what == "tini" {
			return invalidf("tini %q: not a file on this host (apt-get install tini ships %s)", p, DefaultTini)
		}
		return invalidf("%s %q: not a file on this host", what, p)
	}
	return nil
}

// initFacts is what a container's config says about its PID 1.
type initFacts struct {
	init string // lxc.init.cmd, "" for the rootfs's /sbin/init
	halt string // lxc.signal.halt, "" for LXC's default (SIGPWR)
}

// initFactsOf reads the last lxc.init.cmd and lxc.signal.halt of a config.
func initFactsOf(config []byte) initFacts {
	var f initFacts
	for _, line := range strings.Split(string(config), "\n") {
		m := keyRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		switch m[1] {
		case "lxc.init.cmd":
			f.init = m[2]
		case "lxc.signal.halt":
			f.halt = m[2]
		}
	}
	return f
}

// runsApp reports whether the init is an app command (not a system init
// such as busybox's or systemd, which have halt signals of their own).
func (f initFacts) runsApp() bool {
	fs := strings.Fields(f.init)
	if len(fs) == 0 {
		return false
	}
	switch path.Base(fs[0]) {
	case "init", "systemd", "openrc-init", "runit-init":
		return false
	}
	return true
}

// underTini reports whether the init runs the app under tini.
func (f initFacts) underTini() bool {
	fs := strings.Fields(f.init)
	return len(fs) > 0 && strings.HasPrefix(path.Base(fs[0]), "tini")
}

// runsNodeAsPID1 reports whether node itself is the container's PID 1.
func (f initFacts) runsNodeAsPID1() bool {
	fs := strings.Fields(f.init)
	return len(fs) > 0 && (path.Base(fs[0]) == "node" || path.Base(fs[0]) == "nodejs")
}

// debuggerSignal reports whether sig is SIGUSR1, which Node takes as "open
// the inspector on 127.0.0.1:9229" rather than as a request to stop.
func debuggerSignal(sig string) bool {
	s := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(sig)), "SIG")
	return s == "USR1" || s == "10"
}

// haltDeviations reports a locker whose app cannot handle its halt signal.
func haltDeviations(f initFacts) []string {
	if !f.runsApp() {
		return nil
	}
	var out []string
	if debuggerSignal(f.halt) {
		out = append(out, fmt.Sprintf("halt signal %s: Node takes it as \"open the inspector on 127.0.0.1:9229\", not as a stop (every stop is killed at the timeout): adopt sets lxc.signal.halt = SIGTERM", f.halt))
	}
	if f.runsNodeAsPID1() && !f.underTini() {
		out = append(out, fmt.Sprintf("node is PID 1 (lxc.init.cmd = %s): it ignores SIGTERM unless the app handles it, so a stop waits out the timeout: adopt --tini runs it under tini", f.init))
	}
	return out
}

// fixInit rewrites a config's init lines for Adopt: a debugger halt signal
// of an app init becomes SIGTERM, always; with hostTini, an app init not yet
// under tini is put under it (tini bound read-only, halt signal SIGTERM).
// It returns the new config and what changed, for a human.
func fixInit(config []byte, hostTini string) ([]byte, []string) {
	f := initFactsOf(config)
	if !f.runsApp() {
		return config, nil
	}
	var changes []string
	wantTini := hostTini != "" && !f.underTini()
	setHalt := debuggerSignal(f.halt) || (wantTini && f.halt != "SIGTERM")
	var b bytes.Buffer
	lines := strings.SplitAfter(string(config), "\n")
	for _, line := range lines {
		m := keyRe.FindStringSubmatch(strings.TrimRight(line, "\n"))
		switch {
		case m == nil:
		case setHalt && m[1] == "lxc.signal.halt":
			continue
		case wantTini && m[1] == "lxc.init.cmd":
			continue
		case wantTini && m[1] == "lxc.mount.entry" && mountTarget(m[2]) == tiniTarget:
			continue
		}
		b.WriteString(line)
	}
	if !setHalt && !wantTini {
		return config, nil
	}
	if b.Len() > 0 && !bytes.HasSuffix(b.Bytes(), []byte("\n")) {
		b.WriteByte('\n')
	}
	b.WriteString("# lxcfleet adopt: init\n")
	if setHalt {
		fmt.Fprintf(&b, "lxc.signal.halt = SIGTERM\n")
		was := f.halt
		if was == "" {
			was = "LXC's default"
		}
		changes = append(changes, fmt.Sprintf("set lxc.signal.halt = SIGTERM (was %s)", was))
	}
	if wantTini {
		fmt.Fprintf(&b, "lxc.init.cmd = %s\n", initCmd(f.init, true))
		fmt.Fprintf(&b, "lxc.mount.entry = %s\n", tiniEntry(hostTini))
		changes = append(changes, "runs its app under tini ("+hostTini+" bound read-only at /"+tiniTarget+")")
	}
	return b.Bytes(), changes
}
