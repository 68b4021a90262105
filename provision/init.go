package provision

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"lxcfleet/internal/atomicfile"
	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
)

// DefaultTini is where Debian's tini package puts its static binary, the
// one that runs in any rootfs (busybox's has no libc of the host's).
const DefaultTini = "/usr/bin/tini-static"

// tiniTarget is where tini is bound inside a locker (relative to its
// rootfs, as lxc.mount.entry wants it).
const tiniTarget = "sbin/tini"

// wrapperName is the init wrapper's file in the container's folder of the
// lxcpath, and wrapperTarget where it is bound (read-only) inside.
const (
	wrapperName   = "lxcfleet-init"
	wrapperTarget = "sbin/lxcfleet-init"
	// appLogTarget is where the container's lxcctl.AppLogDir is bound.
	appLogTarget = "var/log/lxcfleet"
)

// tiniPrefix starts the lxc.init.cmd of a locker run under tini: -s makes
// it a subreaper should it not be PID 1, -g forwards signals to the app's
// whole process group (the wrapper and the app), "--" ends its options.
const tiniPrefix = "/sbin/tini -s -g -- /" + wrapperTarget + " "

// wrapperScript is the init wrapper tini runs: it sends the app's stdout
// and stderr to the app log (on the host, outside /Me) and records the
// app's exit status there. Its trap is a handler, not an ignore, so the app
// it starts gets the halt signal's default action back, and the wrapper
// outlives the app to write the status line.
const wrapperScript = `#!/bin/sh
# lxcfleet locker init wrapper (run by tini): the app's output goes to the
# host's <lxcpath>/<name>/` + lxcctl.AppLogDir + `/` + lxcctl.AppLogName + `.
trap : TERM INT HUP QUIT USR2
exec >>/` + appLogTarget + `/` + lxcctl.AppLogName + ` 2>&1
"$@"
rc=$?
echo "` + lxcctl.AppExitLine + `$rc"
exit $rc
`

// initSetup is how a locker's init is set up: tini from the host and the
// wrapper and app log in the container's folder of the lxcpath.
type initSetup struct {
	tini  string // host tini binary
	ctDir string // the container's folder of the lxcpath
}

// cmd returns the lxc.init.cmd that runs app under tini and the wrapper.
func (s initSetup) cmd(app string) string { return tiniPrefix + app }

// entries are the lxc.mount.entry values of tini, the wrapper and the log.
func (s initSetup) entries() []string {
	return []string{
		s.tini + " " + tiniTarget + " none bind,ro,create=file 0 0",
		filepath.Join(s.ctDir, wrapperName) + " " + wrapperTarget + " none bind,ro,create=file 0 0",
		filepath.Join(s.ctDir, lxcctl.AppLogDir) + " " + appLogTarget + " none bind,create=dir 0 0",
	}
}

// ownsInitTarget reports whether a mount target is one of the init's.
func ownsInitTarget(target string) bool {
	return target == tiniTarget || target == wrapperTarget || target == appLogTarget
}

// writeFiles writes the wrapper and makes the app log folder, owned by the
// container's root.
func (s initSetup) writeFiles(owner mounts.Owner) error {
	w := filepath.Join(s.ctDir, wrapperName)
	if err := atomicfile.WriteFile(w, []byte(wrapperScript), 0o755); err != nil {
		return fmt.Errorf("writing init wrapper %s: %w", w, err)
	}
	if err := os.Chmod(w, 0o755); err != nil {
		return fmt.Errorf("writing init wrapper %s: %w", w, err)
	}
	d := filepath.Join(s.ctDir, lxcctl.AppLogDir)
	if err := os.MkdirAll(d, 0o750); err != nil {
		return fmt.Errorf("making app log folder %s: %w", d, err)
	}
	if err := os.Chown(d, owner.UID, owner.GID); err != nil {
		return fmt.Errorf("making app log folder %s: %w", d, err)
	}
	return nil
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
	for k, v := range mounts.ConfigItems(config) {
		switch k {
		case "lxc.init.cmd":
			f.init = v
		case "lxc.signal.halt":
			f.halt = v
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
// of an app init becomes SIGTERM, always; with setup.tini (the host's
// tini), an app init not yet under tini is put under it (tini bound
// read-only, halt signal SIGTERM). It returns the new config and what
// changed, for a human.
func fixInit(config []byte, setup initSetup) ([]byte, []string) {
	f := initFactsOf(config)
	if !f.runsApp() {
		return config, nil
	}
	var changes []string
	wantTini := setup.tini != "" && !f.underTini()
	setHalt := debuggerSignal(f.halt) || (wantTini && f.halt != "SIGTERM")
	var b bytes.Buffer
	b.Write(mounts.DropConfig(config, func(k, v string) bool {
		return setHalt && k == "lxc.signal.halt" ||
			wantTini && k == "lxc.init.cmd" ||
			wantTini && k == "lxc.mount.entry" && ownsInitTarget(mounts.EntryTarget(v))
	}))
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
		fmt.Fprintf(&b, "lxc.init.cmd = %s\n", setup.cmd(f.init))
		for _, e := range setup.entries() {
			fmt.Fprintf(&b, "lxc.mount.entry = %s\n", e)
		}
		changes = append(changes, "runs its app under tini ("+setup.tini+" bound read-only at /"+tiniTarget+"), its output logged to "+filepath.Join(setup.ctDir, lxcctl.AppLogDir, lxcctl.AppLogName))
	}
	return b.Bytes(), changes
}
