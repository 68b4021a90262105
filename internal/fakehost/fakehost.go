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

// Script is how one locker behaves on one release (Host.Script); it
// takes the place of the release's Behavior for that locker.
type Script struct {
	Behavior
	// StopFails: its stop fails (it keeps running).
	StopFails bool
	// StopTakes: a stop takes this long (see StartTakes).
	StopTakes time.Duration
	// FailAtCheck: its FailAtCheck-th check after a healthy start fails
	// (0: never); with Dies it exits then, else it stays unhealthy.
	FailAtCheck int
	Dies        bool
	// FailsOnce: only the FailAtCheck-th check fails (it timed out because
	// the checker was frozen through it); the checks after it pass.
	FailsOnce bool
}

// Op is one verb the host ran on a locker, as History reports it.
type Op struct {
	Verb    string // stop, start, check
	Release string // start: the release it started on
	Outcome string // stop and start outcomes; check: "ok" or "failed"
}

type locker struct {
	running bool
	release string
	checks  int // checks passed since its start
	dead    bool
	sick    bool
	failed1 bool    // its FailsOnce check failed
	warm    int     // checks that fail before it turns healthy (Starting)
	script  *Script // for this start's release, if any
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
	// failStart, when set for a locker, fails its start (once per entry).
	failStart map[string]bool
	// SwitchErr fails the next Switch to a release (then it is cleared),
	// after current was renamed (as a full disk does).
	SwitchErr map[string]error
	scripts   map[string]Script // name@release
	history   map[string][]Op
	passed    map[string]bool // not counted down: passed their window (Passed)
	held      map[string]bool // stopped lockers the run starts (WatchHeld)
	late      map[string]bool // failed after they gave their place back (Late)
	limit     int             // K for MaxOver
	maxOver   int
	timed     bool
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
		SwitchErr: map[string]error{}, now: time.Unix(1_700_000_000, 0),
		scripts: map[string]Script{}, history: map[string][]Op{}, passed: map[string]bool{}}
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

// Script sets how locker name behaves on release (over Behave's).
func (h *Host) Script(name, release string, s Script) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.scripts[name+"@"+release] = s
}

// UseTime makes the host's clock the time package's, and starts and
// stops that take time (StartTakes, StopTakes) wait it: under
// testing/synctest that time is virtual, and advances as soon as every
// goroutine of the bubble waits. Call it before a run.
func (h *Host) UseTime() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.timed = true
}

// History lists the verbs the host ran on name, in order.
func (h *Host) History(name string) []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.history[name]...)
}

// WatchHeld counts the named lockers, stopped now, as down because of the
// run until they serve (stopped lockers a plan starts hold places in K),
// and sets K for MaxOver.
func (h *Host) WatchHeld(k int, names ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.limit, h.held = k, map[string]bool{}
	for _, n := range names {
		h.serving[n] = true
		h.held[n] = true
	}
	h.recount()
}

// MaxOver is the most lockers down at once over max(K, held lockers
// still down) since WatchHeld: a run may begin with more stopped lockers
// than K, but takes none down while they hold every place.
func (h *Host) MaxOver() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.maxOver
}

// Passed says that name passed its monitor window, or gave its place in
// K back for the rest of it (a window in the background): until its next
// stop or start, or Late, its being down is the release's doing, not the
// run's (a canary that dies in its soak), and MaxDown does not count it.
func (h *Host) Passed(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.passed[name] = true
}

// Late says that the run saw name fail after it gave its place back (in
// a monitor window in the background): from now on it counts as down
// again while it is down (DownNow), and MaxOver and MaxDown allow one
// more for each such locker down: the run cannot take back a place a
// locker lost on its own; it must take nothing down while the count,
// this one included, is K or more (the property test checks DownNow).
func (h *Host) Late(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.passed, name)
	if h.late == nil {
		h.late = map[string]bool{}
	}
	h.late[name] = true
	h.recount()
}

// DownNow is how many watched lockers are down now (those Passed not
// counted): what a run must see under K before it takes one more down.
func (h *Host) DownNow() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.down
}

func (h *Host) script(name, rel string) Script {
	if s, ok := h.scripts[name+"@"+rel]; ok {
		return s
	}
	return Script{Behavior: h.behave[rel]}
}

// wait lets d pass: on the time package's clock (UseTime), or on the
// host's virtual clock. Called without mu.
func (h *Host) wait(d time.Duration) {
	if d <= 0 {
		return
	}
	h.mu.Lock()
	timed := h.timed
	if !timed {
		h.now = h.now.Add(d)
	}
	h.mu.Unlock()
	if timed {
		time.Sleep(d)
	}
}

func (h *Host) log(name string, op Op) { h.history[name] = append(h.history[name], op) }

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
	h.down, h.maxDown, h.maxOver, h.held, h.late = 0, 0, 0, nil, nil
}

func (h *Host) isServing(l *locker) bool { return l.running && !l.dead && !l.sick && l.warm == 0 }

