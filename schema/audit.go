package schema

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"strconv"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
	"github.com/jmoiron/sqlx"
)

// AuditEvent is a ledger event as auditors see it: the stored event, its
// leaf index in the Merkle tree and its leaf hash; LeafHash is nil (and
// LeafIndex meaningless) while the sealer has not sealed it yet.
type AuditEvent struct {
	domain.Event
	// Erasure is set for an erased event (Event.Erased) whose user's
	// erasure is recorded: when, by whom and why it was erased.
	Erasure   *ErasureMark
	LeafIndex int64
	LeafHash  []byte
}

// auditColumns is the column list scanAuditEvent reads: the event (aliased
// e), its leaf index and leaf hash (from l, LEFT JOINed by auditJoin).
const auditColumns = `e.position, e.transaction_id, e.delivery_id, e.type, COALESCE(e.user_id, ''), e.occurred_at, e.received_at, e.body, e.svix_timestamp, e.svix_signature, e.source, COALESCE(l.leaf, 0), substring(l.hashes FROM 1 FOR 32), ` + eSealColumns + `,
  CASE WHEN e.body_sealed IS NOT NULL THEN (SELECT to_char(r.erased_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || chr(10) || r.erased_by || chr(10) || r.reason FROM erasures r WHERE r.user_id = e.user_id) END`

// auditJoin joins an event (e) with its leaf (l): the first of a leaf's
// stored hashes is the leaf hash.
const auditJoin = ` LEFT JOIN log_leaves l ON l.position = e.position`

// scanAuditEvent scans one row of auditColumns. The event's Body is *body,
// which the next scan (or the rows' next Next or Close) overwrites: a caller
// that keeps the event clones it. The other fields are the event's own.
// A sealed body is opened with k (openBody).
func scanAuditEvent(k *userkeys.Keyring, row interface{ Scan(...any) error }, body *sql.RawBytes) (AuditEvent, error) {
	var a AuditEvent
	var sl sealed
	var mark sql.NullString
	err := row.Scan(append(append([]any{&a.Position, &a.TxID, &a.DeliveryID, &a.Type, &a.UserID, &a.OccurredAt, &a.ReceivedAt, body, &a.SvixTimestamp, &a.SvixSignature, &a.Source, &a.LeafIndex, &a.LeafHash}, sl.dest()...), &mark)...)
	if err != nil {
		return AuditEvent{}, fmt.Errorf("scan audit event: %w", Classify(err))
	}
	a.Body = *body
	a.OccurredAt = a.OccurredAt.UTC()
	a.ReceivedAt = a.ReceivedAt.UTC()
	if err := openBody(k, &a.Event, &sl); err != nil {
		return AuditEvent{}, err
	}
	if a.Erased && mark.Valid {
		a.Erasure = parseErasureMark(mark.String)
	}
	return a, nil
}

// auditQuery is QueryEvents's statement joined with the tree (auditJoin). With
// f.MaxBytes it numbers the bytes of the bodies before each row (a running
// sum in ledger order over the page's rows only: the window runs under the
// LIMIT's index scan, and octet_length reads a stored body's size without
// reading the body) and keeps the rows that start below MaxBytes.
func auditQuery(f EventFilter) (string, []any) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	where, args := f.where()
	args = append(args, f.Limit)
	limit := strconv.Itoa(len(args))
	if f.MaxBytes <= 0 {
		return `SELECT ` + auditColumns + ` FROM events e` + auditJoin + ` WHERE ` + where +
			` ORDER BY e.transaction_id, e.position LIMIT $` + limit, args
	}
	args = append(args, f.MaxBytes)
	return `SELECT ` + auditColumns + ` FROM (SELECT e.*, sum(octet_length(e.body) + COALESCE(octet_length(e.body_sealed), 0)) OVER (ORDER BY e.transaction_id, e.position ROWS UNBOUNDED PRECEDING) - octet_length(e.body) - COALESCE(octet_length(e.body_sealed), 0) AS bytes_before` +
		` FROM events e WHERE ` + where + ` ORDER BY e.transaction_id, e.position LIMIT $` + limit + `) e` +
		auditJoin + ` WHERE e.bytes_before < $` + strconv.Itoa(len(args)) +
		` ORDER BY e.transaction_id, e.position`, args
}

