package lxcctl_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
)

// TestCgroupParent: a Host with a cgroup parent starts lockers under it
// (lxc.payload.NAME inside the parent, in the CPU controller), with the
// parent's CPU weight written (cpu.shares on v1), without writing the
// lockers' configs; a locker whose config sets lxc.cgroup.dir keeps its
// own; a parent that escapes the cgroup root is refused.
func TestCgroupParent(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	lockers := f.Add(2, testfleet.Normal)
	own := "lxcfleet-own-" + strings.TrimSuffix(f.Prefix, "-")
	parent := lxcctl.CgroupParent{Path: "lxcfleet-test-" + strings.TrimSuffix(f.Prefix, "-"), CPUWeight: 25}
	t.Cleanup(func() { removeCgroup(t, parent.Path); removeCgroup(t, own) })
	cfg := filepath.Join(f.Path, lockers[1].Name, "config")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, append(b, []byte("lxc.cgroup.dir = "+own+"\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(f.Path, lockers[0].Name, "config"))

	h, err := lxcctl.NewHost(lxcctl.Options{LXCPath: f.Path, Cgroup: parent})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := lockerverbs.StartAll(ctx, h, testfleet.Names(lockers), lxcctl.StartOptions{Window: 2, Deadline: 20 * time.Second, Health: testfleet.HealthCheck()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = lockerverbs.StopAll(ctx, h, testfleet.Names(lockers), lxcctl.StopOptions{Parallel: 2, Timeout: 5 * time.Second})
	})
	for _, r := range res {
		if !r.OK() {
			t.Fatalf("%s: %s %v", r.Name, r.Outcome, r.Err)
		}
	}
	if w, err := parent.CPUWeightNow(); err != nil || (w != 256 && w != 25) {
		t.Errorf("parent weight: %d, %v; want 256 cpu.shares (v1) or cpu.weight 25 (v2)", w, err)
	}
	for i, want := range []string{"/" + parent.Path + "/lxc.payload." + lockers[0].Name, "/" + own + "/lxc.payload." + lockers[1].Name} {
		info, err := h.Info(ctx, lockers[i].Name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := cgroupOf(info.InitPID)
		if err != nil || got != want {
			t.Errorf("%s's cgroup: %q, %v; want %q", lockers[i].Name, got, err, want)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(f.Path, lockers[0].Name, "config")); string(after) != string(before) {
		t.Errorf("the locker's config was written:\n%s", after)
	}
	for _, bad := range []string{"../escape", "/abs", "a/../../b", ""} {
		p := lxcctl.CgroupParent{Path: bad, CPUWeight: 25}
		if err := p.Validate(); (err == nil) != (bad == "") {
			t.Errorf("Validate(%q) = %v", bad, err)
		}
	}
	if err := (lxcctl.CgroupParent{Path: "x", CPUWeight: 10001}).Validate(); err == nil {
		t.Errorf("weight 10001 accepted")
	}
}

// removeCgroup removes a test's parent cgroup (and LXC's lxc.pivot in it)
// from every controller, once its containers have stopped.
func removeCgroup(t *testing.T, path string) {
	dirs, _ := filepath.Glob(filepath.Join(lxcctl.CgroupRoot, "*", path))
	if lxcctl.CgroupV2() {
		dirs = []string{filepath.Join(lxcctl.CgroupRoot, path)}
	}
	for _, d := range dirs {
		deadline := time.Now().Add(10 * time.Second)
		for {
			subs, _ := filepath.Glob(filepath.Join(d, "*", "cgroup.procs"))
			for _, s := range subs {
				_ = os.Remove(filepath.Dir(s))
			}
			err := os.Remove(d)
			if err == nil || os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Logf("removing test cgroup %s: %v", d, err)
				break
			}
			if lxcctl.CgroupV2() && errors.Is(err, syscall.EBUSY) {
				// Busy while a process is in it: wait for the kernel to say
				// it emptied.
				_ = testfleet.WaitCgroupEmpty(d, time.Until(deadline))
				continue
			}
			// Paces the retries on cgroup v1, which has no event for an
			// emptied cgroup (and on any other error).
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// cgroupOf returns pid's cgroup path in the CPU controller ("/a/b").
func cgroupOf(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("reading the cgroup of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			return parts[2], nil // v2
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "cpu" {
				return parts[2], nil
			}
		}
	}
	return "", errors.New("no cpu controller in /proc/" + strconv.Itoa(pid) + "/cgroup")
}

// TestStartupCPUBoost: with StartCPUWeight, a starting locker's own cgroup
// has the boost's weight from its start until its first healthy check,
// then the weight it had before: the kernel's default, or the one its
// config sets. Each locker's check passes only once the test lets it (a
// file in its rootfs), so the test sees the start both before and after.
func TestStartupCPUBoost(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	lockers := f.Add(2, testfleet.Normal)
	parent := lxcctl.CgroupParent{Path: "lxcfleet-test-" + strings.TrimSuffix(f.Prefix, "-"), CPUWeight: 25, StartCPUWeight: 1000}
	t.Cleanup(func() { removeCgroup(t, parent.Path) })
	// v1 cpu.shares, v2 cpu.weight: the boost and the weights before it.
	boost, deflt, own, ownKey := "10240", "1024", "512", "lxc.cgroup.cpu.shares"
	if lxcctl.CgroupV2() {
		boost, deflt, own, ownKey = "1000", "100", "50", "lxc.cgroup2.cpu.weight"
	}
	cfg := filepath.Join(f.Path, lockers[1].Name, "config")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, append(b, []byte(ownKey+" = "+own+"\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := lxcctl.NewHost(lxcctl.Options{LXCPath: f.Path, Cgroup: parent})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() {
		_, _ = lockerverbs.StopAll(ctx, h, testfleet.Names(lockers), lxcctl.StopOptions{Parallel: 2, Timeout: 5 * time.Second})
	})
	weightOf := func(name string) string {
		info, err := h.Info(ctx, name)
		if err != nil {
			return err.Error()
		}
		cg, err := cgroupOf(info.InitPID)
		if err != nil {
			return err.Error()
		}
		file := filepath.Join(lxcctl.CgroupRoot, "cpu", cg, "cpu.shares")
		if lxcctl.CgroupV2() {
			file = filepath.Join(lxcctl.CgroupRoot, cg, "cpu.weight")
		}
		w, err := os.ReadFile(file)
		if err != nil {
			return err.Error()
		}
		return strings.TrimSpace(string(w))
	}
	gate, err := lxcctl.ParseHealthCheck("exec:test -e /lxcfleet-test-healthy")
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan lxcctl.StartResult, len(lockers))
	for _, l := range lockers {
		go func() { results <- h.StartHealthy(ctx, l.Name, gate, 30*time.Second) }()
	}
	// A start reaches its boost within milliseconds of LXC's RUNNING; 10 s
	// for both is for a loaded box.
	deadline := time.Now().Add(10 * time.Second)
	for i, want := range []string{deflt, own} {
		name := lockers[i].Name
		// Waits for the start to reach the boost: nothing else tells; the
		// check cannot pass before the file below is made.
		var got string
		for ; time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if got = weightOf(name); got == boost {
				break
			}
		}
		if got != boost {
			t.Errorf("%s starting: CPU weight %s, want the boost's %s", name, got, boost)
		}
		if err := os.WriteFile(filepath.Join(f.Path, name, "rootfs", "lxcfleet-test-healthy"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if r := <-results; !r.OK() {
			t.Fatalf("%s: %s %v", r.Name, r.Outcome, r.Err)
		}
		if got := weightOf(name); got != want {
			t.Errorf("%s healthy: CPU weight %s, want %s back", name, got, want)
		}
	}
	if err := (lxcctl.CgroupParent{StartCPUWeight: 10001}).Validate(); err == nil {
		t.Errorf("start weight 10001 accepted")
	}
}
