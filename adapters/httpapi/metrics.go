package httpapi

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newHTTPMetrics(reg *prometheus.Registry) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledgerd_http_requests_total", Help: "HTTP requests by route and status.",
		}, []string{"route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ledgerd_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

func (m *httpMetrics) observe(route string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

// projectionCollector reports each projection's position and lag when
// scraped, from the runners' own state.
type projectionCollector struct{ p Projections }

var (
	projPosition = prometheus.NewDesc("ledgerd_projection_position", "Stream sequence of the last applied commit.", []string{"projection"}, nil)
	projLag      = prometheus.NewDesc("ledgerd_projection_lag_events", "Events in the stream not yet applied.", []string{"projection"}, nil)
	projLagMs    = prometheus.NewDesc("ledgerd_projection_lag_ms", "Age of the oldest unapplied event, in milliseconds.", []string{"projection"}, nil)
	projFailed   = prometheus.NewDesc("ledgerd_projection_failed", "1 if the projection is stopped by a poison event.", []string{"projection"}, nil)
	projEvents   = prometheus.NewDesc("ledgerd_projection_events_applied_total", "Events applied by the projection.", []string{"projection"}, nil)
)

func (c projectionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{projPosition, projLag, projLagMs, projFailed, projEvents} {
		ch <- d
	}
}

func (c projectionCollector) Collect(ch chan<- prometheus.Metric) {
	if c.p == nil {
		return
	}
	for _, st := range c.p.Statuses() {
		failed := 0.0
		if st.State == "failed" {
			failed = 1
		}
		ch <- prometheus.MustNewConstMetric(projPosition, prometheus.GaugeValue, float64(st.Position), st.Name)
		ch <- prometheus.MustNewConstMetric(projLag, prometheus.GaugeValue, float64(st.LagEvents), st.Name)
		ch <- prometheus.MustNewConstMetric(projLagMs, prometheus.GaugeValue, float64(st.LagMillis), st.Name)
		ch <- prometheus.MustNewConstMetric(projFailed, prometheus.GaugeValue, failed, st.Name)
		ch <- prometheus.MustNewConstMetric(projEvents, prometheus.CounterValue, float64(st.Events), st.Name)
	}
}

// breakerCollector reports each provider's circuit: 0 closed, 1 half
// open, 2 open.
type breakerCollector struct{ t TaskRunner }

var breakerState = prometheus.NewDesc("ledgerd_provider_circuit_state", "Provider circuit: 0 closed, 1 half open, 2 open.", []string{"provider"}, nil)

func (c breakerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- breakerState }

func (c breakerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.t.BreakerStates() {
		v := 0.0
		switch s.State {
		case "half_open":
			v = 1
		case "open":
			v = 2
		}
		ch <- prometheus.MustNewConstMetric(breakerState, prometheus.GaugeValue, v, s.Provider)
	}
}
