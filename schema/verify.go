package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/jmoiron/sqlx"
)

// ChainHead returns the newest sealed link as a digest and when it was
// sealed. Errors: ENOTFOUND when nothing is sealed yet.
func ChainHead(ctx context.Context, q Queryer) (domain.Digest, time.Time, error) {
	var d domain.Digest
	var hash []byte
	var at time.Time
	err := q.QueryRowxContext(ctx, `SELECT position, hash, sealed_at FROM event_chain ORDER BY seq DESC LIMIT 1`).Scan(&d.Position, &hash, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Digest{}, time.Time{}, domain.Errorf(domain.ENOTFOUND, "the chain is empty: no event is sealed yet")
	}
	if err != nil {
		return domain.Digest{}, time.Time{}, fmt.Errorf("read chain head: %w", Classify(err))
	}
	copy(d.Hash[:], hash)
	return d, at.UTC(), nil
}

// ChainReport is the outcome of VerifyChain. OK is false when the chain
// does not match the ledger; FirstBad is then the position of the first
// event (in seal order) whose link does not match, and Problem says how.
type ChainReport struct {
	OK           bool
	Checked      int64         // links recomputed and found to match
	Head         domain.Digest // newest sealed link when the check began (zero when empty)
	HeadSealedAt time.Time
	Digest       *domain.Digest // the kept digest checked against, if any
	FirstBad     int64
	Problem      string
	Duration     time.Duration
}

// verifyChainSQL streams every link in seal order with the event it seals
// (NULL columns when that event is gone). Occurred and received times are
// read as integer microseconds, exactly what ChainHash covers.
const verifyChainSQL = `SELECT c.seq, c.position, c.hash, e.position IS NOT NULL,
  COALESCE(e.delivery_id, ''), COALESCE(e.type, ''), COALESCE(e.user_id, ''),
  COALESCE((extract(epoch FROM e.occurred_at) * 1000000)::bigint, 0),
  COALESCE((extract(epoch FROM e.received_at) * 1000000)::bigint, 0),
  COALESCE(e.body, ''), COALESCE(e.svix_timestamp, 0), COALESCE(e.svix_signature, '')
FROM event_chain c LEFT JOIN events e ON e.position = c.position
WHERE c.seq > $1
ORDER BY c.seq
LIMIT $2`

// verifyPage is how many links VerifyChain reads per keyset page: a page in
// seq order is a nested loop on the two unique indexes, where one ORDER BY
// seq over everything made PostgreSQL sort the whole ledger on disk.
const verifyPage = 20000

