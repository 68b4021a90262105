package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"lxcfleet/codeupdate"
)

// fakeCode is a release manager in memory, for the planning logic of the
// update strategies (the real one is tested in codeupdate and end to end).
// It also plays ReleaseOf: a locker's init pid runs the release that was
// current when the agent first asked about that pid.
type fakeCode struct {
	mu       sync.Mutex
	releases []codeupdate.Release // oldest first
	current  string
	pidRel   map[int]string
	history  []codeupdate.Switched
	calls    []string // "build t", "switch r", "mark-bad r"
	buildErr error
	checks   int
}

func newFakeCode(current string) *fakeCode {
	f := &fakeCode{pidRel: map[int]string{}}
	if current != "" {
		f.releases = append(f.releases, codeupdate.Release{Name: current, Build: 1, SHA: "sha-" + current, State: codeupdate.StateGood})
		f.current = current
		f.history = append(f.history, codeupdate.Switched{To: current})
	}
	return f
}

func (f *fakeCode) log(format string, a ...any) { f.calls = append(f.calls, fmt.Sprintf(format, a...)) }

func (f *fakeCode) Lock() (func() error, error) { return func() error { return nil }, nil }

func (f *fakeCode) Build(ctx context.Context, target string, progress func(string)) (codeupdate.Release, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("build %s", target)
	if f.buildErr != nil {
		return codeupdate.Release{}, f.buildErr
	}
	progress("fetching " + target)
	for _, r := range f.releases {
		if r.Name == target {
			return r, nil
		}
	}
	r := codeupdate.Release{Name: target, Build: len(f.releases) + 1, SHA: "sha-" + target, Npm: "reused", State: codeupdate.StateGood, BuildTime: time.Now()}
	f.releases = append(f.releases, r)
	return r, nil
}

func (f *fakeCode) find(name string) (codeupdate.Release, error) {
	for _, r := range f.releases {
		if r.Name == name {
			r.Current = r.Name == f.current
			return r, nil
		}
	}
	return codeupdate.Release{}, fmt.Errorf("release %q not found", name)
}

func (f *fakeCode) Current() (codeupdate.Release, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.current == "" {
		return codeupdate.Release{}, codeupdate.ErrNoCurrent
	}
	return f.find(f.current)
}

func (f *fakeCode) Switch(ctx context.Context, rel codeupdate.Release, reason string) (codeupdate.Release, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("switch %s", rel.Name)
	f.history = append(f.history, codeupdate.Switched{From: f.current, To: rel.Name, Time: time.Now()})
	f.current = rel.Name
	return f.find(rel.Name)
}

func (f *fakeCode) PreviousGood() (codeupdate.Release, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.releases) - 1; i >= 0; i-- {
		r := f.releases[i]
		if r.Name != f.current && r.Good() {
			return r, nil
		}
	}
	return codeupdate.Release{}, fmt.Errorf("no previous good release")
}

func (f *fakeCode) MarkBad(name, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("mark-bad %s", name)
	for i := range f.releases {
		if f.releases[i].Name == name {
			f.releases[i].State, f.releases[i].BadReason = codeupdate.StateBad, reason
		}
	}
	return nil
}

func (f *fakeCode) MarkProven(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("mark-proven %s", name)
	for i := range f.releases {
		if f.releases[i].Name == name {
			f.releases[i].State, f.releases[i].BadReason = codeupdate.StateProven, ""
		}
	}
	return nil
}

func (f *fakeCode) History() ([]codeupdate.Switched, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]codeupdate.Switched(nil), f.history...), nil
}

func (f *fakeCode) Release(name string) (codeupdate.Release, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.find(name)
}

func (f *fakeCode) Releases() ([]codeupdate.Release, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []codeupdate.Release
	for i := len(f.releases) - 1; i >= 0; i-- {
		r, _ := f.find(f.releases[i].Name)
		out = append(out, r)
	}
	return out, nil
}

func (f *fakeCode) CheckUpdate(ctx context.Context, target string) (codeupdate.UpdateInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks++
	return codeupdate.UpdateInfo{Target: target, TargetSHA: "sha-next", CurrentRelease: f.current, Available: true, Behind: 3}, nil
}

func (f *fakeCode) Prune(ctx context.Context, keep int, inUse map[string]int) ([]string, error) {
	return nil, nil
}

// releaseOf is Deps.ReleaseOf for the fake.
func (f *fakeCode) releaseOf(pid int) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := f.pidRel[pid]; ok {
		return r, false, nil
	}
	f.pidRel[pid] = f.current
	return f.current, false, nil
}

func (f *fakeCode) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeCode) state(name string) codeupdate.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, _ := f.find(name)
	return r.State
}

var _ Code = (*fakeCode)(nil)
