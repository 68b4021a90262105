package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
)

// The --log-format values.
const (
	logAuto    = "auto"    // journal under systemd (JOURNAL_STREAM names stderr), text otherwise
	logText    = "text"    // slog text with timestamps
	logJSON    = "json"    // one JSON object a line
	logJournal = "journal" // "<N>" syslog priority prefix, no timestamp: journald adds both
)

// newLogHandler returns the handler for a --log-format on w.
func newLogHandler(format string, w io.Writer, lvl slog.Level) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: lvl}
	if format == logAuto {
		format = logText
		if underJournal(w) {
			format = logJournal
		}
	}
	switch format {
	case logText:
		return slog.NewTextHandler(w, opts), nil
	case logJSON:
		return slog.NewJSONHandler(w, opts), nil
	case logJournal:
		return newJournalHandler(w, lvl), nil
	}
	return nil, fmt.Errorf("invalid --log-format %q: want auto, text, json or journal", format)
}

// underJournal reports whether w is the stream systemd connected to the
// journal: JOURNAL_STREAM holds its "device:inode".
func underJournal(w io.Writer) bool {
	js := os.Getenv("JOURNAL_STREAM")
	f, ok := w.(*os.File)
	if js == "" || !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return js == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// journalHandler writes each record as one line "<N>msg=... key=value",
// N its syslog priority (journald reads it and drops it from the text), and
// no timestamp (journald records one).
type journalHandler struct {
	inner slog.Handler
	*journalOut
}

type journalOut struct {
	mu  sync.Mutex
	buf bytes.Buffer
	w   io.Writer
}

func newJournalHandler(w io.Writer, lvl slog.Level) *journalHandler {
	out := &journalOut{w: w}
	inner := slog.NewTextHandler(&out.buf, &slog.HandlerOptions{Level: lvl, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
			return slog.Attr{}
		}
		return a
	}})
	return &journalHandler{inner: inner, journalOut: out}
}

// Enabled implements slog.Handler.
func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Reset()
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	_, err := fmt.Fprintf(h.w, "<%d>%s", syslogPriority(r.Level), h.buf.Bytes())
	return err
}

// WithAttrs implements slog.Handler.
func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(as), journalOut: h.journalOut}
}

// WithGroup implements slog.Handler.
func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), journalOut: h.journalOut}
}

// syslogPriority maps a slog level to syslog's: err 3, warning 4, info 6,
// debug 7.
func syslogPriority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}
