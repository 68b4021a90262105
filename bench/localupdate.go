package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"lxcfleet/agent"
	"lxcfleet/config"
)

// UpdateMain is the stand-in for `lxcfleet update-code --local` while the
// lxcfleet binary has no such command: it runs the same code path in this
// process (agent with codeupdate's release manager and an lxcctl host, no
// daemon), waits for the job and prints it as one JSON line. args are
// CONFIG STRATEGY TARGET.
func UpdateMain(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: update-code CONFIG STRATEGY TARGET")
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := localAgent(args[0], log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer a.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	job, err := a.Submit(agent.Request{Kind: agent.KindUpdate, Strategy: args[1], Target: args[2], Trigger: "cli"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	job, err = a.Wait(ctx, job.ID)
	b, _ := json.Marshal(job)
	fmt.Println(string(b))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if job.State != agent.JobSucceeded {
		fmt.Fprintf(os.Stderr, "update-code: %s: %s\n", job.State, job.Error)
		return 1
	}
	return 0
}

// localAgent builds an agent from a config file the way the lxcfleet CLI
// does for --local: through config.Wire, the one wiring (app_path, [cgroup],
// the fetch limits and the pressure gauge included).
func localAgent(path string, log *slog.Logger) (*agent.Agent, error) {
	fc, err := config.Load(path, true)
	if err != nil {
		return nil, err
	}
	st, err := config.Wire(fc, log)
	if err != nil {
		return nil, err
	}
	deps, err := st.AgentDeps()
	if err != nil {
		return nil, err
	}
	cfg := fc.AgentConfig()
	cfg.Version = "lockerbench"
	cfg.Listen = agent.Listen{Socket: fc.Listen.Socket}
	cfg.Schedules = nil
	cfg.Fleet.Endpoints = nil
	return agent.New(cfg, deps)
}
