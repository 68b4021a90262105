package fakecode

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"lxcfleet/codeupdate"
)

// Head is the build the origin is at for NewBuilds' CheckUpdate: a check is
// as many commits behind as current is builds below it. New's check is
// always 3 commits behind.
const Head = 4

// MainSHA is the commit the origin's main is at for NewBuilds'
// CheckUpdate; the origin knows main and this commit, nothing else.
const MainSHA = "feedface00000000000000000000000000000004"

// Targets of Build with a special meaning for NewBuilds' manager.
const (
	// TargetSlow builds until the context ends.
	TargetSlow = "slow"
	// TargetBroken fails as a failed npm ci does.
	TargetBroken = "broken"
)

// Code is a release manager in memory; its zero value is not usable (see
// New and NewBuilds). Its methods are safe for concurrent use.
type Code struct {
	mu       sync.Mutex
	releases []codeupdate.Release // oldest first
	current  string
	pidRel   map[int]string
	history  []codeupdate.Switched
	buildErr error
	checks   int
	pruned   []map[string]int // the inUse of each Prune

	numbered   bool          // Build makes the next build number, whatever the target
	buildDelay time.Duration // how long a numbered Build takes
}

// New returns a manager whose Build makes a release named by its target;
// current, unless "", is its one release (build 1, good).
func New(current string) *Code {
	c := &Code{pidRel: map[int]string{}}
	if current != "" {
		c.releases = append(c.releases, codeupdate.Release{Name: current, Build: 1, SHA: "sha-" + current, State: codeupdate.StateGood})
		c.current = current
		c.history = append(c.history, codeupdate.Switched{To: current})
	}
	return c
}

// NewBuilds returns a manager with numbered releases of these builds, the
// last one current, whose Build makes the next build number after 400 ms
// (target TargetSlow builds until cancelled, TargetBroken fails).
func NewBuilds(builds ...int) *Code {
	c := &Code{pidRel: map[int]string{}, numbered: true, buildDelay: 400 * time.Millisecond}
	for _, b := range builds {
		c.releases = append(c.releases, numberedRelease(b))
		c.current = c.releases[len(c.releases)-1].Name
		c.history = append(c.history, codeupdate.Switched{To: c.current})
	}
	return c
}

// numberedRelease is the release of build b, with a commit and its details.
func numberedRelease(b int) codeupdate.Release {
	sha := fmt.Sprintf("%02dc0ffee%031x", b, b)
	now := time.Now()
	return codeupdate.Release{
		Name: fmt.Sprintf("%d-%s", b, sha[:12]), Build: b, SHA: sha, Short: sha[:12], Ref: "main",
		Subject: fmt.Sprintf("build %d: faster locker startup", b), CommitTime: now.Add(-time.Hour), BuildTime: now,
		Npm: codeupdate.NpmReused, State: codeupdate.StateGood,
	}
}

// Lock takes the build lock (there is none to take).
func (c *Code) Lock() (func() error, error) { return func() error { return nil }, nil }

// Build returns the release of target when there is one, else makes it
// (see New and NewBuilds); it fails with the error SetBuildErr gave.
func (c *Code) Build(ctx context.Context, target string, progress func(string)) (codeupdate.Release, error) {
	c.mu.Lock()
	err, numbered, delay := c.buildErr, c.numbered, c.buildDelay
	c.mu.Unlock()
	if err != nil {
		return codeupdate.Release{}, err
	}
	progress("fetching " + target)
	if numbered {
		switch target {
		case TargetSlow:
			<-ctx.Done()
			return codeupdate.Release{}, ctx.Err()
		case TargetBroken:
			return codeupdate.Release{}, errors.New("npm ci: exit status 1: npm ERR! missing: left-pad@1.3.0")
		}
		select {
		case <-ctx.Done():
			return codeupdate.Release{}, ctx.Err()
		case <-time.After(delay): // a build takes a while: the console shows its progress
		}
		progress("npm: lockfile unchanged, node_modules reused")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, err := c.find(target); err == nil {
		return r, nil
	}
	r := codeupdate.Release{Name: target, Build: len(c.releases) + 1, SHA: "sha-" + target, Npm: codeupdate.NpmReused, State: codeupdate.StateGood, BuildTime: time.Now()}
	if numbered {
		r = numberedRelease(c.releases[len(c.releases)-1].Build + 1)
	}
	c.releases = append(c.releases, r)
	return r, nil
}

// find returns the release with that name or build number, with Current
// set; c.mu is held.
func (c *Code) find(name string) (codeupdate.Release, error) {
	build, _ := strconv.Atoi(name)
	for _, r := range c.releases {
		if r.Name == name || build > 0 && r.Build == build {
			r.Current = r.Name == c.current
			return r, nil
		}
	}
	return codeupdate.Release{}, fmt.Errorf("release %q: %w", name, codeupdate.ErrNoRelease)
}

// Current returns the current release; the error wraps
// codeupdate.ErrNoCurrent when there is none.
func (c *Code) Current() (codeupdate.Release, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current == "" {
		return codeupdate.Release{}, codeupdate.ErrNoCurrent
	}
	return c.find(c.current)
}

// Switch points current at rel and records the switch.
func (c *Code) Switch(ctx context.Context, rel codeupdate.Release, reason string) (codeupdate.Release, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.history = append(c.history, codeupdate.Switched{From: c.current, To: rel.Name, Time: time.Now()})
	c.current = rel.Name
	return c.find(rel.Name)
}

// PreviousGood returns the newest release before current not marked bad.
func (c *Code) PreviousGood() (codeupdate.Release, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.releases) - 1; i >= 0; i-- {
		if r := c.releases[i]; r.Name != c.current && r.Good() {
			return r, nil
		}
	}
	return codeupdate.Release{}, errors.New("no previous good release")
}

