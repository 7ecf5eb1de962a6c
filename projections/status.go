package projections

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
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
type FailureRecord = schema.FailureRecord

// RebuildStatus is a rebuild in progress.
type RebuildStatus = schema.RebuildStatus

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
	now, err := schema.Now(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	gate, err := schema.ReadGate(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	cps, err := schema.ReadCheckpoints(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	var out []Status
	seen := map[string]bool{}
	for _, c := range cps {
		out = append(out, Status{Name: c.Name, Checkpoint: c.Checkpoint, Applied: c.Applied, Failed: c.Failed,
			UpdatedAt: c.UpdatedAt, LastError: c.LastError, LastErrorAt: c.LastErrorAt, Started: true})
		seen[c.Name] = true
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
			at, found, err := schema.NextReceivedAt(ctx, tx, s.Checkpoint)
			if err != nil {
				return nil, err
			}
			if found {
				s.LagSeconds = max(s.LagSeconds, now.Sub(at).Seconds())
			}
		}
		if s.LastFailure, err = schema.LastFailure(ctx, tx, s.Name); err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
		if s.Rebuild, err = schema.ReadRebuild(ctx, tx, s.Name); err != nil {
			return nil, err
		}
	}
	return out, nil
}
