package agent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"lxcfleet/internal/atomicfile"
)

// The journal's buckets.
var (
	bucketJobs    = []byte("jobs")    // job id -> Job
	bucketSteps   = []byte("steps")   // job id -> (seq -> Step)
	bucketDesired = []byte("desired") // container -> Desired
	bucketMeta    = []byte("meta")    // key -> value
)

// ErrJournalLocked is returned when another process (a running agent, or a
// --local run) holds the journal.
var ErrJournalLocked = errors.New("journal is locked by another lxcfleet process (is the agent running? use it, or stop it first)")

// ErrJobNotFound is returned for an unknown job id.
var ErrJobNotFound = errors.New("job not found")

// Journal is the agent's durable record: jobs, each job's steps (written
// before and after each step runs), and every locker's desired state. It is
// a bbolt file; every write is an fsync'd transaction, and only one process
// can hold it at a time.
//
// The desired state is also kept in desired.json beside the journal (an
// atomic rewrite on every change), so that it survives a lost journal.
type Journal struct {
	db          *bolt.DB
	path        string
	desiredPath string
	lost        string // why the journal found at open was set aside
	aside       string // where it went
}

// DesiredFile is the name of the copy of the desired state kept beside the
// journal.
const DesiredFile = "desired.json"

// OpenJournal opens (creating if needed) the journal at path. It fails with
// ErrJournalLocked when another process holds it.
//
// It never panics on a bad file: a journal that is empty (0 bytes), cut
// short, or garbled is moved aside (to path.lost-TIME) and a new one is
// made, seeded with the desired state of desired.json; Lost then says why.
// The caller should log that and drive the lockers back to their desired
// state.
func OpenJournal(path string) (*Journal, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating journal folder: %w", err)
	}
	jr := &Journal{path: path, desiredPath: filepath.Join(dir, DesiredFile)}
	fresh := false
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fresh = true
	case err != nil:
		return nil, fmt.Errorf("opening journal %s: %w", path, err)
	case fi.Size() == 0:
		jr.lost = "it is empty (0 bytes: its writes never reached the disk)"
	}
	var db *bolt.DB
	if jr.lost == "" {
		db, err = openChecked(path)
		var ce corruptError
		switch {
		case errors.Is(err, bolt.ErrTimeout):
			return nil, fmt.Errorf("opening journal %s: %w", path, ErrJournalLocked)
		case errors.As(err, &ce):
			jr.lost = ce.Error()
		case err != nil:
			return nil, fmt.Errorf("opening journal %s: %w", path, err)
		}
	}
	if jr.lost != "" {
		jr.aside = fmt.Sprintf("%s.lost-%s", path, time.Now().UTC().Format("20060102T150405Z"))
		if err := os.Rename(path, jr.aside); err != nil {
			return nil, fmt.Errorf("moving the unreadable journal %s aside (%s): %w", path, jr.lost, err)
		}
		if err := atomicfile.SyncDir(dir); err != nil {
			return nil, fmt.Errorf("moving the unreadable journal %s aside: %w", path, err)
		}
		db, err = openChecked(path)
		if err != nil {
			return nil, fmt.Errorf("making a new journal %s: %w", path, err)
		}
		fresh = true
	}
	jr.db = db
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketJobs, bucketSteps, bucketDesired, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if fresh {
			if err := jr.importDesired(tx); err != nil {
				return err
			}
		}
		if jr.lost != "" {
			if err := tx.Bucket(bucketMeta).Put([]byte(metaLost), []byte(jr.lostMessage())); err != nil {
				return err
			}
		}
		// The journal is the truth while it is readable: bring the copy in line.
		return jr.writeDesired(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising journal %s: %w", path, err)
	}
	return jr, nil
}

// metaLost holds, until a recovery clears it, why the previous journal was
// set aside.
const metaLost = "journal_lost"

// Lost says why the journal found at open could not be used and where it
// was moved ("" when it was fine or new).
func (j *Journal) Lost() string {
	if j.lost == "" {
		return ""
	}
	return j.lostMessage()
}

func (j *Journal) lostMessage() string {
	return fmt.Sprintf("journal %s could not be read (%s); it was moved to %s and a new one made with the desired state of %s",
		j.path, j.lost, j.aside, j.desiredPath)
}

// LostPending returns the message of a lost journal whose lockers have not
// been driven back to their desired state yet ("" when none).
func (j *Journal) LostPending() (string, error) { return j.Meta(metaLost) }

