package bench

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"lxcfleet/lxcctl"
)

// TestAppProfiles: the profiles' environment and default work, the memory
// limit a run of N lockers gets, and the sizes -mem-limit reads.
func TestAppProfiles(t *testing.T) {
	for _, c := range []struct {
		name, env string
		work      int
	}{{"", "APP_PROFILE=light", 40}, {AppLight, "APP_PROFILE=light", 40}, {AppHeavy, "APP_PROFILE=heavy", 400}} {
		env, work, err := appProfile(c.name)
		if err != nil || !slices.Equal(env, []string{c.env}) || work != c.work {
			t.Errorf("appProfile(%q) = %v, %d, %v; want [%s], %d", c.name, env, work, err, c.env, c.work)
		}
	}
	if _, _, err := appProfile("medium"); err == nil {
		t.Error("appProfile(medium) accepted")
	}
	o := Options{App: AppHeavy, Self: "x"}
	if err := o.defaults(); err != nil || o.Work != 400 || !slices.Equal(o.appEnv, []string{"APP_PROFILE=heavy"}) {
		t.Errorf("heavy defaults: work %d, env %v, %v", o.Work, o.appEnv, err)
	}
	o = Options{Self: "x", Work: 7}
	if err := o.defaults(); err != nil || o.Work != 7 || o.App != AppLight {
		t.Errorf("light defaults with -work 7: app %q, work %d, %v", o.App, o.Work, err)
	}
	for _, c := range []struct {
		limit int64
		n     int
		want  int64
	}{{0, 300, 300*55<<20 + 1<<30}, {0, 50, 50*55<<20 + 1<<30}, {16 << 30, 300, 16 << 30}, {-1, 300, 0}} {
		if got := memLimitFor(c.limit, c.n); got != c.want {
			t.Errorf("memLimitFor(%d, %d) = %d, want %d", c.limit, c.n, got, c.want)
		}
	}
	for in, want := range map[string]int64{"16GiB": 16 << 30, "2750M": 2750 << 20, "512mib": 512 << 20, "1.5G": 3 << 29, "4096": 4096, "none": -1, "0": 0} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "-5M", "G"} {
		if _, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) accepted", bad)
		}
	}
}

// TestOOMRecord: the kernel's oom-kill records count when their cgroup is
// the bench's parent or under it, and name the locker.
func TestOOMRecord(t *testing.T) {
	m := &memCgroup{Path: "lockerbench.ab12"}
	for rec, want := range map[string]string{
		"3,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=x,mems_allowed=0,oom_memcg=/lockerbench.ab12,task_memcg=/lockerbench.ab12/lxc.payload.lxb1-002,task=node,pid=7,uid=0\n": "lxb1-002",
		"3,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/lockerbench.ab12/lxc.payload.lxb1-007,task_memcg=/lockerbench.ab12/lxc.payload.lxb1-007,task=node":                                  "lxb1-007",
		"3,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/lockerbench.ab123,task_memcg=/lockerbench.ab123/lxc.payload.x,task=node":                                                            "",
		"3,1,2,-;oom-kill:constraint=CONSTRAINT_NONE,oom_memcg=/,task_memcg=/user.slice,task=java":                                                                                                   "",
		"6,1,2,-;Memory cgroup out of memory: Killed process 7 (node)":                                                                                                                               "",
	} {
		name, ok := m.oomKill(rec)
		if ok != (want != "") || name != want {
			t.Errorf("oomKill(%q) = %q, %v; want %q", rec, name, ok, want)
		}
	}
}

// TestMemCgroupLimit makes a real memory cgroup with a 64 MiB limit, runs
// a node process that wants 256 MiB in a cgroup under it, and checks that
// the kernel kills it there and that the runner counts it: one OOM kill
// named by its cgroup, the limit hit, the peak at the limit. Then the
// parent is removed. It needs root and cgroup v1's memory controller (or
// v2); it fails instead of skipping when CI=true.
// needMemCgroup skips (fails under CI=true) where a v1 memory cgroup
// cannot be made; more names another need of the test ("" none).
func needMemCgroup(t *testing.T, more string) {
	t.Helper()
	why := more
	switch {
	case runtime.GOOS != "linux":
		why = "needs Linux cgroups"
	case os.Geteuid() != 0:
		why = "needs root to make a cgroup"
	case lxcctl.CgroupV2():
		why = "the runner's v2 path is not tested here (memory controller delegation)"
	default:
		if _, err := os.Stat(filepath.Join(lxcctl.CgroupRoot, "memory", "memory.limit_in_bytes")); err != nil {
			why = "no cgroup v1 memory controller"
		}
	}
	if why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and the memory cgroup test cannot run: %s", why)
		}
		t.Skip(why)
	}
}

