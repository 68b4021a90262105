package codeupdate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// The Release.Npm values.
const (
	NpmRan    = "ran"
	NpmReused = "reused"
	NpmNone   = "none"
)

// npmLogPath is where a release keeps the output of the npm run that built
// it, relative to the release folder.
const npmLogPath = ".lxcfleet/npm.log"

// lockfile returns the name and sha256 of the lockfile npm ci would use in
// dir (npm-shrinkwrap.json wins over package-lock.json); "" without one.
func lockfile(dir string) (name, sum string, err error) {
	for _, n := range []string{"npm-shrinkwrap.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", "", fmt.Errorf("reading %s: %w", n, err)
		}
		h := sha256.Sum256(b)
		return n, hex.EncodeToString(h[:]), nil
	}
	return "", "", nil
}

// ErrLockMismatch means package.json and its lockfile disagree: `npm ci`
// would refuse them, so the build fails (with npm's own message) rather
// than ship node_modules without what package.json asks for.
var ErrLockMismatch = errors.New("package.json and its lockfile disagree")

// phase is the npm part of one build: everything it runs shares one log
// (dir/.lxcfleet/npm.log) and one deadline (Options.NpmTimeout).
type phase struct {
	m       *Manager
	dir     string
	logPath string
	logf    *os.File
	ctx     context.Context
	cancel  context.CancelFunc
}

// startPhase opens the npm log in dir and starts the deadline.
func (m *Manager) startPhase(ctx context.Context, dir string) (*phase, error) {
	logPath := filepath.Join(dir, npmLogPath)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, fmt.Errorf("creating npm log: %w", err)
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating npm log: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, m.npmTimeout)
	return &phase{m: m, dir: dir, logPath: logPath, logf: logf, ctx: ctx, cancel: cancel}, nil
}

// close ends the deadline and closes the log; safe to call twice.
func (p *phase) close() {
	p.cancel()
	if p.logf != nil {
		p.logf.Close()
		p.logf = nil
	}
}

// discardLog removes the log of a phase that ran nothing.
func (p *phase) discardLog() {
	p.close()
	_ = os.Remove(p.logPath)
	_ = os.Remove(filepath.Dir(p.logPath)) // only when empty
}

// killGroupScript runs "$@" in the background and waits for it. The shell
// leads its own process group; on SIGTERM or SIGHUP (the parent-death
// signal the agent's exit sends) it SIGKILLs the whole group: npm and
// every script npm started.
const killGroupScript = `trap 'kill -KILL 0' TERM HUP; "$@" & wait $!`

