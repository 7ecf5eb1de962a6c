package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// This file holds the SQL of the projector runtime's tables:
// projection_checkpoints (each projector's place in ledger order and its
// counters), projection_failures (poison events skipped) and
// projection_rebuilds (rebuilds in progress), and the advisory locks that
// guard them.

// ErrCheckpointMoved is returned by MoveCheckpoint when the checkpoint is
// no longer where the batch read it (a concurrent runner without the lock).
var ErrCheckpointMoved = errors.New("checkpoint moved during the batch")

// EnsureCheckpoint creates the checkpoint row of projector name (at the
// start of the ledger) when it does not exist.
func EnsureCheckpoint(ctx context.Context, q Execer, name string) error {
	if _, err := q.ExecContext(ctx, `INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING`, name); err != nil {
		return fmt.Errorf("create checkpoint of %s: %w", name, Classify(err))
	}
	return nil
}

// ReadCheckpoint returns projector name's checkpoint; found is false (and
// the cursor zero, the start of the ledger) when it has none.
func ReadCheckpoint(ctx context.Context, q Queryer, name string) (c Cursor, found bool, err error) {
	var tx string
	err = q.QueryRowxContext(ctx, `SELECT transaction_id::text, position FROM projection_checkpoints WHERE name = $1`, name).Scan(&tx, &c.Position)
	if errors.Is(err, sql.ErrNoRows) {
		return Cursor{}, false, nil
	}
	if err != nil {
		return Cursor{}, false, fmt.Errorf("read checkpoint of %s: %w", name, Classify(err))
	}
	if c.TxID, err = strconv.ParseUint(tx, 10, 64); err != nil {
		return Cursor{}, false, fmt.Errorf("read checkpoint of %s: transaction id %q: %w", name, tx, err)
	}
	return c, true, nil
}

// MoveCheckpoint moves name's checkpoint from `from` to `to` and adds to its
// counters, failing with ErrCheckpointMoved when it is no longer at from.
func MoveCheckpoint(ctx context.Context, tx *sqlx.Tx, name string, from, to Cursor, applied, failed int) error {
	res, err := tx.ExecContext(ctx, `UPDATE projection_checkpoints
SET transaction_id = $4::xid8, position = $5, applied = applied + $6, failed = failed + $7, updated_at = now()
WHERE name = $1 AND transaction_id = $2::xid8 AND position = $3`,
		name, strconv.FormatUint(from.TxID, 10), from.Position, strconv.FormatUint(to.TxID, 10), to.Position, applied, failed)
	if err != nil {
		return fmt.Errorf("move checkpoint of %s to %s: %w", name, to, Classify(err))
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("projector %s at %s: %w", name, from, ErrCheckpointMoved)
	}
	return nil
}

// SetCheckpoint puts name's checkpoint at c with these counters, wherever
// it was (a rebuild's swap, holding the projector's lock).
func SetCheckpoint(ctx context.Context, tx *sqlx.Tx, name string, c Cursor, applied, failed int64) error {
	if _, err := tx.ExecContext(ctx, `UPDATE projection_checkpoints
SET transaction_id = $2::xid8, position = $3, applied = $4, failed = $5, updated_at = now()
WHERE name = $1`, name, strconv.FormatUint(c.TxID, 10), c.Position, applied, failed); err != nil {
		return fmt.Errorf("set checkpoint of %s: %w", name, Classify(err))
	}
	return nil
}

// RecordProjectorError stores msg (storable text) as projector name's last
// runtime error, for status.
func RecordProjectorError(ctx context.Context, q Execer, name, msg string) error {
	if _, err := q.ExecContext(ctx, `UPDATE projection_checkpoints SET last_error = $2, last_error_at = now() WHERE name = $1`, name, msg); err != nil {
		return fmt.Errorf("record the error of %s: %w", name, Classify(err))
	}
	return nil
}

