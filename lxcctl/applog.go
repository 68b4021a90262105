package lxcctl

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// AppLogDir is the folder, in a container's folder of the lxcpath (beside
// its config and lxcfleet.log, outside /Me), that holds its app's output:
// the locker's init wrapper appends the app's stdout and stderr to
// AppLogName there, then an AppExitLine when the app exits.
const AppLogDir = "applog"

// AppLogName is the app's log file in AppLogDir. Start rotates it to
// AppLogName.1 once it is over 1 MiB, so it keeps at most about 2 MiB.
const AppLogName = "app.log"

// AppExitLine starts the line the init wrapper writes to the app log when
// the app exits, followed by its exit status (128+N for signal N).
const AppExitLine = "lxcfleet: app exited with status "

// appLogLines is how many of the app's last lines a start error carries.
const appLogLines = 5

// AppLogFile returns the path of a container's app log on the host.
func (h *Host) AppLogFile(name string) string {
	return filepath.Join(h.lxcpath, name, AppLogDir, AppLogName)
}

// AppExit is what the app log says about the app's last run.
type AppExit struct {
	// Status is the app's exit status; -1 when the log does not say.
	Status int
	// Last holds its last lines of output (at most appLogLines).
	Last []string
}

// String describes the exit for an error message; "" when nothing is known.
func (a AppExit) String() string {
	var parts []string
	if a.Status >= 0 {
		parts = append(parts, fmt.Sprintf("app exited with status %d", a.Status))
	}
	if len(a.Last) > 0 {
		parts = append(parts, "its last output: "+strings.Join(a.Last, " | "))
	}
	return strings.Join(parts, "; ")
}

// LastAppExit reads what the app log says about the app's last run (for
// a locker that stopped on its own after it was first healthy).
func (h *Host) LastAppExit(name string) AppExit {
	return readAppExit(h.AppLogFile(name), 0)
}

// readAppExit reads the app log from offset: the last exit status line and
// the last lines of output before it.
func readAppExit(path string, offset int64) AppExit {
	out := AppExit{Status: -1}
	// The container may put anything in its log folder: never follow a
	// symlink it made to a file of the host's.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return out
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return out
	}
	if fi, err := f.Stat(); err == nil && fi.Size() < offset {
		offset = 0 // rotated or truncated since
	}
	// Only the tail matters: skip what cannot be among the last lines.
	if fi, err := f.Stat(); err == nil && fi.Size()-offset > 64<<10 {
		offset = fi.Size() - 64<<10
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return out
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" {
			continue
		}
		if s, ok := strings.CutPrefix(l, AppExitLine); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
				out.Status = n
			}
			continue
		}
		if len(l) > 300 {
			l = l[:300] + "..."
		}
		lines = append(lines, l)
		if len(lines) > appLogLines {
			lines = lines[1:]
		}
	}
	out.Last = lines
	return out
}
