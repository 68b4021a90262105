// Package codeupdate is lxcfleet's release manager: it owns the app's code
// on a host and is the only package that imports go-git.
//
// Layout under Options.Root (see the README's host layout; the same paths as
// mounts.LayoutAt(root)):
//
//	repo.git/                  bare mirror of the origin (all branches and
//	                           tags, force-fetched with go-git)
//	repo.lock                  flock serialising mirror fetches (in-process
//	                           and across processes)
//	releases/<build>-<sha12>/  one immutable release: the commit's tree,
//	                           node_modules and BUILD.json (<build> is the
//	                           host's build number)
//	releases/<name>/.lxcfleet/npm.log
//	                           output of npm and the root install scripts
//	                           that built it (absent when nothing ran)
//	releases/.failed-<sha12>.npm.log
//	                           output of the last failed npm run for a commit
//	current -> releases/<name> relative symlink, flipped atomically
//	BUILD                      one line an operator can cat (below)
//	history                    append-only JSON lines, one per switch
//	marks                      append-only JSON lines of bad/good marks
//	lock                       host-wide update lock (see Manager.Lock)
//	build.lock                 held shared by every build and fetch
//	releases.lock              serialises completing releases (numbering)
//	build-seq                  the last build number given out
//	npm-cache/                 the npm cache every build shares
//
// A build is staged in releases/.tmp-<random>/ and renamed into place when
// it is complete, so a folder named <build>-<sha12> is always a whole
// release; a failed build removes its staging folder and leaves current and
// every release untouched.
//
// node_modules is reused (Release.Npm "reused") when the modules key of
// the new commit, a sha256 over everything that shapes node_modules (the
// lockfile, package.json's dependency fields and root install scripts,
// .npmrc, and the node and npm versions), equals the current release's
// (or the newest good one's): hard links when nothing will run in the new
// folder, else an independent copy (reflinks where the file system has
// them, byte copies otherwise). Otherwise npm runs ("ran"): a package.json
// that disagrees with its lockfile fails the build with npm's own message
// (ErrLockMismatch; CheckUpdate reports it in UpdateInfo.LockMismatch);
// with a previous release built by the same node, `npm install` updates an
// independent copy of its node_modules (incremental; the old release is
// never written), else `npm ci` (`npm install` without a lockfile) starts
// from nothing; nothing runs when package.json declares no dependencies
// ("none"). The root package's lifecycle scripts (preinstall, install,
// postinstall, preprepare, prepare, postprepare) run in the new folder in
// every case. All of it runs under one Options.NpmTimeout, with npm's
// audit, fund and update notices off and one npm cache for the host
// (Options.NpmCache, default Root/npm-cache), used first (prefer-offline):
// an update whose packages are all cached builds with the registry down.
// A registry request unanswered for Options.FetchStallTimeout fails the
// run (npm's fetch-timeout, no retry); a registry that refuses, does not
// resolve or stalls fails the build, and CheckUpdate when it must ask npm,
// with ErrRegistryUnreachable naming the registry and the packages npm
// could not fetch. npm and every child run in
// their own process group, killed when the build is cancelled and when the
// calling process dies, even by SIGKILL (the parent-death signal).
//
// Build numbers are the host's: Root/build-seq holds the last one given
// out, and a build completes under Root/releases.lock, so numbers are
// unique and increasing whatever the origin does (force-pushes, moved
// tags). A host whose releases were numbered by commit count goes on above
// them. Release.Commits keeps the commit count, Release.Describe
// `git describe --tags --always`. Manager.Release takes a release name or a
// build number.
//
// Root/BUILD holds the build, the 12-digit sha, the branch or tag ("-" for
// a bare commit), the commit time and git describe, e.g.
// "1234 abcdef123456 main 2026-11-24T04:00:00Z v1.2-3-gabcdef1".
//
// Fetches end with ErrFetchStalled when the origin sends nothing for
// Options.FetchStallTimeout (over HTTP(S) every byte counts) and with
// ErrFetchTimeout after Options.FetchTimeout. A full disk is ErrDiskFull
// with the free space, never corruption. Once the mirror holds more than
// Options.MaxPacks packs it is repacked into one. New removes what a dead
// agent left (staging folders, temporary packs, half-made mirrors) when no
// build or update holds Root/lock, Root/build.lock or Root/repo.lock.
// Local origins (paths, file://) are served in-process by go-git.
//
// A mirror found corrupt (unopenable, refs pointing at missing objects, or
// objects that fail to decode) is re-cloned automatically into a fresh
// folder that then replaces it; the replacement is logged at WARN level. If
// the re-clone fails too, the error says the mirror is corrupt and how to
// recover.
package codeupdate
