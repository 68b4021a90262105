package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lxcfleet/codeupdate"
	"lxcfleet/fleet"
)

// initFleet makes the fleet member when [fleet] is configured.
func (a *Agent) initFleet() error {
	fc := a.cfg.Fleet
	if !fc.Enabled() {
		return nil
	}
	if fc.Key != "" {
		if err := CheckSecretFile(fc.Key); err != nil {
			return fmt.Errorf("fleet.key: %w", err)
		}
	}
	if fc.StateFile == "" {
		fc.StateFile = filepath.Join(a.cfg.StateDir, "fleet.json")
	}
	m, err := fleet.NewMember(fc, fleetUpdater{a}, a.log)
	if err != nil {
		return fmt.Errorf("joining the fleet: %w", err)
	}
	a.fleet = m
	a.metrics.reg.MustRegister(fleetCollector{a})
	return nil
}

// runFleet follows the channel while Run runs (after any recovery).
func (a *Agent) runFleet(ctx context.Context) {
	if a.fleet == nil {
		return
	}
	a.fleet.Run(ctx)
}

// closeFleet closes the etcd client.
func (a *Agent) closeFleet() {
	if a.fleet != nil {
		_ = a.fleet.Close()
	}
}

// FleetStatus is this host's view of its fleet (nil without [fleet]).
func (a *Agent) FleetStatus() *fleet.Status {
	if a.fleet == nil {
		return nil
	}
	st := a.fleet.Status()
	return &st
}

// fleetUpdater runs the fleet's updates as this agent's own jobs.
type fleetUpdater struct{ a *Agent }

func (u fleetUpdater) State(ctx context.Context) (fleet.HostState, error) {
	a := u.a
	hs := fleet.HostState{Version: a.cfg.Version, Lockers: map[string]int{}}
	for _, l := range a.inv.snapshot() {
		hs.Lockers[string(l.State)]++
	}
	if jobs, err := a.jr.Jobs(1); err == nil && len(jobs) > 0 {
		j := jobs[0]
		hs.LastJob = &fleet.JobRef{ID: j.ID, Kind: string(j.Kind), State: string(j.State), Error: j.Error, Trigger: j.Trigger, Created: j.Created, Finished: j.Finished}
	}
	if a.deps.Code == nil {
		return hs, errors.New("no code origin configured (code.origin): this host cannot update")
	}
	rel, err := a.deps.Code.Current()
	if err != nil {
		return hs, fmt.Errorf("reading the current release: %w", err)
	}
	hs.Build, hs.ReleaseName, hs.Commit = rel.Build, rel.Name, rel.SHA
	return hs, nil
}