// ClearLost records that the lockers of a lost journal were recovered.
func (j *Journal) ClearLost() error {
	return j.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete([]byte(metaLost)) })
}

// corruptError says a journal file cannot be used.
type corruptError struct{ reason string }

func (e corruptError) Error() string { return e.reason }

// openChecked opens a bbolt file and reads every record in it, turning the
// panics and memory faults bbolt raises on some corrupt files ("invalid
// freelist page", "page expected to be", a fault past the end of a cut file)
// into a corruptError.
func openChecked(path string) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			// A db whose open or read panicked cannot be closed safely: its
			// file descriptor (and lock) is left to the process's end.
			db, err = nil, corruptError{fmt.Sprintf("it is corrupt: %v", p)}
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) || isFSError(err) {
			return nil, err
		}
		return nil, corruptError{fmt.Sprintf("it is corrupt: %v", err)}
	}
	if err := db.View(readAll); err != nil {
		db.Close()
		return nil, corruptError{fmt.Sprintf("it is corrupt: %v", err)}
	}
	return db, nil
}

// readAll reads and decodes every record: a journal whose pages or values
// are garbled fails here rather than in a later job.
func readAll(tx *bolt.Tx) error {
	decode := func(bucket string) func(k, v []byte) error {
		return func(k, v []byte) error {
			if v == nil {
				return nil
			}
			if !json.Valid(v) {
				return fmt.Errorf("record %q of %s is not JSON", k, bucket)
			}
			return nil
		}
	}
	for _, name := range [][]byte{bucketJobs, bucketDesired} {
		if b := tx.Bucket(name); b != nil {
			if err := b.ForEach(decode(string(name))); err != nil {
				return err
			}
		}
	}
	if b := tx.Bucket(bucketMeta); b != nil {
		if err := b.ForEach(func(k, v []byte) error { return nil }); err != nil {
			return err
		}
	}
	if b := tx.Bucket(bucketSteps); b != nil {
		return b.ForEach(func(k, v []byte) error {
			jb := b.Bucket(k)
			if jb == nil {
				return fmt.Errorf("steps of job %q are not a bucket", k)
			}
			return jb.ForEach(decode("steps of job " + string(k)))
		})
	}
	return nil
}

// isFSError tells errors of the file system (permissions, a full disk)
// from a bad file.
func isFSError(err error) bool {
	var pe *fs.PathError
	var errno syscall.Errno
	return errors.As(err, &pe) || errors.As(err, &errno)
}

// importDesired seeds a new journal's desired state from desired.json.
func (j *Journal) importDesired(tx *bolt.Tx) error {
	b, err := os.ReadFile(j.desiredPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading desired state %s: %w", j.desiredPath, err)
	}
	var m map[string]Desired
	if err := json.Unmarshal(b, &m); err != nil {
		// A bad copy is no reason not to start: the journal is the truth.
		return nil
	}
	bk := tx.Bucket(bucketDesired)
	for name, d := range m {
		v, err := json.Marshal(d)
		if err != nil {
			return err
		}
		if err := bk.Put([]byte(name), v); err != nil {
			return err
		}
	}
	return nil
}

// writeDesired rewrites desired.json from the journal's desired state.
func (j *Journal) writeDesired(tx *bolt.Tx) error {
	m := map[string]json.RawMessage{}
	err := tx.Bucket(bucketDesired).ForEach(func(k, v []byte) error {
		m[string(k)] = append(json.RawMessage(nil), v...)
		return nil
	})
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(j.desiredPath, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing desired state %s: %w", j.desiredPath, err)
	}
	return nil
}

// Close closes the journal.
func (j *Journal) Close() error { return j.db.Close() }

// PutJob writes a job record.
func (j *Journal) PutJob(job Job) error {
	b, err := json.Marshal(job)
	if err != nil {
		return err
	}
	return j.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).Put([]byte(job.ID), b)
	})
}

// Job reads one job.
func (j *Journal) Job(id string) (Job, error) {
	var job Job
	err := j.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJobs).Get([]byte(id))
		if b == nil {
			return fmt.Errorf("job %q: %w", id, ErrJobNotFound)
		}
		return json.Unmarshal(b, &job)
	})
	return job, err
}

