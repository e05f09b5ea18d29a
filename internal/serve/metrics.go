package serve

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are a server's Prometheus metrics, in a registry of its own (so that several
// servers, as in tests, do not collide in the global one). Every name begins with probe_.
type metrics struct {
	reg             *prometheus.Registry
	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	promptTokens    prometheus.Counter
	generatedTokens prometheus.Counter
	scores          *prometheus.HistogramVec
	fires           *prometheus.CounterVec
}

// scoreBuckets span the scores of linear probes, whose thresholds sit near 0 on a scale of a
// few units.
var scoreBuckets = []float64{-10, -5, -2, -1, -0.5, -0.25, 0, 0.25, 0.5, 1, 2, 5, 10}

func newMetrics(eng Engine) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "probe_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "probe_request_duration_seconds", Help: "HTTP request durations (a stream's whole length) by route and status code.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 12),
		}, []string{"route", "code"}),
		promptTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "probe_prompt_tokens_total", Help: "Prompt tokens decoded for completed requests.",
		}),
		generatedTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "probe_generated_tokens_total", Help: "Tokens generated and kept.",
		}),
		scores: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "probe_score", Help: "Probe scores by probe, of prompts (at=prompt) and of generated tokens (at=token).",
			Buckets: scoreBuckets,
		}, []string{"probe", "at"}),
		fires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "probe_fires_total", Help: "Probe fires by probe, on prompts (at=prompt) and generations (at=token; once per generation).",
		}, []string{"probe", "at"}),
	}
	reg.MustRegister(m.requests, m.duration, m.promptTokens, m.generatedTokens, m.scores, m.fires,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "probe_queue_depth", Help: "Jobs waiting for a slot."},
			func() float64 { _, _, q := eng.Load(); return float64(q) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "probe_busy_slots", Help: "Slots running a job."},
			func() float64 { b, _, _ := eng.Load(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "probe_slots", Help: "Slots of the engine."},
			func() float64 { _, s, _ := eng.Load(); return float64(s) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// observeScore records a probe's score, and its fire.
func (m *metrics) observeScore(probe, at string, score float64, fired bool) {
	m.scores.WithLabelValues(probe, at).Observe(score)
	if fired {
		m.fires.WithLabelValues(probe, at).Inc()
	}
}

// handler serves the registry in Prometheus' text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
