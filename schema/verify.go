package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"sync"
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
// the link at want.Position holds want.Hash. A mismatch is reported in the
// ChainReport (the first one in seal order), not as an error; errors mean the
// check could not run (EUNAVAILABLE when the database is unreachable).
//
// The links are checked in up to GOMAXPROCS ranges at once (at most half
// the pool's connections, so a check never starves the webhook's appends),
// each on its own connection importing the same exported snapshot: a link
// is right when it recomputes from its predecessor's stored hash, so each
// range starts from the stored link before it. Every link recomputing from
// its predecessor is the whole chain recomputing from the start. A range
// that finds a problem stops the ranges after it.
func VerifyChain(ctx context.Context, db *sqlx.DB, want *domain.Digest) (ChainReport, error) {
	parts := runtime.GOMAXPROCS(0)
	if n := db.Stats().MaxOpenConnections; n > 0 {
		parts = max(1, min(parts, n/2))
	}
	return verifyChain(ctx, db, want, parts, verifyPage)
}

// VerifyChainParts is VerifyChain checking at most parts ranges at once:
// it uses parts+1 connections of db (one when parts is 1).
func VerifyChainParts(ctx context.Context, db *sqlx.DB, want *domain.Digest, parts int) (ChainReport, error) {
	return verifyChain(ctx, db, want, max(1, parts), verifyPage)
}

// verifyChain is VerifyChain in at most parts ranges of at least minLinks.
func verifyChain(ctx context.Context, db *sqlx.DB, want *domain.Digest, parts int, minLinks int64) (ChainReport, error) {
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
	fail := func(pos int64, problem string) (ChainReport, error) {
		rep.OK, rep.FirstBad, rep.Problem = false, pos, problem
		rep.Duration = time.Since(start)
		return rep, nil
	}
	var links int64
	var snapshot string
	if err := tx.QueryRowxContext(ctx, `SELECT COALESCE(max(seq), 0), pg_export_snapshot() FROM event_chain`).Scan(&links, &snapshot); err != nil {
		return rep, fmt.Errorf("verify chain: %w", Classify(err))
	}

	ranges := splitRange(links, parts, minLinks)
	results := make([]rangeResult, len(ranges))
	errs := make([]error, len(ranges))
	if len(ranges) == 1 {
		// One range: on this transaction, no second connection needed.
		results[0], errs[0] = verifyRangeTx(ctx, tx, ranges[0][0], ranges[0][1], want)
	} else {
		// cancels[i] stops range i; a range with a problem or an error
		// stops every range after it (the first problem in seal order is
		// the answer, so what they would find does not matter).
		ctxs, cancels := make([]context.Context, len(ranges)), make([]context.CancelFunc, len(ranges))
		for i := range ranges {
			ctxs[i], cancels[i] = context.WithCancel(ctx)
			defer cancels[i]()
		}
		var wg sync.WaitGroup
		for i, r := range ranges {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = verifyRange(ctxs[i], db, snapshot, r[0], r[1], want)
				if errs[i] != nil || results[i].problem != "" {
					for _, cancel := range cancels[i+1:] {
						cancel()
					}
				}
			}()
		}
		wg.Wait()
	}
	for i := range results { // in seal order: the first problem wins
		if errs[i] != nil {
			return rep, errs[i]
		}
		if results[i].problem != "" {
			for _, r := range results[:i+1] {
				rep.Checked += r.checked
			}
			return fail(results[i].firstBad, results[i].problem)
		}
	}
	reached := false
	var last [domain.HashSize]byte
	for _, r := range results {
		rep.Checked += r.checked
		reached = reached || r.reached
		last = r.last
	}
	if want != nil && !reached {
		return fail(want.Position, fmt.Sprintf("the chain does not reach the kept digest: no link seals position %d", want.Position))
	}
	if links > 0 {
		if links != rep.Checked || last != head.Hash {
			return fail(head.Position, "the chain head changed during the check")
		}
		var n int64
		err := tx.QueryRowxContext(ctx, `SELECT count(*) FROM events
WHERE (transaction_id, position) <= (SELECT transaction_id, position FROM events WHERE position = $1)`, head.Position).Scan(&n)
		if err != nil {
			return rep, fmt.Errorf("verify chain: count sealed events: %w", Classify(err))
		}
		if n != links {
			var pos int64
			err := tx.QueryRowxContext(ctx, `SELECT e.position FROM events e
WHERE (e.transaction_id, e.position) <= (SELECT transaction_id, position FROM events WHERE position = $1)
  AND NOT EXISTS (SELECT 1 FROM event_chain c WHERE c.position = e.position)
ORDER BY e.transaction_id, e.position LIMIT 1`, head.Position).Scan(&pos)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return rep, fmt.Errorf("verify chain: find unsealed event: %w", Classify(err))
			}
			return fail(pos, fmt.Sprintf("event at position %d lies in the sealed part of the ledger but has no chain link: it was inserted (%d events, %d links)", pos, n, links))
		}
	}
	rep.OK = true
	rep.Duration = time.Since(start)
	return rep, tx.Commit()
}

