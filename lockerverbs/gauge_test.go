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
