package agent

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"lxcfleet/codeupdate"
	"lxcfleet/lxcctl"
)

// maxBodyBytes bounds a request body.
const maxBodyBytes = 64 << 10

// httpError is an error with the status and message the client gets; Err
// is logged, never sent.
type httpError struct {
	Code int
	Msg  string
	Err  error
	// JobID names the running job of a 409.
	JobID string
}

func (e *httpError) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

// handlerFunc is an API handler that returns its error.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// errorBody is the JSON body of every error response.
type errorBody struct {
	Error string `json:"error"`
	JobID string `json:"job_id,omitempty"`
}

// serve adapts a handlerFunc: it maps errors to a status and a JSON body.
func (a *Agent) serve(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		he := a.toHTTPError(err)
		if he.Code >= 500 {
			a.log.Error("API request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		} else if he.Err != nil {
			a.log.Debug("API request refused", "method", r.Method, "path", r.URL.Path, "status", he.Code, "err", he.Err)
		}
		writeJSON(w, he.Code, errorBody{Error: he.Msg, JobID: he.JobID})
	})
}

// toHTTPError maps the agent's errors to statuses.
func (a *Agent) toHTTPError(err error) *httpError {
	var he *httpError
	var inv InvalidError
	var busy BusyError
	switch {
	case errors.As(err, &he):
		return he
	case errors.As(err, &busy):
		return &httpError{Code: http.StatusConflict, Msg: busy.Error(), JobID: busy.JobID}
	case errors.As(err, &inv):
		return &httpError{Code: http.StatusBadRequest, Msg: inv.Msg}
	case errors.Is(err, ErrJobNotFound), errors.Is(err, lxcctl.ErrNotFound):
		return &httpError{Code: http.StatusNotFound, Msg: err.Error()}
	}
	return &httpError{Code: http.StatusInternalServerError, Msg: "internal error (see the agent's log)", Err: err}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// DecodeRequest reads a JSON job request: at most maxBodyBytes, no unknown
// fields, one value. An empty body is an empty request. Every error is an
// InvalidError with a message fit for the client.
func DecodeRequest(r io.Reader) (Request, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxBodyBytes+1))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe) || len(b) > maxBodyBytes:
		return Request{}, invalidf("request body larger than %d bytes", maxBodyBytes)
	case err != nil:
		return Request{}, invalidf("reading request body: %v", err)
	}
	var req Request
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if errors.Is(err, io.EOF) {
			return Request{}, nil
		}
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Type == reflect.TypeFor[Duration]() {
			return Request{}, invalidf("invalid JSON body: %s must be a duration string like \"30s\", got %s", ute.Field, ute.Value)
		}
		return Request{}, invalidf("invalid JSON body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Request{}, invalidf("invalid JSON body: trailing data after the request object")
	}
	return req, nil
}

// flusherFunc flushes through an http.ResponseController.
type flusherFunc func() error

func (f flusherFunc) Flush() { _ = f() }

// Handler returns the API's routes.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", a.serve(a.handleHealthz))
	mux.Handle("GET /v1/host", a.serve(a.handleHost))
	mux.Handle("GET /v1/build", a.serve(a.handleBuild))
	mux.Handle("GET /v1/containers", a.serve(a.handleContainers))
	mux.Handle("GET /v1/containers/{name}", a.serve(a.handleContainer))
	mux.Handle("POST /v1/containers/{name}/{action}", a.serve(a.handleContainerAction))
	mux.Handle("POST /v1/jobs", a.serve(a.handleSubmit("")))
	for _, k := range []JobKind{KindStopAll, KindStartAll, KindRestart, KindUpdate, KindRollback, KindCheckUpdate, KindBuild} {
		mux.Handle("POST /v1/"+string(k), a.serve(a.handleSubmit(k)))
	}
	mux.Handle("GET /v1/jobs", a.serve(a.handleJobs))
	mux.Handle("GET /v1/jobs/{id}", a.serve(a.handleJob))
	mux.Handle("GET /v1/jobs/{id}/steps", a.serve(a.handleSteps))
	mux.Handle("GET /v1/jobs/{id}/events", a.serve(a.handleEvents))
	mux.Handle("POST /v1/jobs/{id}/cancel", a.serve(a.handleCancel))
	mux.Handle("DELETE /v1/jobs/{id}", a.serve(a.handleCancel))
	mux.Handle("GET /v1/releases", a.serve(a.handleReleases))
	mux.Handle("GET /v1/update-available", a.serve(a.handleUpdateAvailable))
	mux.Handle("GET /v1/schedules", a.serve(a.handleSchedules))
	a.fleetRoutes(mux)
	if a.metrics != nil {
		mux.Handle("GET /metrics", a.metrics.handler())
	}
	mux.Handle("/v1/", a.serve(func(w http.ResponseWriter, r *http.Request) error {
		return &httpError{Code: http.StatusNotFound, Msg: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)}
	}))
	return mux
}

