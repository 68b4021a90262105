// Package atomicfile writes files so that a reader, or a crash, sees either
// the old content or the new, never a half-written file: a temporary file
// beside the target, fsync, rename over the target, fsync of the folder.
// lxcctl (container config files) and codeupdate (the BUILD line, release
// metadata) share it.
package atomicfile