// tempMemCgroup makes a memory cgroup parent for one test, removed (and
// checked gone) at its end.
func tempMemCgroup(t *testing.T, limit int64) *memCgroup {
	t.Helper()
	path := "lockerbench.test" + randHex(4)
	m, err := newMemCgroup(path, limit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := removeCgroupParent(path); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(m.dir); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left behind: %v", m.dir, err)
		}
	})
	return m
}

// TestKillPayloads: the storm's bound kills the processes of the lockers'
// payload cgroups under the parent, and no other: not one in an LXC
// monitor's cgroup beside them, not one outside the parent.
func TestKillPayloads(t *testing.T) {
	needMemCgroup(t, "")
	m := tempMemCgroup(t, 1<<30)
	// Each shell moves itself into its cgroup ("" stays where it is),
	// says so on its stdout, then becomes a sleep: the test reads that
	// line before it goes on.
	spawn := func(sub string) *exec.Cmd {
		script := `echo in && exec sleep 600`
		if sub != "" {
			dir := filepath.Join(m.dir, sub)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			script = `echo $$ > "$1/cgroup.procs" && echo in && exec sleep 600`
			sub = dir
		}
		cmd := exec.Command("sh", "-c", script, "sh", sub)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		if line, err := bufio.NewReader(out).ReadString('\n'); line != "in\n" {
			t.Fatalf("pid %d did not join %q: %q %v", cmd.Process.Pid, sub, line, err)
		}
		return cmd
	}
	payload, monitor, outside := spawn("lxc.payload.x"), spawn("lxc.monitor.x"), spawn("")
	n, err := m.killPayloads()
	if err != nil || n != 1 {
		t.Fatalf("killPayloads = %d, %v; want the 1 process of the payload cgroup", n, err)
	}
	err = payload.Wait()
	if ws, _ := payload.ProcessState.Sys().(syscall.WaitStatus); err == nil || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("the payload's process ended with %v, want SIGKILL", err)
	}
	for what, c := range map[string]*exec.Cmd{"the monitor's": monitor, "the outside": outside} {
		if err := c.Process.Signal(syscall.Signal(0)); err != nil {
			t.Errorf("%s process was killed: %v", what, err)
		}
	}
}

func TestMemCgroupLimit(t *testing.T) {
	more := ""
	if _, err := exec.LookPath("node"); err != nil {
		more = "node not found"
	}
	needMemCgroup(t, more)
	m := tempMemCgroup(t, 64<<20)
	child := filepath.Join(m.dir, "lxc.payload.hog")
	if err := os.Mkdir(child, 0o755); err != nil {
		t.Fatal(err)
	}
	k := m.mark()
	// The shell moves itself into the child cgroup, then becomes node.
	cmd := exec.Command("sh", "-c", `echo $$ > "$1/cgroup.procs" && exec node -e 'const a = []; for (let i = 0; i < 16; i++) { const b = Buffer.allocUnsafeSlow(16 << 20); b.fill(1); a.push(b); } console.log("not killed")'`, "sh", child)
	out, err := cmd.CombinedOutput()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if err == nil || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the 256 MiB process in a 64 MiB cgroup was not killed: %v %s", err, out)
	}
	f := m.since(k)
	if f.Err != "" || f.OOMKills != 1 || !slices.Equal(f.Killed, []string{"hog"}) {
		t.Errorf("OOM kills: %d %v (%s); want 1 [hog]", f.OOMKills, f.Killed, f.Err)
	}
	if f.LimitHits == 0 || f.PeakMiB < 60 || f.PeakMiB > 64 || f.LimitMiB != 64 || f.HostOOMKills < 1 {
		t.Errorf("figures %+v: want the limit hit, a peak of about 64 MiB and the host's counter moved", *f)
	}
	if s := FormatBytes(m.Limit); !strings.HasPrefix(s, "64 MiB") {
		t.Errorf("FormatBytes(64 MiB) = %q", s)
	}
}
