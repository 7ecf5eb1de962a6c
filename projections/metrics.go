package projections

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector is a prometheus.Collector reporting where every projector and
// the Merkle tree stand. It reads the database at scrape time (ReadStatus,
// the tree size and the latest checkpoint), so the values are true whichever process runs the
// projectors. It is safe for concurrent use; each scrape makes a few
// queries, bounded by Timeout.
type Collector struct {
	db    *sqlx.DB
	log   *slog.Logger
	known []string
	// Timeout bounds one scrape's queries (default 3 s); past it the scrape
	// reports ledger_projections_up 0 and no projector metrics.
	Timeout time.Duration

	up, scrapeSeconds                                  *prometheus.Desc
	head                                               *prometheus.Desc
	checkpoint, lagEvents, lagSeconds, applied, failed *prometheus.Desc
	rebuildRunning, rebuildDone, rebuildTotal          *prometheus.Desc
	logTreeSize, logUnsealed, logLagSeconds            *prometheus.Desc
	logCheckpointSize, logCheckpointAge                *prometheus.Desc
}

// NewCollector returns a Collector over db reporting every projector with a
// checkpoint and each of known (by name) that has none yet. log, which may be
// nil, is told why a scrape failed.
func NewCollector(db *sqlx.DB, log *slog.Logger, known ...string) *Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := []string{"projector"}
	return &Collector{
		db: db, log: log, known: known, Timeout: 3 * time.Second,
		up:                prometheus.NewDesc("ledger_projections_up", "1 when the last scrape read the projectors' status from the database, else 0.", nil, nil),
		scrapeSeconds:     prometheus.NewDesc("ledger_projections_scrape_duration_seconds", "Time the scrape took to read the projectors' status.", nil, nil),
		head:              prometheus.NewDesc("ledger_head_position", "Position of the newest event readers can see (below the xid8 gate).", nil, nil),
		checkpoint:        prometheus.NewDesc("ledger_projector_checkpoint_position", "Position of the last event the projector has processed.", p, nil),
		lagEvents:         prometheus.NewDesc("ledger_projector_lag_events", "Visible events after the projector's checkpoint.", p, nil),
		lagSeconds:        prometheus.NewDesc("ledger_projector_lag_seconds", "How long the oldest event after the checkpoint has been waiting, counting committed events held behind the xid8 gate by a running transaction anywhere in the cluster (0 when caught up).", p, nil),
		applied:           prometheus.NewDesc("ledger_projector_applied_total", "Events the projector applied (a rebuild resets it).", p, nil),
		failed:            prometheus.NewDesc("ledger_projector_failed_total", "Poison events the projector skipped.", p, nil),
		rebuildRunning:    prometheus.NewDesc("ledger_projector_rebuild_running", "1 while a rebuild of the projection runs (any process), else 0.", p, nil),
		rebuildDone:       prometheus.NewDesc("ledger_projector_rebuild_done_events", "Events the running rebuild has processed in its current phase (0 when none runs).", p, nil),
		rebuildTotal:      prometheus.NewDesc("ledger_projector_rebuild_total_events", "Events the running rebuild's current phase will process (0 when none runs).", p, nil),
		logTreeSize:       prometheus.NewDesc("ledger_log_tree_size", "Leaves of the Merkle tree: events sealed.", nil, nil),
		logUnsealed:       prometheus.NewDesc("ledger_log_unsealed_events", "Visible events not sealed into the tree yet: the sealing lag.", nil, nil),
		logLagSeconds:     prometheus.NewDesc("ledger_log_sealing_lag_seconds", "How long the oldest unsealed event has been waiting (0 when all are sealed).", nil, nil),
		logCheckpointSize: prometheus.NewDesc("ledger_log_checkpoint_tree_size", "Tree size of the latest signed checkpoint (0: none yet).", nil, nil),
		logCheckpointAge:  prometheus.NewDesc("ledger_log_checkpoint_age_seconds", "Seconds since the latest checkpoint was signed (0: none yet).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.scrapeSeconds, c.head, c.checkpoint, c.lagEvents, c.lagSeconds, c.applied, c.failed,
		c.rebuildRunning, c.rebuildDone, c.rebuildTotal, c.logTreeSize, c.logUnsealed, c.logLagSeconds, c.logCheckpointSize, c.logCheckpointAge} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. When the database does not answer
// within Timeout it reports ledger_projections_up 0 and logs why.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	head, statuses, lg, err := c.read(ctx)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	defer func() { gauge(c.scrapeSeconds, time.Since(start).Seconds()) }()
	if err != nil {
		c.log.Warn("metrics: could not read projector status", "err", err)
		gauge(c.up, 0)
		return
	}
	gauge(c.up, 1)
	gauge(c.head, float64(head.Position))
	for _, s := range statuses {
		gauge(c.checkpoint, float64(s.Checkpoint.Position), s.Name)
		gauge(c.lagEvents, float64(s.LagEvents), s.Name)
		gauge(c.lagSeconds, s.LagSeconds, s.Name)
		ch <- prometheus.MustNewConstMetric(c.applied, prometheus.CounterValue, float64(s.Applied), s.Name)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(s.Failed), s.Name)
		var running, done, total float64
		if s.Rebuild != nil {
			running, done, total = 1, float64(s.Rebuild.Done), float64(s.Rebuild.Total)
		}
		gauge(c.rebuildRunning, running, s.Name)
		gauge(c.rebuildDone, done, s.Name)
		gauge(c.rebuildTotal, total, s.Name)
		if s.Name == TreeName {
			gauge(c.logUnsealed, float64(s.LagEvents))
			gauge(c.logLagSeconds, s.LagSeconds)
		}
	}
	gauge(c.logTreeSize, float64(lg.treeSize))
	gauge(c.logCheckpointSize, float64(lg.checkpointSize))
	gauge(c.logCheckpointAge, lg.checkpointAge)
}

// logState is where the tree and its checkpoints stand.
type logState struct {
	treeSize, checkpointSize int64
	checkpointAge            float64
}

// read takes every value from one read-only snapshot, so they agree.
func (c *Collector) read(ctx context.Context) (head schema.Cursor, statuses []Status, lg logState, err error) {
	tx, err := c.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return head, nil, lg, fmt.Errorf("metrics: %w", schema.Classify(err))
	}
	defer tx.Rollback()
	if head, err = schema.GateHead(ctx, tx); err != nil {
		return
	}
	if statuses, err = readStatus(ctx, tx, c.known...); err != nil {
		return
	}
	if lg.treeSize, err = schema.TreeSize(ctx, tx); err != nil {
		return
	}
	cp, cerr := schema.LatestCheckpoint(ctx, tx)
	switch {
	case domain.ErrorCode(cerr) == domain.ENOTFOUND:
	case cerr != nil:
		return head, statuses, lg, cerr
	default:
		now, nerr := schema.Now(ctx, tx)
		if nerr != nil {
			return head, statuses, lg, nerr
		}
		lg.checkpointSize, lg.checkpointAge = cp.Size, max(0, now.Sub(cp.SignedAt).Seconds())
	}
	return head, statuses, lg, tx.Commit()
}