// recount updates the down count of watched lockers. Called with mu held.
func (h *Host) recount() {
	d, held, late := 0, 0, 0
	for n := range h.serving {
		if !h.passed[n] && !h.isServing(h.lockers[n]) {
			d++
			switch {
			case h.late[n]:
				late++
			case h.held[n]:
				held++
			}
		}
	}
	h.down = d
	h.maxDown = max(h.maxDown, d-late)
	if h.held != nil {
		h.maxOver = max(h.maxOver, d-max(h.limit, held)-late)
	}
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

// Starting puts name on release as a dead agent's start left it:
// running, its first warm checks failing (503) before it turns healthy
// (History then shows a healthy start on release). It is not serving
// until then.
func (h *Host) Starting(name, release string, warm int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.lockers[name] = locker{running: true, release: release, warm: warm}
	out := "starting"
	if warm == 0 {
		out = string(rollout.Started)
	}
	h.log(name, Op{Verb: "start", Release: release, Outcome: out})
	h.recount()
}

// Up reports whether name runs (healthy or not).
func (h *Host) Up(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.lockers[name]
	return l != nil && l.running && !l.dead
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
	l, ok := h.lockers[name]
	var sc Script
	if ok {
		sc = h.script(name, l.release)
	}
	h.mu.Unlock()
	h.wait(sc.StopTakes)
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.passed, name)
	if !ok {
		return rollout.StopFailed, fmt.Errorf("no locker %s", name)
	}
	out := rollout.StoppedClean
	switch {
	case !l.running || l.dead:
		l.running, l.dead = false, false
		out = rollout.AlreadyStopped
	case sc.StopFails:
		h.log(name, Op{Verb: "stop", Outcome: string(rollout.StopFailed)})
		return rollout.StopFailed, fmt.Errorf("%s: lxc-stop failed", name)
	case sc.StopKills:
		out = rollout.StoppedKilled
	}
	l.running = false
	h.recount()
	h.log(name, Op{Verb: "stop", Outcome: string(out)})
	return out, nil
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
	l, ok := h.lockers[name]
	if !ok {
		h.mu.Unlock()
		return rollout.StartFailed, fmt.Errorf("no locker %s", name)
	}
	if l.running && !l.dead {
		h.log(name, Op{Verb: "start", Release: l.release, Outcome: string(rollout.AlreadyRunning)})
		h.mu.Unlock()
		return rollout.AlreadyRunning, nil
	}
	rel := h.current
	sc := h.script(name, rel)
	h.mu.Unlock()
	h.wait(sc.StartTakes)
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.passed, name)
	*l = locker{release: rel, script: &sc}
	if sc.StartFails || h.failStart[name] {
		delete(h.failStart, name)
		h.recount()
		h.log(name, Op{Verb: "start", Release: rel, Outcome: string(rollout.StartFailed)})
		return rollout.StartFailed, fmt.Errorf("%s on %s exited with status 1", name, rel)
	}
	l.running = true
	if sc.NeverHealthy {
		l.sick = true
		h.recount()
		h.log(name, Op{Verb: "start", Release: rel, Outcome: string(rollout.StartUnhealthy)})
		return rollout.StartUnhealthy, fmt.Errorf("%s on %s: not healthy before the deadline", name, rel)
	}
	h.recount()
	h.log(name, Op{Verb: "start", Release: rel, Outcome: string(rollout.Started)})
	return rollout.Started, nil
}

// Check implements rollout.Host.
func (h *Host) Check(ctx context.Context, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.lockers[name]
	if !l.running || l.dead {
		h.log(name, Op{Verb: "check", Outcome: "failed"})
		return fmt.Errorf("%s: %w", name, rollout.ErrNotRunning)
	}
	if l.warm > 0 {
		l.warm--
		h.recount()
		h.log(name, Op{Verb: "warm", Outcome: "failed"})
		return fmt.Errorf("%s: GET /healthz: 503 (starting)", name)
	}
	if l.warm == 0 && len(h.history[name]) > 0 && h.history[name][len(h.history[name])-1].Verb == "warm" {
		h.log(name, Op{Verb: "start", Release: l.release, Outcome: string(rollout.Started)})
	}
	sc := h.script(name, l.release)
	if l.script != nil {
		sc = *l.script
	}
	if (sc.DiesAfter > 0 && l.checks >= sc.DiesAfter) || (sc.FailAtCheck > 0 && sc.Dies && l.checks+1 >= sc.FailAtCheck) {
		l.dead, l.running = true, false
		h.recount()
		h.log(name, Op{Verb: "check", Outcome: "failed"})
		return fmt.Errorf("%s exited: %w", name, rollout.ErrNotRunning)
	}
	if sc.FailsOnce && sc.FailAtCheck > 0 && !l.failed1 && l.checks+1 >= sc.FailAtCheck {
		l.failed1 = true
		h.log(name, Op{Verb: "check", Outcome: "failed"})
		return fmt.Errorf("%s: GET /healthz: context deadline exceeded", name)
	}
	if l.sick || (sc.UnhealthyAfter > 0 && l.checks >= sc.UnhealthyAfter) || (!sc.FailsOnce && sc.FailAtCheck > 0 && l.checks+1 >= sc.FailAtCheck) {
		l.sick = true
		h.recount()
		h.log(name, Op{Verb: "check", Outcome: "failed"})
		return fmt.Errorf("%s: GET /healthz: 503", name)
	}
	l.checks++
	h.log(name, Op{Verb: "check", Outcome: "ok"})
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
	if h.timed {
		return time.Now()
	}
	return h.now
}

// Sleep implements rollout.Clock: virtual time moves on, nothing waits.
func (h *Host) Sleep(ctx context.Context, d time.Duration) error {
	runtime.Gosched()
	if err := ctx.Err(); err != nil {
		return err
	}
	h.mu.Lock()
	if h.timed {
		h.mu.Unlock()
		return rollout.RealClock{}.Sleep(ctx, d)
	}
	h.now = h.now.Add(max(d, 0))
	h.mu.Unlock()
	return nil
}
