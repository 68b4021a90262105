package main

import "runtime/debug"

// version is set when the package is built (-ldflags "-X
// main.version=1.2.3"); without it the version comes from the build info.
var version string

// buildVersion returns the version of this binary: the one given at link
// time, else the module version or VCS revision Go recorded, else "dev".
func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		return "dev+" + rev + dirty
	}
	return "dev"
}
