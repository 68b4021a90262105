package lockerverbs

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func writePSI(t *testing.T, root string, cpuTotal uint64) {
	t.Helper()
	dir := filepath.Join(root, "pressure")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	line := func(avg10 string, total uint64) string {
		return "some avg10=" + avg10 + " avg60=0.00 avg300=0.00 total=" + strconv.FormatUint(total, 10) + "\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
	}
	for name, body := range map[string]string{
		"cpu":    line("40.00", cpuTotal),
		"memory": line("0.00", 0),
		"io":     line("5.00", 0),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPSIGauge: the first read is the kernel's avg10; later reads are the
// stalled share of the wall time since the previous read.
func TestPSIGauge(t *testing.T) {
	root := t.TempDir()
	writePSI(t, root, 1_000_000)
	g, err := NewPSIGauge(root)
	if err != nil {
		t.Fatal(err)
	}
	p := g.last
	if p.CPU != 0.4 || p.IO != 0.05 || p.Memory != 0 {
		t.Errorf("first read %+v, want avg10 (cpu 0.4, io 0.05)", p)
	}
	g.clock = fixedClock{g.at.Add(300 * time.Millisecond)} // 300 ms of wall time later
	writePSI(t, root, 1_000_000+600_000_000)               // 10 min stalled: capped at 1
	p, err = g.Pressure()
	if err != nil {
		t.Fatal(err)
	}
	if p.CPU != 1 || p.IO != 0 {
		t.Errorf("second read %+v, want cpu 1 (more stalled than the wall time since the first), io 0 (no growth)", p)
	}
	if q, _ := g.Pressure(); q != p {
		t.Errorf("a read within %v: %+v, want the previous %+v", minSample, q, p)
	}
	if _, err := NewPSIGauge(t.TempDir()); err == nil {
		t.Errorf("a /proc without pressure files: want an error")
	}
}

// TestPSIGaugeHost reads this host's /proc/pressure, where it exists.
func TestPSIGaugeHost(t *testing.T) {
	if _, err := os.Stat("/proc/pressure/cpu"); err != nil {
		t.Skip("no /proc/pressure on this kernel")
	}
	g, err := NewPSIGauge("")
	if err != nil {
		t.Fatal(err)
	}
	// Measures: the host's stalled time over a real 300 ms (> minSample),
	// so the second read is a rate over real time, not the first avg10.
	time.Sleep(300 * time.Millisecond)
	p, err := g.Pressure()
	if err != nil || p.CPU < 0 || p.CPU > 1 || p.Memory < 0 || p.IO < 0 {
		t.Errorf("host pressure %+v, %v", p, err)
	}
}

// fixedClock is a clock stopped at one time.
type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

func (c fixedClock) Sleep(ctx context.Context, d time.Duration) error { return ctx.Err() }

// TestLockersMemory: with Lockers, the memory figure is the worst of the
// host's and the lockers' parent cgroup's: its memory.pressure in the
// unified hierarchy (a hybrid host), a rise of its v1 memory.failcnt, or
// its working set past 90 % of its v1 limit.
func TestLockersMemory(t *testing.T) {
	root, cg := t.TempDir(), t.TempDir()
	writePSI(t, root, 0)
	v1 := filepath.Join(cg, "memory", "lockers")
	v2 := filepath.Join(cg, "unified", "lockers")
	write := func(dir, name, body string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const gib = 1 << 30
	write(v1, "memory.failcnt", "7\n")
	write(v1, "memory.limit_in_bytes", strconv.Itoa(10*gib)+"\n")
	write(v1, "memory.usage_in_bytes", strconv.Itoa(9*gib)+"\n")
	write(v1, "memory.stat", "cache 1\ntotal_inactive_file "+strconv.Itoa(gib)+"\n")
	write(v2, "memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=1000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
	g, err := NewPSIGauge(root)
	if err != nil {
		t.Fatal(err)
	}
	g.Lockers(cg, "lockers")
	at := g.at
	read := func(what string) float64 {
		t.Helper()
		at = at.Add(300 * time.Millisecond)
		g.clock = fixedClock{at}
		p, err := g.Pressure()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return p.Memory
	}
	if m := read("working set 80 % of the limit, nothing stalled"); m != 0 {
		t.Errorf("working set 8 GiB of 10, no stalls, failcnt still: memory %v, want 0", m)
	}
	write(v1, "memory.usage_in_bytes", strconv.Itoa(10*gib-gib/2)+"\n") // working set 8.5 GiB
	write(v1, "memory.stat", "total_inactive_file 0\n")                 // now 9.5 GiB of 10
	if m := read("working set 95 %"); m < 0.49 || m > 0.51 {
		t.Errorf("working set 95 %% of the limit: memory %v, want 0.5", m)
	}
	write(v1, "memory.usage_in_bytes", "0\n")
	write(v1, "memory.failcnt", "9\n")
	if m := read("failcnt rose"); m != 1 {
		t.Errorf("failcnt rose: memory %v, want 1", m)
	}
	write(v2, "memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=151000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
	if m := read("memory.pressure"); m < 0.49 || m > 0.51 {
		t.Errorf("150 ms stalled in 300: memory %v, want 0.5", m)
	}
	write(v1, "memory.limit_in_bytes", "9223372036854771712\n")
	write(v1, "memory.usage_in_bytes", strconv.Itoa(50*gib)+"\n")
	if m := read("no limit"); m != 0 {
		t.Errorf("no limit, no stall, failcnt still: memory %v, want 0", m)
	}
}