// run runs `npm <args>` in the phase's folder, its output (stdout and
// stderr) appended to the log. npm runs in its own process group under a
// small shell (killGroupScript): cancelling ctx or reaching the deadline
// SIGKILLs the group, and the death of the calling process (even by
// SIGKILL) makes the kernel send the shell SIGTERM (Pdeathsig), which
// kills the group too. On failure the error carries the npm argv and the
// log's npm error lines, and wraps ErrRegistryUnreachable when npm could
// not reach its registry.
func (p *phase) run(args ...string) error {
	m := p.m
	argv := append([]string{m.npm}, args...)
	fmt.Fprintf(p.logf, "$ %s   (in %s, %s)\n", strings.Join(argv, " "), p.dir, time.Now().UTC().Format(time.RFC3339))
	start, _ := p.logf.Seek(0, io.SeekCurrent)
	cmd := exec.CommandContext(p.ctx, "/bin/sh", append([]string{"-c", killGroupScript, "sh"}, argv...)...)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = p.logf, p.logf
	cmd.Env = m.npmEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	begin := time.Now()
	// Pdeathsig fires when the forking thread exits: keep it alive.
	runtime.LockOSThread()
	err := cmd.Run()
	runtime.UnlockOSThread()
	if err != nil && cmd.Process != nil {
		// Whatever npm left behind in its group goes with it.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	fmt.Fprintf(p.logf, "\n# exit: %v after %s\n", errOr(err, "ok"), time.Since(begin).Round(time.Millisecond))
	if err == nil {
		return nil
	}
	end, _ := p.logf.Seek(0, io.SeekCurrent)
	out := fileRange(p.logPath, start, end, 64*1024)
	tail := npmSummary(out)
	if p.ctx.Err() == nil {
		if rerr := m.registryFailure(p.ctx, p.dir, out); rerr != nil {
			return fmt.Errorf("%w: running %q: %w\n%s", rerr, argv, err, tail)
		}
	}
	if errors.Is(p.ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("running %q: timed out after %s: %w\n%s", argv, m.npmTimeout, p.ctx.Err(), tail)
	}
	if p.ctx.Err() != nil {
		return fmt.Errorf("running %q: %w", argv, p.ctx.Err())
	}
	return fmt.Errorf("running %q: %w\n%s", argv, err, tail)
}

func errOr(err error, ok string) string {
	if err == nil {
		return ok
	}
	return err.Error()
}

// npmEnv is the process environment with npm's chatter turned off.
func (m *Manager) npmEnv() []string {
	env := os.Environ()
	env = append(env,
		"npm_config_audit=false",
		"npm_config_fund=false",
		"npm_config_update_notifier=false",
		"npm_config_progress=false",
	)
	// One npm cache for every build of the host (Options.NpmCache), used
	// first; the registry only for what it lacks (see npmFetchEnv).
	env = append(env, "npm_config_cache="+m.npmCache)
	env = append(env, m.npmFetchEnv()...)
	if strings.ContainsRune(m.npm, '/') {
		// npm's #!/usr/bin/env node must find the node next to it.
		env = append(env, "PATH="+filepath.Dir(m.npm)+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	return env
}

// toolVersion runs `bin --version` and returns its first line. The answer
// is remembered while the file bin resolves to (through PATH and symlinks)
// keeps its inode, size and modification time: an upgrade replaces it.
func (m *Manager) toolVersion(ctx context.Context, bin string) (string, error) {
	id := toolID(bin)
	if id != "" {
		m.toolMu.Lock()
		v, ok := m.tools[id]
		m.toolMu.Unlock()
		if ok {
			return v, nil
		}
	}
	v, err := m.runVersion(ctx, bin)
	if err == nil && id != "" {
		m.toolMu.Lock()
		if m.tools == nil {
			m.tools = map[string]string{}
		}
		m.tools[id] = v
		m.toolMu.Unlock()
	}
	return v, err
}

// toolID identifies the file bin runs ("" when it cannot be found).
func toolID(bin string) string {
	p, err := exec.LookPath(bin)
	if err != nil {
		return ""
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		return ""
	}
	fi, err := os.Stat(p)
	if err != nil {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%s %d %d %d", p, st.Ino, fi.Size(), fi.ModTime().UnixNano())
}

func (m *Manager) runVersion(ctx context.Context, bin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.Env = m.npmEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("running %q: %w: %s", []string{bin, "--version"}, err, tailString(stderr.String(), 1024))
	}
	s, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(s), nil
}

// npmSummary shortens npm's output for an error: npm prints the cause
// first and usage or log hints after it, so keep the first error lines and
// the last few lines.
func npmSummary(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) <= 16 {
		return tailString(out, 2048)
	}
	var first []string
	for _, l := range lines {
		if strings.HasPrefix(l, "npm error") || strings.HasPrefix(l, "npm ERR!") {
			first = append(first, l)
			if len(first) == 8 {
				break
			}
		}
	}
	last := lines[len(lines)-6:]
	if len(first) == 0 {
		return tailString(strings.Join(lines[len(lines)-16:], "\n"), 2048)
	}
	return tailString(strings.Join(first, "\n")+"\n…\n"+strings.Join(last, "\n"), 2048)
}

// fileRange returns at most limit bytes (the last ones) of path between
// the offsets start and end.
func fileRange(path string, start, end, limit int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	off := max(start, end-limit)
	b, _ := io.ReadAll(io.NewSectionReader(f, off, end-off))
	return string(b)
}

func tailString(s string, limit int) string {
	s = strings.TrimSpace(s)
	if len(s) > limit {
		s = "…" + s[len(s)-limit:]
	}
	return s
}