// VerifyChain recomputes the whole hash chain from the stored events in seal
// order, inside one read-only REPEATABLE READ snapshot, streaming (memory
// does not grow with the ledger). It checks that every link is there (seq
// 1..n without gaps), that every sealed event still exists and hashes to its
// stored link, that no event was slipped into the sealed part of the ledger
// without a link, and, when want is not nil, that the chain reaches want:
// the link at want.Position holds want.Hash. It stops at the first problem.
// A mismatch is reported in the ChainReport, not as an error; errors mean
// the check could not run (EUNAVAILABLE when the database is unreachable).
func VerifyChain(ctx context.Context, db *sqlx.DB, want *domain.Digest) (ChainReport, error) {
	start := time.Now()
	rep := ChainReport{Digest: want}
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return rep, fmt.Errorf("verify chain: %w", Classify(err))
	}
	defer tx.Rollback()
	head, sealedAt, err := ChainHead(ctx, tx)
	if err != nil && domain.ErrorCode(err) != domain.ENOTFOUND {
		return rep, err
	}
	rep.Head, rep.HeadSealedAt = head, sealedAt

	fail := func(pos int64, format string, args ...any) (ChainReport, error) {
		rep.OK, rep.FirstBad, rep.Problem = false, pos, fmt.Sprintf(format, args...)
		rep.Duration = time.Since(start)
		return rep, nil
	}
	var (
		prev     [domain.HashSize]byte
		seq      int64
		stored   sql.RawBytes
		exists   bool
		occ, rec int64
		body     sql.RawBytes
		e        domain.Event
		reached  bool
		rows     *sql.Rows
	)
	defer func() {
		if rows != nil {
			rows.Close()
		}
	}()
	for {
		rows, err = tx.QueryContext(ctx, verifyChainSQL, seq, verifyPage)
		if err != nil {
			return rep, fmt.Errorf("verify chain: %w", Classify(err))
		}
		got := 0
		for rows.Next() {
			got++
			var s int64
			if err := rows.Scan(&s, &e.Position, &stored, &exists, &e.DeliveryID, &e.Type, &e.UserID, &occ, &rec, &body, &e.SvixTimestamp, &e.SvixSignature); err != nil {
				return rep, fmt.Errorf("verify chain: scan: %w", Classify(err))
			}
			if s != seq+1 {
				return fail(e.Position, "chain link %d is missing: the link after %d is %d", seq+1, seq, s)
			}
			seq = s
			if !exists {
				return fail(e.Position, "event at position %d (link %d) is missing from the ledger", e.Position, s)
			}
			e.OccurredAt = time.UnixMicro(occ)
			e.ReceivedAt = time.UnixMicro(rec)
			e.Body = body
			h := domain.ChainHash(prev[:], e)
			if string(h[:]) != string(stored) {
				return fail(e.Position, "event at position %d (link %d) does not match its chain hash: it or the link was changed", e.Position, s)
			}
			prev = h
			rep.Checked++
			if want != nil && e.Position == want.Position {
				if h != want.Hash {
					return fail(e.Position, "the chain does not reach the kept digest: the hash at position %d differs", e.Position)
				}
				reached = true
			}
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return rep, fmt.Errorf("verify chain: %w", Classify(err))
		}
		rows.Close()
		if got < verifyPage {
			break
		}
	}
	if want != nil && !reached {
		return fail(want.Position, "the chain does not reach the kept digest: no link seals position %d", want.Position)
	}
	if seq > 0 {
		if seq != rep.Checked || prev != head.Hash {
			return fail(head.Position, "the chain head changed during the check")
		}
		var n int64
		err := tx.QueryRowxContext(ctx, `SELECT count(*) FROM events
WHERE (transaction_id, position) <= (SELECT transaction_id, position FROM events WHERE position = $1)`, head.Position).Scan(&n)
		if err != nil {
			return rep, fmt.Errorf("verify chain: count sealed events: %w", Classify(err))
		}
		if n != seq {
			var pos int64
			err := tx.QueryRowxContext(ctx, `SELECT e.position FROM events e
WHERE (e.transaction_id, e.position) <= (SELECT transaction_id, position FROM events WHERE position = $1)
  AND NOT EXISTS (SELECT 1 FROM event_chain c WHERE c.position = e.position)
ORDER BY e.transaction_id, e.position LIMIT 1`, head.Position).Scan(&pos)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return rep, fmt.Errorf("verify chain: find unsealed event: %w", Classify(err))
			}
			return fail(pos, "event at position %d lies in the sealed part of the ledger but has no chain link: it was inserted (%d events, %d links)", pos, n, seq)
		}
	}
	rep.OK = true
	rep.Duration = time.Since(start)
	return rep, tx.Commit()
}

// SignatureReport is the outcome of VerifySignatures.
type SignatureReport struct {
	OK       bool
	Checked  int64
	Failed   int64
	FirstBad int64   // position of the first event whose signature fails
	Bad      []int64 // positions of failing events, the first 100
	Duration time.Duration
}

// VerifySignatures streams every stored event in ledger order (gated or not)
// inside one read-only snapshot and calls check on it; an event for which
// check returns an error is counted as failed. check sees the exact stored
// body and Svix headers and must not keep e.Body after it returns.
// Errors mean the check could not run.
func VerifySignatures(ctx context.Context, db *sqlx.DB, check func(e domain.Event) error) (SignatureReport, error) {
	start := time.Now()
	var rep SignatureReport
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return rep, fmt.Errorf("verify signatures: %w", Classify(err))
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT position, delivery_id, type, svix_timestamp, svix_signature, body
FROM events ORDER BY transaction_id, position`)
	if err != nil {
		return rep, fmt.Errorf("verify signatures: %w", Classify(err))
	}
	defer rows.Close()
	var e domain.Event
	var body sql.RawBytes
	for rows.Next() {
		if err := rows.Scan(&e.Position, &e.DeliveryID, &e.Type, &e.SvixTimestamp, &e.SvixSignature, &body); err != nil {
			return rep, fmt.Errorf("verify signatures: scan: %w", Classify(err))
		}
		e.Body = body
		rep.Checked++
		if check(e) != nil {
			rep.Failed++
			if rep.FirstBad == 0 {
				rep.FirstBad = e.Position
			}
			if len(rep.Bad) < 100 {
				rep.Bad = append(rep.Bad, e.Position)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("verify signatures: %w", Classify(err))
	}
	rep.OK = rep.Failed == 0
	rep.Duration = time.Since(start)
	return rep, tx.Commit()
}
