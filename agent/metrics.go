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
	a       *Agent
}

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
	}
	m.reg.MustRegister(m.jobs, m.jobDur, m.ops, m.sup, m,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Describe implements prometheus.Collector for the gauges read at scrape.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.lockers, m.health, m.offCur, m.build, m.info, m.upd, m.behind, m.running} {
		ch <- d
	}
}

// Collect reads the inventory snapshot, the current build and the last
// update check: a scrape costs the host nothing.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	states := map[string]int{"running": 0, "stopped": 0}
	health := map[string]int{"healthy": 0, "starting": 0, "unhealthy": 0, "unknown": 0}
	off := 0
	cur := m.a.currentRelease()
	for _, l := range m.a.inv.snapshot() {
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
	if b, err := m.a.build(); err == nil {
		ch <- prometheus.MustNewConstMetric(m.build, prometheus.GaugeValue, float64(b.Build))
		ch <- prometheus.MustNewConstMetric(m.info, prometheus.GaugeValue, 1, b.Release, b.SHA)
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
