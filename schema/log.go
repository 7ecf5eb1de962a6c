package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"golang.org/x/mod/sumdb/tlog"
)

// This file holds the SQL of the verifiable log: log_leaves (the tree: per
// leaf its event's position and the stored hashes it adds) and
// log_checkpoints (signed tree heads).
//
// tlog numbers stored hashes (tlog.StoredHashIndex); the hash of level l,
// index n is made when leaf (n+1)*2^l - 1 is appended, as the l-th (from 0)
// of that leaf's hashes: storedAt maps one to the other.

// storedAt returns the leaf whose row holds stored hash idx and its offset
// in the row's hashes.
func storedAt(idx int64) (leaf int64, offset int) {
	l, n := tlog.SplitStoredHashIndex(idx)
	return (n+1)<<l - 1, l * tlog.HashSize
}

// TreeHead is a tree size and its root hash.
type TreeHead struct {
	Size int64
	Root tlog.Hash
}

// TreeSize returns how many leaves the tree has.
func TreeSize(ctx context.Context, q Queryer) (int64, error) {
	var n int64
	if err := q.QueryRowxContext(ctx, `SELECT COALESCE(max(leaf) + 1, 0) FROM log_leaves`).Scan(&n); err != nil {
		return 0, fmt.Errorf("read tree size: %w", Classify(err))
	}
	return n, nil
}

// ReadHashes returns the stored hashes at indexes (tlog.StoredHashIndex),
// in that order, in one query. A missing one is an error naming it (the
// tree's table was cut or changed).
func ReadHashes(ctx context.Context, q Queryer, indexes []int64) ([]tlog.Hash, error) {
	if len(indexes) == 0 {
		return nil, nil
	}
	return readHashes(ctx, q, indexes, `SELECT leaf, hashes FROM log_leaves WHERE leaf = ANY($1)`)
}

// ReadHashesRecorded is ReadHashes and RecordAccess(a) in one statement
// (one round trip, one commit): the access is recorded even when a hash
// turns out to be missing. Run it outside a transaction, as the record's
// commit is what makes the read allowed to be answered.
func ReadHashesRecorded(ctx context.Context, q Queryer, indexes []int64, a Access) ([]tlog.Hash, error) {
	filters, err := accessFilters(a)
	if err != nil {
		return nil, err
	}
	return readHashes(ctx, q, indexes, `WITH access AS (INSERT INTO audit_access (actor, channel, action, filters, row_count) VALUES ($2, $3, $4, $5, $6))
SELECT leaf, hashes FROM log_leaves WHERE leaf = ANY($1)`, a.Actor, a.Channel, a.Action, filters, a.RowCount)
}

// readHashes runs query (its $1: the leaves holding indexes, then args)
// and returns the hashes at indexes from the rows (leaf, hashes) it gives.
func readHashes(ctx context.Context, q Queryer, indexes []int64, query string, args ...any) ([]tlog.Hash, error) {
	// Each row once, in leaf order: one pass along the primary key.
	leaves := make([]int64, len(indexes))
	for i, idx := range indexes {
		leaves[i], _ = storedAt(idx)
	}
	slices.Sort(leaves)
	leaves = slices.Compact(leaves)
	rows, err := q.QueryxContext(ctx, query, append([]any{pq.Array(leaves)}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("read tree hashes: %w", Classify(err))
	}
	defer rows.Close()
	got := make(map[int64][]byte, len(indexes))
	for rows.Next() {
		var leaf int64
		var h []byte
		if err := rows.Scan(&leaf, &h); err != nil {
			return nil, fmt.Errorf("read tree hashes: %w", Classify(err))
		}
		got[leaf] = h
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read tree hashes: %w", Classify(err))
	}
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		leaf, off := storedAt(idx)
		h, ok := got[leaf]
		if !ok || len(h) < off+tlog.HashSize {
			return nil, fmt.Errorf("tree hash %d (leaf %d) is missing from log_leaves", idx, leaf)
		}
		out[i] = tlog.Hash(h[off : off+tlog.HashSize])
	}
	return out, nil
}

// HashReader returns a tlog.HashReader over log_leaves on q: each
// ReadHashes is one query (ReadHashes above).
func HashReader(ctx context.Context, q Queryer) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) { return ReadHashes(ctx, q, indexes) })
}

// ReadEdge returns the right edge of the stored tree of size leaves.
func ReadEdge(ctx context.Context, q Queryer, size int64) (*translog.Edge, error) {
	hs, err := ReadHashes(ctx, q, translog.EdgeIndexes(size))
	if err != nil {
		return nil, err
	}
	return translog.NewEdge(size, hs)
}

