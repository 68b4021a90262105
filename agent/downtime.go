package agent

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"lxcfleet/downtime"
	"lxcfleet/rollout"
)

// portHold holds the host ports of lockers stopped by an offline update
// with the maintenance page (Defaults.DowntimePage): from the moment a
// locker begins to stop (the hold binds as soon as the app lets go) until
// just before it starts again. A nil portHold does nothing.
type portHold struct {
	h     *downtime.Holder
	r     *run
	ports map[string]int
	until time.Time
}

// holdPorts returns the hold for an offline update of names, or nil when
// the option is off. Lockers without a PORT in lxc.environment are not
// held.
func (a *Agent) holdPorts(ctx context.Context, r *run, req Request, names []string) *portHold {
	if !a.cfg.Defaults.DowntimePage || len(names) == 0 {
		return nil
	}
	infos, err := a.deps.Containers.Select(ctx, names, "")
	if err != nil {
		r.emit(Event{Type: "stage", Stage: "downtime-page", Error: err.Error()})
		return nil
	}
	p := &portHold{h: &downtime.Holder{Log: a.log}, r: r, ports: map[string]int{}, until: time.Now().Add(offlineEstimate(req, len(names)))}
	for _, in := range infos {
		if port, err := strconv.Atoi(in.Env["PORT"]); err == nil && port > 0 {
			p.ports[in.Name] = port
		}
	}
	r.stage("downtime-page", fmt.Sprintf("holding %d lockers' ports with the maintenance page while they are down", len(p.ports)))
	return p
}

// offlineEstimate guesses how long an offline update of n lockers keeps
// them down: the stops, then the starts in windows of K, a few seconds
// each. The maintenance page shows it as the expected end.
func offlineEstimate(req Request, n int) time.Duration {
	stops := (n + max(req.pol.StopParallel, 1) - 1) / max(req.pol.StopParallel, 1)
	starts := (n + max(req.pol.MaxUnavailable, 1) - 1) / max(req.pol.MaxUnavailable, 1)
	return time.Duration(stops)*2*time.Second + time.Duration(starts)*3*time.Second + 10*time.Second
}

// wrap returns an observer that holds a locker's port when it begins to
// stop, gives it back when the stop fails, and releases it just before
// the locker starts; then it calls next.
func (p *portHold) wrap(next func(rollout.Event)) func(rollout.Event) {
	if p == nil {
		return next
	}
	return func(e rollout.Event) {
		if port, ok := p.ports[e.Container]; ok {
			switch e.Phase {
			case rollout.PhaseStopping:
				_ = p.h.Hold(port, p.until)
			case rollout.PhaseStarting, rollout.PhaseFailed, rollout.PhaseSkipped:
				p.h.Release(port)
			}
		}
		next(e)
	}
}

// releaseAll gives every port back (the job is over).
func (p *portHold) releaseAll() {
	if p != nil {
		p.h.ReleaseAll()
	}
}

// MaintenanceUntil estimates when the running job ends, for the
// maintenance page (downtime.PageInfo.Until): from its progress so far,
// or zero when no job runs or nothing is known yet.
func (a *Agent) MaintenanceUntil() time.Time {
	j, ok := a.Running()
	if !ok || j.Progress.Total == 0 {
		return time.Time{}
	}
	elapsed := time.Since(j.Created)
	if j.Progress.Done == 0 {
		return time.Now().Add(offlineEstimate(j.Request, j.Progress.Total))
	}
	left := j.Progress.Total - j.Progress.Done
	return time.Now().Add(time.Duration(float64(elapsed) / float64(j.Progress.Done) * float64(left)))
}
