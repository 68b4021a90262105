package lxcctl

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
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

// AppExit is what the app log says about the app's last run: the lines
// after the previous run's exit line, up to its own (or the end of the log
// when it wrote none: killed, or still running).
type AppExit struct {
	// Status is the app's exit status; -1 when the log does not say.
	Status int
	// FirstError is the first line of the run that reads as an error
	// ("Error: ...", "TypeError: ...", "Uncaught ...", "panic: ..."): for
	// a Node uncaught exception, the last lines are stack frames and the
	// reason is above them.
	FirstError string
	// Last holds its last lines of output (at most appLogLines).
	Last []string
	// Log is the app log read ("" when there was nothing to read).
	Log string
}

// errorLine matches a line that says what went wrong.
var errorLine = regexp.MustCompile(`^(Uncaught |Unhandled |panic: |fatal error: |FATAL |npm ERR! |([A-Z][A-Za-z]*)?(Error|Exception)\b)`)

// String describes the exit for an error message; "" when nothing is known.
func (a AppExit) String() string {
	var parts []string
	if a.Status >= 0 {
		parts = append(parts, fmt.Sprintf("app exited with status %d", a.Status))
	}
	if a.FirstError != "" {
		parts = append(parts, "first error: "+a.FirstError)
	}
	if len(a.Last) > 0 {
		parts = append(parts, "its last output: "+strings.Join(a.Last, " | "))
	}
	if len(parts) > 0 && a.Log != "" {
		parts = append(parts, "app log: "+a.Log)
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
	// One run at a time: an exit line ends a run; the lines after the
	// last one (if any) are a run that wrote no exit line.
	var lines []string
	firstErr := ""
	status := -1
	read := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" {
			continue
		}
		read = true
		if s, ok := strings.CutPrefix(l, AppExitLine); ok {
			status = -1
			if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
				status = n
			}
			out.Status, out.FirstError, out.Last = status, firstErr, lines
			lines, firstErr = nil, ""
			continue
		}
		if len(l) > 300 {
			l = l[:300] + "..."
		}
		if firstErr == "" && errorLine.MatchString(l) {
			firstErr = l
		}
		lines = append(lines, l)
		if len(lines) > appLogLines {
			lines = lines[1:]
		}
	}
	if len(lines) > 0 {
		out.Status, out.FirstError, out.Last = -1, firstErr, lines
	}
	if read {
		out.Log = path
	}
	return out
}
