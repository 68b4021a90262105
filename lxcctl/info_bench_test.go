package lxcctl_test

import (
	"context"
	"testing"
	"time"

	lxc "github.com/lxc/go-lxc"

	"lxcfleet/internal/testfleet"
)

// BenchmarkInfo splits what one locker's Info costs (the agent's
// inventory reads every locker's every 5 s) into its parts, on 8 real
// lockers, 4 of them running: loading the container (liblxc parses its
// config), its state and init pid (two round trips to its monitor's
// command socket when it runs), and the whole Info. Reported per locker.
func BenchmarkInfo(b *testing.B) {
	f := testfleet.New(b, testfleet.Options{})
	ls := f.Add(8, testfleet.Normal)
	ctx := context.Background()
	for _, l := range ls[:4] {
		if r := f.Host.StartHealthy(ctx, l.Name, testfleet.HealthCheck(), 30*time.Second); r.Err != nil {
			b.Fatalf("starting %s: %v", l.Name, r.Err)
		}
	}
	names := testfleet.Names(ls)
	b.Run("load", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			c, err := lxc.NewContainer(names[i%len(names)], f.Path)
			if err != nil {
				b.Fatal(err)
			}
			_ = c.Release()
		}
	})
	for _, running := range []bool{false, true} {
		pick := names[4:]
		what := "stopped"
		if running {
			pick, what = names[:4], "running"
		}
		b.Run("state-initpid-"+what, func(b *testing.B) {
			cs := make([]*lxc.Container, len(pick))
			for i, n := range pick {
				c, err := lxc.NewContainer(n, f.Path)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Release()
				cs[i] = c
			}
			for i := 0; b.Loop(); i++ {
				c := cs[i%len(cs)]
				if c.State() == lxc.RUNNING {
					_ = c.InitPid()
				}
			}
		})
		b.Run("info-"+what, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				if _, err := f.Host.Info(ctx, pick[i%len(pick)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("select-all", func(b *testing.B) {
		for b.Loop() {
			if _, err := f.Host.Select(ctx, nil, ""); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(names)+1), "ns/locker")
	})
}
