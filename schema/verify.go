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

// verifyLinksSQL reads one page of links in seal order.
const verifyLinksSQL = `SELECT seq, position, hash FROM event_chain WHERE seq > $1 AND seq <= $2 ORDER BY seq`

// verifyEventsSQL reads the events after a ledger cursor in ledger order (an
// index range scan over a heap written in that order). Occurred and received
// times are read as integer microseconds, exactly what ChainHash covers.
const verifyEventsSQL = `SELECT position, transaction_id::text, delivery_id, type, COALESCE(user_id, ''),
  (extract(epoch FROM occurred_at) * 1000000)::bigint, (extract(epoch FROM received_at) * 1000000)::bigint,
  body, svix_timestamp, svix_signature
FROM events WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
ORDER BY transaction_id, position
LIMIT $3`

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
// The links are checked in GOMAXPROCS ranges at once, each on its own
// connection importing the same exported snapshot: a link is right when it
// recomputes from its predecessor's stored hash, so each range starts from
// the stored link before it. Every link recomputing from its predecessor is
// the whole chain recomputing from the start.
func VerifyChain(ctx context.Context, db *sqlx.DB, want *domain.Digest) (ChainReport, error) {
	return verifyChain(ctx, db, want, runtime.GOMAXPROCS(0), verifyPage)
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
	var wg sync.WaitGroup
	for i, r := range ranges {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = verifyRange(ctx, db, snapshot, r[0], r[1], want)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return rep, err
	}
	reached := false
	var last [domain.HashSize]byte
	for _, r := range results { // in seal order: the first problem wins
		rep.Checked += r.checked
		if r.problem != "" {
			return fail(r.firstBad, r.problem)
		}
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
// from the stored hash of link from-1 (the zero hash for link 1). It walks
// the links in seal order and the events in ledger order side by side, from
// the event link from-1 seals: the n-th link must seal the n-th event, so an
// event deleted, inserted or moved in the sealed part is caught where it
// happens. It stops at its first problem.
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
	// The ranges are the parallelism: parallel workers under each page
	// only fight them for the same cores (measured: slower).
	if _, err := tx.ExecContext(ctx, `SET LOCAL max_parallel_workers_per_gather = 0`); err != nil {
		return res, fmt.Errorf("verify chain: %w", Classify(err))
	}
	bad := func(pos int64, format string, args ...any) (rangeResult, error) {
		res.firstBad, res.problem = pos, fmt.Sprintf(format, args...)
		return res, nil
	}
	var prev [domain.HashSize]byte
	cursorTx, cursorPos := "0", int64(0)
	if from > 1 {
		var stored []byte
		var pos int64
		var txid sql.NullString
		err := tx.QueryRowxContext(ctx, `SELECT c.hash, c.position, e.transaction_id::text
FROM event_chain c LEFT JOIN events e ON e.position = c.position WHERE c.seq = $1`, from-1).Scan(&stored, &pos, &txid)
		if errors.Is(err, sql.ErrNoRows) {
			return gap(ctx, tx, res, from-2)
		}
		if err != nil {
			return res, fmt.Errorf("verify chain: %w", Classify(err))
		}
		if !txid.Valid {
			return bad(pos, "event at position %d (link %d) is missing from the ledger", pos, from-1)
		}
		copy(prev[:], stored)
		cursorTx, cursorPos = txid.String, pos
	}
	type link struct {
		seq, position int64
		hash          []byte
	}
	links := make([]link, 0, min(verifyPage, to-from+1))
	var (
		seq      = from - 1
		e        domain.Event
		txid     sql.RawBytes
		occ, rec int64
		body     sql.RawBytes
	)
	for seq < to {
		links = links[:0]
		rows, err := tx.QueryContext(ctx, verifyLinksSQL, seq, min(seq+verifyPage, to))
		if err != nil {
			return res, fmt.Errorf("verify chain: %w", Classify(err))
		}
		for rows.Next() {
			var l link
			if err := rows.Scan(&l.seq, &l.position, &l.hash); err != nil {
				rows.Close()
				return res, fmt.Errorf("verify chain: scan link: %w", Classify(err))
			}
			links = append(links, l)
		}
		if err := rows.Err(); err != nil {
			return res, fmt.Errorf("verify chain: %w", Classify(err))
		}
		rows.Close()
		if len(links) == 0 {
			return gap(ctx, tx, res, seq)
		}

		rows, err = tx.QueryContext(ctx, verifyEventsSQL, cursorTx, cursorPos, len(links))
		if err != nil {
			return res, fmt.Errorf("verify chain: %w", Classify(err))
		}
		i := 0
		for ; rows.Next(); i++ {
			if err := rows.Scan(&e.Position, &txid, &e.DeliveryID, &e.Type, &e.UserID, &occ, &rec, &body, &e.SvixTimestamp, &e.SvixSignature); err != nil {
				rows.Close()
				return res, fmt.Errorf("verify chain: scan: %w", Classify(err))
			}
			l := links[i]
			if l.seq != seq+int64(i)+1 {
				rows.Close()
				return gap(ctx, tx, res, seq+int64(i))
			}
			if e.Position != l.position {
				rows.Close()
				return misplaced(ctx, tx, res, l.seq, l.position, e.Position)
			}
			e.OccurredAt = time.UnixMicro(occ)
			e.ReceivedAt = time.UnixMicro(rec)
			e.Body = body
			h := domain.ChainHash(prev[:], e)
			if string(h[:]) != string(l.hash) {
				rows.Close()
				return bad(e.Position, "event at position %d (link %d) does not match its chain hash: it or the link was changed", e.Position, l.seq)
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
			if i == len(links)-1 {
				cursorTx, cursorPos = string(txid), e.Position
			}
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return res, fmt.Errorf("verify chain: %w", Classify(err))
		}
		rows.Close()
		if i < len(links) { // the ledger ends before the chain does
			l := links[i]
			if l.seq != seq+int64(i)+1 {
				return gap(ctx, tx, res, seq+int64(i))
			}
			return misplaced(ctx, tx, res, l.seq, l.position, 0)
		}
		seq = links[len(links)-1].seq
	}
	res.last = prev
	return res, tx.Commit()
}

// gap reports the link after seq as missing, naming the next link there is.
func gap(ctx context.Context, tx *sqlx.Tx, res rangeResult, seq int64) (rangeResult, error) {
	var next, pos int64
	err := tx.QueryRowxContext(ctx, `SELECT seq, position FROM event_chain WHERE seq > $1 ORDER BY seq LIMIT 1`, seq).Scan(&next, &pos)
	if errors.Is(err, sql.ErrNoRows) {
		res.problem = fmt.Sprintf("chain link %d is missing", seq+1)
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("verify chain: %w", Classify(err))
	}
	res.firstBad, res.problem = pos, fmt.Sprintf("chain link %d is missing: the link after %d is %d", seq+1, seq, next)
	return res, nil
}

// misplaced explains why link seq (sealing the event at position want) met
// the event at position got (0: none) in ledger order: the sealed event is
// gone, or another event was put before it.
func misplaced(ctx context.Context, tx *sqlx.Tx, res rangeResult, seq, want, got int64) (rangeResult, error) {
	var exists bool
	if err := tx.QueryRowxContext(ctx, `SELECT EXISTS (SELECT 1 FROM events WHERE position = $1)`, want).Scan(&exists); err != nil {
		return res, fmt.Errorf("verify chain: %w", Classify(err))
	}
	switch {
	case !exists:
		res.firstBad, res.problem = want, fmt.Sprintf("event at position %d (link %d) is missing from the ledger", want, seq)
	case got != 0:
		res.firstBad, res.problem = got, fmt.Sprintf("event at position %d lies in the sealed part of the ledger but has no chain link there: it was inserted or moved (link %d seals position %d)", got, seq, want)
	default:
		res.firstBad, res.problem = want, fmt.Sprintf("event at position %d (link %d) is not where the chain says in ledger order: it was moved", want, seq)
	}
	return res, nil
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
