package lxcctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
}

// Validate reports a path that would escape the cgroup root or a weight
// out of range.
func (p CgroupParent) Validate() error {
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
