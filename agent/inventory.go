package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sync/errgroup"

	"lxcfleet/lxcctl"
)

// Locker is one locker as the API and console show it.
type Locker struct {
	Name           string       `json:"name"`
	State          lxcctl.State `json:"state"`
	InitPID        int          `json:"init_pid,omitempty"`
	StartOrder     int          `json:"start_order"`
	Groups         []string     `json:"groups,omitempty"`
	Port           string       `json:"port,omitempty"`
	Release        string       `json:"release,omitempty"`         // what its init really mounts
	ReleaseDeleted bool         `json:"release_deleted,omitempty"` // its release folder is gone
	ReleaseError   string       `json:"release_error,omitempty"`   // why its release could not be told
	OnCurrent      bool         `json:"on_current"`
	Health         string       `json:"health"` // healthy, starting (failing within its start deadline), unhealthy, unknown, stopped, broken (LXC cannot load it)
	HealthError    string       `json:"health_error,omitempty"`
	HealthAt       time.Time    `json:"health_at,omitzero"`
	StartedAt      time.Time    `json:"started_at,omitzero"`
	Desired        *Desired     `json:"desired,omitempty"`
	// Error says why LXC cannot load the locker's config (state BROKEN,
	// health broken): jobs leave it alone and report it.
	Error string `json:"error,omitempty"`
	// Quarantined says why supervision leaves the locker stopped (it
	// crash-looped alone); "" when it does not.
	Quarantined string `json:"quarantined,omitempty"`
	// Sleeping says the locker was stopped for want of connections and
	// starts when one is pending (its socket held by the host).
	Sleeping bool              `json:"sleeping,omitempty"`
	Env      map[string]string `json:"-"`
}

// inventory keeps a snapshot of every locker, refreshed in the background,
// so that reads (the API, the console, metrics) cost nothing on the host.
type inventory struct {
	a        *Agent
	mu       sync.RWMutex
	lockers  []Locker
	byName   map[string]int
	at       time.Time
	health   map[string]healthMark
	kick     chan struct{}
	interval time.Duration
	gen      uint64 // counts changes of lockers (refreshes, health marks)
	jobSeq   uint64 // the agent's jobSeq when the snapshot's reading began

	// encoded is GET /v1/containers' body for generation encGen: at N=300
	// encoding it took 5 ms of CPU a request, a core at 200 req/s
	// (measured in the benchmark), for an answer that changes every few
	// seconds.
	encMu   sync.Mutex
	encGen  uint64
	encoded []byte
	// etagBase tells this agent's generations from an earlier run's (gen
	// starts again at 0 when the agent restarts).
	etagBase string
}

type healthMark struct {
	ok  bool
	err string
	at  time.Time
	pid int
}

func newInventory(a *Agent, interval time.Duration) *inventory {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	var nonce [6]byte
	_, _ = rand.Read(nonce[:])
	return &inventory{a: a, byName: map[string]int{}, health: map[string]healthMark{}, kick: make(chan struct{}, 1), interval: interval,
		etagBase: hex.EncodeToString(nonce[:])}
}

// refreshSoon asks for a refresh without waiting for it.
func (inv *inventory) refreshSoon() {
	select {
	case inv.kick <- struct{}{}:
	default:
	}
}

// run refreshes the snapshot every interval (and when kicked), and checks
// running lockers' health every healthEvery.
func (inv *inventory) run(ctx context.Context, healthEvery time.Duration) {
	t := time.NewTicker(inv.interval)
	defer t.Stop()
	var lastHealth time.Time
	for {
		if err := inv.refresh(ctx); err != nil && ctx.Err() == nil {
			inv.a.log.Warn("refreshing locker inventory", "err", err)
		} else if err == nil {
			inv.a.sup.tick()
		}
		if healthEvery > 0 && time.Since(lastHealth) >= healthEvery {
			inv.checkHealth(ctx)
			lastHealth = inv.a.deps.Clock.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-inv.kick:
		}
	}
}

// refresh reads every locker's state and release.
func (inv *inventory) refresh(ctx context.Context) error {
	_, err := inv.refreshed(ctx)
	return err
}

