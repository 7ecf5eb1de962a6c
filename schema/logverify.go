package schema

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/jmoiron/sqlx"
	"golang.org/x/mod/sumdb/tlog"
)

// LogReport is the outcome of VerifyLog. OK is false when the tree or a
// kept checkpoint does not match the ledger; FirstBad is then the position
// of the first event (in leaf order) that does not match (0 when the
// problem is not one event's), and Problem says how.
type LogReport struct {
	OK          bool
	Checked     int64    // leaves recomputed from their events and found to match
	Tree        TreeHead // the tree recomputed from the events
	Checkpoints int64    // kept checkpoints whose signature and root were checked
	Latest      *LogCheckpoint
	Unsealed    int64 // visible events after the tree's last leaf (not sealed yet)
	FirstBad    int64
	Problem     string
	Duration    time.Duration
}

// logPage is how many leaves VerifyLog reads per keyset page.
const logPage = 20000

// OpenCheckpoint checks a kept checkpoint's signed note and returns what it
// states (translog.Verifier.Open).
type OpenCheckpoint func(note []byte) (translog.Checkpoint, error)

// VerifyLog recomputes the whole Merkle tree from the stored events inside
// one read-only REPEATABLE READ snapshot, streaming: every leaf from its
// event (domain.LeafOf), every hash the tree stores (compared with
// log_leaves, so a rewrite of the tree's own table is found), the root at
// every kept checkpoint's size (compared with the checkpoint, whose note is
// checked with open), and that the leaves follow ledger order, that no leaf
// lost its event, that no event was slipped in among the sealed ones and
// that no checkpoint is beyond the tree (leaves cut). A mismatch is
// reported in the LogReport, not as an error; errors mean the check could
// not run.
func VerifyLog(ctx context.Context, db *sqlx.DB, open OpenCheckpoint) (LogReport, error) {
	return verifyLog(ctx, db, open, logPage)
}

