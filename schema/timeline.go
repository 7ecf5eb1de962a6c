package schema

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
	"github.com/lib/pq"
)

// TimelineRow is one event of a user's history as a timeline pass reads it:
// the stored event, with its Body only when its type is one the pass folds
// (nil otherwise), and the size of the body.
type TimelineRow struct {
	domain.Event
	BodyBytes int64
}

// EachTimelineRow calls fn with every visible event about userID in ledger
// order, reading keyset pages of StreamBatch rows (an index range scan on
// events_user_idx) and keeping none: e.Body is valid only during the call.
// Bodies are read only for events whose type is in bodyTypes; the others
// come without (their size is in BodyBytes), so a pass over a long history
// of sessions ships little. Give it a REPEATABLE READ transaction for one
// snapshot. It stops at fn's first error and returns it; it returns how
// many rows fn was given.
func EachTimelineRow(ctx context.Context, q Queryer, userID string, bodyTypes []string, fn func(TimelineRow) error) (int64, error) {
	const query = `SELECT e.position, e.transaction_id, e.delivery_id, e.type, e.occurred_at, e.received_at,
  GREATEST(octet_length(e.body), COALESCE(octet_length(e.body_sealed) - $6, 0)), CASE WHEN e.type = ANY($4) THEN e.body END,
  CASE WHEN e.type = ANY($4) THEN e.body_sealed WHEN e.body_sealed IS NOT NULL THEN '\x'::bytea END,
  CASE WHEN e.body_sealed IS NOT NULL THEN ledger_user_key(e.user_id) END, e.body_commitment
FROM events e
WHERE e.user_id = $1 AND (e.transaction_id, e.position) > ($2::xid8, $3::bigint)
  AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY e.transaction_id, e.position LIMIT $5`
	var n int64
	var after Cursor
	types := pq.Array(bodyTypes)
	o := KeyringFrom(ctx).Opener()
	for {
		rows, err := q.QueryxContext(ctx, query, userID, strconv.FormatUint(after.TxID, 10), after.Position, types, StreamBatch, userkeys.Overhead)
		if err != nil {
			return n, fmt.Errorf("read the timeline of %s after %s: %w", userID, after, Classify(err))
		}
		got := 0
		err = func() error {
			defer rows.Close()
			var body sql.RawBytes
			for rows.Next() {
				var r TimelineRow
				var sl sealed
				if err := rows.Scan(append([]any{&r.Position, &r.TxID, &r.DeliveryID, &r.Type, &r.OccurredAt, &r.ReceivedAt, &r.BodyBytes, &body}, sl.rowsDest()...)...); err != nil {
					return fmt.Errorf("scan the timeline of %s: %w", userID, Classify(err))
				}
				r.UserID, r.Body = userID, body
				if len(sl.body) == 0 && sl.body != nil {
					// Sealed, body not asked for: only whether it is erased.
					r.Erased = sl.wrapped == nil
				} else if err := openRowBody(o, &r.Event, &sl); err != nil {
					return err
				}
				r.OccurredAt, r.ReceivedAt = r.OccurredAt.UTC(), r.ReceivedAt.UTC()
				if err := fn(r); err != nil {
					return err
				}
				got++
				n++
				after = After(r.Event)
			}
			if err := rows.Err(); err != nil {
				return fmt.Errorf("read the timeline of %s: %w", userID, Classify(err))
			}
			return nil
		}()
		if err != nil {
			return n, err
		}
		if got < StreamBatch {
			return n, nil
		}
	}
}

// EachAuditEventAt calls fn with the visible events at positions, in the
// order positions lists them, with their leaves (one statement; each a
// lookup on events_position_key and log_leaves_position_key), keeping none: e.Body is valid only
// during the call. A position with no visible event is left out.
func EachAuditEventAt(ctx context.Context, q Queryer, positions []int64, fn func(AuditEvent) error) error {
	if len(positions) == 0 {
		return nil
	}
	rows, err := q.QueryxContext(ctx, `SELECT `+auditColumns+`
FROM unnest($1::bigint[]) WITH ORDINALITY AS p(position, ord)
JOIN events e ON e.position = p.position`+auditJoin+`
WHERE e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY p.ord`, pq.Array(positions))
	if err != nil {
		return fmt.Errorf("read %d audit events: %w", len(positions), Classify(err))
	}
	defer rows.Close()
	var body sql.RawBytes
	for rows.Next() {
		e, err := scanAuditEvent(KeyringFrom(ctx), rows, &body)
		if err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read %d audit events: %w", len(positions), Classify(err))
	}
	return nil
}
