package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// Status is where one projector stands.
type Status struct {
	Name       string        `json:"name"`
	Checkpoint schema.Cursor `json:"checkpoint"`
	Head       schema.Cursor `json:"head"`
	// LagEvents counts the visible events after the checkpoint (of every
	// type; a projector reading some types moves past the others when idle).
	LagEvents int64 `json:"lag_events"`
	// LagSeconds is how long the oldest event after the checkpoint has been
	// waiting, visible or still behind the gate (0 when caught up).
	LagSeconds float64 `json:"lag_seconds"`
	// Gate is what the xid8 gate holds back (the same for every projector):
	// committed events no projector can read until the transaction named
	// in Gate.BlockedBy ends. Waiting > 0 with LagEvents == 0 is a stall.
	Gate      schema.Gate `json:"gate"`
	Applied   int64       `json:"applied"`
	Failed    int64       `json:"failed"`
	UpdatedAt time.Time   `json:"updated_at,omitzero"`
	// LastError is the last runtime error (a batch rolled back and retried).
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// LastFailure is the newest poison event skipped.
	LastFailure *FailureRecord `json:"last_failure,omitempty"`
	// Rebuild is the rebuild running now, if any.
	Rebuild *RebuildStatus `json:"rebuild,omitempty"`
	// Started is false for a known projector that never ran on this database.
	Started bool `json:"started"`
}

// FailureRecord is a poison event as projection_failures records it.
type FailureRecord struct {
	Position   int64     `json:"position"`
	DeliveryID string    `json:"delivery_id"`
	Error      string    `json:"error"`
	FailedAt   time.Time `json:"failed_at"`
}

// RebuildStatus is a rebuild in progress.
type RebuildStatus struct {
	PID       int       `json:"pid"`
	Host      string    `json:"host"`
	Phase     string    `json:"phase"`
	Done      int64     `json:"done"`
	Total     int64     `json:"total"`
	StartedAt time.Time `json:"started_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ReadStatus returns the status of every projector with a checkpoint, and of
// each of known (by name) that has none yet, sorted by name.
func ReadStatus(ctx context.Context, db *sqlx.DB, known ...string) ([]Status, error) {
	// One read-only snapshot for every number, so they agree with each
	// other: read apart, a busy projector moves between the reads, and the
	// lag counts events it has already applied. now() is the snapshot's
	// time, so the ages are measured against the same moment.
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("status: %w", schema.Classify(err))
	}
	defer tx.Rollback()
	out, err := readStatus(ctx, tx, known...)
	if err != nil {
		return nil, err
	}
	return out, tx.Commit()
}

// readStatus is ReadStatus inside tx (a read-only snapshot).
func readStatus(ctx context.Context, tx *sqlx.Tx, known ...string) ([]Status, error) {
	head, err := schema.GateHead(ctx, tx)
	if err != nil {
		return nil, err
	}
	var now time.Time
	if err := tx.GetContext(ctx, &now, `SELECT now()`); err != nil {
		return nil, fmt.Errorf("status: %w", schema.Classify(err))
	}
	gate, err := schema.ReadGate(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	rows, err := tx.QueryxContext(ctx, `SELECT name, transaction_id::text, position, applied, failed, updated_at, last_error, last_error_at
FROM projection_checkpoints ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("status: read checkpoints: %w", schema.Classify(err))
	}
	var out []Status
	seen := map[string]bool{}
	for rows.Next() {
		var s Status
		var tx string
		var errAt sql.NullTime
		if err := rows.Scan(&s.Name, &tx, &s.Checkpoint.Position, &s.Applied, &s.Failed, &s.UpdatedAt, &s.LastError, &errAt); err != nil {
			rows.Close()
			return nil, fmt.Errorf("status: read checkpoints: %w", schema.Classify(err))
		}
		s.Checkpoint.TxID, _ = strconv.ParseUint(tx, 10, 64)
		s.LastErrorAt = errAt.Time
		s.Started = true
		seen[s.Name] = true
		out = append(out, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("status: read checkpoints: %w", schema.Classify(err))
	}
	for _, k := range known {
		if !seen[k] {
			out = append(out, Status{Name: k})
		}
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	for i := range out {
		s := &out[i]
		s.Head, s.Gate = head, gate
		if gate.Waiting > 0 {
			s.LagSeconds = max(0, now.Sub(gate.OldestWaiting).Seconds())
		}
		if s.LagEvents, err = schema.CountAfter(ctx, tx, s.Checkpoint); err != nil {
			return nil, err
		}
		if s.LagEvents > 0 {
			next, err := schema.ReadAfter(ctx, tx, s.Checkpoint, 1)
			if err != nil {
				return nil, err
			}
			if len(next) == 1 {
				s.LagSeconds = max(s.LagSeconds, now.Sub(next[0].ReceivedAt).Seconds())
			}
		}
		var f FailureRecord
		err := tx.QueryRowxContext(ctx, `SELECT position, delivery_id, error, failed_at FROM projection_failures
WHERE projector = $1 ORDER BY failed_at DESC, position DESC LIMIT 1`, s.Name).Scan(&f.Position, &f.DeliveryID, &f.Error, &f.FailedAt)
		switch {
		case err == nil:
			s.LastFailure = &f
		case !errors.Is(err, sql.ErrNoRows):
			return nil, fmt.Errorf("status: read failures: %w", schema.Classify(err))
		}
		if s.Rebuild, err = readRebuild(ctx, tx, s.Name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readRebuild returns the rebuild of name in progress: a projection_rebuilds
// row whose process still holds the rebuild lock (a row left by a crashed
// process is not one).
func readRebuild(ctx context.Context, q schema.Queryer, name string) (*RebuildStatus, error) {
	var r RebuildStatus
	err := q.QueryRowxContext(ctx, `SELECT pid, host, phase, done, total, started_at, updated_at FROM projection_rebuilds r
WHERE name = $1 AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND l.classid = $2 AND l.objid = (hashtext(r.name)::bigint & 4294967295)::oid AND l.objsubid = 2)`, name, rebuildLockNS).
		Scan(&r.PID, &r.Host, &r.Phase, &r.Done, &r.Total, &r.StartedAt, &r.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("status: read rebuilds: %w", schema.Classify(err))
	}
	return &r, nil
}
