package fleet

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// windowParser reads a window's start as a standard 5-field cron
// expression (minute hour day-of-month month day-of-week), as the agent's
// own schedules do.
var windowParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// windowLocation is p's time zone (UTC when unset).
func windowLocation(p Policy) (*time.Location, error) {
	if p.TimeZone == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(p.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("time_zone %q: %w", p.TimeZone, err)
	}
	return loc, nil
}

// InWindow reports whether a host may start an update at now under p's
// update windows: always without windows; otherwise when some window
// opened (a cron time of Windows in TimeZone) less than WindowDuration
// before now. When outside, next is the next opening. (Fleet update
// windows as kured's reboot days and times, zincati's periodic strategy,
// Nebraska's office hours; a job that began inside a window finishes even
// past its end.)
func InWindow(p Policy, now time.Time) (in bool, next time.Time, err error) {
	if len(p.Windows) == 0 {
		return true, time.Time{}, nil
	}
	loc, err := windowLocation(p)
	if err != nil {
		return false, time.Time{}, err
	}
	d := p.WindowDuration.D()
	if d <= 0 {
		d = DefaultWindowDuration
	}
	t := now.In(loc)
	for _, w := range p.Windows {
		s, err := windowParser.Parse(w)
		if err != nil {
			return false, time.Time{}, fmt.Errorf("window %q: %w", w, err)
		}
		// The latest opening at or before now is within d of now iff the
		// first opening after now-d is not after now.
		if !s.Next(t.Add(-d)).After(t) {
			return true, time.Time{}, nil
		}
		if n := s.Next(t); next.IsZero() || n.Before(next) {
			next = n
		}
	}
	return false, next, nil
}