func verifyLog(ctx context.Context, db *sqlx.DB, open OpenCheckpoint, pageSize int64) (LogReport, error) {
	start := time.Now()
	var rep LogReport
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return rep, fmt.Errorf("verify the tree: %w", Classify(err))
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL max_parallel_workers_per_gather = 0`); err != nil {
		return rep, fmt.Errorf("verify the tree: %w", Classify(err))
	}
	fail := func(pos int64, format string, args ...any) (LogReport, error) {
		rep.OK, rep.FirstBad, rep.Problem = false, pos, fmt.Sprintf(format, args...)
		rep.Duration = time.Since(start)
		return rep, nil
	}
	size, err := TreeSize(ctx, tx)
	if err != nil {
		return rep, err
	}
	var cps []LogCheckpoint
	if err := EachCheckpoint(ctx, tx, func(c LogCheckpoint) error { cps = append(cps, c); return nil }); err != nil {
		return rep, err
	}
	for _, c := range cps {
		stated, err := open([]byte(c.Note))
		if err != nil {
			return fail(0, "kept checkpoint %d (tree size %d): %s", c.ID, c.Size, domain.ErrorMessage(err))
		}
		if stated.Size != c.Size || stated.Root != c.Root {
			return fail(0, "kept checkpoint %d: its signed note states tree size %d, its row %d (or another root)", c.ID, stated.Size, c.Size)
		}
		if c.Size > size {
			return fail(0, "kept checkpoint %d is of a tree of %d leaves, but the tree has %d: leaves were removed", c.ID, c.Size, size)
		}
	}
	if len(cps) > 0 {
		rep.Latest = &cps[len(cps)-1]
	}

	var (
		edge translog.Edge
		next = 0 // the next checkpoint to reach
		prev Cursor
		e    domain.Event
		buf  = make([]byte, 0, 1024)
		n    int64 // the next leaf to check
	)
	for next < len(cps) && cps[next].Size == 0 {
		next++
	}
	// check checks leaf n against its event e (read at transaction id
	// txid; exists false when the leaf's position has no event) and the
	// hashes stored for it, then appends it to edge. bad is the failed
	// report, done true, when it does not hold.
	check := func(leaf int64, exists bool, txid string, occ, rec int64, body, commitment, stored []byte) (bad LogReport, done bool, err error) {
		if leaf != n {
			bad, _ = fail(e.Position, "leaf %d is missing from log_leaves (the next is %d)", n, leaf)
			return bad, true, nil
		}
		if !exists {
			bad, _ = fail(e.Position, "event at position %d (leaf %d) is missing from the ledger", e.Position, n)
			return bad, true, nil
		}
		cur := Cursor{Position: e.Position}
		if cur.TxID, err = strconv.ParseUint(txid, 10, 64); err != nil {
			return bad, true, fmt.Errorf("verify the tree: transaction id %q: %w", txid, err)
		}
		if n > 0 && !prev.Less(cur) {
			bad, _ = fail(e.Position, "event at position %d (leaf %d) is out of ledger order: the events were reordered", e.Position, n)
			return bad, true, nil
		}
		prev = cur
		e.OccurredAt, e.ReceivedAt, e.Body, e.Commitment = time.UnixMicro(occ), time.UnixMicro(rec), body, commitment
		buf = e.Leaf().Encode(buf[:0])
		hs, err := edge.Append(tlog.RecordHash(buf))
		if err != nil {
			return bad, true, fmt.Errorf("verify the tree: %w", err)
		}
		if len(stored) != len(hs)*tlog.HashSize {
			bad, _ = fail(e.Position, "leaf %d holds %d bytes of hashes, the tree gives it %d: the tree's table was changed", n, len(stored), len(hs)*tlog.HashSize)
			return bad, true, nil
		}
		for j, h := range hs {
			if !bytes.Equal(stored[j*tlog.HashSize:(j+1)*tlog.HashSize], h[:]) {
				if j == 0 {
					bad, _ = fail(e.Position, "event at position %d (leaf %d) does not match its leaf hash: it or the tree was changed", e.Position, n)
				} else {
					bad, _ = fail(e.Position, "the tree's stored hash of %d leaves ending at leaf %d does not match: the tree's table was changed", 1<<j, n)
				}
				return bad, true, nil
			}
		}
		n++
		rep.Checked++
		for next < len(cps) && cps[next].Size == edge.Size() {
			if edge.Root() != cps[next].Root {
				bad, _ = fail(0, "kept checkpoint %d (tree size %d) has another root than the tree recomputed from the events: the ledger before it was changed", cps[next].ID, cps[next].Size)
				return bad, true, nil
			}
			rep.Checkpoints++
			next++
		}
		return bad, false, nil
	}
	var page leafPage
	for from := int64(0); from < size; from += pageSize {
		to := min(size, from+pageSize)
		// The fast path: the page's leaves (one index range), then the
		// events after the last one checked in ledger order (one index
		// range), zipped: leaf i must be the i-th event. Two range scans,
		// where joining each leaf to its event by position made PostgreSQL
		// hash-join the whole events table once per page.
		if err := page.read(ctx, tx, from, to); err != nil {
			return rep, err
		}
		if bad, done, err := verifyLeafPage(ctx, tx, &page, prev, &e, check); err != nil || done {
			return bad, err
		}
		if n == to {
			continue
		}
		// The slow path, from the first leaf that is not the next event in
		// ledger order (a leaf, an event or the order was tampered with):
		// each leaf joined with its event by position, which tells which.
		if bad, done, err := verifyLeavesSlow(ctx, tx, n, to, &e, check); err != nil || done {
			return bad, err
		}
		if n != to {
			// The page ended before leaf n: name the next leaf there is,
			// as when it is in the same page.
			var leaf, pos int64
			err := tx.QueryRowxContext(ctx, `SELECT leaf, position FROM log_leaves WHERE leaf > $1 ORDER BY leaf LIMIT 1`, n).Scan(&leaf, &pos)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				return fail(0, "leaf %d is missing from log_leaves", n)
			case err != nil:
				return rep, fmt.Errorf("verify the tree: %w", Classify(err))
			}
			return fail(pos, "leaf %d is missing from log_leaves (the next is %d)", n, leaf)
		}
	}
	rep.Tree = TreeHead{Size: edge.Size(), Root: edge.Root()}
	// Every event up to the last leaf's is a leaf: none was slipped in.
	var sealed int64
	if size > 0 {
		if err := tx.QueryRowxContext(ctx, `SELECT count(*) FROM events WHERE (transaction_id, position) <= ($1::xid8, $2::bigint)`,
			fmt.Sprint(prev.TxID), prev.Position).Scan(&sealed); err != nil {
			return rep, fmt.Errorf("verify the tree: count sealed events: %w", Classify(err))
		}
		if sealed != size {
			var pos int64
			err := tx.QueryRowxContext(ctx, `SELECT e.position FROM events e
WHERE (e.transaction_id, e.position) <= ($1::xid8, $2::bigint)
  AND NOT EXISTS (SELECT 1 FROM log_leaves l WHERE l.position = e.position)
ORDER BY e.transaction_id, e.position LIMIT 1`, fmt.Sprint(prev.TxID), prev.Position).Scan(&pos)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return rep, fmt.Errorf("verify the tree: find the unsealed event: %w", Classify(err))
			}
			return fail(pos, "event at position %d lies among the sealed events but is no leaf of the tree: it was inserted (%d events, %d leaves)", pos, sealed, size)
		}
	}
	if rep.Unsealed, err = CountAfter(ctx, tx, prev); err != nil {
		return rep, err
	}
	rep.OK = true
	rep.Duration = time.Since(start)
	return rep, tx.Commit()
}

// leafPage is one page of log_leaves, read whole: small rows (a position
// and ~64 bytes of hashes).
type leafPage struct {
	leaves, positions []int64
	hashes            [][]byte
	all               []byte
}

// read reads the leaves from..to-1 (those present) in leaf order.
func (p *leafPage) read(ctx context.Context, q *sqlx.Tx, from, to int64) error {
	p.leaves, p.positions, p.hashes, p.all = p.leaves[:0], p.positions[:0], p.hashes[:0], p.all[:0]
	rows, err := q.QueryContext(ctx, `SELECT leaf, position, hashes FROM log_leaves WHERE leaf >= $1 AND leaf < $2 ORDER BY leaf`, from, to)
	if err != nil {
		return fmt.Errorf("verify the tree: %w", Classify(err))
	}
	defer rows.Close()
	var h sql.RawBytes
	var starts []int
	for rows.Next() {
		var leaf, pos int64
		if err := rows.Scan(&leaf, &pos, &h); err != nil {
			return fmt.Errorf("verify the tree: scan: %w", Classify(err))
		}
		p.leaves, p.positions = append(p.leaves, leaf), append(p.positions, pos)
		starts = append(starts, len(p.all))
		p.all = append(p.all, h...)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("verify the tree: %w", Classify(err))
	}
	for i, s := range starts {
		end := len(p.all)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		p.hashes = append(p.hashes, p.all[s:end:end])
	}
	return nil
}

// checkFunc checks one leaf against its event (VerifyLog's check).
// commitment is a sealed event's stored body commitment: its leaf is
// checked with it (no key is needed, and an erased event verifies like
// any other); nil for a body kept in clear.
type checkFunc func(leaf int64, exists bool, txid string, occ, rec int64, body, commitment, stored []byte) (LogReport, bool, error)

// verifyLeafPage checks the page's leaves, in order, against the events after
// prev in ledger order, while each leaf's position is the next event's; it
// stops at the first that is not (the slow path takes over from there).
func verifyLeafPage(ctx context.Context, tx *sqlx.Tx, p *leafPage, prev Cursor, e *domain.Event, check checkFunc) (LogReport, bool, error) {
	if len(p.leaves) == 0 {
		return LogReport{}, false, nil
	}
	// e.transaction_id in ORDER BY: the column, not the text output of
	// the same name (which would sort the whole table).
	rows, err := tx.QueryContext(ctx, `SELECT e.transaction_id::text, e.position, e.delivery_id, e.type, COALESCE(e.user_id, ''), e.source,
  (extract(epoch FROM e.occurred_at) * 1000000)::bigint, (extract(epoch FROM e.received_at) * 1000000)::bigint,
  e.body, e.svix_timestamp, e.svix_signature, e.body_commitment
FROM events e WHERE (e.transaction_id, e.position) > ($1::xid8, $2::bigint)
ORDER BY e.transaction_id, e.position LIMIT $3`, strconv.FormatUint(prev.TxID, 10), prev.Position, len(p.leaves))
	if err != nil {
		return LogReport{}, false, fmt.Errorf("verify the tree: %w", Classify(err))
	}
	defer rows.Close()
	var (
		txid       string
		occ, rec   int64
		body       sql.RawBytes
		commitment sql.RawBytes
	)
	for i := 0; rows.Next(); i++ {
		if err := rows.Scan(&txid, &e.Position, &e.DeliveryID, &e.Type, &e.UserID, &e.Source, &occ, &rec, &body, &e.SvixTimestamp, &e.SvixSignature, &commitment); err != nil {
			return LogReport{}, false, fmt.Errorf("verify the tree: scan: %w", Classify(err))
		}
		if e.Position != p.positions[i] {
			return LogReport{}, false, nil
		}
		if bad, done, err := check(p.leaves[i], true, txid, occ, rec, body, commitment, p.hashes[i]); err != nil || done {
			return bad, done, err
		}
	}
	if err := rows.Err(); err != nil {
		return LogReport{}, false, fmt.Errorf("verify the tree: %w", Classify(err))
	}
	return LogReport{}, false, nil
}

// verifyLeavesSlow checks the leaves from..to-1 each joined with its event by
// position: what tells a missing leaf, a missing event and a reorder apart.
func verifyLeavesSlow(ctx context.Context, tx *sqlx.Tx, from, to int64, e *domain.Event, check checkFunc) (LogReport, bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT l.leaf, l.position, l.hashes, e.position IS NOT NULL, COALESCE(e.transaction_id::text, '0'),
  COALESCE(e.delivery_id, ''), COALESCE(e.type, ''), COALESCE(e.user_id, ''), COALESCE(e.source, ''),
  COALESCE((extract(epoch FROM e.occurred_at) * 1000000)::bigint, 0),
  COALESCE((extract(epoch FROM e.received_at) * 1000000)::bigint, 0),
  COALESCE(e.body, ''), COALESCE(e.svix_timestamp, 0), COALESCE(e.svix_signature, ''), e.body_commitment
FROM log_leaves l LEFT JOIN events e ON e.position = l.position
WHERE l.leaf >= $1 AND l.leaf < $2 ORDER BY l.leaf`, from, to)
	if err != nil {
		return LogReport{}, false, fmt.Errorf("verify the tree: %w", Classify(err))
	}
	defer rows.Close()
	var (
		leaf       int64
		exists     bool
		txid       string
		occ, rec   int64
		body       sql.RawBytes
		stored     sql.RawBytes
		commitment sql.RawBytes
	)
	for rows.Next() {
		if err := rows.Scan(&leaf, &e.Position, &stored, &exists, &txid, &e.DeliveryID, &e.Type, &e.UserID, &e.Source, &occ, &rec, &body, &e.SvixTimestamp, &e.SvixSignature, &commitment); err != nil {
			return LogReport{}, false, fmt.Errorf("verify the tree: scan: %w", Classify(err))
		}
		if bad, done, err := check(leaf, exists, txid, occ, rec, body, commitment, stored); err != nil || done {
			return bad, done, err
		}
	}
	if err := rows.Err(); err != nil {
		return LogReport{}, false, fmt.Errorf("verify the tree: %w", Classify(err))
	}
	return LogReport{}, false, nil
}
