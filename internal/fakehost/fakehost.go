package fakehost

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"

	"lxcfleet/rollout"
)

// Behavior is how lockers on one release behave.
type Behavior struct {
	// StartFails: the start fails (the app exits at once).
	StartFails bool
	// NeverHealthy: it runs but never passes a check (start → unhealthy).
	NeverHealthy bool
	// DiesAfter: it stops after this many checks that passed (0: never).
	DiesAfter int
	// UnhealthyAfter: its checks fail after this many passed (0: never).
	UnhealthyAfter int
	// StopKills: the halt signal is ignored; stops end in a kill.
	StopKills bool
	// StartTakes: a start moves the virtual clock on by this much (a slow
	// start, for the adaptive pacer); 0: starts take no time.
	StartTakes time.Duration
}

type locker struct {
	running bool
	release string
	checks  int // checks passed since its start
	dead    bool
	sick    bool
}

// Host is the fake. Its zero value is not usable: call New.
type Host struct {
	mu       sync.Mutex
	lockers  map[string]*locker
	behave   map[string]Behavior
	current  string
	bad      map[string]string
	proven   map[string]bool
	switches []string
	serving  map[string]bool // lockers serving when Watch was called
	down     int
	maxDown  int
	now      time.Time
	// StartErr, when set for a locker, fails its start (once per entry).
	failStart map[string]bool
	// SwitchErr fails the next Switch to a release (then it is cleared),
	// after current was renamed (as a full disk does).
	SwitchErr map[string]error
	// BeforeStart and BeforeStop, when set (before a run), are called at
	// the top of every Start and Stop, outside the host's lock: a test
	// can block there to force an interleaving. nil: nothing is called.
	BeforeStart, BeforeStop func(name string)
}

// New returns a host with current on release cur and the named lockers
// running on it.
func New(cur string, names ...string) *Host {
	h := &Host{lockers: map[string]*locker{}, behave: map[string]Behavior{}, current: cur,
		bad: map[string]string{}, proven: map[string]bool{}, failStart: map[string]bool{},
		SwitchErr: map[string]error{}, now: time.Unix(1_700_000_000, 0)}
	for _, n := range names {
		h.lockers[n] = &locker{running: true, release: cur}
	}
	h.proven[cur] = true
	h.Watch()
	return h
}

// Names returns n locker names l00, l01, ...
func Names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("l%02d", i)
	}
	return out
}

// Behave sets how lockers on release behave.
func (h *Host) Behave(release string, b Behavior) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.behave[release] = b
}

// SetStopped stops lockers without counting them as down because of a run.
func (h *Host) SetStopped(names ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range names {
		h.lockers[n].running = false
		delete(h.serving, n)
	}
	h.recount()
}

// Watch starts measuring: the lockers serving now are those whose
// downtime counts; MaxDown is reset.
func (h *Host) Watch() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.serving = map[string]bool{}
	for n, l := range h.lockers {
		if h.isServing(l) {
			h.serving[n] = true
		}
	}
	h.down, h.maxDown = 0, 0
}

func (h *Host) isServing(l *locker) bool { return l.running && !l.dead && !l.sick }

// recount updates the down count of watched lockers. Called with mu held.
func (h *Host) recount() {
	d := 0
	for n := range h.serving {
		if !h.isServing(h.lockers[n]) {
			d++
		}
	}
	h.down = d
	h.maxDown = max(h.maxDown, d)
}

// MaxDown is the most watched lockers down at once since Watch.
func (h *Host) MaxDown() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.maxDown
}

// CurrentRelease implements rollout.Releases' Current.
func (h *Host) CurrentRelease() (string, error) { return h.Current(), nil }

// Current is where current points.
func (h *Host) Current() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.current
}

// Bad reports whether release was marked bad.
func (h *Host) Bad(release string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.bad[release]
	return ok
}

// Proven reports whether release was marked proven (and not bad since).
func (h *Host) Proven(release string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, bad := h.bad[release]
	return h.proven[release] && !bad
}

// Switches lists every switch of current, in order.
func (h *Host) Switches() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.switches...)
}

// Where returns each running locker's release ("" for stopped ones).
func (h *Host) Where() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]string{}
	for n, l := range h.lockers {
		if h.isServing(l) {
			out[n] = l.release
		} else {
			out[n] = ""
		}
	}
	return out
}

// Serving counts lockers running healthy on release.
func (h *Host) Serving(release string) int {
	n := 0
	for _, r := range h.Where() {
		if r == release {
			n++
		}
	}
	return n
}