// ReadTreeHead returns the stored tree's size and root.
func ReadTreeHead(ctx context.Context, q Queryer) (TreeHead, error) {
	n, err := TreeSize(ctx, q)
	if err != nil {
		return TreeHead{}, err
	}
	e, err := ReadEdge(ctx, q, n)
	if err != nil {
		return TreeHead{}, err
	}
	return TreeHead{Size: n, Root: e.Root()}, nil
}

// AppendLeaves adds events, which must be the next events in ledger order
// after the tree's last leaf, to the tree inside tx: their leaves
// (Event.Leaf: the stored commitment of a sealed event, else the body
// committed with an empty salt) and every hash the
// tree stores for them, COPYed into log_leaves. It reads only the tree's
// right edge. It must run in
// the sealer's transaction, one sealer at a time (the projector runtime's
// lock). It returns the new tree head.
func AppendLeaves(ctx context.Context, tx *sqlx.Tx, events []domain.Event) (TreeHead, error) {
	size, err := TreeSize(ctx, tx)
	if err != nil {
		return TreeHead{}, err
	}
	edge, err := ReadEdge(ctx, tx, size)
	if err != nil {
		return TreeHead{}, fmt.Errorf("append to the tree of %d: %w", size, err)
	}
	if len(events) == 0 {
		return TreeHead{Size: size, Root: edge.Root()}, nil
	}
	// Each leaf is hashed as its row goes into the COPY, so PostgreSQL
	// takes in the rows while the next leaves are hashed.
	row := make([]byte, 0, 64*tlog.HashSize)
	buf := make([]byte, 0, 1024)
	err = copyRows(ctx, tx, "log_leaves", []string{"leaf", "position", "hashes"}, len(events), func(i int) ([]any, error) {
		e := events[i]
		n := size + int64(i)
		buf = e.Leaf().Encode(buf[:0])
		hs, err := edge.Append(tlog.RecordHash(buf))
		if err != nil {
			return nil, fmt.Errorf("append leaf %d: %w", n, err)
		}
		row = row[:0]
		for j := range hs {
			row = append(row, hs[j][:]...)
		}
		return []any{n, e.Position, row}, nil
	})
	if err != nil {
		return TreeHead{}, fmt.Errorf("append leaves %d..%d: %w", size, size+int64(len(events))-1, err)
	}
	return TreeHead{Size: edge.Size(), Root: edge.Root()}, nil
}

// copyRows COPYs n rows (row(i) for each, in order; the values are copied
// before the next call) into table inside tx: several times faster than a
// multi-row INSERT for the sealer's thousands of rows. An error of row is
// returned as it is, the COPY unfinished: roll the transaction back.
func copyRows(ctx context.Context, tx *sqlx.Tx, table string, cols []string, n int, row func(i int) ([]any, error)) error {
	stmt, err := tx.PrepareContext(ctx, pq.CopyIn(table, cols...))
	if err != nil {
		return Classify(err)
	}
	defer stmt.Close()
	for i := range n {
		args, err := row(i)
		if err != nil {
			return err
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return Classify(err)
		}
	}
	if _, err := stmt.ExecContext(ctx); err != nil {
		return Classify(err)
	}
	return nil
}

