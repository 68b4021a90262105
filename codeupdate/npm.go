package codeupdate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
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

// hasDependencies reports whether package.json in dir declares any.
func hasDependencies(dir string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		return false, err
	}
	var pj map[string]json.RawMessage
	if err := json.Unmarshal(b, &pj); err != nil {
		return false, fmt.Errorf("parsing package.json: %w", err)
	}
	for _, k := range []string{"dependencies", "devDependencies", "optionalDependencies", "peerDependencies", "bundleDependencies", "bundledDependencies"} {
		v := bytes.TrimSpace(pj[k])
		if len(v) > 0 && !bytes.Equal(v, []byte("{}")) && !bytes.Equal(v, []byte("[]")) && !bytes.Equal(v, []byte("null")) {
			return true, nil
		}
	}
	return false, nil
}

// runNpm runs `npm <args>` in dir with the timeout, its output (stdout and
// stderr) going to dir/.lxcfleet/npm.log. On failure the error carries the
// argv and the log's tail.
func (m *Manager) runNpm(ctx context.Context, dir string, args ...string) error {
	logPath := filepath.Join(dir, npmLogPath)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return fmt.Errorf("creating npm log: %w", err)
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("creating npm log: %w", err)
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(ctx, m.npmTimeout)
	defer cancel()
	argv := append([]string{m.npm}, args...)
	fmt.Fprintf(logf, "$ %s   (in %s, %s)\n", strings.Join(argv, " "), dir, time.Now().UTC().Format(time.RFC3339))
	cmd := exec.CommandContext(ctx, m.npm, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = m.npmEnv()
	// npm runs scripts in children: kill the whole group on timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	begin := time.Now()
	err = cmd.Run()
	fmt.Fprintf(logf, "\n# exit: %v after %s\n", errOr(err, "ok"), time.Since(begin).Round(time.Millisecond))
	if err == nil {
		return nil
	}
	tail := npmSummary(fileTail(logPath, 64*1024))
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("running %q: timed out after %s: %w\n%s", argv, m.npmTimeout, ctx.Err(), tail)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("running %q: %w", argv, ctx.Err())
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
	if os.Getenv("HOME") == "" {
		// Daemons may run without HOME; give npm a cache it can use.
		env = append(env, "npm_config_cache="+filepath.Join(m.root, "npm-cache"))
	}
	if strings.ContainsRune(m.npm, '/') {
		// npm's #!/usr/bin/env node must find the node next to it.
		env = append(env, "PATH="+filepath.Dir(m.npm)+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	return env
}

// toolVersion runs `bin --version` and returns its first line.
func (m *Manager) toolVersion(ctx context.Context, bin string) (string, error) {
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

// linkTree recreates the folder src at dst with every regular file
// hard-linked (os.Link), folders and symlinks recreated. src and dst must
// be on one file system (both are under releases/).
func linkTree(ctx context.Context, src, dst string) (files int, err error) {
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			if files%256 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			if err := os.Mkdir(to, 0o755); err != nil {
				return err
			}
			return os.Chmod(to, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(t, to)
		case d.Type().IsRegular():
			files++
			return os.Link(path, to)
		default:
			return nil // sockets, fifos: not part of a node_modules tree
		}
	})
	return files, err
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

// fileTail returns the last max bytes of a file.
func fileTail(path string, limit int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(0, fi.Size()-limit)
	b, _ := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	return tailString(string(b), int(limit))
}

func tailString(s string, limit int) string {
	s = strings.TrimSpace(s)
	if len(s) > limit {
		s = "…" + s[len(s)-limit:]
	}
	return s
}
