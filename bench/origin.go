package bench

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

//go:embed app/server.js
var serverJS string

// The builds of the benchmark app. A → B changes the dependency set (npm
// must run); B → C changes only the app (the lockfile stays the same).
const (
	BuildA = "A"
	BuildB = "B"
	BuildC = "C"
)

// Tags in the origin for each build.
var buildTag = map[string]string{BuildA: "bench-a", BuildB: "bench-b", BuildC: "bench-c"}

// dependency sets: exact versions, so that every run installs the same code.
var (
	depsA = map[string]string{"express": "4.21.2"}
	depsB = map[string]string{"express": "4.21.2", "lodash": "4.17.21", "dayjs": "1.11.13"}
)

// Origin is the app's upstream: a bare repository with main at build B and
// tags bench-a, bench-b and bench-c.
type Origin struct {
	URL  string // path of the bare repository
	work string
	SHA  map[string]string // build -> commit
}

// NewOrigin makes the origin under dir. npm writes each build's lockfile
// (--package-lock-only, from the registry or npm's cache).
func NewOrigin(ctx context.Context, dir string) (*Origin, error) {
	o := &Origin{URL: filepath.Join(dir, "origin.git"), work: filepath.Join(dir, "origin-work"), SHA: map[string]string{}}
	if _, err := run(ctx, dir, "git", "init", "--quiet", "--bare", "--initial-branch=main", o.URL); err != nil {
		return nil, err
	}
	if _, err := run(ctx, dir, "git", "init", "--quiet", "--initial-branch=main", o.work); err != nil {
		return nil, err
	}
	steps := []struct {
		build string
		deps  map[string]string
		extra []string
		note  string
	}{
		{BuildA, depsA, nil, ""},
		{BuildB, depsB, []string{"lodash", "dayjs"}, ""},
		{BuildC, nil, []string{"lodash", "dayjs"}, "\n// build C: an app-only change\n"},
	}
	for _, s := range steps {
		files := map[string]string{
			"server.js":   serverJS + s.note,
			"BENCH_BUILD": s.build + "\n",
			".gitignore":  "node_modules/\n",
		}
		extra, _ := json.Marshal(s.extra)
		if s.extra == nil {
			extra = []byte("[]")
		}
		files["EXTRA_DEPS.json"] = string(extra) + "\n"
		if s.deps != nil {
			pj, _ := json.MarshalIndent(map[string]any{
				"name": "lockerbench-app", "version": "1.0.0", "private": true,
				"main": "server.js", "dependencies": s.deps,
			}, "", "  ")
			files["package.json"] = string(pj) + "\n"
		}
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(o.work, name), []byte(body), 0o644); err != nil {
				return nil, err
			}
		}
		if s.deps != nil {
			if _, err := run(ctx, o.work, "npm", "install", "--package-lock-only", "--no-audit", "--no-fund"); err != nil {
				return nil, err
			}
		}
		if _, err := o.git(ctx, "add", "-A"); err != nil {
			return nil, err
		}
		if _, err := o.git(ctx, "commit", "--quiet", "-m", "build "+s.build); err != nil {
			return nil, err
		}
		if _, err := o.git(ctx, "tag", buildTag[s.build]); err != nil {
			return nil, err
		}
		sha, err := o.git(ctx, "rev-parse", "HEAD")
		if err != nil {
			return nil, err
		}
		o.SHA[s.build] = sha
	}
	// main is B: what `git pull` brings. C is only a tag.
	if _, err := o.git(ctx, "push", "--quiet", "--tags", o.URL, buildTag[BuildB]+":refs/heads/main"); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *Origin) git(ctx context.Context, args ...string) (string, error) {
	return run(ctx, o.work, "git", args...)
}

// gitEnv is a fixed identity and no system/user config.
func gitEnv(home string) []string {
	return append(os.Environ(),
		"GIT_AUTHOR_NAME=lockerbench", "GIT_AUTHOR_EMAIL=bench@localhost",
		"GIT_COMMITTER_NAME=lockerbench", "GIT_COMMITTER_EMAIL=bench@localhost",
		"GIT_CONFIG_NOSYSTEM=1", "HOME="+home)
}

// run runs a command in dir and returns its trimmed stdout; an error carries
// the argv and stderr.
func run(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if name == "git" {
		cmd.Env = gitEnv(dir)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("running %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}