// TryProjectorLock takes projector name's transaction-scoped advisory lock
// inside tx if no one holds it; locked is false when another does. An
// advisory lock takes no transaction id, so holding it never holds back
// the xid8 gate.
func TryProjectorLock(ctx context.Context, tx *sqlx.Tx, name string) (locked bool, err error) {
	if err := tx.QueryRowxContext(ctx, `SELECT pg_try_advisory_xact_lock(hashtext('projector:' || $1))`, name).Scan(&locked); err != nil {
		return false, fmt.Errorf("lock projector %s: %w", name, Classify(err))
	}
	return locked, nil
}

// WaitProjectorLock takes projector name's transaction-scoped advisory lock
// inside tx, waiting for the batch in flight that holds it.
func WaitProjectorLock(ctx context.Context, tx *sqlx.Tx, name string) error {
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('projector:' || $1))`, name); err != nil {
		return fmt.Errorf("wait for projector %s: %w", name, Classify(err))
	}
	return nil
}

// FailureRecord is a poison event as projection_failures records it.
type FailureRecord struct {
	Position   int64     `json:"position"`
	DeliveryID string    `json:"delivery_id"`
	Error      string    `json:"error"`
	FailedAt   time.Time `json:"failed_at"`
}

// RecordFailures stores projector name's poison events (FailedAt is set by
// the database); one already recorded (a rebuild finding it again) is kept
// as it is. Texts must be storable (domain.StorableText).
func RecordFailures(ctx context.Context, tx *sqlx.Tx, name string, fs []FailureRecord) error {
	if len(fs) == 0 {
		return nil
	}
	pos := make([]int64, len(fs))
	ids := make([]string, len(fs))
	msgs := make([]string, len(fs))
	for i, f := range fs {
		pos[i], ids[i], msgs[i] = f.Position, f.DeliveryID, f.Error
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO projection_failures (projector, position, delivery_id, error)
SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[])
ON CONFLICT (projector, position) DO NOTHING`, name, pq.Array(pos), pq.Array(ids), pq.Array(msgs))
	if err != nil {
		return fmt.Errorf("record %d poison events of %s: %w", len(fs), name, Classify(err))
	}
	return nil
}

// CountFailures returns how many poison events of projector name are recorded.
func CountFailures(ctx context.Context, q Queryer, name string) (int64, error) {
	var n int64
	if err := q.QueryRowxContext(ctx, `SELECT count(*) FROM projection_failures WHERE projector = $1`, name).Scan(&n); err != nil {
		return 0, fmt.Errorf("count failures of %s: %w", name, Classify(err))
	}
	return n, nil
}

// LastFailure returns projector name's newest poison event, nil when none.
func LastFailure(ctx context.Context, q Queryer, name string) (*FailureRecord, error) {
	var f FailureRecord
	err := q.QueryRowxContext(ctx, `SELECT position, delivery_id, error, failed_at FROM projection_failures
WHERE projector = $1 ORDER BY failed_at DESC, position DESC LIMIT 1`, name).Scan(&f.Position, &f.DeliveryID, &f.Error, &f.FailedAt)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read failures of %s: %w", name, Classify(err))
	}
	return &f, nil
}

// CheckpointRow is one projector's row of projection_checkpoints.
type CheckpointRow struct {
	Name        string
	Checkpoint  Cursor
	Applied     int64
	Failed      int64
	UpdatedAt   time.Time
	LastError   string
	LastErrorAt time.Time
}

