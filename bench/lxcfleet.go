package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"lxcfleet/agent"
)

// lxcfleetCLI is what the benchmark knows about the lxcfleet binary.
type lxcfleetCLI struct {
	Bin        string `json:"bin"`
	Version    string `json:"version,omitempty"`
	UpdateCode bool   `json:"update_code"` // has `update-code --local`
	Agent      bool   `json:"agent"`       // has `agent`
	Err        string `json:"error,omitempty"`
}

// probeLXCFleet asks the binary's help which commands it has.
func probeLXCFleet(bin string) lxcfleetCLI {
	c := lxcfleetCLI{Bin: bin}
	if bin == "" {
		c.Err = "no lxcfleet binary given"
		return c
	}
	if _, err := os.Stat(bin); err != nil {
		c.Err = err.Error()
		return c
	}
	if out, err := exec.Command(bin, "update-code", "--help").CombinedOutput(); err == nil {
		c.UpdateCode = strings.Contains(string(out), "--local") && strings.Contains(string(out), "--strategy")
	}
	if out, err := exec.Command(bin, "agent", "--help").CombinedOutput(); err == nil {
		c.Agent = strings.Contains(string(out), "agent")
	}
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err == nil {
		c.Version = strings.TrimSpace(string(out))
	}
	return c
}

func (c lxcfleetCLI) describe() lxcfleetCLI { return c }

// missing says why scenarios 4 and 5 cannot run, or "". They run with
// the lxcfleet binary when it has `update-code --local`, otherwise with
// lockerbench's in-process stand-in (the same agent and codeupdate code
// path, see UpdateMain); only a run without either is skipped.
func (c lxcfleetCLI) missing() string { return "" }