// Update submits an update-code job to rel.Commit with the host's own
// defaults (strategy, window, failure policy) and waits for its end. A job
// already running is waited for first (jobs never overlap). When ctx is
// cancelled because the fleet slot is lost (fleet.ErrLeaseLost), the job
// is cancelled with that cause (it begins no new locker move) and still
// waited for.
func (u fleetUpdater) Update(ctx context.Context, rel fleet.Release) (string, error) {
	a := u.a
	for {
		if err := fleet.CheckHold(ctx); err != nil {
			return "", fmt.Errorf("%w: %w", fleet.ErrNotRun, err)
		}
		// The job asks the fleet's hold before each decision that may
		// begin a locker move: no move begins after etcd may have freed
		// the slot (fleet.CheckHold checks the lease's deadline by this
		// host's clock, right after a SIGCONT too).
		fence := func() error { return fleet.CheckHold(ctx) }
		j, err := a.Submit(Request{Kind: KindUpdate, Target: rel.Commit, Trigger: "fleet: " + a.cfg.Fleet.WithDefaults().Group + " " + rel.String(), Fence: fence})
		var busy BusyError
		if errors.As(err, &busy) {
			_, _ = a.Wait(ctx, busy.JobID)
			select {
			case <-ctx.Done():
				return "", fmt.Errorf("%w: %w", fleet.ErrNotRun, context.Cause(ctx))
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			if a.base.Err() != nil {
				return "", fmt.Errorf("%w: %v", fleet.ErrNotRun, err)
			}
			return "", fmt.Errorf("submitting the update to %s: %w", rel, err)
		}
		id := j.ID
		wctx, wcancel := context.WithCancel(a.base)
		stop := context.AfterFunc(ctx, func() {
			if cause := context.Cause(ctx); fleet.StopsJob(cause) {
				a.log.Warn("the fleet slot is lost or the update timed out: cancelling the update job so that it begins no new locker move", "job", id, "why", cause)
				// As on the agent's stop: launching ends, the lockers in
				// flight finish, nothing is undone (an undo would move
				// lockers without the slot).
				a.cancelRun(id, fencedCause(cause))
				return // and wait for its end
			}
			wcancel() // the member stops: stop waiting, as before
		})
		j, err = a.Wait(wctx, id)
		stop()
		wcancel()
		if err != nil {
			return j.ID, fmt.Errorf("%w: %v", fleet.ErrNotRun, err)
		}
		switch {
		case j.State == JobSucceeded:
			return j.ID, nil
		case j.State == JobInterrupted:
			return j.ID, fmt.Errorf("%w: job %s was interrupted", fleet.ErrNotRun, j.ID)
		case j.State == JobCancelled && fleet.StopsJob(context.Cause(ctx)):
			return j.ID, fmt.Errorf("%w: job %s was cancelled: %w", fleet.ErrNotRun, j.ID, context.Cause(ctx))
		case j.State == JobCancelled && fleet.CheckHold(ctx) != nil:
			// Its own fence stopped it (the lease's deadline passed)
			// before the hold's context said so.
			return j.ID, fmt.Errorf("%w: job %s was stopped by its fence: %w", fleet.ErrNotRun, j.ID, fleet.CheckHold(ctx))
		}
		return j.ID, fmt.Errorf("update job %s %s: %s", j.ID, j.State, j.Error)
	}
}

// cancelRun cancels a running job with cause (as Cancel does with the
// operator's).
func (a *Agent) cancelRun(id string, cause error) {
	a.mu.Lock()
	r := a.runs[id]
	a.mu.Unlock()
	if r != nil {
		r.cancel(cause)
	}
}

// fleetRoutes adds the fleet's operator routes (404 without [fleet]).
func (a *Agent) fleetRoutes(mux *http.ServeMux) {
	mux.Handle("GET /v1/fleet", a.serve(a.handleFleetStatus))
	mux.Handle("GET /v1/fleet/hosts", a.serve(a.withFleet(func(w http.ResponseWriter, r *http.Request, s *fleet.Store) error {
		hs, err := s.Hosts(r.Context())
		if err != nil {
			return etcdError(err)
		}
		writeJSON(w, http.StatusOK, hs)
		return nil
	})))
	mux.Handle("GET /v1/fleet/channel", a.serve(a.withFleet(func(w http.ResponseWriter, r *http.Request, s *fleet.Store) error {
		v, err := ChannelView(r.Context(), s)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, v)
		return nil
	})))
	mux.Handle("GET /v1/fleet/holders", a.serve(a.withFleet(func(w http.ResponseWriter, r *http.Request, s *fleet.Store) error {
		hs, err := s.Holders(r.Context())
		if err != nil {
			return etcdError(err)
		}
		writeJSON(w, http.StatusOK, orEmpty(hs))
		return nil
	})))
	mux.Handle("POST /v1/fleet/publish", a.serve(a.withFleet(a.handleFleetPublish)))
	mux.Handle("POST /v1/fleet/policy", a.serve(a.withFleet(func(w http.ResponseWriter, r *http.Request, s *fleet.Store) error {
		var p PolicyChange
		if err := decodeJSON(r, &p); err != nil {
			return err
		}
		if err := p.Validate(); err != nil {
			return err
		}
		ch, err := s.SetPolicy(r.Context(), p.Apply)
		if err != nil {
			return fleetError(err)
		}
		writeJSON(w, http.StatusOK, ch)
		return nil
	})))
	mux.Handle("POST /v1/fleet/pause", a.serve(a.withFleet(func(w http.ResponseWriter, r *http.Request, s *fleet.Store) error {
		var body struct {
			Reason string `json:"reason"`
		}
		if err := decodeJSON(r, &body); err != nil {
			return err
		}
		if body.Reason == "" {
			body.Reason = "paused by an operator"
		}
		ch, err := s.Pause(r.Context(), body.Reason)
		if err != nil {
			return fleetError(err)
		}
		writeJSON(w, http.StatusOK, ch)
		return nil
	})))
	mux.Handle("POST /v1/fleet/resume", a.serve(a.withFleet(func(w http.ResponseWriter, r *http.Request, s *fleet.Store) error {
		ch, err := s.Resume(r.Context())
		if err != nil {
			return fleetError(err)
		}
		writeJSON(w, http.StatusOK, ch)
		return nil
	})))
	mux.Handle("POST /v1/fleet/unlock/{host}", a.serve(a.withFleet(func(w http.ResponseWriter, r *http.Request, s *fleet.Store) error {
		h, err := s.Unlock(r.Context(), r.PathValue("host"))
		if err != nil {
			return fleetError(err)
		}
		a.log.Warn("fleet slot force-unlocked by an operator", "holder", h.Host, "slot", h.Slot)
		writeJSON(w, http.StatusOK, h)
		return nil
	})))
}