// RequireToken wraps h so that every request must carry
// "Authorization: Bearer <token>". Paths in open are served without it.
func RequireToken(token string, h http.Handler, open ...string) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range open {
			if r.URL.Path == p || (strings.HasSuffix(p, "/") && strings.HasPrefix(r.URL.Path, p)) {
				h.ServeHTTP(w, r)
				return
			}
		}
		got := []byte(r.Header.Get("Authorization"))
		if token == "" || subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="lxcfleet"`)
			writeJSON(w, http.StatusUnauthorized, errorBody{Error: "missing or wrong bearer token"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (a *Agent) handleHealthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	return nil
}

// HostInfo is the host's overview.
type HostInfo struct {
	Hostname     string          `json:"hostname"`
	LXCPath      string          `json:"lxcpath,omitempty"`
	Build        *BuildInfo      `json:"build,omitempty"`
	RunningJob   *Job            `json:"running_job,omitempty"`
	Counts       map[string]int  `json:"counts"`
	Lockers      int             `json:"lockers"`
	OffCurrent   int             `json:"off_current"` // running lockers not on current
	UpdateCheck  json.RawMessage `json:"update_check,omitempty"`
	Schedules    []ScheduleInfo  `json:"schedules"`
	InventoryAt  time.Time       `json:"inventory_at"`
	AgentVersion string          `json:"agent_version,omitempty"`
	// ReleaseWatch is the release still watched after its update, if any.
	ReleaseWatch *WatchInfo `json:"release_watch,omitempty"`
}

func (a *Agent) hostInfo() HostInfo {
	h := HostInfo{Hostname: hostname(), LXCPath: a.cfg.LXCPath, Counts: map[string]int{}, Schedules: a.Schedules(), AgentVersion: a.cfg.Version}
	if b, err := a.build(); err == nil {
		h.Build = b
	}
	if j, ok := a.Running(); ok {
		h.RunningJob = &j
	}
	for _, l := range a.inv.snapshot() {
		h.Counts[strings.ToLower(string(l.State))]++
		h.Lockers++
		if l.State == lxcctl.StateRunning && !l.OnCurrent && h.Build != nil {
			h.OffCurrent++
		}
	}
	h.InventoryAt = a.inv.refreshedAt()
	h.UpdateCheck, _ = a.LastUpdateCheck()
	h.ReleaseWatch = a.watch.info()
	return h
}

func (a *Agent) handleHost(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, a.hostInfo())
	return nil
}

// BuildInfo is the current release as GET /v1/build and /v1/host show it:
// the release record, with its name once more as "release" (the key the
// console and older clients read).
type BuildInfo struct {
	codeupdate.Release
	ReleaseName string `json:"release"`
}

func (a *Agent) build() (*BuildInfo, error) {
	if a.deps.Code == nil {
		return nil, &httpError{Code: http.StatusNotFound, Msg: "no code origin configured"}
	}
	rel, err := a.deps.Code.Current()
	if err != nil {
		return nil, &httpError{Code: http.StatusNotFound, Msg: "no current release yet (run update-code)", Err: err}
	}
	return &BuildInfo{Release: rel, ReleaseName: rel.Name}, nil
}

func (a *Agent) handleBuild(w http.ResponseWriter, r *http.Request) error {
	b, err := a.build()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

func (a *Agent) handleContainers(w http.ResponseWriter, r *http.Request) error {
	g := r.URL.Query().Get("group")
	if g == "" {
		body, etag := a.inv.encodedAll()
		h := w.Header()
		h.Set("ETag", etag)
		// Any cache must ask again each time (no-cache); only the
		// caller's own may keep it (private: it needed a token).
		h.Set("Cache-Control", "private, no-cache")
		if etagMatches(r.Header.Get("If-None-Match"), etag) {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
		return nil
	}
	var lockers []Locker
	for _, l := range a.inv.snapshot() {
		for _, x := range l.Groups {
			if x == g {
				lockers = append(lockers, l)
				break
			}
		}
	}
	if lockers == nil {
		lockers = []Locker{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"containers": lockers, "at": a.inv.refreshedAt()})
	return nil
}

// etagMatches says whether an If-None-Match header names etag (RFC 9110
// 13.1.2: a list of entity tags, weak ones compared weakly, or "*").
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

func (a *Agent) handleContainer(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := lxcctl.ValidName(name); err != nil {
		return InvalidError{err.Error()}
	}
	l, ok := a.inv.get(name)
	if !ok {
		return &httpError{Code: http.StatusNotFound, Msg: fmt.Sprintf("container %q not found", name)}
	}
	writeJSON(w, http.StatusOK, l)
	return nil
}

func (a *Agent) handleContainerAction(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := lxcctl.ValidName(name); err != nil {
		return InvalidError{err.Error()}
	}
	var kind JobKind
	switch r.PathValue("action") {
	case "start":
		kind = KindStartAll
	case "stop":
		kind = KindStopAll
	case "restart":
		kind = KindRestart
	default:
		return &httpError{Code: http.StatusNotFound, Msg: fmt.Sprintf("unknown action %q (want start, stop or restart)", r.PathValue("action"))}
	}
	req, err := DecodeRequest(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		return err
	}
	req.Kind, req.Names, req.Group = kind, []string{name}, ""
	return a.submit(w, req)
}

// handleSubmit starts a job; kind "" takes the kind from the body.
func (a *Agent) handleSubmit(kind JobKind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		req, err := DecodeRequest(http.MaxBytesReader(w, r.Body, maxBodyBytes))
		if err != nil {
			return err
		}
		if kind != "" {
			if req.Kind != "" && req.Kind != kind {
				return invalidf("body kind %q does not match endpoint %s", req.Kind, kind)
			}
			req.Kind = kind
		}
		return a.submit(w, req)
	}
}

func (a *Agent) submit(w http.ResponseWriter, req Request) error {
	if req.Trigger == "" {
		req.Trigger = "api"
	}
	job, err := a.Submit(req)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/jobs/"+job.ID)
	writeJSON(w, http.StatusAccepted, job)
	return nil
}

func (a *Agent) handleJobs(w http.ResponseWriter, r *http.Request) error {
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 1000 {
			return invalidf("limit must be a number from 1 to 1000, got %q", v)
		}
		limit = n
	}
	jobs, err := a.Jobs(limit)
	if err != nil {
		return err
	}
	if jobs == nil {
		jobs = []Job{}
	}
	for i := range jobs {
		jobs[i].Tally = jobs[i].Tally.counts() // the list shows counts; GET /v1/jobs/{id} the lockers
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": jobs})
	return nil
}

func jobID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if id == "" || len(id) > 64 || strings.ContainsAny(id, "/ \t\n\x00") {
		return "", invalidf("invalid job id %q", id)
	}
	return id, nil
}

func (a *Agent) handleJob(w http.ResponseWriter, r *http.Request) error {
	id, err := jobID(r)
	if err != nil {
		return err
	}
	job, err := a.Job(id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, job)
	return nil
}

func (a *Agent) handleSteps(w http.ResponseWriter, r *http.Request) error {
	id, err := jobID(r)
	if err != nil {
		return err
	}
	steps, err := a.Steps(id)
	if err != nil {
		return err
	}
	if steps == nil {
		steps = []Step{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"steps": steps})
	return nil
}

func (a *Agent) handleCancel(w http.ResponseWriter, r *http.Request) error {
	id, err := jobID(r)
	if err != nil {
		return err
	}
	job, err := a.Cancel(id)
	if err != nil {
		var inv InvalidError
		if errors.As(err, &inv) {
			return &httpError{Code: http.StatusConflict, Msg: inv.Msg}
		}
		return err
	}
	writeJSON(w, http.StatusAccepted, job)
	return nil
}

// handleEvents streams a job's events as Server-Sent Events: the events so
// far (after Last-Event-ID), then live ones, then an "end" event carrying
// the job record.
func (a *Agent) handleEvents(w http.ResponseWriter, r *http.Request) error {
	id, err := jobID(r)
	if err != nil {
		return err
	}
	past, ch, unsub, err := a.Follow(id)
	if err != nil {
		return err
	}
	defer unsub()
	rc := http.NewResponseController(w)
	// The stream outlives the listener's read timeout: lift it for this
	// request (the request has been read).
	_ = rc.SetReadDeadline(time.Time{})
	fl := flusherFunc(rc.Flush)
	after, _ := strconv.Atoi(r.Header.Get("Last-Event-ID"))
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(e Event) {
		if e.Seq <= after {
			return
		}
		b, _ := json.Marshal(e)
		fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Type, b)
	}
	for _, e := range past {
		send(e)
	}
	fl.Flush()
	beat := time.NewTicker(15 * time.Second)
	defer beat.Stop()
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				job, _ := a.Job(id)
				b, _ := json.Marshal(job)
				fmt.Fprintf(w, "event: end\ndata: %s\n\n", b)
				fl.Flush()
				return nil
			}
			send(e)
			fl.Flush()
		case <-beat.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			fl.Flush()
		case <-r.Context().Done():
			return nil
		}
	}
}

func (a *Agent) handleReleases(w http.ResponseWriter, r *http.Request) error {
	if a.deps.Code == nil {
		return &httpError{Code: http.StatusNotFound, Msg: "no code origin configured"}
	}
	rels, err := a.deps.Code.Releases()
	if err != nil {
		return err
	}
	inUse, _ := a.inv.releasesInUse()
	out := make([]map[string]any, 0, len(rels))
	for _, x := range rels {
		b, _ := json.Marshal(x)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		m["in_use"] = inUse[x.Name]
		out = append(out, m)
	}
	writeJSON(w, http.StatusOK, map[string]any{"releases": out})
	return nil
}

func (a *Agent) handleUpdateAvailable(w http.ResponseWriter, r *http.Request) error {
	v, err := a.LastUpdateCheck()
	if err != nil {
		return err
	}
	if v == nil {
		writeJSON(w, http.StatusOK, map[string]any{"checked": false, "hint": "POST /v1/check-update to check now"})
		return nil
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(v)
	return err
}

func (a *Agent) handleSchedules(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"schedules": a.Schedules()})
	return nil
}

// checkGroup refuses a group no locker belongs to (bad input, naming the
// groups that exist), so that a typo is not a job with nothing to do.
func (a *Agent) checkGroup(ctx context.Context, group string) error {
	all, err := a.deps.Containers.Select(ctx, nil, "")
	if err != nil {
		return fmt.Errorf("listing lockers for group %q: %w", group, err)
	}
	seen := map[string]bool{}
	for _, in := range all {
		if in.InGroup(group) {
			return nil
		}
		for _, g := range in.Groups {
			seen[g] = true
		}
	}
	groups := slices.Sorted(maps.Keys(seen))
	if len(groups) == 0 {
		return invalidf("unknown group %q: no locker has a group", group)
	}
	return invalidf("unknown group %q (groups: %s)", group, strings.Join(groups, ", "))
}