// PageMore reports whether events may follow a page of f that held n events
// whose bodies add up to bytes: it was full, or it ended at f.MaxBytes.
func PageMore(f EventFilter, n int, bytes int64) bool {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	return n > 0 && (n >= limit || (f.MaxBytes > 0 && bytes >= f.MaxBytes))
}

// QueryAuditEvents is QueryEvents with each event's leaf: the events
// matching f in ledger order, below the xid8 gate, after f.After, at most
// f.Limit (default 100). Paging with After(last event) never misses or
// repeats an event while new ones arrive.
func QueryAuditEvents(ctx context.Context, q Queryer, f EventFilter) ([]AuditEvent, error) {
	query, args := auditQuery(f)
	rows, err := q.QueryxContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("query audit events: %w", Classify(err))
	}
	defer rows.Close()
	var out []AuditEvent
	var body sql.RawBytes
	for rows.Next() {
		a, err := scanAuditEvent(KeyringFrom(ctx), rows, &body)
		if err != nil {
			return nil, err
		}
		a.Body = bytes.Clone(a.Body)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query audit events: %w", Classify(err))
	}
	return out, nil
}

// QueryAuditEventsRecorded runs QueryAuditEvents's query and then appends a
// to the audit access log, with a.RowCount set to the number of events the
// query returned. It calls fn with each event in ledger order as it arrives;
// e.Body is only valid during the call (clone it to keep it). It returns how
// many events fn was given, and nil only once the record is committed: after
// an error, whatever fn built from the events must not be shown, because the
// query was not recorded. An error from fn stops the query and is returned;
// nothing is recorded then. q is the pool: given a transaction, the record
// is only as durable as that transaction's commit.
//
// The page is read by a statement of its own, which takes no transaction id,
// and the record is a short INSERT after it. One statement doing both (a
// data-modifying CTE) would save a round trip but hold a transaction id
// until the client had read the whole page, and with it the xid8 gate of
// every reader of the ledger, projectors included.
func QueryAuditEventsRecorded(ctx context.Context, q interface {
	Queryer
	Execer
}, f EventFilter, a Access, fn func(AuditEvent) error) (int, error) {
	query, args := auditQuery(f)
	rows, err := q.QueryxContext(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("query audit events for %s: %w", a.Actor, Classify(err))
	}
	defer rows.Close()
	got := 0
	var body sql.RawBytes
	for rows.Next() {
		e, err := scanAuditEvent(KeyringFrom(ctx), rows, &body)
		if err != nil {
			return got, err
		}
		if err := fn(e); err != nil {
			return got, err
		}
		got++
	}
	if err := rows.Err(); err != nil {
		return got, fmt.Errorf("query audit events for %s: %w", a.Actor, Classify(err))
	}
	rows.Close()
	a.RowCount = int64(got)
	return got, RecordAccess(ctx, q, a)
}

// StreamBatch is how many rows StreamAuditEvents reads per keyset page.
const StreamBatch = 2000

// StreamAuditEvents calls fn for every event matching f (f.Limit is the total
// cap, 0 for no cap; f.MaxBytes is ignored) in ledger order, reading keyset pages of StreamBatch rows
// inside one read-only REPEATABLE READ transaction: the export is one
// consistent snapshot and memory stays constant however many rows match.
// e.Body is only valid during the call to fn (clone it to keep it). It
// stops at the first error of fn and returns it; it returns how many events fn
// was given.
func StreamAuditEvents(ctx context.Context, db *sqlx.DB, f EventFilter, fn func(AuditEvent) error) (int64, error) {
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return 0, fmt.Errorf("stream audit events: %w", Classify(err))
	}
	defer tx.Rollback()
	total := f.Limit
	f.MaxBytes = 0
	var n int64
	for {
		page := f
		page.Limit = StreamBatch
		if total > 0 && int64(total)-n < StreamBatch {
			page.Limit = int(int64(total) - n)
		}
		if page.Limit <= 0 {
			break
		}
		got, last, err := streamPage(ctx, tx, page, fn)
		n += got
		if err != nil {
			return n, err
		}
		if got < int64(page.Limit) {
			break
		}
		f.After = last
	}
	return n, tx.Commit()
}

