package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"lxcfleet/internal/testfleet"
	"lxcfleet/lockerverbs"
	"lxcfleet/lxcctl"
)

// writeJournal makes a journal with many jobs and steps (several pages)
// and a desired state: l-1 running, l-2 stopped.
func writeJournal(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "journal.db")
	jr, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// One transaction (the journal's own writes fsync each step).
	err = jr.db.Update(func(tx *bolt.Tx) error {
		for i := range 40 {
			id := newJobID(now.Add(time.Duration(i) * time.Second))
			b, _ := json.Marshal(Job{ID: id, Kind: KindStopAll, State: JobSucceeded, Created: now})
			if err := tx.Bucket(bucketJobs).Put([]byte(id), b); err != nil {
				return err
			}
			jb, err := tx.Bucket(bucketSteps).CreateBucketIfNotExists([]byte(id))
			if err != nil {
				return err
			}
			for k := range 20 {
				b, _ := json.Marshal(Step{Container: "l-" + strings.Repeat("x", k), Action: "stop", Phase: "begin"})
				if err := jb.Put(u64(uint64(k+1)), b); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := jr.SetDesired([]string{"l-1", "l-2"}, Desired{Running: true, Since: now}); err != nil {
		t.Fatal(err)
	}
	if err := jr.SetDesired([]string{"l-2"}, Desired{Running: false, Since: now}); err != nil {
		t.Fatal(err)
	}
	if err := jr.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// garble overwrites n bytes at off with random bytes.
func garble(t *testing.T, path string, off int64, n int, seed uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, uint64(off)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// An empty, a truncated and a garbled journal are set aside with a message
// naming the file, and the new journal keeps the desired state.
func TestOpenJournalSetsUnreadableFilesAside(t *testing.T) {
	cases := []struct {
		name   string
		mangle func(t *testing.T, path string)
		reason string
	}{
		{"empty", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}, "empty (0 bytes"},
		{"truncated", func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			if err := os.Truncate(path, fi.Size()/3); err != nil {
				t.Fatal(err)
			}
		}, "corrupt"},
		{"garbled", func(t *testing.T, path string) {
			garble(t, path, 0, 8192, 1) // both meta pages
		}, "corrupt"},
		{"garbled records", func(t *testing.T, path string) {
			// Every value byte "{" turned into "?": pages intact, JSON not.
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for i := range b {
				if b[i] == '{' {
					b[i] = '?'
				}
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := writeJournal(t, dir)
			c.mangle(t, path)
			jr, err := OpenJournal(path)
			if err != nil {
				t.Fatalf("OpenJournal: got %v, want a new journal", err)
			}
			defer jr.Close()
			lost := jr.Lost()
			if !strings.Contains(lost, c.reason) || !strings.Contains(lost, path) || !strings.Contains(lost, ".lost-") {
				t.Errorf("Lost: got %q, want it to name %s, say %q and where it went", lost, path, c.reason)
			}
			aside, _ := filepath.Glob(path + ".lost-*")
			if len(aside) != 1 {
				t.Errorf("files set aside: got %v, want one", aside)
			}
			if pending, _ := jr.LostPending(); pending == "" {
				t.Errorf("LostPending: got nothing, want the loss remembered until a recovery")
			}
			d, err := jr.Desired()
			if err != nil {
				t.Fatal(err)
			}
			if len(d) != 2 || !d["l-1"].Running || d["l-2"].Running {
				t.Errorf("desired state after the loss: got %+v, want l-1 running, l-2 stopped (from %s)", d, DesiredFile)
			}
			if jobs, _ := jr.Jobs(0); len(jobs) != 0 {
				t.Errorf("jobs in the new journal: got %d, want 0", len(jobs))
			}
		})
	}
}

// Whatever bytes a journal holds, opening it neither panics nor faults:
// it opens, or it is set aside.
func TestOpenJournalNeverPanics(t *testing.T) {
	dir := t.TempDir()
	orig, err := os.ReadFile(writeJournal(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	try := func(t *testing.T, what string, data []byte) {
		t.Helper()
		sub := t.TempDir()
		path := filepath.Join(sub, "journal.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		jr, err := OpenJournal(path)
		if err != nil {
			t.Errorf("%s: OpenJournal: %v", what, err)
			return
		}
		if _, err := jr.Jobs(0); err != nil {
			t.Errorf("%s: reading jobs after open: %v", what, err)
		}
		jr.Close()
	}
	for size := int64(0); size < int64(len(orig)); size += 1024 + 512 {
		try(t, "cut at "+itoa(size), orig[:size])
	}
	for off := 0; off < len(orig); off += 2048 {
		b := append([]byte(nil), orig...)
		r := rand.New(rand.NewPCG(7, uint64(off)))
		for i := off; i < off+256 && i < len(b); i++ {
			b[i] = byte(r.Uint32())
		}
		try(t, "garbled at "+itoa(int64(off)), b)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// slogTo logs (at debug) into w.
func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestLostJournalRestartsStoppedLockers: an offline update was interrupted
// with two lockers stopped, and its journal was lost (empty, cut, garbled).
// The next agent starts, says so, and starts both lockers again from the
// desired state kept beside the journal.
func TestLostJournalRestartsStoppedLockers(t *testing.T) {
	f := testfleet.New(t, testfleet.Options{})
	ls := testfleet.Names(f.Add(3, testfleet.Normal))
	ctx := context.Background()
	for _, c := range []string{"empty", "truncated", "garbled"} {
		t.Run(c, func(t *testing.T) {
			if _, err := lockerverbs.StartAll(ctx, f.Host, ls, lxcctl.StartOptions{Window: 3, Deadline: 20 * time.Second, Health: testfleet.HealthCheck()}); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			path := writeJournal(t, dir)
			jr, err := OpenJournal(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := jr.SetDesired(ls, Desired{Running: true, JobID: "update", Since: time.Now()}); err != nil {
				t.Fatal(err)
			}
			jr.Close()
			// The interrupted job had stopped two of them.
			if _, err := lockerverbs.StopAll(ctx, f.Host, ls[:2], lxcctl.StopOptions{Parallel: 2, Timeout: 5 * time.Second}); err != nil {
				t.Fatal(err)
			}
			switch c {
			case "empty":
				if err := os.Truncate(path, 0); err != nil {
					t.Fatal(err)
				}
			case "truncated":
				fi, _ := os.Stat(path)
				if err := os.Truncate(path, fi.Size()/2); err != nil {
					t.Fatal(err)
				}
			case "garbled":
				garble(t, path, 0, 8192, 3)
			}
			logs := &syncBuffer{}
			// The recovery's monitor window 1 s, not the default 10 s: its
			// length proves nothing here (30 s less for the three cases).
			d := DefaultDefaults()
			d.Policy.Monitor = time.Second
			s := serveAgent(t, Config{LXCPath: f.Path, StateDir: dir, Defaults: d}, Deps{Containers: f.Host, Logger: slogTo(logs)})
			eventually(t, 60*time.Second, func() (bool, string) {
				st := states(t, f.Host, ls)
				if st[ls[0]] == lxcctl.StateRunning && st[ls[1]] == lxcctl.StateRunning {
					return true, ""
				}
				return false, fmt.Sprintf("lockers after a lost journal: got %v, want all running\nlogs:\n%s", st, logs)
			})
			if !strings.Contains(logs.String(), "journal was lost") || !strings.Contains(logs.String(), path) {
				t.Errorf("logs: got\n%s\nwant the lost journal named", logs)
			}
			// Once recovered, the loss is forgotten.
			eventually(t, 30*time.Second, func() (bool, string) {
				p, _ := s.a.Journal().LostPending()
				if p == "" {
					return true, ""
				}
				return false, fmt.Sprintf("lost journal still pending after recovery:\n%s", logs)
			})
		})
	}
}
