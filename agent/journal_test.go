package agent

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestJournalSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "journal.db")
	jr, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	jobs := []Job{
		{ID: newJobID(now), Kind: KindStopAll, State: JobSucceeded, Created: now},
		{ID: newJobID(now.Add(time.Second)), Kind: KindUpdate, State: JobRunning, Created: now.Add(time.Second), Request: Request{Kind: KindUpdate, Target: "v2"}},
	}
	for _, j := range jobs {
		if err := jr.PutJob(j); err != nil {
			t.Fatal(err)
		}
	}
	steps := []Step{
		{Container: "l-1", Action: "stop", Phase: "begin"},
		{Container: "l-1", Action: "stop", Phase: "end", Outcome: "clean"},
		{Action: "switch", Phase: "end", Outcome: "switched", Release: "7-abc"},
	}
	for _, s := range steps {
		if err := jr.AddStep(jobs[1].ID, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := jr.SetDesired([]string{"l-1", "l-2"}, Desired{Running: true, JobID: jobs[1].ID, Since: now}); err != nil {
		t.Fatal(err)
	}
	if err := jr.SetDesired([]string{"l-2"}, Desired{Running: false, JobID: jobs[1].ID, Since: now}); err != nil {
		t.Fatal(err)
	}
	if err := jr.SetMeta("boot_id", "b1"); err != nil {
		t.Fatal(err)
	}
	if err := jr.Close(); err != nil {
		t.Fatal(err)
	}

	jr, err = OpenJournal(path)
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer jr.Close()
	got, err := jr.Jobs(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != jobs[1].ID || got[1].ID != jobs[0].ID {
		t.Fatalf("Jobs after reopen: got %+v, want both, newest first", got)
	}
	if got[0].Request.Target != "v2" || got[0].State != JobRunning {
		t.Errorf("job after reopen: got %+v, want the running update to v2", got[0])
	}
	if lim, _ := jr.Jobs(1); len(lim) != 1 {
		t.Errorf("Jobs(1): got %d jobs, want 1", len(lim))
	}
	gotSteps, err := jr.Steps(jobs[1].ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(gotSteps) != len(steps) {
		t.Fatalf("steps after reopen: got %d, want %d", len(gotSteps), len(steps))
	}
	for i := range steps {
		if gotSteps[i].Container != steps[i].Container || gotSteps[i].Phase != steps[i].Phase || gotSteps[i].Outcome != steps[i].Outcome {
			t.Errorf("step %d: got %+v, want %+v (in the order written)", i, gotSteps[i], steps[i])
		}
	}
	d, err := jr.Desired()
	if err != nil {
		t.Fatal(err)
	}
	if !d["l-1"].Running || d["l-2"].Running || len(d) != 2 {
		t.Errorf("desired after reopen: got %+v, want l-1 running, l-2 stopped", d)
	}
	if v, _ := jr.Meta("boot_id"); v != "b1" {
		t.Errorf("meta boot_id: got %q, want b1", v)
	}
	if _, err := jr.Job("nope"); !errors.Is(err, ErrJobNotFound) {
		t.Errorf("unknown job: got %v, want ErrJobNotFound", err)
	}
	if n, err := jr.PruneJobs(1); err != nil || n != 1 {
		t.Errorf("PruneJobs(1): got %d, %v, want 1 removed", n, err)
	}
	if s, _ := jr.Steps(jobs[0].ID); len(s) != 0 {
		t.Errorf("pruned job kept %d steps", len(s))
	}
}

func TestJournalIsExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	jr, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	defer jr.Close()
	if _, err := OpenJournal(path); !errors.Is(err, ErrJournalLocked) {
		t.Errorf("second open: got %v, want ErrJournalLocked", err)
	}
}

// A job a dead agent left running is reported interrupted by the next one.
func TestNewMarksRunningJobsInterrupted(t *testing.T) {
	dir := t.TempDir()
	jr, err := OpenJournal(filepath.Join(dir, "journal.db"))
	if err != nil {
		t.Fatal(err)
	}
	id := newJobID(time.Now())
	if err := jr.PutJob(Job{ID: id, Kind: KindStopAll, State: JobRunning, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	jr.Close()
	a, err := New(Config{StateDir: dir}, Deps{Containers: emptyHost(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	j, err := a.Job(id)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != JobInterrupted || j.Finished.IsZero() || j.Error == "" {
		t.Errorf("job after restart: got %+v, want interrupted with a reason", j)
	}
	need, why, err := a.NeedsRecovery()
	if err != nil || !need {
		t.Errorf("NeedsRecovery: got %v, %q, %v; want true", need, why, err)
	}
}