func (a *Agent) handleFleetStatus(w http.ResponseWriter, r *http.Request) error {
	st := a.FleetStatus()
	if st == nil {
		writeJSON(w, http.StatusOK, map[string]any{"enabled": false, "note": "this host has no [fleet] config: it updates on its own"})
		return nil
	}
	var win *WindowView
	if st.Channel != nil && len(st.Channel.Policy.Windows) > 0 {
		p := st.Channel.Policy
		win = &WindowView{For: p.WindowDuration, TimeZone: p.TimeZone}
		if win.For <= 0 {
			win.For = fleet.Duration(fleet.DefaultWindowDuration)
		}
		if win.TimeZone == "" {
			win.TimeZone = "UTC"
		}
		in, next, err := fleet.InWindow(p, a.deps.Clock.Now())
		win.Open, win.Next = in, next
		if err != nil {
			win.Error = err.Error()
		}
	}
	writeJSON(w, http.StatusOK, struct {
		Enabled bool `json:"enabled"`
		*fleet.Status
		Window *WindowView `json:"window,omitempty"`
	}{true, st, win})
	return nil
}

// WindowView says whether the channel's update windows (fleet.InWindow)
// are open now, and when the next opens: the console shows it as
// `fleet channel` does.
type WindowView struct {
	// For is how long each window stays open; TimeZone the zone its cron
	// times are read in (defaults applied).
	For      fleet.Duration `json:"for"`
	TimeZone string         `json:"time_zone"`
	Open     bool           `json:"open"`
	Next     time.Time      `json:"next,omitzero"`
	Error    string         `json:"error,omitempty"`
}

// withFleet passes the fleet's store, or answers 404 without [fleet].
func (a *Agent) withFleet(h func(w http.ResponseWriter, r *http.Request, s *fleet.Store) error) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if a.fleet == nil {
			return &httpError{Code: http.StatusNotFound, Msg: "this host has no [fleet] config"}
		}
		return h(w, r, a.fleet.Store())
	}
}

// PublishRequest is the body of POST /v1/fleet/publish.
type PublishRequest struct {
	// Ref is a branch, tag or commit of the origin; the agent resolves it
	// to a commit (fetching) unless Commit is given.
	Ref    string        `json:"ref"`
	Commit string        `json:"commit,omitempty"`
	Policy *PolicyChange `json:"policy,omitempty"`
	// IfRelease, when set, publishes only if the channel's release commit
	// is still this one (a prefix is enough; "none": nothing published
	// yet): 409 otherwise.
	IfRelease string `json:"if_release,omitempty"`
}

var fullSHA = regexp.MustCompile(`^[0-9a-f]{40}$`)

func (a *Agent) handleFleetPublish(w http.ResponseWriter, r *http.Request, s *fleet.Store) error {
	var req PublishRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Ref == "" {
		return invalidf("publish: ref is empty")
	}
	if req.Policy != nil {
		if err := req.Policy.Validate(); err != nil {
			return err
		}
	}
	rel, err := ResolveRelease(r.Context(), a.deps.Code, req.Ref, req.Commit)
	if err != nil {
		return err
	}
	var pol *fleet.Policy
	if req.Policy != nil {
		cur, _, err := s.Channel(r.Context())
		if err != nil && !errors.Is(err, fleet.ErrNoChannel) {
			return etcdError(err)
		}
		p := cur.Policy
		req.Policy.Apply(&p)
		pol = &p
	}
	ch, err := s.PublishIf(r.Context(), rel, pol, "agent "+hostname(), req.IfRelease)
	if err != nil {
		return fleetError(err)
	}
	a.log.Info("published a release to the fleet", "release", rel.String(), "group", s.Group())
	writeJSON(w, http.StatusOK, ch)
	return nil
}

