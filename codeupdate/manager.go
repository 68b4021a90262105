package codeupdate

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// ErrUnknownTarget means a target is not a branch, tag or commit of the
// origin.
var ErrUnknownTarget = errors.New("unknown target")

// ErrNoPreviousGood means no good release was current before the present
// one.
var ErrNoPreviousGood = errors.New("no previous good release")

// ErrNoRelease means a release name does not name a complete release.
var ErrNoRelease = errors.New("no such release")

// Options configures a Manager. Zero values take the defaults named.
type Options struct {
	Root       string        // layout root: repo.git/, releases/, current (symlink), BUILD, history
	Origin     string        // URL or local path of the app's git origin (any URL go-git supports)
	Npm        string        // npm binary (default "npm")
	NpmTimeout time.Duration // one build's npm and root install scripts together; default 10m
	// NpmCache is the npm cache every build shares (default Root/npm-cache).
	// Builds take packages from it first (npm's prefer-offline).
	NpmCache string
	// NpmRegistry is the registry npm fetches from (npm's registry
	// config, overriding .npmrc files); empty: npm's own configuration.
	NpmRegistry string
	// Target is the branch or tag updates use by default (the agent's
	// defaults.target); Prune keeps its newest good release. Empty: none.
	Target string
	// FetchStallTimeout ends a fetch that makes no progress (no byte of
	// pack data, no progress message from the origin) for this long;
	// default 60s. It is npm's fetch-timeout too: a request the npm
	// registry does not answer within it fails the build
	// (ErrRegistryUnreachable).
	FetchStallTimeout time.Duration
	// FetchTimeout ends any fetch that takes longer; default 15m.
	FetchTimeout time.Duration
	// MaxPacks is how many pack files the mirror may hold before a fetch
	// repacks it into one; default 32.
	MaxPacks int
	Logger   *slog.Logger
}

// Manager builds, switches, lists and prunes the releases under one root.
// Its methods are safe for concurrent use; Lock serialises whole updates
// across processes.
type Manager struct {
	root       string
	origin     string
	npm        string
	node       string
	npmTimeout time.Duration
	npmCache   string
	registry   string
	target     string
	stall      time.Duration
	fetchMax   time.Duration
	maxPacks   int
	log        *slog.Logger

	toolMu sync.Mutex
	tools  map[string]string // toolID -> version

	mirrorMu sync.Mutex // guards repo.git within the process (with repo.lock across processes)
	stateMu  sync.Mutex // guards history, marks, BUILD and current within the process
}