// Running lists running lockers, sorted.
func (h *Host) Running() []string {
	var out []string
	for n, r := range h.Where() {
		if r != "" {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Lockers describes the lockers for the planners, in name order, each
// wanting to run when want is nil or want[name].
func (h *Host) Lockers(want map[string]bool) []rollout.Locker {
	h.mu.Lock()
	defer h.mu.Unlock()
	var names []string
	for n := range h.lockers {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]rollout.Locker, len(names))
	for i, n := range names {
		l := h.lockers[n]
		w := want == nil || want[n]
		out[i] = rollout.Locker{Name: n, Running: l.running && !l.dead, WantRunning: w}
		if out[i].Running {
			out[i].Release = l.release
		}
	}
	return out
}

// Stop implements rollout.Host.
func (h *Host) Stop(ctx context.Context, name string, timeout time.Duration) (rollout.StopOutcome, error) {
	if h.BeforeStop != nil {
		h.BeforeStop(name)
	}
	runtime.Gosched()
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.lockers[name]
	if !ok {
		return rollout.StopFailed, fmt.Errorf("no locker %s", name)
	}
	if !l.running || l.dead {
		l.running, l.dead = false, false
		h.recount()
		return rollout.AlreadyStopped, nil
	}
	l.running = false
	h.recount()
	if h.behave[l.release].StopKills {
		return rollout.StoppedKilled, nil
	}
	return rollout.StoppedClean, nil
}

// FailNextStart makes name's next start fail.
func (h *Host) FailNextStart(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failStart[name] = true
}

// Start implements rollout.Host: the locker starts on current.
func (h *Host) Start(ctx context.Context, name string, deadline time.Duration) (rollout.StartOutcome, error) {
	if h.BeforeStart != nil {
		h.BeforeStart(name)
	}
	runtime.Gosched()
	if err := ctx.Err(); err != nil {
		return rollout.StartFailed, fmt.Errorf("starting %s: %w", name, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.lockers[name]
	if !ok {
		return rollout.StartFailed, fmt.Errorf("no locker %s", name)
	}
	if l.running && !l.dead {
		return rollout.AlreadyRunning, nil
	}
	rel := h.current
	b := h.behave[rel]
	h.now = h.now.Add(b.StartTakes)
	*l = locker{release: rel}
	if b.StartFails || h.failStart[name] {
		delete(h.failStart, name)
		h.recount()
		return rollout.StartFailed, fmt.Errorf("%s on %s exited with status 1", name, rel)
	}
	l.running = true
	if b.NeverHealthy {
		l.sick = true
		h.recount()
		return rollout.StartUnhealthy, fmt.Errorf("%s on %s: not healthy before the deadline", name, rel)
	}
	h.recount()
	return rollout.Started, nil
}

// Check implements rollout.Host.
func (h *Host) Check(ctx context.Context, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.lockers[name]
	if !l.running || l.dead {
		return fmt.Errorf("%s: %w", name, rollout.ErrNotRunning)
	}
	b := h.behave[l.release]
	if b.DiesAfter > 0 && l.checks >= b.DiesAfter {
		l.dead, l.running = true, false
		h.recount()
		return fmt.Errorf("%s exited: %w", name, rollout.ErrNotRunning)
	}
	if l.sick || (b.UnhealthyAfter > 0 && l.checks >= b.UnhealthyAfter) {
		l.sick = true
		h.recount()
		return fmt.Errorf("%s: GET /healthz: 503", name)
	}
	l.checks++
	return nil
}

// Switch implements rollout.Releases.
func (h *Host) Switch(ctx context.Context, release, reason string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.current = release
	h.switches = append(h.switches, release)
	if err := h.SwitchErr[release]; err != nil {
		delete(h.SwitchErr, release)
		return err
	}
	return nil
}

// MarkBad implements rollout.Releases.
func (h *Host) MarkBad(release, reason string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bad[release] = reason
	return nil
}

// MarkProven implements rollout.Releases.
func (h *Host) MarkProven(release string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.proven[release] = true
	return nil
}

// Facts returns the release facts for the planners with fallback lastGood.
func (h *Host) Facts(lastGood string) rollout.ReleaseFacts {
	return rollout.ReleaseFacts{Current: h.Current(), CurrentProven: h.Proven(h.Current()), LastGood: lastGood}
}

// Now implements rollout.Clock (virtual time).
func (h *Host) Now() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.now
}

// Sleep implements rollout.Clock: virtual time moves on, nothing waits.
func (h *Host) Sleep(ctx context.Context, d time.Duration) error {
	runtime.Gosched()
	if err := ctx.Err(); err != nil {
		return err
	}
	h.mu.Lock()
	h.now = h.now.Add(max(d, 0))
	h.mu.Unlock()
	return nil
}