// refreshed is refresh returning the lockers it read (a refresh running
// at the same time may already have replaced them in the snapshot).
func (inv *inventory) refreshed(ctx context.Context) ([]Locker, error) {
	seq := inv.a.jobSeq.Load()
	infos, err := inv.a.deps.Containers.Select(ctx, nil, "")
	if err != nil {
		return nil, err
	}
	desired, _ := inv.a.jr.Desired()
	current := inv.a.currentRelease()
	inv.mu.RLock()
	health := inv.health
	inv.mu.RUnlock()
	lockers := make([]Locker, 0, len(infos))
	byName := make(map[string]int, len(infos))
	for _, in := range infos {
		l := Locker{Name: in.Name, State: in.State, InitPID: in.InitPID, StartOrder: in.StartOrder, Groups: in.Groups, Port: in.Env["PORT"], Env: in.Env, Health: "stopped"}
		if d, ok := desired[in.Name]; ok {
			d := d
			l.Desired = &d
		}
		l.Quarantined = inv.a.sup.quarantined(in.Name)
		l.Sleeping = inv.a.sleep.isSleeping(in.Name)
		if in.Broken() {
			l.Health, l.Error = "broken", in.Error
			if old, ok := inv.get(in.Name); !ok || old.Error != in.Error {
				inv.a.log.Warn("LXC cannot load a locker's config: jobs leave it alone and report it", "container", in.Name, "err", in.Error)
			}
		}
		if in.State == lxcctl.StateRunning && in.InitPID > 0 {
			l.StartedAt = procStartTime(in.InitPID)
			if inv.a.deps.ReleaseOf != nil {
				var err error
				l.Release, l.ReleaseDeleted, err = inv.a.deps.ReleaseOf(in.InitPID)
				l.ReleaseError = errString(err)
			}
			l.OnCurrent = current != "" && l.Release == current && !l.ReleaseDeleted
			l.Health = "unknown"
			if h, ok := health[in.Name]; ok && h.pid == in.InitPID {
				l.Health, l.HealthError, l.HealthAt = healthOf(h.ok, l.StartedAt, inv.a.cfg.Defaults.Policy.Deadline), h.err, h.at
			}
		}
		byName[in.Name] = len(lockers)
		lockers = append(lockers, l)
	}
	inv.mu.Lock()
	inv.lockers, inv.byName, inv.at, inv.jobSeq = lockers, byName, inv.a.deps.Clock.Now(), seq
	inv.gen++
	inv.mu.Unlock()
	return lockers, nil
}

// checkHealth runs the configured health check once against each running
// locker, 8 at once.
func (inv *inventory) checkHealth(ctx context.Context) {
	hc, err := lxcctl.ParseHealthCheck(inv.a.cfg.Defaults.Policy.Health)
	if err != nil {
		return
	}
	checker, ok := inv.a.deps.Containers.(interface {
		CheckHealth(ctx context.Context, in lxcctl.Info, hc lxcctl.HealthCheck) error
	})
	if !ok {
		return
	}
	lockers := inv.snapshot()
	marks := map[string]healthMark{}
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(8)
	for _, l := range lockers {
		if l.State != lxcctl.StateRunning {
			continue
		}
		g.Go(func() error {
			err := checker.CheckHealth(ctx, lxcctl.Info{Name: l.Name, State: l.State, Env: l.Env}, hc)
			mu.Lock()
			marks[l.Name] = healthMark{ok: err == nil, err: errString(err), at: inv.a.deps.Clock.Now(), pid: l.InitPID}
			mu.Unlock()
			return nil
		})
	}
	_ = g.Wait()
	inv.mu.Lock()
	inv.health = marks
	inv.gen++
	for i, l := range inv.lockers {
		if h, ok := marks[l.Name]; ok && h.pid == l.InitPID {
			inv.lockers[i].Health, inv.lockers[i].HealthError, inv.lockers[i].HealthAt = healthOf(h.ok, l.StartedAt, inv.a.cfg.Defaults.Policy.Deadline), h.err, h.at
		}
	}
	inv.mu.Unlock()
}

// ReleasesInUse counts, per release, the running lockers of a snapshot that
// use it (a release whose folder is already deleted too). It is the one
// computation of the releases in use: release retention (prune), the API's
// releases and the CLI's status count through it. A running locker whose
// release could not be told makes it return an error naming the locker
// (all joined), with the counts gathered: retention must then delete
// nothing.
func ReleasesInUse(lockers []Locker) (map[string]int, error) {
	inUse := map[string]int{}
	var errs []error
	for _, l := range lockers {
		switch {
		case l.ReleaseError != "":
			errs = append(errs, fmt.Errorf("release of container %q: %s", l.Name, l.ReleaseError))
		case l.Release != "":
			inUse[l.Release]++
		}
	}
	return inUse, errors.Join(errs...)
}

