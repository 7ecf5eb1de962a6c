package main

import (
	"log/slog"

	"github.com/clerk-ledger/clerk-ledger/clerksync"
	"github.com/clerk-ledger/clerk-ledger/handlers"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newMetrics builds the service's private Prometheus registry (never the
// global default one): Go runtime and process collectors, the stats of the
// web pool db (db_name "ledger") and of the ingest pool (db_name
// "ledger_ingest", when not nil), the projectors and the Merkle tree read from db
// at scrape time, and the HTTP metrics, which it returns to serve GET /metrics.
func newMetrics(log *slog.Logger, db, ingest *sqlx.DB) (*handlers.Metrics, error) {
	reg := prometheus.NewRegistry()
	var known []string
	for _, p := range projections.Default() {
		known = append(known, p.Name())
	}
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewDBStatsCollector(db.DB, "ledger"),
		projections.NewCollector(db, log, known...),
		clerksync.NewCollector(db, log),
	}
	if ingest != nil {
		cs = append(cs, collectors.NewDBStatsCollector(ingest.DB, "ledger_ingest"))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return handlers.NewMetrics(reg)
}