// New returns a Manager for opts. It creates Root and Root/releases if they
// are missing; the mirror is made on the first Build or CheckUpdate.
func New(opts Options) (*Manager, error) {
	if opts.Root == "" {
		return nil, errors.New("codeupdate: Options.Root is empty")
	}
	if opts.Origin == "" {
		return nil, errors.New("codeupdate: Options.Origin is empty")
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("resolving root %s: %w", opts.Root, err)
	}
	m := &Manager{
		root:       root,
		origin:     opts.Origin,
		npm:        opts.Npm,
		npmTimeout: opts.NpmTimeout,
		npmCache:   opts.NpmCache,
		registry:   opts.NpmRegistry,
		target:     opts.Target,
		stall:      opts.FetchStallTimeout,
		fetchMax:   opts.FetchTimeout,
		maxPacks:   opts.MaxPacks,
		log:        opts.Logger,
	}
	if m.npmCache == "" {
		m.npmCache = filepath.Join(root, "npm-cache")
	}
	if m.stall <= 0 {
		m.stall = 60 * time.Second
	}
	if m.fetchMax <= 0 {
		m.fetchMax = 15 * time.Minute
	}
	if m.maxPacks <= 0 {
		m.maxPacks = 32
	}
	if m.npm == "" {
		m.npm = "npm"
	}
	m.node = "node"
	if strings.ContainsRune(m.npm, '/') {
		if p := filepath.Join(filepath.Dir(m.npm), "node"); isFile(p) {
			m.node = p
		}
	}
	if m.npmTimeout <= 0 {
		m.npmTimeout = 10 * time.Minute
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.log = m.log.With("component", "codeupdate")
	if err := os.MkdirAll(m.releasesDir(), 0o755); err != nil {
		return nil, fmt.Errorf("creating releases folder: %w", err)
	}
	installTransports()
	m.removeLeftovers()
	return m, nil
}

// Root is the layout root the Manager works in.
func (m *Manager) Root() string { return m.root }

// Origin is the URL or path the mirror fetches from.
func (m *Manager) Origin() string { return m.origin }

func (m *Manager) releasesDir() string { return filepath.Join(m.root, "releases") }
func (m *Manager) currentLink() string { return filepath.Join(m.root, "current") }
func (m *Manager) mirrorDir() string   { return filepath.Join(m.root, "repo.git") }
func (m *Manager) historyFile() string { return filepath.Join(m.root, "history") }
func (m *Manager) marksFile() string   { return filepath.Join(m.root, "marks") }
func (m *Manager) buildLine() string   { return filepath.Join(m.root, "BUILD") }
func (m *Manager) releaseDir(n string) string {
	return filepath.Join(m.releasesDir(), n)
}

// buildFile is the content of a release's BUILD.json: the release record
// without the host's view of it, and the origin it was built from (a file
// for a human; the API does not show the origin, which may carry
// credentials).
type buildFile struct {
	Release
	Origin string `json:"origin,omitempty"`
}

// validName reports whether name can be a release folder name.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.HasPrefix(name, ".") &&
		!strings.ContainsAny(name, "/\\\x00")
}

// readRelease reads one release folder without marks or current.
func (m *Manager) readRelease(name string) (Release, error) {
	if !validName(name) {
		return Release{}, fmt.Errorf("release %q: %w", name, ErrNoRelease)
	}
	dir := m.releaseDir(name)
	b, err := os.ReadFile(filepath.Join(dir, "BUILD.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return Release{}, fmt.Errorf("release %q: %w", name, ErrNoRelease)
	}
	if err != nil {
		return Release{}, fmt.Errorf("reading release %s: %w", name, err)
	}
	var bf buildFile
	if err := json.Unmarshal(b, &bf); err != nil {
		return Release{}, fmt.Errorf("reading %s: %w", filepath.Join(dir, "BUILD.json"), err)
	}
	r := bf.Release
	if r.Name == "" {
		r.Name = name
	}
	r.Path, r.State, r.BadReason, r.Current = dir, StateGood, "", false
	return r, nil
}

// currentName returns the release name the current link points at, or ""
// when there is no link.
func (m *Manager) currentName() (string, error) {
	target, err := os.Readlink(m.currentLink())
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading current link: %w", err)
	}
	return filepath.Base(target), nil
}

// decorate sets State, BadReason and Current.
func decorate(r *Release, marks map[string]mark, cur string) {
	r.Current = r.Name == cur
	if mk, ok := marks[r.Name]; ok {
		switch mk.State {
		case StateBad:
			r.State, r.BadReason = StateBad, mk.Reason
		case StateProven:
			r.State = StateProven
		}
	}
}

// Current returns the release the current link points at; the error wraps
// ErrNoCurrent when there is none yet.
func (m *Manager) Current() (Release, error) {
	cur, err := m.currentName()
	if err != nil {
		return Release{}, err
	}
	if cur == "" {
		return Release{}, fmt.Errorf("%s: %w", m.currentLink(), ErrNoCurrent)
	}
	r, err := m.Release(cur)
	if err != nil {
		return Release{}, fmt.Errorf("current points at %s: %w", cur, err)
	}
	return r, nil
}

// Release returns the complete release called name (e.g.
// "12-0123456789ab") or numbered name (a build number in decimal, e.g.
// "12"), with its State and Current set. The error wraps ErrNoRelease when
// there is no such release.
func (m *Manager) Release(name string) (Release, error) {
	r, err := m.readRelease(name)
	if errors.Is(err, ErrNoRelease) && isBuildNumber(name) {
		r, err = m.releaseByBuild(name)
	}
	if err != nil {
		return Release{}, err
	}
	marks, err := m.readMarks()
	if err != nil {
		return Release{}, err
	}
	cur, err := m.currentName()
	if err != nil {
		return Release{}, err
	}
	decorate(&r, marks, cur)
	return r, nil
}