// splitRange splits links 1..n into at most parts ranges [from, to] of at
// least minSize links each (none when n is 0).
func splitRange(n int64, parts int, minSize int64) [][2]int64 {
	if n <= 0 {
		return nil
	}
	parts = int(max(1, min(int64(parts), n/max(1, minSize))))
	out := make([][2]int64, 0, parts)
	for i := range int64(parts) {
		out = append(out, [2]int64{n*i/int64(parts) + 1, n * (i + 1) / int64(parts)})
	}
	return out
}

// rangeResult is what verifyRange found in its links.
type rangeResult struct {
	checked  int64
	last     [domain.HashSize]byte // recomputed hash of the range's last link
	reached  bool                  // the kept digest's link is in the range and matches
	firstBad int64
	problem  string
}

// verifyRange recomputes links from..to in the exported snapshot, starting
// from the stored hash of link from-1 (the zero hash for link 1). It stops at
// its first problem.
func verifyRange(ctx context.Context, db *sqlx.DB, snapshot string, from, to int64, want *domain.Digest) (rangeResult, error) {
	var res rangeResult
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return res, fmt.Errorf("verify chain: %w", Classify(err))
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET TRANSACTION SNAPSHOT '`+snapshot+`'`); err != nil {
		return res, fmt.Errorf("verify chain: import snapshot: %w", Classify(err))
	}
	if res, err = verifyRangeTx(ctx, tx, from, to, want); err != nil {
		return res, err
	}
	return res, tx.Commit()
}

// verifyRangeTx is verifyRange's work, on tx.
func verifyRangeTx(ctx context.Context, tx *sqlx.Tx, from, to int64, want *domain.Digest) (rangeResult, error) {
	var res rangeResult
	// The ranges are the parallelism: a Gather Merge under each page only
	// adds workers fighting for the same cores (measured: 128 ms a page
	// with it, 90 ms without).
	if _, err := tx.ExecContext(ctx, `SET LOCAL max_parallel_workers_per_gather = 0`); err != nil {
		return res, fmt.Errorf("verify chain: %w", Classify(err))
	}
	bad := func(pos int64, format string, args ...any) (rangeResult, error) {
		res.firstBad, res.problem = pos, fmt.Sprintf(format, args...)
		return res, nil
	}
	var prev [domain.HashSize]byte
	if from > 1 {
		var stored []byte
		err := tx.QueryRowxContext(ctx, `SELECT hash FROM event_chain WHERE seq = $1`, from-1).Scan(&stored)
		if errors.Is(err, sql.ErrNoRows) {
			return bad(0, "chain link %d is missing", from-1)
		}
		if err != nil {
			return res, fmt.Errorf("verify chain: %w", Classify(err))
		}
		copy(prev[:], stored)
	}
	var (
		seq      = from - 1
		stored   sql.RawBytes
		exists   bool
		occ, rec int64
		body     sql.RawBytes
		e        domain.Event
	)
	for seq < to {
		rows, err := tx.QueryContext(ctx, verifyChainSQL, seq, min(verifyPage, to-seq))
		if err != nil {
			return res, fmt.Errorf("verify chain: %w", Classify(err))
		}
		got := 0
		for rows.Next() {
			got++
			var s int64
			if err := rows.Scan(&s, &e.Position, &stored, &exists, &e.DeliveryID, &e.Type, &e.UserID, &occ, &rec, &body, &e.SvixTimestamp, &e.SvixSignature); err != nil {
				rows.Close()
				return res, fmt.Errorf("verify chain: scan: %w", Classify(err))
			}
			if s != seq+1 {
				rows.Close()
				return bad(e.Position, "chain link %d is missing: the link after %d is %d", seq+1, seq, s)
			}
			seq = s
			if !exists {
				rows.Close()
				return bad(e.Position, "event at position %d (link %d) is missing from the ledger", e.Position, s)
			}
			e.OccurredAt = time.UnixMicro(occ)
			e.ReceivedAt = time.UnixMicro(rec)
			e.Body = body
			h := domain.ChainHash(prev[:], e)
			if string(h[:]) != string(stored) {
				rows.Close()
				return bad(e.Position, "event at position %d (link %d) does not match its chain hash: it or the link was changed", e.Position, s)
			}
			prev = h
			res.checked++
			if want != nil && e.Position == want.Position {
				if h != want.Hash {
					rows.Close()
					return bad(e.Position, "the chain does not reach the kept digest: the hash at position %d differs", e.Position)
				}
				res.reached = true
			}
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return res, fmt.Errorf("verify chain: %w", Classify(err))
		}
		rows.Close()
		if got == 0 {
			return bad(0, "chain link %d is missing", seq+1)
		}
	}
	res.last = prev
	return res, nil
}

// SignatureReport is the outcome of VerifySignatures.
type SignatureReport struct {
	OK       bool
	Checked  int64
	Failed   int64
	FirstBad int64   // position of the first event whose signature fails
	Bad      []int64 // positions of failing events, the first 100
	// Erased counts the events whose body is erased: their signature
	// cannot be checked any more, and they count neither as checked nor
	// as failed.
	Erased int64
	// Unsigned counts the events that did not come through Svix: the
	// Backend API's snapshots (source "clerk_api") and what the ledger
	// appended itself (source "ledger": erasures). They carry no Svix
	// signature to check.
	Unsigned int64
	Duration time.Duration
}

// VerifySignatures streams every stored event in ledger order (gated or
// not) inside one read-only snapshot and calls check on each Svix delivery
// (source svix; snapshots and the ledger's own events are counted as
// Unsigned, erased ones as Erased); an event for which
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
	rows, err := tx.QueryContext(ctx, `SELECT position, delivery_id, type, COALESCE(user_id, ''), svix_timestamp, svix_signature, source, body, `+sealColumns+`
FROM events ORDER BY transaction_id, position`)
	if err != nil {
		return rep, fmt.Errorf("verify signatures: %w", Classify(err))
	}
	defer rows.Close()
	var e domain.Event
	var body sql.RawBytes
	o := KeyringFrom(ctx).Opener()
	for rows.Next() {
		var sl sealed
		if err := rows.Scan(append([]any{&e.Position, &e.DeliveryID, &e.Type, &e.UserID, &e.SvixTimestamp, &e.SvixSignature, &e.Source, &body}, sl.rowsDest()...)...); err != nil {
			return rep, fmt.Errorf("verify signatures: scan: %w", Classify(err))
		}
		e.Body, e.Erased = body, false
		if err := openRowBody(o, &e, &sl); err != nil {
			return rep, fmt.Errorf("verify signatures: %w", err)
		}
		if e.Source != domain.SourceSvix {
			rep.Unsigned++
			continue
		}
		if e.Erased {
			rep.Erased++
			continue
		}
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