// ProofTarget returns, in one query, the kept checkpoint of tree size size
// (0: the latest), the leaf index of the event at position and the event:
// what an inclusion proof is of. Errors: EINVALID for a negative size;
// ENOTFOUND when no checkpoint is kept (of that size), there is no such
// event, or it is not in that checkpoint's tree (yet).
func ProofTarget(ctx context.Context, q Queryer, position, size int64) (LogCheckpoint, LeafEvent, error) {
	if size < 0 {
		return LogCheckpoint{}, LeafEvent{}, domain.Errorf(domain.EINVALID, "tree size %d is negative", size)
	}
	row := q.QueryRowxContext(ctx, `SELECT c.id, c.tree_size, c.root, c.note, c.signed_at, e.position IS NOT NULL, l.leaf,
  COALESCE(e.position, 0), COALESCE(e.transaction_id, '0'::xid8), COALESCE(e.delivery_id, ''), COALESCE(e.type, ''), COALESCE(e.user_id, ''),
  COALESCE(e.occurred_at, 'epoch'), COALESCE(e.received_at, 'epoch'), COALESCE(e.body, ''), COALESCE(e.svix_timestamp, 0), COALESCE(e.svix_signature, ''), COALESCE(e.source, ''),
  `+eSealColumns+`
FROM (SELECT `+checkpointColumns+` FROM log_checkpoints WHERE $2::bigint = 0 OR tree_size = $2::bigint ORDER BY tree_size DESC LIMIT 1) c
LEFT JOIN events e ON e.position = $1
LEFT JOIN log_leaves l ON l.position = e.position`, position, size)
	var (
		c      LogCheckpoint
		root   []byte
		exists bool
		leaf   sql.NullInt64
		e      LeafEvent
		sl     sealed
	)
	err := row.Scan(append([]any{&c.ID, &c.Size, &root, &c.Note, &c.SignedAt, &exists, &leaf,
		&e.Position, &e.TxID, &e.DeliveryID, &e.Type, &e.UserID, &e.OccurredAt, &e.ReceivedAt, &e.Body, &e.SvixTimestamp, &e.SvixSignature, &e.Source}, sl.dest()...)...)
	switch {
	case errors.Is(err, sql.ErrNoRows) && size == 0:
		return LogCheckpoint{}, LeafEvent{}, domain.Errorf(domain.ENOTFOUND, "no checkpoint is signed yet")
	case errors.Is(err, sql.ErrNoRows):
		return LogCheckpoint{}, LeafEvent{}, domain.Errorf(domain.ENOTFOUND, "no checkpoint of tree size %d is kept", size)
	case err != nil:
		return LogCheckpoint{}, LeafEvent{}, fmt.Errorf("read event %d, its leaf and the checkpoint: %w", position, Classify(err))
	case !exists:
		return LogCheckpoint{}, LeafEvent{}, domain.Errorf(domain.ENOTFOUND, "no event at position %d", position)
	case !leaf.Valid:
		return LogCheckpoint{}, LeafEvent{}, domain.Errorf(domain.ENOTFOUND, "the event at position %d is not in the tree yet (the sealer has not reached it)", position)
	case leaf.Int64 >= c.Size:
		return LogCheckpoint{}, LeafEvent{}, domain.Errorf(domain.ENOTFOUND, "the event at position %d is leaf %d, not in the tree of the checkpoint of size %d yet", position, leaf.Int64, c.Size)
	}
	copy(c.Root[:], root)
	c.SignedAt = c.SignedAt.UTC()
	e.Leaf = leaf.Int64
	e.OccurredAt, e.ReceivedAt = e.OccurredAt.UTC(), e.ReceivedAt.UTC()
	if err := openBody(KeyringFrom(ctx), &e.Event, &sl); err != nil {
		return LogCheckpoint{}, LeafEvent{}, err
	}
	return c, e, nil
}

// eEventColumns is eventColumns of the events table aliased e.
const eEventColumns = `e.position, e.transaction_id, e.delivery_id, e.type, COALESCE(e.user_id, ''), e.occurred_at, e.received_at, e.body, e.svix_timestamp, e.svix_signature, e.source, ` + eSealColumns

// LeafEvent is an event with its leaf index.
type LeafEvent struct {
	Leaf int64
	domain.Event
}