// ReadCheckpoints returns every projector's checkpoint row, by name.
func ReadCheckpoints(ctx context.Context, q Queryer) ([]CheckpointRow, error) {
	rows, err := q.QueryxContext(ctx, `SELECT name, transaction_id::text, position, applied, failed, updated_at, last_error, last_error_at
FROM projection_checkpoints ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", Classify(err))
	}
	defer rows.Close()
	var out []CheckpointRow
	for rows.Next() {
		var c CheckpointRow
		var tx string
		var errAt sql.NullTime
		if err := rows.Scan(&c.Name, &tx, &c.Checkpoint.Position, &c.Applied, &c.Failed, &c.UpdatedAt, &c.LastError, &errAt); err != nil {
			return nil, fmt.Errorf("read checkpoints: %w", Classify(err))
		}
		c.Checkpoint.TxID, _ = strconv.ParseUint(tx, 10, 64)
		c.LastErrorAt = errAt.Time
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", Classify(err))
	}
	return out, nil
}

// rebuildLockNS is the first key of the session advisory lock a rebuild
// holds: (rebuildLockNS, hashtext(name)).
const rebuildLockNS = 4242

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

// RebuildLock is a held rebuild lock of one projection (LockRebuild).
type RebuildLock struct {
	name string
	conn *sqlx.Conn
}

// LockRebuild takes projection name's rebuild lock (a session advisory
// lock on a connection of its own, so it dies with the process) and
// records the rebuild in projection_rebuilds for status. A rebuild already
// running is refused with ECONFLICT saying whose it is. Release undoes both.
func LockRebuild(ctx context.Context, db *sqlx.DB, name string) (*RebuildLock, error) {
	conn, err := db.Connx(ctx)
	if err != nil {
		return nil, fmt.Errorf("rebuild %s: %w", name, Classify(err))
	}
	var ok bool
	if err := conn.QueryRowxContext(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, rebuildLockNS, name).Scan(&ok); err != nil {
		conn.Close()
		return nil, fmt.Errorf("rebuild %s: lock: %w", name, Classify(err))
	}
	if !ok {
		conn.Close()
		msg := fmt.Sprintf("a rebuild of projection %s is already running", name)
		var r RebuildStatus
		if err := db.QueryRowxContext(ctx, `SELECT pid, host, phase, done, total, started_at FROM projection_rebuilds WHERE name = $1`, name).
			Scan(&r.PID, &r.Host, &r.Phase, &r.Done, &r.Total, &r.StartedAt); err == nil {
			msg += fmt.Sprintf(" (pid %d on %s, started %s ago, %s %d/%d)", r.PID, r.Host, time.Since(r.StartedAt).Round(time.Second), r.Phase, r.Done, r.Total)
		}
		return nil, domain.Errorf(domain.ECONFLICT, "%s; wait for it to finish", msg)
	}
	l := &RebuildLock{name: name, conn: conn}
	host, _ := os.Hostname()
	if _, err := conn.ExecContext(ctx, `INSERT INTO projection_rebuilds (name, pid, host, phase) VALUES ($1, $2, $3, 'start')
ON CONFLICT (name) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host, phase = EXCLUDED.phase, done = 0, total = 0, started_at = now(), updated_at = now()`,
		name, os.Getpid(), host); err != nil {
		l.Release()
		return nil, fmt.Errorf("rebuild %s: record: %w", name, Classify(err))
	}
	return l, nil
}

// Progress records the rebuild's phase and progress for status (best
// effort: a failure only leaves status behind).
func (l *RebuildLock) Progress(ctx context.Context, db Execer, phase string, done, total int64) {
	_, _ = db.ExecContext(ctx, `UPDATE projection_rebuilds SET phase = $2, done = $3, total = $4, updated_at = now() WHERE name = $1`, l.name, phase, done, total)
}

// Release removes the rebuild's record and releases its lock; a connection
// that cannot release the lock is discarded, never handed back to the pool.
func (l *RebuildLock) Release() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = l.conn.ExecContext(ctx, `DELETE FROM projection_rebuilds WHERE name = $1`, l.name)
	if _, err := l.conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1, hashtext($2))`, rebuildLockNS, l.name); err != nil {
		_ = l.conn.Raw(func(any) error { return errors.New("discard") })
	}
	l.conn.Close()
}

// ReadRebuild returns the rebuild of name in progress: a projection_rebuilds
// row whose process still holds the rebuild lock (a row left by a crashed
// process is not one); nil when none runs.
func ReadRebuild(ctx context.Context, q Queryer, name string) (*RebuildStatus, error) {
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
		return nil, fmt.Errorf("read rebuilds of %s: %w", name, Classify(err))
	}
	return &r, nil
}

// Now returns the database's now() (the transaction's start time: with a
// snapshot, every age measured against the same moment).
func Now(ctx context.Context, q Queryer) (time.Time, error) {
	var now time.Time
	if err := q.QueryRowxContext(ctx, `SELECT now()`).Scan(&now); err != nil {
		return time.Time{}, fmt.Errorf("read the database time: %w", Classify(err))
	}
	return now, nil
}