// EachAuditEventIn calls fn with every visible event matching f and its
// chain hash (f.Limit and f.MaxBytes are ignored), in ledger order, reading
// keyset pages of StreamBatch rows on q and keeping none: e.Body is valid
// only during the call. Give it a REPEATABLE READ transaction for one
// snapshot. It stops at fn's first error and returns it; it returns how
// many events fn was given.
func EachAuditEventIn(ctx context.Context, q Queryer, f EventFilter, fn func(AuditEvent) error) (int64, error) {
	f.Limit, f.MaxBytes = StreamBatch, 0
	var n int64
	for {
		got, last, err := streamPage(ctx, q, f, fn)
		n += got
		if err != nil || got < int64(f.Limit) {
			return n, err
		}
		f.After = last
	}
}

// streamPage runs one keyset page, handing each row to fn without keeping it.
func streamPage(ctx context.Context, tx Queryer, f EventFilter, fn func(AuditEvent) error) (int64, Cursor, error) {
	query, args := auditQuery(f)
	rows, err := tx.QueryxContext(ctx, query, args...)
	if err != nil {
		return 0, Cursor{}, fmt.Errorf("stream audit events after %s: %w", f.After, Classify(err))
	}
	defer rows.Close()
	var n int64
	var last Cursor
	var body sql.RawBytes
	for rows.Next() {
		a, err := scanAuditEvent(KeyringFrom(ctx), rows, &body)
		if err != nil {
			return n, last, err
		}
		if err := fn(a); err != nil {
			return n, last, err
		}
		n++
		last = After(a.Event)
	}
	if err := rows.Err(); err != nil {
		return n, last, fmt.Errorf("stream audit events after %s: %w", f.After, Classify(err))
	}
	return n, last, nil
}

// Page is what one page of an audit read held.
type Page struct {
	Count int    // events
	Bytes int64  // the sum of their bodies' lengths
	Last  Cursor // the place after the last one (f.After when empty)
	// More is set when events may follow: the page was full or ended at
	// f.MaxBytes. (A page that ends exactly at the last event says More;
	// the next page is then empty.)
	More bool
}

// EachAuditEvent reads one page of f as QueryAuditEvents does (f.Limit
// events at most, default 100, ended early at f.MaxBytes) and calls fn with
// each event as it arrives, keeping none: e.Body is valid only during the
// call. It stops at fn's first error and returns it.
func EachAuditEvent(ctx context.Context, q Queryer, f EventFilter, fn func(AuditEvent) error) (Page, error) {
	query, args := auditQuery(f)
	p := Page{Last: f.After}
	rows, err := q.QueryxContext(ctx, query, args...)
	if err != nil {
		return p, fmt.Errorf("read audit events after %s: %w", f.After, Classify(err))
	}
	defer rows.Close()
	var body sql.RawBytes
	for rows.Next() {
		e, err := scanAuditEvent(KeyringFrom(ctx), rows, &body)
		if err != nil {
			return p, err
		}
		if err := fn(e); err != nil {
			return p, err
		}
		p.Count++
		p.Bytes += int64(len(e.Body))
		p.Last = After(e.Event)
	}
	if err := rows.Err(); err != nil {
		return p, fmt.Errorf("read audit events after %s: %w", f.After, Classify(err))
	}
	p.More = PageMore(f, p.Count, p.Bytes)
	return p, nil
}