// UserLeaves calls fn with each event about user whose leaf index is below
// size, in leaf order (e.Body valid only during the call).
func UserLeaves(ctx context.Context, q Queryer, user string, size int64, fn func(LeafEvent) error) (int, error) {
	// Driven by the user's index in ledger order (which is leaf order),
	// each leaf found by position; a leaf-range condition in SQL made the
	// planner hash-join the whole tree.
	rows, err := q.QueryxContext(ctx, `SELECT l.leaf, `+eEventColumns+` FROM events e JOIN log_leaves l ON l.position = e.position
WHERE e.user_id = $1 ORDER BY e.transaction_id, e.position`, user)
	if err != nil {
		return 0, fmt.Errorf("read the leaves of user %s: %w", user, Classify(err))
	}
	defer rows.Close()
	n := 0
	var body sql.RawBytes
	o := KeyringFrom(ctx).Opener()
	for rows.Next() {
		var e LeafEvent
		var sl sealed
		if err := rows.Scan(append([]any{&e.Leaf, &e.Position, &e.TxID, &e.DeliveryID, &e.Type, &e.UserID, &e.OccurredAt, &e.ReceivedAt, &body, &e.SvixTimestamp, &e.SvixSignature, &e.Source}, sl.rowsDest()...)...); err != nil {
			return n, fmt.Errorf("read the leaves of user %s: %w", user, Classify(err))
		}
		if e.Leaf >= size {
			break // sealed after the tree of size: every later one is too
		}
		e.Body = body
		e.OccurredAt, e.ReceivedAt = e.OccurredAt.UTC(), e.ReceivedAt.UTC()
		if err := openRowBody(o, &e.Event, &sl); err != nil {
			return n, err
		}
		if err := fn(e); err != nil {
			return n, err
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("read the leaves of user %s: %w", user, Classify(err))
	}
	return n, nil
}

// LogCheckpoint is a signed tree head as log_checkpoints keeps it.
type LogCheckpoint struct {
	ID       int64
	Size     int64
	Root     tlog.Hash
	Note     string // the signed note, byte for byte
	SignedAt time.Time
}

// AddCheckpoint appends c (ID and SignedAt set by the database) unless one
// of the same tree size is kept already, or a larger one (a checkpoint never
// goes back); added reports whether it was stored. Run it with the
// checkpoint lock held (LockCheckpoints), so two signers cannot interleave.
func AddCheckpoint(ctx context.Context, q Execer, c LogCheckpoint) (added bool, err error) {
	res, err := q.ExecContext(ctx, `INSERT INTO log_checkpoints (tree_size, root, note)
SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM log_checkpoints WHERE tree_size >= $1)`, c.Size, c.Root[:], c.Note)
	if err != nil {
		return false, fmt.Errorf("keep checkpoint of size %d: %w", c.Size, Classify(err))
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// LockCheckpoints takes the transaction-scoped advisory lock of checkpoint
// signing inside tx; locked is false when another signer holds it.
func LockCheckpoints(ctx context.Context, tx *sqlx.Tx) (locked bool, err error) {
	if err := tx.QueryRowxContext(ctx, `SELECT pg_try_advisory_xact_lock(hashtext('ledger:checkpoint'))`).Scan(&locked); err != nil {
		return false, fmt.Errorf("lock checkpoint signing: %w", Classify(err))
	}
	return locked, nil
}

const checkpointColumns = `id, tree_size, root, note, signed_at`

func scanCheckpoint(row interface{ Scan(...any) error }) (LogCheckpoint, error) {
	var c LogCheckpoint
	var root []byte
	if err := row.Scan(&c.ID, &c.Size, &root, &c.Note, &c.SignedAt); err != nil {
		return LogCheckpoint{}, err
	}
	copy(c.Root[:], root)
	c.SignedAt = c.SignedAt.UTC()
	return c, nil
}

// LatestCheckpoint returns the newest kept checkpoint (the largest tree).
// Errors: ENOTFOUND when none is kept yet.
func LatestCheckpoint(ctx context.Context, q Queryer) (LogCheckpoint, error) {
	c, err := scanCheckpoint(q.QueryRowxContext(ctx, `SELECT `+checkpointColumns+` FROM log_checkpoints ORDER BY tree_size DESC LIMIT 1`))
	if errors.Is(err, sql.ErrNoRows) {
		return LogCheckpoint{}, domain.Errorf(domain.ENOTFOUND, "no checkpoint is signed yet")
	}
	if err != nil {
		return LogCheckpoint{}, fmt.Errorf("read the latest checkpoint: %w", Classify(err))
	}
	return c, nil
}

// CheckpointOfSize returns the kept checkpoint of that tree size.
// Errors: ENOTFOUND when none is kept for it.
func CheckpointOfSize(ctx context.Context, q Queryer, size int64) (LogCheckpoint, error) {
	c, err := scanCheckpoint(q.QueryRowxContext(ctx, `SELECT `+checkpointColumns+` FROM log_checkpoints WHERE tree_size = $1`, size))
	if errors.Is(err, sql.ErrNoRows) {
		return LogCheckpoint{}, domain.Errorf(domain.ENOTFOUND, "no checkpoint of tree size %d is kept", size)
	}
	if err != nil {
		return LogCheckpoint{}, fmt.Errorf("read the checkpoint of size %d: %w", size, Classify(err))
	}
	return c, nil
}

// EachCheckpoint calls fn with every kept checkpoint, smallest tree first.
func EachCheckpoint(ctx context.Context, q Queryer, fn func(LogCheckpoint) error) error {
	rows, err := q.QueryxContext(ctx, `SELECT `+checkpointColumns+` FROM log_checkpoints ORDER BY tree_size`)
	if err != nil {
		return fmt.Errorf("read checkpoints: %w", Classify(err))
	}
	defer rows.Close()
	for rows.Next() {
		c, err := scanCheckpoint(rows)
		if err != nil {
			return fmt.Errorf("read checkpoints: %w", Classify(err))
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read checkpoints: %w", Classify(err))
	}
	return nil
}
