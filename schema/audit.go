package schema

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/jmoiron/sqlx"
)

// AuditEvent is a ledger event as auditors see it: the stored event and its
// chain hash, which is nil while the chain sealer has not sealed it yet.
type AuditEvent struct {
	domain.Event
	ChainHash []byte
}

// auditColumns is the column list scanAuditEvent reads: the event (aliased e)
// and its chain link (aliased c, LEFT JOINed).
const auditColumns = `e.position, e.transaction_id, e.delivery_id, e.type, COALESCE(e.user_id, ''), e.occurred_at, e.received_at, e.body, e.svix_timestamp, e.svix_signature, c.hash`

// scanAuditEvent scans one row of auditColumns. The event's Body is *body,
// which the next scan (or the rows' next Next or Close) overwrites: a caller
// that keeps the event clones it. The other fields are the event's own.
func scanAuditEvent(row interface{ Scan(...any) error }, body *sql.RawBytes) (AuditEvent, error) {
	var a AuditEvent
	err := row.Scan(&a.Position, &a.TxID, &a.DeliveryID, &a.Type, &a.UserID, &a.OccurredAt, &a.ReceivedAt, body, &a.SvixTimestamp, &a.SvixSignature, &a.ChainHash)
	if err != nil {
		return AuditEvent{}, fmt.Errorf("scan audit event: %w", Classify(err))
	}
	a.Body = *body
	a.OccurredAt = a.OccurredAt.UTC()
	a.ReceivedAt = a.ReceivedAt.UTC()
	return a, nil
}

// auditQuery is QueryEvents's statement joined with event_chain.
func auditQuery(f EventFilter) (string, []any) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	where, args := f.where()
	args = append(args, f.Limit)
	return `SELECT ` + auditColumns + ` FROM events e LEFT JOIN event_chain c ON c.position = e.position WHERE ` + where +
		` ORDER BY e.transaction_id, e.position LIMIT $` + strconv.Itoa(len(args)), args
}

// QueryAuditEvents is QueryEvents with each event's chain hash: the events
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
		a, err := scanAuditEvent(rows, &body)
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
		e, err := scanAuditEvent(rows, &body)
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
// cap, 0 for no cap) in ledger order, reading keyset pages of StreamBatch rows
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

// streamPage runs one keyset page, handing each row to fn without keeping it.
func streamPage(ctx context.Context, tx *sqlx.Tx, f EventFilter, fn func(AuditEvent) error) (int64, Cursor, error) {
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
		a, err := scanAuditEvent(rows, &body)
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

// UserEvents returns every event about the user with that id, in ledger
// order, below the xid8 gate, whose occurred_at is at or before `at` (all of
// them when at is zero). It reads keyset pages of 1000; the result holds them all.
func UserEvents(ctx context.Context, q Queryer, userID string, at time.Time) ([]AuditEvent, error) {
	f := EventFilter{UserID: userID, Limit: 1000}
	if !at.IsZero() {
		// occurred_at has microsecond precision: <= at is < at's next microsecond.
		f.Until = at.UTC().Truncate(time.Microsecond).Add(time.Microsecond)
	}
	var out []AuditEvent
	for {
		page, err := QueryAuditEvents(ctx, q, f)
		if err != nil {
			return nil, fmt.Errorf("events of user %s: %w", userID, err)
		}
		out = append(out, page...)
		if len(page) < f.Limit {
			return out, nil
		}
		f.After = After(page[len(page)-1].Event)
	}
}
