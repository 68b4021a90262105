// Package codeupdate is lxcfleet's release manager: it owns the app's code
// on a host and is the only package that imports go-git.
//
// Layout under Options.Root (see DESIGN.md; the same paths as
// mounts.LayoutAt(root)):
//
//	repo.git/                  bare mirror of the origin (all branches and
//	                           tags, force-fetched with go-git)
//	repo.lock                  flock serialising mirror fetches (in-process
//	                           and across processes)
//	releases/<build>-<sha12>/  one immutable release: the commit's tree,
//	                           node_modules and BUILD.json
//	releases/<name>/.lxcfleet/npm.log
//	                           output of the npm run that built it (absent
//	                           when node_modules was reused or not needed)
//	releases/.failed-<sha12>.npm.log
//	                           output of the last failed npm run for a commit
//	current -> releases/<name> relative symlink, flipped atomically
//	BUILD                      one line an operator can cat (below)
//	history                    append-only JSON lines, one per switch
//	marks                      append-only JSON lines of bad/good marks
//	lock                       host-wide update lock (see Manager.Lock)
//
// A build is staged in releases/.tmp-<random>/ and renamed into place when
// it is complete, so a folder named <build>-<sha12> is always a whole
// release; a failed build removes its staging folder and leaves current and
// every release untouched. When package-lock.json is byte-identical to the
// current release's (and node is the same version), node_modules is
// hard-linked from it file by file instead of running npm (Release.Npm
// "reused"); otherwise `npm ci` runs with Options.NpmTimeout and npm's
// audit, fund and update notices off ("ran"). Without a lockfile `npm
// install` runs, or nothing when package.json declares no dependencies
// ("none"). A daemon without HOME gets npm_config_cache=Root/npm-cache.
//
// Root/BUILD holds the build, the 12-digit sha, the branch or tag ("-" for
// a bare commit) and the commit time, e.g.
// "1234 abcdef123456 main 2026-11-24T04:00:00Z".
//
// A mirror found corrupt (unopenable, refs pointing at missing objects, or
// objects that fail to decode) is re-cloned automatically into a fresh
// folder that then replaces it; the replacement is logged at WARN level. If
// the re-clone fails too, the error says the mirror is corrupt and how to
// recover.
package codeupdate