// Jobs returns up to limit jobs, newest first (all when limit <= 0).
func (j *Journal) Jobs(limit int) ([]Job, error) {
	var jobs []Job
	err := j.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketJobs).Cursor()
		// Job ids sort by creation time, so walk backwards.
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var job Job
			if err := json.Unmarshal(v, &job); err != nil {
				return fmt.Errorf("decoding job %s: %w", k, err)
			}
			jobs = append(jobs, job)
			if limit > 0 && len(jobs) >= limit {
				break
			}
		}
		return nil
	})
	return jobs, err
}

// AddStep appends a step record to a job, in a transaction of its own,
// fsync'd before it returns (a stop's begin must be on disk before the
// stop: recovery reads it). Not bbolt's Batch: a job's steps come from
// one loop, one at a time, and Batch holds a lone caller for its
// MaxBatchDelay (10 ms) waiting for others, so every event of a job cost
// its loop 11-12 ms where a commit alone costs 0.7-0.9 ms (measured on
// this VM's disk, 50 writes each; README "The journal's cost per event").
func (j *Journal) AddStep(jobID string, s Step) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return j.db.Update(func(tx *bolt.Tx) error {
		jb, err := tx.Bucket(bucketSteps).CreateBucketIfNotExists([]byte(jobID))
		if err != nil {
			return err
		}
		seq, err := jb.NextSequence()
		if err != nil {
			return err
		}
		return jb.Put(u64(seq), b)
	})
}

// Steps returns a job's steps in the order they were written.
func (j *Journal) Steps(jobID string) ([]Step, error) {
	var steps []Step
	err := j.db.View(func(tx *bolt.Tx) error {
		jb := tx.Bucket(bucketSteps).Bucket([]byte(jobID))
		if jb == nil {
			return nil
		}
		return jb.ForEach(func(_, v []byte) error {
			var s Step
			if err := json.Unmarshal(v, &s); err != nil {
				return err
			}
			steps = append(steps, s)
			return nil
		})
	})
	return steps, err
}

// Desired is the state the agent keeps a locker in.
type Desired struct {
	Running bool      `json:"running"`
	JobID   string    `json:"job_id,omitempty"` // the job that set it
	Since   time.Time `json:"since"`
}

// SetDesired records the desired state of containers in one transaction.
func (j *Journal) SetDesired(names []string, d Desired) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return j.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketDesired)
		for _, n := range names {
			if err := bk.Put([]byte(n), b); err != nil {
				return err
			}
		}
		return j.writeDesired(tx)
	})
}

// Desired returns the desired state of every container the agent knows.
func (j *Journal) Desired() (map[string]Desired, error) {
	out := map[string]Desired{}
	err := j.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDesired).ForEach(func(k, v []byte) error {
			var d Desired
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			out[string(k)] = d
			return nil
		})
	})
	return out, err
}

// Meta reads a small value ("" when unset).
func (j *Journal) Meta(key string) (string, error) {
	var v string
	err := j.db.View(func(tx *bolt.Tx) error {
		v = string(tx.Bucket(bucketMeta).Get([]byte(key)))
		return nil
	})
	return v, err
}

// SetMeta writes a small value.
func (j *Journal) SetMeta(key, value string) error {
	return j.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put([]byte(key), []byte(value))
	})
}

// DeleteJob removes one job and its steps (a scheduled check with no news).
func (j *Journal) DeleteJob(id string) error {
	return j.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketJobs).Delete([]byte(id)); err != nil {
			return err
		}
		if tx.Bucket(bucketSteps).Bucket([]byte(id)) != nil {
			return tx.Bucket(bucketSteps).DeleteBucket([]byte(id))
		}
		return nil
	})
}

// PruneJobs keeps the newest keep jobs and their steps.
func (j *Journal) PruneJobs(keep int) (int, error) {
	removed := 0
	err := j.db.Update(func(tx *bolt.Tx) error {
		var ids []string
		_ = tx.Bucket(bucketJobs).ForEach(func(k, _ []byte) error {
			ids = append(ids, string(k))
			return nil
		})
		sort.Strings(ids)
		if len(ids) <= keep {
			return nil
		}
		for _, id := range ids[:len(ids)-keep] {
			if err := tx.Bucket(bucketJobs).Delete([]byte(id)); err != nil {
				return err
			}
			if tx.Bucket(bucketSteps).Bucket([]byte(id)) != nil {
				if err := tx.Bucket(bucketSteps).DeleteBucket([]byte(id)); err != nil {
					return err
				}
			}
			removed++
		}
		return nil
	})
	return removed, err
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}
