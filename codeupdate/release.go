package codeupdate

import (
	"errors"
	"time"
)

// ErrNoCurrent means no release has been switched to yet (no current link).
var ErrNoCurrent = errors.New("no current release")

// ErrLocked means another update holds the host-wide lock.
var ErrLocked = errors.New("update already running")

// State is a release's standing.
type State string

// Release states.
const (
	// StateGood is a complete release that has not failed.
	StateGood State = "good"
	// StateBad is a release marked bad by a failed update or a rollback;
	// updating to it again needs --force.
	StateBad State = "bad"
	// StateProven is a good release that passed a monitor window on this
	// host (rollout's "proven release"): crash recovery resumes a move to
	// it instead of undoing it.
	StateProven State = "proven"
)

// Good reports whether the release is not marked bad (good or proven).
func (r Release) Good() bool { return r.State != StateBad }

// Release describes one immutable release folder: the project's one
// release record. Its BUILD.json holds the record without Path, State,
// BadReason and Current (where the folder is and what the host thinks of
// the release: the manager's marks and the current link), plus the origin
// it was built from (see buildFile).
type Release struct {
	// Name is the folder name under releases/: <build>-<sha12>.
	Name string `json:"name"`
	// Path is the absolute folder.
	Path string `json:"path,omitempty"`
	// Build is the host's build number: unique and increasing on this
	// host whatever the origin does (force-pushes, moved tags), given out
	// when the release is completed. Releases built before host numbers
	// keep their commit count.
	Build int `json:"build"`
	// Commits is the commit's `git rev-list --count`, for information.
	Commits int `json:"commits,omitempty"`
	// Describe is `git describe --tags --always` of the commit
	// (e.g. "v1.2-3-gabcdef1"; the 7-digit sha without a tag).
	Describe string `json:"describe,omitempty"`
	// SHA is the full commit id; Short its first 12 hex digits.
	SHA   string `json:"sha"`
	Short string `json:"short"`
	// Ref is the branch or tag asked for (empty for a bare commit).
	Ref string `json:"ref,omitempty"`
	// Subject is the commit's first line.
	Subject    string    `json:"subject,omitempty"`
	CommitTime time.Time `json:"commit_time"`
	BuildTime  time.Time `json:"build_time"`
	// Node and NpmVersion are the tool versions the release was built with.
	Node       string `json:"node,omitempty"`
	NpmVersion string `json:"npm_version,omitempty"`
	// Npm says how node_modules came to be: "ran" (npm ci, or npm install
	// over a copy of NpmFrom's node_modules), "reused" (modules key
	// unchanged: copied from NpmFrom) or "none" (no dependencies).
	Npm string `json:"npm"`
	// LockHash is the sha256 of package-lock.json (empty without one).
	LockHash string `json:"lock_hash,omitempty"`
	// NpmFrom names the release node_modules was copied from (reused, or
	// the start of an incremental npm install); ModulesCopy says how:
	// "hardlink", "reflink" or "copy".
	NpmFrom     string `json:"npm_from,omitempty"`
	ModulesCopy string `json:"modules_copy,omitempty"`
	// ModulesKey is the sha256 over what shapes node_modules: lockfile,
	// package.json dependency fields, root install scripts, .npmrc, node
	// and npm versions. Equal keys reuse node_modules.
	ModulesKey string `json:"modules_key,omitempty"`
	// Scripts are the root lifecycle scripts that ran in the release.
	Scripts []string `json:"scripts,omitempty"`
	// State is good, proven or bad; BadReason says why it was marked bad.
	State     State  `json:"state,omitempty"`
	BadReason string `json:"bad_reason,omitempty"`
	// Current is true for the release the current link points at.
	Current bool `json:"current,omitempty"`
}

// Commit is one commit of an update check.
type Commit struct {
	SHA     string    `json:"sha"`
	Subject string    `json:"subject"`
	Author  string    `json:"author,omitempty"`
	Time    time.Time `json:"time"`
}

// UpdateInfo is the answer to "is an update available?".
type UpdateInfo struct {
	// Target is the ref asked for; TargetSHA what it resolves to now.
	Target    string `json:"target"`
	TargetSHA string `json:"target_sha"`
	// CurrentRelease and CurrentSHA are the current release (empty before
	// the first update).
	CurrentRelease string `json:"current_release,omitempty"`
	CurrentSHA     string `json:"current_sha,omitempty"`
	// Available is true when the target differs from current.
	Available bool `json:"available"`
	// Behind is how many commits the target has that current lacks.
	Behind int `json:"behind"`
	// Commits are the newest of those commits (at most 50), newest first.
	Commits []Commit `json:"commits,omitempty"`
	// NpmNeeded is true when package-lock.json (or package.json) changed:
	// the update runs npm; otherwise a restart is enough.
	NpmNeeded bool `json:"npm_needed"`
	// LockMismatch, when not empty, is npm's own message saying that the
	// target's package.json and lockfile disagree: building it would fail
	// (ErrLockMismatch).
	LockMismatch string `json:"lock_mismatch,omitempty"`
	// ChangedFiles counts the files that differ.
	ChangedFiles int `json:"changed_files"`
	// TargetBuild and TargetRelease are the target's build number and
	// release name: its release's when built, else the ones a build now
	// would get. TargetDescribe is `git describe --tags --always`.
	TargetBuild    int    `json:"target_build"`
	TargetRelease  string `json:"target_release"`
	TargetDescribe string `json:"target_describe,omitempty"`
	// TargetBuilt is true when that release exists already; TargetBad when
	// it is marked bad (updating to it needs --force).
	TargetBuilt bool `json:"target_built,omitempty"`
	TargetBad   bool `json:"target_bad,omitempty"`
}
