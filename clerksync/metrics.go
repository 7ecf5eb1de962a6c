package clerksync

import (
	"context"
	"log/slog"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector is a prometheus.Collector for faithfulness to Clerk, read from
// the database at scrape time (so right whichever process stored or ran
// what): when the newest webhook delivery was stored, overall and per event
// family (an alert "no deliveries for N minutes" is one PromQL line), and
// the drift the last reconcile run found, by kind. Safe for concurrent
// use; each scrape makes two small queries bounded by Timeout.
type Collector struct {
	db  *sqlx.DB
	log *slog.Logger
	// Timeout bounds one scrape's queries (default 3 s).
	Timeout time.Duration

	last, lastFamily                 *prometheus.Desc
	drift, repaired, runAt, heldBack *prometheus.Desc
}

// NewCollector returns a Collector over db; log (nil: discard) is told why
// a scrape failed.
func NewCollector(db *sqlx.DB, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Collector{
		db: db, log: log, Timeout: 3 * time.Second,
		last:       prometheus.NewDesc("ledger_last_delivery_timestamp_seconds", "Unix time the newest webhook delivery was stored (Backend API snapshots excluded); absent while none is.", nil, nil),
		lastFamily: prometheus.NewDesc("ledger_last_delivery_family_timestamp_seconds", "Unix time the newest webhook delivery of the event family (user, session, email, organization, …) was stored.", []string{"family"}, nil),
		drift:      prometheus.NewDesc("ledger_reconcile_drift_users", "Users the last reconcile run found, by kind: missing, stale, gone, same, deleted_here (absent before the first run).", []string{"kind"}, nil),
		repaired:   prometheus.NewDesc("ledger_reconcile_repaired_users", "Events the last reconcile run appended to repair the drift.", nil, nil),
		runAt:      prometheus.NewDesc("ledger_reconcile_last_run_timestamp_seconds", "Unix time the last reconcile run started.", []string{"outcome"}, nil),
		heldBack:   prometheus.NewDesc("ledger_reconcile_held_back", "1 when the last reconcile run marked no one deleted because of the safety limit.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.last, c.lastFamily, c.drift, c.repaired, c.runAt, c.heldBack} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	fams, err := schema.LastDeliveries(ctx, c.db)
	if err != nil {
		c.log.Warn("metrics: could not read the last deliveries", "err", err)
	} else if len(fams) > 0 {
		gauge(c.last, unix(fams[0].ReceivedAt)) // newest first
		for _, f := range fams {
			gauge(c.lastFamily, unix(f.ReceivedAt), f.Family)
		}
	}
	runs, err := schema.ReconcileRuns(ctx, c.db, 1)
	if err != nil {
		c.log.Warn("metrics: could not read the last reconcile run", "err", err)
		return
	}
	if len(runs) == 0 {
		return
	}
	r := runs[0]
	outcome := "ok"
	switch {
	case r.Error != "":
		outcome = "failed"
	case r.HeldBack != "":
		outcome = "held_back"
	}
	gauge(c.runAt, unix(r.StartedAt), outcome)
	for kind, n := range map[string]int64{"missing": r.Missing, "stale": r.Stale, "gone": r.Gone, "same": r.Same, "deleted_here": r.DeletedHere} {
		gauge(c.drift, float64(n), kind)
	}
	gauge(c.repaired, float64(r.Repaired))
	held := 0.0
	if r.HeldBack != "" {
		held = 1
	}
	gauge(c.heldBack, held)
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
