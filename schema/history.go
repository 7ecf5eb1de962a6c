package schema

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/lib/pq"
)

// EventFilter selects ledger events for history queries. Zero fields do not
// filter. Results come in ledger order, after After (keyset paging).
type EventFilter struct {
	UserID string
	// UserIDs, when not empty, keeps the events about any of them (with
	// UserID too: about UserID, if it is one of them).
	UserIDs []string
	// Types are exact types ("user.created") or prefixes ending in ".*"
	// ("user.*"); an event matches when it matches any of them.
	Types []string
	Since time.Time // occurred_at >= Since
	Until time.Time // occurred_at < Until
	After Cursor
	// UpTo, when not zero, keeps only events at or before this place in
	// ledger order (keyset paging backwards, or a fold up to a page).
	UpTo  Cursor
	Limit int // default 100
	// MaxBytes, when above zero, ends a page early once the bodies in it
	// reach this many bytes: the page holds the events whose bodies before
	// them add up to less than MaxBytes (always its first one). Streams
	// (StreamAuditEvents) ignore it.
	MaxBytes int64
	// Mentions, when not empty, keeps the events whose body may mention
	// one of these strings: it holds one literally, or holds a backslash
	// (a JSON escape could spell one). A prefilter: the caller decodes the
	// body and matches exactly.
	Mentions []string
}

// QueryEvents returns the events matching f in ledger order, only from
// transactions below the xid8 gate, so paging with After never misses or
// repeats an event while new ones arrive.
func QueryEvents(ctx context.Context, q Queryer, f EventFilter) ([]domain.Event, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	where, args := f.where()
	args = append(args, f.Limit)
	query := `SELECT ` + eEventColumns + ` FROM events e WHERE ` + where +
		` ORDER BY e.transaction_id, e.position LIMIT $` + strconv.Itoa(len(args))
	rows, err := q.QueryxContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("query events: %w", Classify(err))
	}
	defer rows.Close()
	var out []domain.Event
	for rows.Next() {
		e, err := scanEvent(KeyringFrom(ctx), rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query events: %w", Classify(err))
	}
	return out, nil
}

// where returns the SQL condition and its arguments for f (without Limit),
// on the events table aliased as e.
func (f EventFilter) where() (string, []any) {
	conds := []string{
		`(e.transaction_id, e.position) > ($1::xid8, $2::bigint)`,
		`e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())`,
	}
	args := []any{strconv.FormatUint(f.After.TxID, 10), f.After.Position}
	add := func(cond string, arg any) {
		args = append(args, arg)
		conds = append(conds, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(args))))
	}
	if f.UpTo != (Cursor{}) {
		args = append(args, strconv.FormatUint(f.UpTo.TxID, 10), f.UpTo.Position)
		conds = append(conds, `(e.transaction_id, e.position) <= ($`+strconv.Itoa(len(args)-1)+`::xid8, $`+strconv.Itoa(len(args))+`::bigint)`)
	}
	if f.UserID != "" {
		add(`e.user_id = $?`, f.UserID)
	}
	if len(f.UserIDs) > 0 {
		add(`e.user_id = ANY($?)`, pq.Array(f.UserIDs))
	}
	if len(f.Types) > 0 {
		var exact, prefixes []string
		for _, t := range f.Types {
			if p, ok := strings.CutSuffix(t, "*"); ok {
				prefixes = append(prefixes, p)
			} else {
				exact = append(exact, t)
			}
		}
		var or []string
		if len(exact) > 0 {
			args = append(args, pq.Array(exact))
			or = append(or, `e.type = ANY($`+strconv.Itoa(len(args))+`)`)
		}
		for _, p := range prefixes {
			args = append(args, p)
			n := strconv.Itoa(len(args))
			// COLLATE "C" range: an index range scan on events_type_idx.
			or = append(or, `(e.type >= $`+n+` AND e.type < $`+n+` || chr(1114111))`)
		}
		conds = append(conds, "("+strings.Join(or, " OR ")+")")
	}
	if len(f.Mentions) > 0 {
		add(`(e.body_sealed IS NOT NULL OR strpos(e.body, '\') > 0 OR EXISTS (SELECT 1 FROM unnest($?::text[]) m(s) WHERE strpos(e.body, m.s) > 0))`, pq.Array(f.Mentions))
	}
	if !f.Since.IsZero() {
		add(`e.occurred_at >= $?`, f.Since)
	}
	if !f.Until.IsZero() {
		add(`e.occurred_at < $?`, f.Until)
	}
	return strings.Join(conds, " AND "), args
}