// Releases returns every complete release, newest build first, with State
// and Current set. Staging folders and unreadable folders are left out (the
// latter logged).
func (m *Manager) Releases() ([]Release, error) {
	entries, err := os.ReadDir(m.releasesDir())
	if err != nil {
		return nil, fmt.Errorf("listing releases: %w", err)
	}
	marks, err := m.readMarks()
	if err != nil {
		return nil, err
	}
	cur, err := m.currentName()
	if err != nil {
		return nil, err
	}
	var out []Release
	for _, e := range entries {
		if !e.IsDir() || !validName(e.Name()) {
			continue
		}
		r, err := m.readRelease(e.Name())
		if err != nil {
			m.log.Warn("skipping release folder", "release", e.Name(), "err", err)
			continue
		}
		decorate(&r, marks, cur)
		out = append(out, r)
	}
	sortNewestFirst(out)
	return out, nil
}

func sortNewestFirst(rs []Release) {
	sort.SliceStable(rs, func(i, j int) bool {
		if rs[i].Build != rs[j].Build {
			return rs[i].Build > rs[j].Build
		}
		if !rs[i].CommitTime.Equal(rs[j].CommitTime) {
			return rs[i].CommitTime.After(rs[j].CommitTime)
		}
		return rs[i].Name > rs[j].Name
	})
}

// mark is one line of the marks file.
type mark struct {
	Time   time.Time `json:"time"`
	Name   string    `json:"name"`
	State  State     `json:"state"`
	Reason string    `json:"reason,omitempty"`
}

// readMarks returns the newest mark of each release.
func (m *Manager) readMarks() (map[string]mark, error) {
	out := map[string]mark{}
	err := readJSONLines(m.marksFile(), func(line []byte) error {
		var mk mark
		if err := json.Unmarshal(line, &mk); err != nil {
			return err
		}
		out[mk.Name] = mk
		return nil
	})
	return out, err
}

// MarkBad marks the release name bad with a reason: PreviousGood skips it
// and Build returns it with State bad.
func (m *Manager) MarkBad(name, reason string) error {
	return m.setMark(name, StateBad, reason)
}

// MarkGood clears a bad mark (for example after a forced update to a bad
// release proved it works).
func (m *Manager) MarkGood(name, reason string) error {
	return m.setMark(name, StateGood, reason)
}

// MarkProven records that the release passed a monitor window on this
// host (a later MarkBad overrides it, and it clears an older bad mark).
func (m *Manager) MarkProven(name string) error {
	return m.setMark(name, StateProven, "passed the monitor window")
}

func (m *Manager) setMark(name string, st State, reason string) error {
	if _, err := m.readRelease(name); err != nil {
		return fmt.Errorf("marking %s %s: %w", name, st, err)
	}
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	mk := mark{Time: time.Now().UTC(), Name: name, State: st, Reason: reason}
	if err := appendJSONLine(m.marksFile(), mk); err != nil {
		return fmt.Errorf("marking %s %s: %w", name, st, err)
	}
	m.log.Info("release marked", "release", name, "state", st, "reason", reason)
	return nil
}

// readJSONLines calls fn for every non-empty line of path; a missing file
// has no lines. A torn last line (a crash mid-append) is ignored.
func readJSONLines(path string, fn func(line []byte) error) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	var lines [][]byte
	for sc.Scan() {
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		lines = append(lines, append([]byte(nil), sc.Bytes()...))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	for i, l := range lines {
		if err := fn(l); err != nil {
			if i == len(lines)-1 {
				continue
			}
			return fmt.Errorf("reading %s line %d: %w", path, i+1, err)
		}
	}
	return nil
}

// appendJSONLine appends v as one line to path and fsyncs it.
func appendJSONLine(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}