// mark sets a release's state and reason.
func (c *Code) mark(name string, st codeupdate.State, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.releases {
		if c.releases[i].Name == name {
			c.releases[i].State, c.releases[i].BadReason = st, reason
		}
	}
}

// MarkBad marks a release bad.
func (c *Code) MarkBad(name, reason string) error {
	c.mark(name, codeupdate.StateBad, reason)
	return nil
}

// MarkProven marks a release proven.
func (c *Code) MarkProven(name string) error {
	c.mark(name, codeupdate.StateProven, "")
	return nil
}

// History lists every switch of current, oldest first.
func (c *Code) History() ([]codeupdate.Switched, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]codeupdate.Switched(nil), c.history...), nil
}

// Release returns the release with that name or build number.
func (c *Code) Release(name string) (codeupdate.Release, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.find(name)
}

// Releases lists the releases, newest first (as codeupdate.Manager does).
func (c *Code) Releases() ([]codeupdate.Release, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]codeupdate.Release, 0, len(c.releases))
	for i := len(c.releases) - 1; i >= 0; i-- {
		r, _ := c.find(c.releases[i].Name)
		out = append(out, r)
	}
	return out, nil
}

// CheckUpdate says how far current is behind the origin (see Head), and
// counts the checks (Checks).
func (c *Code) CheckUpdate(ctx context.Context, target string) (codeupdate.UpdateInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks++
	if !c.numbered {
		return codeupdate.UpdateInfo{Target: target, TargetSHA: "sha-next", CurrentRelease: c.current, Available: true, Behind: 3}, nil
	}
	if target != "main" && target != MainSHA {
		return codeupdate.UpdateInfo{}, fmt.Errorf("resolving %q on the origin: %w", target, codeupdate.ErrUnknownTarget)
	}
	cur, _ := c.find(c.current)
	behind := max(Head-cur.Build, 0)
	u := codeupdate.UpdateInfo{Target: target, CurrentRelease: c.current, CurrentSHA: cur.SHA, Available: behind > 0, Behind: behind}
	commits := []codeupdate.Commit{{SHA: "feedface00", Subject: "locker: retry the owner sync"}, {SHA: "beadbead00", Subject: "config: new default theme"}}
	u.TargetSHA, u.Commits, u.ChangedFiles, u.TargetBuild = MainSHA, commits[:min(behind, len(commits))], 3, Head
	for _, r := range c.releases {
		if r.Build == Head {
			u.TargetRelease, u.TargetBuilt, u.TargetBad = r.Name, true, r.State == codeupdate.StateBad
		}
	}
	return u, nil
}

// Prune removes nothing; it records the releases in use it was given
// (Pruned).
func (c *Code) Prune(ctx context.Context, keep int, inUse map[string]int) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruned = append(c.pruned, maps.Clone(inUse))
	return nil, nil
}

// Pruned returns the releases in use given to each Prune so far.
func (c *Code) Pruned() []map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.pruned)
}

// ReleaseOf is the agent's Deps.ReleaseOf: the release pid runs, the one
// current when pid was first asked about unless Pin said another.
func (c *Code) ReleaseOf(pid int) (string, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.pidRel[pid]; ok {
		return r, false, nil
	}
	c.pidRel[pid] = c.current
	return c.current, false, nil
}

// Pin says that pid runs release name.
func (c *Code) Pin(pid int, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pidRel[pid] = name
}

// Add adds a release as the newest.
func (c *Code) Add(r codeupdate.Release) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.releases = append(c.releases, r)
}

// AddBadHead adds the origin's head build (Head) as a release marked bad,
// as a failed update leaves it.
func (c *Code) AddBadHead() {
	r := numberedRelease(Head)
	r.State, r.BadReason = codeupdate.StateBad, "3 of 4 lockers failed their health check"
	c.Add(r)
}

// SetCurrent points current at name without recording a switch (a test's
// setup of a host as a dead agent left it).
func (c *Code) SetCurrent(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.current = name
}

// SetBuildErr makes every Build fail with err (nil: build again).
func (c *Code) SetBuildErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buildErr = err
}

// Checks counts the update checks so far.
func (c *Code) Checks() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks
}

// State returns a release's state ("" when there is no such release).
func (c *Code) State(name string) codeupdate.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, _ := c.find(name)
	return r.State
}

// Nth returns the i-th release, oldest first.
func (c *Code) Nth(i int) codeupdate.Release {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, _ := c.find(c.releases[i].Name)
	return r
}
