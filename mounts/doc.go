// Package mounts owns the locker mount layout on an lxcfleet host: where the
// shared code and each locker's folders live, the lxc.mount.entry lines that
// put them into a container, and the safe creation of those folders.
//
// The host layout (all paths configurable, see Layout):
//
//	/var/lib/lxcfleet/
//	  releases/<build>-<sha12>/   immutable releases (owned by codeupdate)
//	  current -> releases/...     bind-mounted read-only at /opt/app
//	  lockers/<name>/Me/          owner data, bind-mounted read-write at /Me
//	  lockers/<name>/Config/      per-locker config at /Config (ro by default),
//	                              seeded once from the template folder
//
// The package renders the three mount entries of a locker (Entries) and edits
// a container's config file as text (ApplyEntries): go-lxc's
// ClearConfigItem("lxc.mount.entry") would drop the template's own binds too
// and SaveConfigFile reorders the file, so the edit keeps every line it does
// not own byte for byte and is idempotent.
//
// Folders are created (Provision), seeded (SeedConfig) and removed (Remove)
// through an os.Root opened at the layout root, so no path can escape it, and
// locker folders that are symlinks are refused rather than followed. For
// unprivileged containers the folders belong to the host uid/gid that the
// container's root maps to (OwnerFromIdmap).
//
// ReleaseOfPID reads /proc/<pid>/mountinfo to tell which release a running
// locker really uses: the current symlink is resolved when a container
// starts, so after a switch running lockers keep their old release until they
// restart. ReleaseOfLocker is what release retention's safety check (the
// agent inventory's releases in use) reads for each locker.
//
// This package never starts or stops containers and never imports go-lxc.
package mounts
