package handlers

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the HTTP side's Prometheus metrics (deliveries by outcome,
// request latency by route, append and group commit latency) and the
// /metrics handler of the registry they live in. It is safe for concurrent
// use.
type Metrics struct {
	reg        *prometheus.Registry
	deliveries *prometheus.CounterVec
	requests   *prometheus.HistogramVec
	appends    *prometheus.HistogramVec
	commits    *prometheus.HistogramVec
	batchSize  prometheus.Histogram
}

// NewMetrics creates the HTTP metrics and registers them in reg, which
// /metrics (Handler) then serves with whatever else is registered there
// (process, Go, database pool and projector collectors). It returns an error
// when reg already holds metrics of the same names.
func NewMetrics(reg *prometheus.Registry) (*Metrics, error) {
	m := &Metrics{
		reg: reg,
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledger_webhook_deliveries_total",
			Help: "Webhook deliveries answered, by outcome (stored, duplicate, conflict, invalid_signature, too_large, malformed, busy, unavailable, rate_limited, error).",
		}, []string{"outcome"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ledger_http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "code"}),
		appends: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ledger_append_duration_seconds",
			Help:    "Time one delivery spends in the event store's append (waiting for and running its group commit), by result (ok, unavailable, error).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"result"}),
		commits: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ledger_group_commit_duration_seconds",
			Help:    "Time one group commit (a multi-row INSERT of waiting deliveries) took, by result (ok, error, resealed: a new user's data key was stored already, so the group was sealed again under it and inserted once more; redelivered: a delivery of the group was stored already, so the group was inserted once more skipping it).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"result"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ledger_group_commit_deliveries",
			Help:    "Deliveries one group commit carried.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 200},
		}),
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.requests, m.appends, m.commits, m.batchSize} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Every outcome's counter starts at 0, so rates and alerts work before
	// the first delivery of that outcome.
	for _, o := range Outcomes {
		m.deliveries.WithLabelValues(o)
	}
	return m, nil
}

// ObserveDelivery implements DeliveryObserver: it counts the delivery by
// outcome. The event type is not a label (it comes from the sender).
func (m *Metrics) ObserveDelivery(outcome string, _ string, _ time.Duration) {
	m.deliveries.WithLabelValues(outcome).Inc()
}

// ObserveCommit records one group commit of the event store (see
// schema.Store.OnCommit): its size and duration.
func (m *Metrics) ObserveCommit(deliveries int, d time.Duration, err error) {
	result := "ok"
	switch {
	case errors.Is(err, schema.ErrKeyRowTaken):
		result = "resealed"
	case errors.Is(err, schema.ErrDeliveryTaken):
		result = "redelivered"
	case err != nil:
		result = "error"
	}
	m.commits.WithLabelValues(result).Observe(d.Seconds())
	if result == "ok" || result == "error" { // a group tried again is counted once, when inserted again
		m.batchSize.Observe(float64(deliveries))
	}
}

// Handler serves the registry in the Prometheus text format. A collector
// that fails leaves its metrics out; the others are still served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 2,
		Timeout:             10 * time.Second,
	})
}

// TimeAppends returns an Appender that appends through a and records each
// Append's latency in ledger_append_duration_seconds.
func (m *Metrics) TimeAppends(a Appender) Appender { return &timedAppender{a: a, h: m.appends} }

type timedAppender struct {
	a Appender
	h *prometheus.HistogramVec
}

func (t *timedAppender) AppendDelivery(ctx context.Context, d domain.Delivery) (domain.AppendResult, error) {
	start := time.Now()
	res, err := t.a.AppendDelivery(ctx, d)
	result := "ok"
	switch {
	case err == nil:
	case domain.ErrorCode(err) == domain.EUNAVAILABLE:
		result = "unavailable"
	default:
		result = "error"
	}
	t.h.WithLabelValues(result).Observe(time.Since(start).Seconds())
	return res, err
}

// instrument returns middleware that records every request's latency in
// ledger_http_request_duration_seconds, labelled with the route pattern of
// mux the request matches (not the raw path: a bounded set) and the status.
func (m *Metrics) instrument(mux *http.ServeMux) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			_, route := mux.Handler(r)
			if route == "" {
				route = "unmatched"
			}
			sw := &statusWriter{ResponseWriter: w}
			next.ServeHTTP(sw, r)
			if sw.status == 0 {
				sw.status = http.StatusOK
			}
			m.requests.WithLabelValues(route, strconv.Itoa(sw.status)).Observe(time.Since(start).Seconds())
		})
	}
}

// statusWriter remembers the status written. Unwrap lets
// http.ResponseController reach the underlying writer (Flush, deadlines).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