// writeLXCFleetConfig writes the config file lxcfleet is run with: the
// bench fleet's lxcpath and layout root, the origin, and an HTTP health
// check (so that a locker counts as started only once it answers). The
// wave size is left at lxcfleet's default.
func (r *runner) writeLXCFleetConfig() error {
	r.cfgPath = filepath.Join(r.work, "lxcfleet.toml")
	r.socket = filepath.Join(r.work, "lxcfleet.sock")
	cfg := fmt.Sprintf(`# written by lockerbench
lxcpath = %q
state_dir = %q

[listen]
socket = %q

[layout]
root = %q

[code]
origin = %q

[defaults]
health = "http://127.0.0.1:{port}/healthz"
deadline = "120s"
stop_timeout = "10s"
`, r.fleet.Path, filepath.Join(r.root, "state"), r.socket, r.root, r.origin.URL)
	if r.o.Monitor > 0 {
		cfg += fmt.Sprintf("monitor = %q\n", r.o.Monitor.String())
	}
	if err := os.WriteFile(r.cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	if _, err := agent.LoadConfig(r.cfgPath, true); err != nil {
		return fmt.Errorf("the bench's lxcfleet config does not load: %w", err)
	}
	return nil
}

// window is the wave size (K) lxcfleet uses with the bench's config.
func (r *runner) window() int {
	c, err := agent.LoadConfig(r.cfgPath, true)
	if err != nil {
		return 0
	}
	return c.AgentDefaults().Window
}

// updateCommand is the update-code command line: the lxcfleet binary's
// when it has the command, else lockerbench's in-process stand-in.
func (r *runner) updateCommand(strategy, build string) (bin string, args []string) {
	if r.lxcf.UpdateCode {
		return r.o.LXCFleet, []string{"--lxcpath", r.fleet.Path, "update-code", "--config", r.cfgPath, "--local",
			"--strategy", strategy, "--target", buildTag[build], "--json"}
	}
	return r.o.Self, []string{"update-code", r.cfgPath, strategy, buildTag[build]}
}

// resetLXCFleet puts every locker on a fresh lxcfleet release of build A:
// it stops them, removes lxcfleet's releases, mirror and journal from the
// layout root (so that the measured update builds B from scratch, npm
// included), builds A with lxcfleet and starts the lockers on it.
func (r *runner) resetLXCFleet(ctx context.Context) error {
	r.log.Info("reset: lxcfleet release of build A")
	if err := r.stopAll(ctx); err != nil {
		return err
	}
	for _, p := range []string{"current", "releases", "repo.git", "state"} {
		if err := os.RemoveAll(filepath.Join(r.root, p)); err != nil {
			return err
		}
	}
	bin, args := r.updateCommand("offline", BuildA)
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if _, serr := os.Stat(filepath.Join(r.root, "current", "BENCH_BUILD")); serr != nil {
		return fmt.Errorf("lxcfleet update-code to build A left no current release (%v): %s", err, tail(out))
	}
	return r.startAll(ctx, BuildA)
}

// lxcfleetUpdate runs one measured lxcfleet update-code.
func (r *runner) lxcfleetUpdate(ctx context.Context, id, strategy, from, to string) (Mark, error) {
	m := Mark{ID: id, Title: scenarioTitles[id], From: from, To: to, Window: r.window()}
	r.log.Info("scenario", "id", id, "title", m.Title)
	outPath := filepath.Join(r.dir, "scenario-"+id+".log")
	m.Output = filepath.Base(outPath)
	bin, args := r.updateCommand(strategy, to)
	if bin == r.o.Self {
		m.Notes = append(m.Notes, "run with lockerbench's in-process stand-in for `lxcfleet update-code --local` (agent + codeupdate, same code path): the lxcfleet binary has no update-code command yet")
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	m.T0 = time.Now()
	err := cmd.Run()
	m.CmdEnd = time.Now()
	log := fmt.Sprintf("$ %s %s\n%s\n--- stderr\n%s", bin, strings.Join(args, " "), stdout.String(), stderr.String())
	_ = os.WriteFile(outPath, []byte(log), 0o644)
	if err != nil {
		m.CmdFailures++
		m.Err = fmt.Sprintf("lxcfleet update-code: %v: %s", err, tail(stderr.Bytes()))
	}
	fillFromJSON(&m, stdout.Bytes())
	var ok bool
	m.Done, ok = r.waitAll(ctx, to, r.deadline())
	m.TimedOut = !ok
	settle()
	return m, ctx.Err()
}

// fillFromJSON takes the build time and npm outcome from lxcfleet's --json
// output (any line holding them).
func fillFromJSON(m *Mark, out []byte) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var all []any
	for sc.Scan() {
		var v any
		if json.Unmarshal(sc.Bytes(), &v) == nil {
			all = append(all, v)
		}
	}
	if len(all) == 0 {
		var v any
		if json.Unmarshal(out, &v) == nil {
			all = append(all, v)
		}
	}
	// npm's time from lxcfleet's own stage events: from the "npm ..." stage
	// to the next one.
	var npmAt time.Time
	for _, v := range all {
		ev, ok := v.(map[string]any)
		if !ok || ev["type"] != "stage" {
			continue
		}
		msg, _ := ev["message"].(string)
		ts, _ := ev["time"].(string)
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		if !npmAt.IsZero() && m.NpmSeconds == nil {
			d := t.Sub(npmAt).Seconds()
			m.NpmSeconds = &d
		}
		if strings.HasPrefix(msg, "npm ") {
			npmAt = t
		}
	}
	for _, v := range all {
		walkJSON(v, func(k string, x any) {
			switch k {
			case "build_seconds":
				if f, ok := x.(float64); ok {
					m.BuildSeconds = &f
				}
			case "npm_seconds":
				if f, ok := x.(float64); ok {
					m.NpmSeconds = &f
				}
			case "npm_ran":
				if b, ok := x.(bool); ok && m.Npm == "" {
					m.Npm = map[bool]string{true: "ran", false: "skipped"}[b]
				}
			case "npm":
				if s, ok := x.(string); ok && s != "" {
					m.Npm = s
				}
			}
		})
	}
}

func walkJSON(v any, fn func(k string, x any)) {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			fn(k, x)
			walkJSON(x, fn)
		}
	case []any:
		for _, x := range t {
			walkJSON(x, fn)
		}
	}
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "…" + s[len(s)-600:]
	}
	return s
}