// CountAuditEvents returns how many visible events match f (f.After and
// f.UpTo bound it; f.Limit and f.MaxBytes do not).
func CountAuditEvents(ctx context.Context, q Queryer, f EventFilter) (int64, error) {
	where, args := f.where()
	var n int64
	if err := q.QueryRowxContext(ctx, `SELECT count(*) FROM events e WHERE `+where, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count audit events: %w", Classify(err))
	}
	return n, nil
}

// PlacesBefore returns the places of the n newest visible events matching f
// that lie before `before` in ledger order (all of f when before is zero),
// newest first: the bounds of a page read backwards. It reads no bodies.
func PlacesBefore(ctx context.Context, q Queryer, f EventFilter, before Cursor, n int) ([]Cursor, error) {
	where, args := f.where()
	if before != (Cursor{}) {
		args = append(args, strconv.FormatUint(before.TxID, 10), before.Position)
		where += ` AND (e.transaction_id, e.position) < ($` + strconv.Itoa(len(args)-1) + `::xid8, $` + strconv.Itoa(len(args)) + `::bigint)`
	}
	args = append(args, n)
	rows, err := q.QueryxContext(ctx, `SELECT e.transaction_id, e.position FROM events e WHERE `+where+
		` ORDER BY e.transaction_id DESC, e.position DESC LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("read places before %s: %w", before, Classify(err))
	}
	defer rows.Close()
	var out []Cursor
	for rows.Next() {
		var c Cursor
		if err := rows.Scan(&c.TxID, &c.Position); err != nil {
			return nil, fmt.Errorf("read places before %s: %w", before, Classify(err))
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read places before %s: %w", before, Classify(err))
	}
	return out, nil
}

// EachEvent calls fn with every visible event matching f (f.Limit and
// f.MaxBytes are ignored) in ledger order, reading keyset pages of
// StreamBatch rows on q and keeping none: e.Body is valid only during the
// call, so memory does not grow with the events (a fold over a user's whole
// history). Give it a REPEATABLE READ transaction for one snapshot. It stops
// at fn's first error and returns it; it returns how many events fn was given.
func EachEvent(ctx context.Context, q Queryer, f EventFilter, fn func(domain.Event) error) (int64, error) {
	var n int64
	f.Limit, f.MaxBytes = StreamBatch, 0
	for {
		where, args := f.where()
		args = append(args, f.Limit)
		rows, err := q.QueryxContext(ctx, `SELECT `+eEventColumns+` FROM events e WHERE `+where+
			` ORDER BY e.transaction_id, e.position LIMIT $`+strconv.Itoa(len(args)), args...)
		if err != nil {
			return n, fmt.Errorf("read events after %s: %w", f.After, Classify(err))
		}
		got, last, err := eachEventRow(KeyringFrom(ctx), rows, fn)
		n += int64(got)
		if err != nil {
			return n, err
		}
		if got < f.Limit {
			return n, nil
		}
		f.After = last
	}
}

// eachEventRow hands each row of eventColumns to fn and closes rows.
func eachEventRow(k *userkeys.Keyring, rows *sqlx.Rows, fn func(domain.Event) error) (int, Cursor, error) {
	defer rows.Close()
	var body sql.RawBytes
	var last Cursor
	got := 0
	o := k.Opener()
	for rows.Next() {
		var e domain.Event
		var sl sealed
		if err := rows.Scan(append([]any{&e.Position, &e.TxID, &e.DeliveryID, &e.Type, &e.UserID, &e.OccurredAt, &e.ReceivedAt, &body, &e.SvixTimestamp, &e.SvixSignature, &e.Source}, sl.rowsDest()...)...); err != nil {
			return got, last, fmt.Errorf("scan event: %w", Classify(err))
		}
		e.Body = body
		e.OccurredAt, e.ReceivedAt = e.OccurredAt.UTC(), e.ReceivedAt.UTC()
		if err := openRowBody(o, &e, &sl); err != nil {
			return got, last, err
		}
		if err := fn(e); err != nil {
			return got, last, err
		}
		got++
		last = After(e)
	}
	if err := rows.Err(); err != nil {
		return got, last, fmt.Errorf("read events: %w", Classify(err))
	}
	return got, last, nil
}
