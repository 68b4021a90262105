package agent

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the agent's Prometheus metrics, in a registry of its own.
type metrics struct {
	reg     *prometheus.Registry
	jobs    *prometheus.CounterVec
	jobDur  *prometheus.HistogramVec
	ops     *prometheus.CounterVec
	sup     *prometheus.CounterVec
	lockers *prometheus.Desc
	health  *prometheus.Desc
	offCur  *prometheus.Desc
	build   *prometheus.Desc
	info    *prometheus.Desc
	upd     *prometheus.Desc
	behind  *prometheus.Desc
	running *prometheus.Desc
	agent   *prometheus.Desc
	downW   *prometheus.Desc
	lastOK  *prometheus.GaugeVec
	a       *Agent
}

// alertKinds are the job kinds whose last success is exported (an alert:
// no successful update-code or check-update for too long), and whose
// failure counters exist from the start (0), so that rate() and increase()
// see the first failure.
var alertKinds = []JobKind{KindUpdate, KindCheckUpdate, KindStartAll, KindStopAll, KindRestart, KindRollback, KindRecover, KindBuild}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		a:   a,
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lxcfleet_jobs_total", Help: "Jobs finished, by kind and end state.",
		}, []string{"kind", "state"}),
		jobDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "lxcfleet_job_duration_seconds", Help: "Duration of finished jobs, by kind.",
			Buckets: []float64{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600},
		}, []string{"kind"}),
		sup: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lxcfleet_supervision_total", Help: "Supervision actions: restart (lockers that stopped on their own), gave-up (a locker hit its start limit), rollback (a crash-looping release).",
		}, []string{"action"}),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lxcfleet_container_operations_total", Help: "Container starts and stops done by jobs, by action and outcome (healthy, clean, killed, failed, unhealthy, ...).",
		}, []string{"action", "outcome"}),
		lockers: prometheus.NewDesc("lxcfleet_lockers", "Lockers by LXC state.", []string{"state"}, nil),
		health:  prometheus.NewDesc("lxcfleet_lockers_health", "Lockers by last health check result.", []string{"health"}, nil),
		offCur:  prometheus.NewDesc("lxcfleet_lockers_off_current", "Running lockers whose release is not the current one.", nil, nil),
		build:   prometheus.NewDesc("lxcfleet_build_number", "Build number of the current release.", nil, nil),
		info:    prometheus.NewDesc("lxcfleet_build_info", "The current release (value 1).", []string{"release", "sha"}, nil),
		upd:     prometheus.NewDesc("lxcfleet_update_available", "1 when the last check found commits to update to.", nil, nil),
		behind:  prometheus.NewDesc("lxcfleet_update_commits_behind", "Commits the current release is behind its target, at the last check.", nil, nil),
		running: prometheus.NewDesc("lxcfleet_job_running", "1 while a mutating job runs.", nil, nil),
		agent:   prometheus.NewDesc("lxcfleet_agent_info", "The agent itself (value 1): its version.", []string{"version"}, nil),
		downW:   prometheus.NewDesc("lxcfleet_lockers_down_wanted", "Stopped lockers whose desired state is running (lockers stopped on purpose are not counted).", nil, nil),
		lastOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lxcfleet_last_success_timestamp_seconds", Help: "When a job of this kind last succeeded (Unix seconds; 0: never, in the kept history).",
		}, []string{"kind"}),
	}
	for _, k := range alertKinds {
		m.jobs.WithLabelValues(string(k), string(JobFailed))
		m.lastOK.WithLabelValues(string(k))
	}
	if jobs, err := a.jr.Jobs(0); err == nil {
		for i := len(jobs) - 1; i >= 0; i-- { // oldest first
			if j := jobs[i]; j.State == JobSucceeded && !j.Finished.IsZero() {
				m.lastOK.WithLabelValues(string(j.Kind)).Set(float64(j.Finished.Unix()))
			}
		}
	}
	m.reg.MustRegister(m.jobs, m.jobDur, m.ops, m.sup, m.lastOK, m,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Describe implements prometheus.Collector for the gauges read at scrape.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.lockers, m.health, m.offCur, m.build, m.info, m.upd, m.behind, m.running, m.agent, m.downW} {
		ch <- d
	}
}

// Collect reads the inventory snapshot, the current build and the last
// update check: a scrape costs the host nothing.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	states := map[string]int{"running": 0, "stopped": 0}
	health := map[string]int{"healthy": 0, "starting": 0, "unhealthy": 0, "unknown": 0}
	off, downWanted := 0, 0
	cur := m.a.currentRelease()
	desired, _ := m.a.jr.Desired()
	for _, l := range m.a.inv.snapshot() {
		if d, ok := desired[l.Name]; ok && d.Running && l.State != "RUNNING" {
			downWanted++
		}
		states[strings.ToLower(string(l.State))]++
		if l.Health != "stopped" {
			health[l.Health]++
		}
		if cur != "" && l.State == "RUNNING" && !l.OnCurrent {
			off++
		}
	}
	for s, n := range states {
		ch <- prometheus.MustNewConstMetric(m.lockers, prometheus.GaugeValue, float64(n), s)
	}
	for h, n := range health {
		ch <- prometheus.MustNewConstMetric(m.health, prometheus.GaugeValue, float64(n), h)
	}
	ch <- prometheus.MustNewConstMetric(m.offCur, prometheus.GaugeValue, float64(off))
	ch <- prometheus.MustNewConstMetric(m.downW, prometheus.GaugeValue, float64(downWanted))
	ch <- prometheus.MustNewConstMetric(m.agent, prometheus.GaugeValue, 1, m.a.cfg.Version)
	if b, err := m.a.build(); err == nil {
		ch <- prometheus.MustNewConstMetric(m.build, prometheus.GaugeValue, float64(b.Build))
		ch <- prometheus.MustNewConstMetric(m.info, prometheus.GaugeValue, 1, b.Name, b.SHA)
	}
	if raw, err := m.a.LastUpdateCheck(); err == nil && raw != nil {
		var u struct {
			Available bool `json:"available"`
			Behind    int  `json:"behind"`
		}
		if json.Unmarshal(raw, &u) == nil {
			v := 0.0
			if u.Available {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(m.upd, prometheus.GaugeValue, v)
			ch <- prometheus.MustNewConstMetric(m.behind, prometheus.GaugeValue, float64(u.Behind))
		}
	}
	running := 0.0
	if _, ok := m.a.Running(); ok {
		running = 1
	}
	ch <- prometheus.MustNewConstMetric(m.running, prometheus.GaugeValue, running)
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// jobDone records a finished job.
func (m *metrics) jobDone(j Job) {
	if m == nil {
		return
	}
	m.jobs.WithLabelValues(string(j.Kind), string(j.State)).Inc()
	m.jobDur.WithLabelValues(string(j.Kind)).Observe(j.Finished.Sub(j.Created).Seconds())
	if j.State == JobSucceeded {
		m.lastOK.WithLabelValues(string(j.Kind)).Set(float64(j.Finished.Unix()))
	}
}

// containerOp records one container start or stop.
// supervision counts one supervision action.
func (m *metrics) supervision(action string) {
	if m != nil {
		m.sup.WithLabelValues(action).Inc()
	}
}

func (m *metrics) containerOp(action, outcome string) {
	if m == nil || outcome == "" {
		return
	}
	m.ops.WithLabelValues(action, outcome).Inc()
}
