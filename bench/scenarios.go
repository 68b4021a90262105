package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The scenarios, by id.
var scenarioTitles = map[string]string{
	"1":  "1 sequential lxc-stop, git pull + npm install, sequential lxc-start",
	"2":  "2 xargs -P N lxc-stop, git pull + npm install, xargs -P N lxc-start (storm)",
	"3":  "3 lxc-autostart -s, git pull + npm install, lxc-autostart",
	"4":  "4 lxcfleet update-code --strategy offline --pacing adaptive",
	"4f": "4f lxcfleet update-code --strategy offline --pacing fixed",
	"5":  "5 lxcfleet update-code --strategy rolling --pacing adaptive",
	"5f": "5f lxcfleet update-code --strategy rolling --pacing fixed",
	"5c": "5b lxcfleet rolling, app-only update (lockfile unchanged)",
}

// lxcfleetScenario is how each lxcfleet scenario runs.
var lxcfleetScenario = map[string]struct{ strategy, pacing string }{
	"4":  {"offline", "adaptive"},
	"4f": {"offline", "fixed"},
	"5":  {"rolling", "adaptive"},
	"5f": {"rolling", "fixed"},
}

// memMarked runs one measured update with the lockers' memory cgroup
// watched from just before it to its end.
func (r *runner) memMarked(update func() (Mark, error)) (Mark, error) {
	if r.mem == nil {
		return update()
	}
	k := r.mem.mark()
	m, err := update()
	m.Memory = r.mem.since(k)
	return m, err
}

// scenario resets the fleet to build A (not measured) and runs one A → B
// update (measured), returning its marks.
func (r *runner) scenario(ctx context.Context, id string) ([]Mark, error) {
	switch id {
	case "1", "2", "3":
		if err := r.resetShell(ctx); err != nil {
			return nil, fmt.Errorf("resetting to build A: %w", err)
		}
		m, err := r.memMarked(func() (Mark, error) { return r.shellPlan(ctx, id) })
		return []Mark{m}, err
	case "4", "4f", "5", "5f":
		sc := lxcfleetScenario[id]
		why := r.lxcf.missing()
		if why == "" && sc.pacing == "fixed" && !r.lxcf.Pacing {
			// Until the binary has --pacing, scenario 4/5 runs with its
			// fixed window: a second fixed run would measure nothing new.
			why = "the lxcfleet binary has no --pacing (update-code --help): scenario " + id[:1] + " ran with its fixed window"
		}
		if why != "" {
			out := []Mark{{ID: id, Title: scenarioTitles[id], From: BuildA, To: BuildB, Skipped: why}}
			if id == "5" {
				out = append(out, Mark{ID: "5c", Title: scenarioTitles["5c"], From: BuildB, To: BuildC, Skipped: why})
			}
			return out, nil
		}
		if err := r.resetLXCFleet(ctx); err != nil {
			return []Mark{{ID: id, Title: scenarioTitles[id], From: BuildA, To: BuildB, Err: err.Error()}}, fmt.Errorf("resetting to build A with lxcfleet: %w", err)
		}
		m, err := r.memMarked(func() (Mark, error) { return r.lxcfleetUpdate(ctx, id, sc.strategy, BuildA, BuildB, sc.pacing) })
		out := []Mark{m}
		if err != nil || id != "5" {
			return out, err
		}
		m, err = r.memMarked(func() (Mark, error) { return r.lxcfleetUpdate(ctx, "5c", "rolling", BuildB, BuildC, "adaptive") })
		return append(out, m), err
	}
	return nil, fmt.Errorf("unknown scenario %q", id)
}

// resetShell puts every locker on build A from the shared code folder.
func (r *runner) resetShell(ctx context.Context) error {
	r.log.Info("reset: shared folder on build A")
	if err := r.stopAll(ctx); err != nil {
		return err
	}
	if err := r.codeShared(ctx, BuildA); err != nil {
		return err
	}
	return r.startAll(ctx, BuildA)
}

// shellPlan is one of the operators' plans, run with the LXC tools.
func (r *runner) shellPlan(ctx context.Context, id string) (Mark, error) {
	m := Mark{ID: id, Title: scenarioTitles[id], From: BuildA, To: BuildB}
	r.log.Info("scenario", "id", id, "title", m.Title)
	shared := filepath.Join(r.root, "shared")
	names := r.fleet.Names()
	path := r.fleet.Path
	n := len(names)
	listFile := filepath.Join(r.work, "names.txt")
	if err := os.WriteFile(listFile, []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
		return m, err
	}
	outPath := filepath.Join(r.dir, "scenario-"+id+".log")
	out, err := os.Create(outPath)
	if err != nil {
		return m, err
	}
	defer out.Close()
	m.Output = filepath.Base(outPath)
	sh := func(script string) error {
		fmt.Fprintf(out, "$ %s\n", script)
		cmd := exec.CommandContext(ctx, "bash", "-c", script)
		cmd.Stdout, cmd.Stderr = out, out
		return cmd.Run()
	}
	each := func(tool string) {
		for _, name := range names {
			fmt.Fprintf(out, "$ %s -P %s -n %s\n", tool, path, name)
			cmd := exec.CommandContext(ctx, tool, "-P", path, "-n", name)
			cmd.Stdout, cmd.Stderr = out, out
			if cmd.Run() != nil {
				m.CmdFailures++
			}
		}
	}
	m.T0 = time.Now()
	switch id {
	case "1":
		each("lxc-stop")
	case "2":
		if sh(fmt.Sprintf("xargs -P %d -n 1 lxc-stop -P %s -n < %s", n, path, listFile)) != nil {
			m.CmdFailures++
		}
	case "3":
		if sh("lxc-autostart -P "+path+" -s") != nil {
			m.CmdFailures++
		}
	}
	if err := ctx.Err(); err != nil {
		return m, err
	}
	if sh("cd "+shared+" && git pull --quiet") != nil {
		m.Err = "git pull failed"
	}
	t := time.Now()
	if sh("cd "+shared+" && npm install --no-audit --no-fund") != nil {
		m.Err = "npm install failed"
	}
	npm := time.Since(t).Seconds()
	m.NpmSeconds = &npm
	switch id {
	case "1":
		each("lxc-start")
	case "2":
		if sh(fmt.Sprintf("xargs -P %d -n 1 lxc-start -P %s -n < %s", n, path, listFile)) != nil {
			m.CmdFailures++
		}
	case "3":
		if sh("lxc-autostart -P "+path) != nil {
			m.CmdFailures++
		}
	}
	m.CmdEnd = time.Now()
	var ok bool
	m.Done, ok = r.waitAll(ctx, BuildB, r.deadline())
	m.TimedOut = !ok
	if m.TimedOut && r.mem != nil {
		// The plan's bound: past its deadline, its lockers' processes
		// are killed, so the box is usable for the next scenario.
		n, err := r.mem.killPayloads()
		note := fmt.Sprintf("not served by the deadline: the runner killed the %d processes left in the lockers' payload cgroups (SIGKILL through a pidfd)", n)
		if err != nil {
			note += "; " + err.Error()
		}
		m.Notes = append(m.Notes, note)
		r.log.Warn("scenario timed out: lockers' processes killed", "id", id, "processes", n)
	}
	settle()
	return m, ctx.Err()
}

// settle leaves the prober a moment to see the fleet's final state before
// the runner changes it again.
func settle() { time.Sleep(time.Second) }

// deadline is how long after a command the runner waits for every locker.
func (r *runner) deadline() time.Time {
	return time.Now().Add(90*time.Second + time.Duration(len(r.fleet.Targets))*time.Second)
}
