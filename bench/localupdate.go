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
	"lxcfleet/codeupdate"
	"lxcfleet/lxcctl"
	"lxcfleet/mounts"
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
// does for --local.
func localAgent(path string, log *slog.Logger) (*agent.Agent, error) {
	fc, err := agent.LoadConfig(path, true)
	if err != nil {
		return nil, err
	}
	h, err := lxcctl.NewHost(lxcctl.Options{LXCPath: fc.LXCPath, Logger: log})
	if err != nil {
		return nil, err
	}
	layout := mounts.LayoutAt(fc.Layout.Root)
	deps := agent.Deps{
		Containers: h,
		ReleaseOf:  func(pid int) (string, bool, error) { return mounts.ReleaseOfPID(pid, layout) },
		Logger:     log,
	}
	if fc.Code.Origin != "" {
		m, err := codeupdate.New(codeupdate.Options{Root: fc.Layout.Root, Origin: fc.Code.Origin, Npm: fc.Code.Npm, NpmTimeout: fc.Code.NpmTimeout.D(), Logger: log})
		if err != nil {
			return nil, err
		}
		deps.Code = m
	}
	return agent.New(agent.Config{
		LXCPath:           fc.LXCPath,
		StateDir:          fc.StateDir,
		Version:           "lockerbench",
		InventoryInterval: fc.InventoryInterval.D(),
		HealthInterval:    fc.HealthInterval.D(),
		Listen:            agent.Listen{Socket: fc.Listen.Socket},
		Defaults:          fc.AgentDefaults(),
		KeepJobs:          fc.KeepJobs,
		KeepReleases:      fc.KeepReleases,
	}, deps)
}