// ResolveRelease turns a ref into a release, checked on the origin before
// anything is written: hosts build the commit, so a commit the origin does
// not have would only fail on the first host (the canary) and pause the
// channel. The origin is fetched; ref must be a branch, tag or commit of
// it. With commit given, it must be a full commit id of the origin and
// ref must resolve to exactly it (a guard against the ref having moved
// since the operator looked; publish the commit id itself to roll out an
// older commit). Every refusal is an InvalidError (exit 2, HTTP 400).
func ResolveRelease(ctx context.Context, code Code, ref, commit string) (fleet.Release, error) {
	if commit != "" && !fullSHA.MatchString(commit) {
		return fleet.Release{}, invalidf("commit %q is not a full 40-digit commit id", commit)
	}
	if code == nil {
		return fleet.Release{}, invalidf("resolving %s: no code origin configured (code.origin), so the commit cannot be checked on the origin", ref)
	}
	resolve := func(target string) (string, error) {
		info, err := code.CheckUpdate(ctx, target)
		if errors.Is(err, codeupdate.ErrUnknownTarget) {
			return "", invalidf("publishing %s: %v", ref, err)
		}
		if err != nil {
			return "", fmt.Errorf("resolving %s on the origin: %w", target, err)
		}
		if !fullSHA.MatchString(info.TargetSHA) {
			return "", fmt.Errorf("resolving %s on the origin: got %q", target, info.TargetSHA)
		}
		return info.TargetSHA, nil
	}
	if commit != "" {
		if _, err := resolve(commit); err != nil {
			return fleet.Release{}, err
		}
	}
	sha, err := resolve(ref)
	if err != nil {
		return fleet.Release{}, err
	}
	if commit != "" && sha != commit {
		return fleet.Release{}, invalidf("publishing %s --commit %s: %s is %s on the origin, not %s (publish the commit id itself to roll out an older commit)", ref, commit[:12], ref, sha[:12], commit[:12])
	}
	return fleet.Release{Ref: ref, Commit: sha}, nil
}

// PolicyChange sets the fields it names (a JSON body or CLI flags).
type PolicyChange struct {
	MaxHosts       *int            `json:"max_hosts,omitempty"`
	MaxPerPeriod   *int            `json:"max_per_period,omitempty"`
	Period         *fleet.Duration `json:"period,omitempty"`
	PhaseStart     *float64        `json:"phase_start,omitempty"`
	PhaseDuration  *fleet.Duration `json:"phase_duration,omitempty"`
	SafeMode       *bool           `json:"safe_mode,omitempty"`
	MaxFailedHosts *int            `json:"max_failed_hosts,omitempty"`
	Windows        *[]string       `json:"windows,omitempty"`
	WindowDuration *fleet.Duration `json:"window_duration,omitempty"`
	TimeZone       *string         `json:"time_zone,omitempty"`
	UpdateTimeout  *fleet.Duration `json:"update_timeout,omitempty"`
}

// Validate refuses a value given explicitly that makes no sense (an
// InvalidError naming it): max_hosts and max_failed_hosts below 1 (0
// would silently mean the default), a negative max_per_period, a period
// not above 0, a phase_start outside 0..1, a negative phase_duration.
func (c PolicyChange) Validate() error {
	switch {
	case c.MaxHosts != nil && (*c.MaxHosts < 1 || *c.MaxHosts > fleet.MaxSlots):
		return invalidf("max_hosts must be between 1 and %d, got %d", fleet.MaxSlots, *c.MaxHosts)
	case c.MaxFailedHosts != nil && *c.MaxFailedHosts < 1:
		return invalidf("max_failed_hosts must be at least 1, got %d", *c.MaxFailedHosts)
	case c.MaxPerPeriod != nil && *c.MaxPerPeriod < 0:
		return invalidf("max_per_period must not be negative (0: no limit), got %d", *c.MaxPerPeriod)
	case c.Period != nil && c.Period.D() <= 0:
		return invalidf("period must be above 0, got %s", c.Period.D())
	case c.PhaseStart != nil && (*c.PhaseStart < 0 || *c.PhaseStart > 1):
		return invalidf("phase_start must be between 0 and 1, got %g", *c.PhaseStart)
	case c.PhaseDuration != nil && c.PhaseDuration.D() < 0:
		return invalidf("phase_duration must not be negative (0: no phasing), got %s", c.PhaseDuration.D())
	case c.WindowDuration != nil && c.WindowDuration.D() <= 0:
		return invalidf("window_duration must be above 0, got %s", c.WindowDuration.D())
	case c.UpdateTimeout != nil && c.UpdateTimeout.D() < 0:
		return invalidf("update_timeout must not be negative (0: none), got %s", c.UpdateTimeout.D())
	}
	var p fleet.Policy
	c.Apply(&p)
	if err := p.Validate(); err != nil {
		return invalidf("%v", err)
	}
	return nil
}

