package lxcctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/procfs"
)

// CgroupRoot is where the cgroup file systems are mounted.
var CgroupRoot = "/sys/fs/cgroup"

// DefaultCgroupParent is the parent cgroup the agent starts lockers under.
const DefaultCgroupParent = "lxcfleet.lockers"

// DefaultLockersCPUWeight is the parent's CPU weight in cgroup v2 units
// (1..10000, the kernel's default 100): 25, a quarter of a default
// sibling's. Weights only matter under contention: idle, the lockers get
// every cycle; saturated, the agent (and its API), nginx and sshd still get
// theirs (measured in the README's "The agent under load").
const DefaultLockersCPUWeight = 25

// DefaultStartCPUWeight is the startup CPU boost's weight
// (CgroupParent.StartCPUWeight): 0, off. Measured in the benchmark's
// scenario 6 (N=300, a client at every locker, 4 starts at once): with
// 1000 a start took 2.00 s to healthy, without 2.05 s, and the requests'
// p50 rose from 10 to 34 ms; the starts shared the box with each other
// more than with the serving lockers. An operator who sees the contrary
// on a box sets it.
const DefaultStartCPUWeight = 0

// CgroupParent places the containers a Host starts under one parent cgroup
// with a low CPU weight, the way systemd groups services into slices:
// without it every locker is a top-level cgroup of its own (LXC's
// lxc.payload.NAME), weighted like the whole system.slice, so 300 busy
// lockers leave the agent 1/301 of the CPU. The parent is set per start
// (lxc.cgroup.dir, in memory; the container's config is not written)
// unless the container's config sets lxc.cgroup.dir* itself.
type CgroupParent struct {
	// Path is relative to the cgroup root, e.g. "lxcfleet.lockers"; empty
	// leaves the containers where LXC puts them.
	Path string
	// CPUWeight is in cgroup v2 units (1..10000); on cgroup v1 it is
	// written as cpu.shares = weight × 1024 / 100 (systemd's mapping).
	// 0 leaves the kernel's default.
	CPUWeight int
	// StartCPUWeight is a startup CPU boost (Kubernetes'
	// kube-startup-cpu-boost, Cloud Run's startup CPU boost): a starting
	// container's own cgroup gets this CPU weight, in the same units, from
	// its start until its first healthy check (or its failure), then its
	// weight before (the kernel's 100 unless its config sets one). Its
	// siblings are the other lockers under the parent, so the boost only
	// moves CPU from serving lockers to starting ones: the parent's own
	// weight against the agent and the rest of the box is unchanged. 0:
	// no boost. It applies with or without a parent.
	StartCPUWeight int
}

// Validate reports a path that would escape the cgroup root or a weight
// out of range.
func (p CgroupParent) Validate() error {
	if p.StartCPUWeight < 0 || p.StartCPUWeight > 10000 {
		return fmt.Errorf("cgroup: start cpu weight %d out of 1..10000", p.StartCPUWeight)
	}
	if p.Path == "" {
		return nil
	}
	clean := filepath.Clean(p.Path)
	if filepath.IsAbs(p.Path) || clean != p.Path || clean == "." || strings.HasPrefix(clean, "..") || strings.ContainsAny(p.Path, " \t\n") {
		return fmt.Errorf("cgroup parent %q: want a clean relative path such as %q", p.Path, DefaultCgroupParent)
	}
	if p.CPUWeight < 0 || p.CPUWeight > 10000 {
		return fmt.Errorf("cgroup parent %s: cpu weight %d out of 1..10000", p.Path, p.CPUWeight)
	}
	return nil
}

// CgroupV2 reports whether the unified hierarchy is mounted at CgroupRoot.
func CgroupV2() bool {
	_, err := os.Stat(filepath.Join(CgroupRoot, "cgroup.controllers"))
	return err == nil
}

// Ensure creates the parent in the CPU controller and writes its weight.
// LXC creates it in the other controllers as it starts the first container.
func (p CgroupParent) Ensure() error {
	if p.Path == "" {
		return nil
	}
	if err := p.Validate(); err != nil {
		return err
	}
	dir, file, value := p.weightFile()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating cgroup parent %s: %w", dir, err)
	}
	if p.CPUWeight == 0 {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0o644); err != nil {
		return fmt.Errorf("setting %s of cgroup parent %s to %s: %w", file, dir, strings.TrimSpace(value), err)
	}
	return nil
}

// weightFile is the parent's folder in the CPU controller, its weight file
// and the value to write there.
func (p CgroupParent) weightFile() (dir, file, value string) {
	if CgroupV2() {
		return filepath.Join(CgroupRoot, p.Path), "cpu.weight", strconv.Itoa(p.CPUWeight) + "\n"
	}
	return filepath.Join(CgroupRoot, "cpu", p.Path), "cpu.shares", strconv.Itoa(max(2, p.CPUWeight*1024/100)) + "\n"
}

// CPUWeightNow reads the parent's weight back, in the file's own units
// (cpu.shares on v1, cpu.weight on v2).
func (p CgroupParent) CPUWeightNow() (int, error) {
	dir, file, _ := p.weightFile()
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return 0, fmt.Errorf("reading the cpu weight of cgroup parent %s: %w", p.Path, err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// cpuWeightFile is the CPU weight file of the cgroup process pid is in:
// cpu.weight (v2) or cpu.shares (v1, in the cpu hierarchy), read from
// /proc/PID/cgroup.
func cpuWeightFile(pid int) (string, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return "", err
	}
	cgs, err := p.Cgroups()
	if err != nil {
		return "", err
	}
	v2 := CgroupV2()
	for _, cg := range cgs {
		if v2 && cg.HierarchyID == 0 {
			return filepath.Join(CgroupRoot, cg.Path, "cpu.weight"), nil
		}
		if !v2 && slices.Contains(cg.Controllers, "cpu") {
			return filepath.Join(CgroupRoot, "cpu", cg.Path, "cpu.shares"), nil
		}
	}
	return "", fmt.Errorf("process %d: no cpu cgroup in /proc/%d/cgroup", pid, pid)
}

// weightValue is a weight in v2 units as the file of cpuWeightFile takes it.
func weightValue(weight int) string {
	if CgroupV2() {
		return strconv.Itoa(weight)
	}
	return strconv.Itoa(max(2, weight*1024/100))
}

// boostStart gives the cgroup of a starting container's init (pid) the
// CPU weight p.StartCPUWeight and returns what writes its weight before
// back (see StartCPUWeight). Without a boost, or when the cgroup cannot be
// read or written, it changes nothing and says why in err; restore is
// never nil.
func (p CgroupParent) boostStart(pid int) (restore func() error, err error) {
	restore = func() error { return nil }
	if p.StartCPUWeight == 0 || pid <= 0 {
		return restore, nil
	}
	file, err := cpuWeightFile(pid)
	if err != nil {
		return restore, fmt.Errorf("boosting the CPU weight of process %d: %w", pid, err)
	}
	before, err := os.ReadFile(file)
	if err != nil {
		return restore, fmt.Errorf("boosting the CPU weight of process %d: %w", pid, err)
	}
	if err := os.WriteFile(file, []byte(weightValue(p.StartCPUWeight)), 0o644); err != nil {
		return restore, fmt.Errorf("boosting the CPU weight of process %d: %w", pid, err)
	}
	return func() error {
		err := os.WriteFile(file, before, 0o644)
		if err != nil && !errors.Is(err, os.ErrNotExist) { // gone: the container stopped
			return fmt.Errorf("writing back the CPU weight of %s: %w", file, err)
		}
		return nil
	}, nil
}
