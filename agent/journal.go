package agent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
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
type Journal struct {
	db *bolt.DB
}

// OpenJournal opens (creating if needed) the journal at path. It fails with
// ErrJournalLocked when another process holds it.
func OpenJournal(path string) (*Journal, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating journal folder: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 200 * time.Millisecond})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("opening journal %s: %w", path, ErrJournalLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("opening journal %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketJobs, bucketSteps, bucketDesired, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising journal %s: %w", path, err)
	}
	return &Journal{db: db}, nil
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

// AddStep appends a step record to a job. Concurrent calls are batched into
// one fsync'd transaction.
func (j *Journal) AddStep(jobID string, s Step) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return j.db.Batch(func(tx *bolt.Tx) error {
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
		return nil
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