// Apply sets p's fields named by c.
func (c PolicyChange) Apply(p *fleet.Policy) {
	if c.MaxHosts != nil {
		p.MaxHosts = *c.MaxHosts
	}
	if c.MaxPerPeriod != nil {
		p.MaxPerPeriod = *c.MaxPerPeriod
	}
	if c.Period != nil {
		p.Period = *c.Period
	}
	if c.PhaseStart != nil {
		p.PhaseStart = *c.PhaseStart
	}
	if c.PhaseDuration != nil {
		p.PhaseDuration = *c.PhaseDuration
	}
	if c.SafeMode != nil {
		p.SafeMode = *c.SafeMode
	}
	if c.MaxFailedHosts != nil {
		p.MaxFailedHosts = *c.MaxFailedHosts
	}
	if c.Windows != nil {
		p.Windows = *c.Windows
	}
	if c.WindowDuration != nil {
		p.WindowDuration = *c.WindowDuration
	}
	if c.TimeZone != nil {
		p.TimeZone = *c.TimeZone
	}
	if c.UpdateTimeout != nil {
		p.UpdateTimeout = *c.UpdateTimeout
	}
}

// ChannelInfo is GET /v1/fleet/channel: the channel, its holders and the
// hosts' results on its release.
type ChannelInfo struct {
	Group   string         `json:"group"`
	Channel *fleet.Channel `json:"channel"`
	Holders []fleet.Holder `json:"holders"`
	Results []fleet.Result `json:"results"`
}

// ChannelView reads a ChannelInfo.
func ChannelView(ctx context.Context, s *fleet.Store) (ChannelInfo, error) {
	v, err := s.View(ctx)
	if err != nil {
		return ChannelInfo{}, etcdError(err)
	}
	return ChannelInfo{Group: s.Group(), Channel: v.Channel, Holders: orEmpty(v.Holders), Results: orEmpty(v.Results)}, nil
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// etcdError is a 503: the fleet's etcd did not answer.
func etcdError(err error) error {
	return &httpError{Code: http.StatusServiceUnavailable, Msg: "etcd did not answer: " + err.Error()}
}

// fleetError maps the fleet's errors to statuses.
func fleetError(err error) error {
	switch {
	case errors.Is(err, fleet.ErrNoChannel), errors.Is(err, fleet.ErrNoHolder):
		return &httpError{Code: http.StatusNotFound, Msg: err.Error()}
	case errors.Is(err, fleet.ErrReleaseChanged):
		return &httpError{Code: http.StatusConflict, Msg: err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return etcdError(err)
	}
	return &httpError{Code: http.StatusBadRequest, Msg: err.Error()}
}

// decodeJSON reads a small JSON body (empty: zero value), no unknown fields.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && err.Error() != "EOF" {
		return invalidf("invalid JSON body: %v", err)
	}
	return nil
}

// fleetCollector exports this host's fleet view and the registry's host
// states.
type fleetCollector struct{ a *Agent }

var (
	fleetConnectedDesc = prometheus.NewDesc("lxcfleet_fleet_etcd_connected", "1 while this host's last etcd request succeeded.", nil, nil)
	fleetSlotDesc      = prometheus.NewDesc("lxcfleet_fleet_slot_held", "1 while this host holds a fleet update slot.", nil, nil)
	fleetHostsDesc     = prometheus.NewDesc("lxcfleet_fleet_hosts", "Hosts of this host's group in the registry, by state (idle, waiting, updating, failed).", []string{"state"}, nil)
)

func (c fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- fleetConnectedDesc
	ch <- fleetSlotDesc
	ch <- fleetHostsDesc
}

func (c fleetCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.a.FleetStatus()
	if st == nil {
		return
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	ch <- prometheus.MustNewConstMetric(fleetConnectedDesc, prometheus.GaugeValue, b2f(st.Connected))
	ch <- prometheus.MustNewConstMetric(fleetSlotDesc, prometheus.GaugeValue, b2f(st.Slot != nil))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hs, err := c.a.fleet.Store().Hosts(ctx)
	if err != nil {
		return
	}
	n := map[string]int{fleet.StateIdle: 0, fleet.StateWaiting: 0, fleet.StateUpdating: 0, fleet.StateFailed: 0}
	for _, h := range hs {
		n[h.State]++
	}
	for s, v := range n {
		ch <- prometheus.MustNewConstMetric(fleetHostsDesc, prometheus.GaugeValue, float64(v), s)
	}
}