// releasesInUse counts the releases in use in the last refresh (see
// ReleasesInUse).
func (inv *inventory) releasesInUse() (map[string]int, error) {
	return ReleasesInUse(inv.snapshot())
}

// snapshot returns the lockers of the last refresh.
func (inv *inventory) snapshot() []Locker {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	return inv.lockers
}

// snapshotSeq is snapshot with the agent's jobSeq when its reading began.
func (inv *inventory) snapshotSeq() ([]Locker, uint64) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	return inv.lockers, inv.jobSeq
}

// view is one snapshot's lockers by name, when it was refreshed and the
// agent's jobSeq when its reading began.
type view struct {
	byName map[string]Locker
	at     time.Time
	seq    uint64
}

// viewOf returns the lockers named of the last snapshot (those it has) as
// one view.
func (inv *inventory) viewOf(names []string) view {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	v := view{byName: make(map[string]Locker, len(names)), at: inv.at, seq: inv.jobSeq}
	for _, n := range names {
		if i, ok := inv.byName[n]; ok {
			v.byName[n] = inv.lockers[i]
		}
	}
	return v
}

// judgeable reports whether a reading of the host begun at jobSeq seq may
// be acted on now: no mutating job ran while it was taken (an odd seq:
// one was running) and none began or ended since.
func (a *Agent) judgeable(seq uint64) bool { return seq%2 == 0 && !a.jobsMovedSince(seq) }

// encodedAll returns the JSON body of every locker ({"containers": [...],
// "at": ...}) and its entity tag (RFC 9110 8.8.3: a quoted string that
// changes whenever the body does). The body is encoded once per
// generation of the snapshot.
func (inv *inventory) encodedAll() (body []byte, etag string) {
	inv.mu.RLock()
	gen, lockers, at := inv.gen, inv.lockers, inv.at
	inv.encMu.Lock()
	defer inv.encMu.Unlock()
	etag = `"` + inv.etagBase + "-" + strconv.FormatUint(gen, 10) + `"`
	if inv.encoded != nil && inv.encGen == gen {
		inv.mu.RUnlock()
		return inv.encoded, etag
	}
	if lockers == nil {
		lockers = []Locker{}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	_ = enc.Encode(map[string]any{"containers": lockers, "at": at})
	inv.mu.RUnlock()
	inv.encGen, inv.encoded = gen, b.Bytes()
	return inv.encoded, etag
}

// refreshedAt is when the snapshot was last refreshed.
func (inv *inventory) refreshedAt() time.Time {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	return inv.at
}

// RefreshInventory reads every locker's state and release now (Run does it
// in the background; an agent without Run, such as the CLI's --local one,
// calls it before reading lockers).
func (a *Agent) RefreshInventory(ctx context.Context) error { return a.inv.refresh(ctx) }

// get returns one locker of the last refresh.
func (inv *inventory) get(name string) (Locker, bool) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	i, ok := inv.byName[name]
	if !ok {
		return Locker{}, false
	}
	return inv.lockers[i], true
}

// procStartTime is when a process started, to the second (procfs: its
// /proc/<pid>/stat and the host's boot time); zero when it cannot be read.
func procStartTime(pid int) time.Time {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return time.Time{}
	}
	st, err := p.Stat()
	if err != nil {
		return time.Time{}
	}
	boot, err := bootTime()
	if err != nil {
		return time.Time{}
	}
	// procfs' StartTime, without reading /proc/stat again for the boot
	// time at every call (a refresh asks it of every running locker; the
	// read was a quarter of a refresh's CPU at N=300, profiled).
	return time.Unix(int64(float64(boot)+float64(st.Starttime)/userHZ), 0)
}

// userHZ is the kernel's USER_HZ, the unit of /proc/PID/stat's start
// time (100 on every Linux architecture lxcfleet runs on; procfs assumes
// it too).
const userHZ = 100

// bootTime is the host's boot time in seconds since the epoch (/proc/stat's
// btime), read once.
var bootTime = sync.OnceValues(func() (uint64, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return 0, err
	}
	st, err := fs.Stat()
	if err != nil {
		return 0, fmt.Errorf("reading the boot time: %w", err)
	}
	return st.BootTime, nil
})
