package schema

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// This file holds the SQL of erasure (issue 14): the erasures table, the
// destruction of a user's data key, the erasure event, and the cleanup of
// every read model.

// ActionErase is the access log action of an erasure.
const ActionErase = "erase"

// SourceLedger is the events.source of an event the ledger appends itself
// (the erasure event): it has no Svix signature.
const SourceLedger = "ledger"

// Erasure is one row of erasures: who erased which user, when and why,
// the delivery id of the erasure event, and when the read models were
// cleaned (zero: not yet; RecoverErasures finishes it).
type Erasure struct {
	UserID      string    `json:"user_id"`
	At          time.Time `json:"erased_at"`
	By          string    `json:"erased_by"`
	Reason      string    `json:"reason"`
	DeliveryID  string    `json:"delivery_id"`
	CompletedAt time.Time `json:"completed_at,omitzero"`
}

// erasureLock is the advisory lock between erasure (exclusive) and
// projector batches (shared): an erasure waits for the batches in flight,
// and a batch that starts after it reads the key destroyed.
const erasureLock = `hashtext('ledger:erasure')`

// LockErasuresShared takes the erasure lock shared inside tx: a projector
// batch holds it so that no erasure commits between its read and its
// writes (which could then hold personal data read before the key went).
func LockErasuresShared(ctx context.Context, tx *sqlx.Tx) error {
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock_shared(`+erasureLock+`)`); err != nil {
		return fmt.Errorf("take the erasure lock: %w", Classify(err))
	}
	return nil
}

// ErasureDeliveryID is the delivery id of the erasure event of user.
func ErasureDeliveryID(user string) string { return "ledger_erasure_" + user }

// BeginErasure is the first step of erasing e.UserID, one transaction: it
// destroys the user's data key (user_keys.wrapped becomes NULL; the row
// stays, so that no delivery racing the erasure makes a new key), records
// the erasure (e.At, e.By, e.Reason) with completed_at NULL, appends the
// erasure event (source "ledger", domain.ErasureEventBody: no personal
// data), and replaces with "[erased]" every audit access filter value
// naming one of the user's emails, names or phone number (the projectors
// may pass the erasure event before CompleteErasure runs, and drop what
// names them). It returns the stored erasure and created=false, doing nothing,
// when the user was erased already. Errors: ENOTFOUND when the ledger has
// no event about the user; EINVALID for an empty id or reason.
func BeginErasure(ctx context.Context, db *sqlx.DB, e Erasure) (Erasure, bool, error) {
	if e.UserID == "" || len(e.UserID) > domain.MaxUserIDBytes {
		return Erasure{}, false, domain.Errorf(domain.EINVALID, "user id must be 1 to %d bytes", domain.MaxUserIDBytes)
	}
	if strings.TrimSpace(e.Reason) == "" {
		return Erasure{}, false, domain.Errorf(domain.EINVALID, "an erasure needs a reason")
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return Erasure{}, false, fmt.Errorf("erase user %s: %w", e.UserID, Classify(err))
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(`+erasureLock+`)`); err != nil {
		return Erasure{}, false, fmt.Errorf("erase user %s: take the erasure lock: %w", e.UserID, Classify(err))
	}
	if old, err := GetErasure(ctx, tx, e.UserID); err == nil {
		return old, false, nil
	} else if domain.ErrorCode(err) != domain.ENOTFOUND {
		return Erasure{}, false, err
	}
	var known bool
	if err := tx.QueryRowxContext(ctx, `SELECT EXISTS (SELECT 1 FROM events WHERE user_id = $1) OR EXISTS (SELECT 1 FROM users WHERE id = $1)`, e.UserID).Scan(&known); err != nil {
		return Erasure{}, false, fmt.Errorf("erase user %s: %w", e.UserID, Classify(err))
	}
	if !known {
		return Erasure{}, false, domain.Errorf(domain.ENOTFOUND, "the ledger has no event about user %s", e.UserID)
	}
	e.At = e.At.UTC().Truncate(time.Microsecond)
	e.DeliveryID = ErasureDeliveryID(e.UserID)
	if _, err := tx.ExecContext(ctx, `INSERT INTO user_keys (user_id, wrapped, destroyed_at) VALUES ($1, NULL, $2)
ON CONFLICT (user_id) DO UPDATE SET wrapped = NULL, destroyed_at = $2`, e.UserID, e.At); err != nil {
		return Erasure{}, false, fmt.Errorf("erase user %s: destroy the data key: %w", e.UserID, Classify(err))
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO erasures (user_id, erased_at, erased_by, reason, delivery_id) VALUES ($1, $2, $3, $4, $5)`,
		e.UserID, e.At, e.By, e.Reason, e.DeliveryID); err != nil {
		return Erasure{}, false, fmt.Errorf("erase user %s: record the erasure: %w", e.UserID, Classify(err))
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO events (message_uuid, delivery_id, type, user_id, occurred_at, body, svix_timestamp, svix_signature, source, transaction_id)
VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6, '', $7, pg_current_xact_id())`,
		e.DeliveryID, domain.ErasureEventType, e.UserID, e.At, string(domain.ErasureEventBody(e.UserID, e.At)), e.At.Unix(), SourceLedger); err != nil {
		return Erasure{}, false, fmt.Errorf("erase user %s: append the erasure event: %w", e.UserID, Classify(err))
	}
	// The access log is redacted here, with the key's destruction, not in
	// the cleanup: once this commits a projector may pass the erasure event
	// first (dropping her addresses and tombstoning her row), and after a
	// crash the recovery would find nothing left to redact with.
	if err := redactAccessOf(ctx, tx, e.UserID); err != nil {
		return Erasure{}, false, fmt.Errorf("erase user %s: %w", e.UserID, err)
	}
	if err := tx.Commit(); err != nil {
		return Erasure{}, false, fmt.Errorf("erase user %s: %w", e.UserID, Classify(err))
	}
	return e, true, nil
}

// CompleteErasure is the second step of erasing user, one transaction: the
// users row becomes the tombstone (domain.ErasedTombstone at the erasure
// time), the user's emails, memberships (and their organizations' member
// counts) and projection failures go; then completed_at is set. It is
// idempotent: a second run finds nothing left to clean. Errors: ENOTFOUND
// when the user was not erased (BeginErasure).
func CompleteErasure(ctx context.Context, db *sqlx.DB, user string) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("clean up after erasing %s: %w", user, Classify(err))
	}
	defer tx.Rollback()
	e, err := GetErasure(ctx, tx, user)
	if err != nil {
		return err
	}
	var position int64
	if err := tx.QueryRowxContext(ctx, `SELECT position FROM events WHERE delivery_id = $1`, e.DeliveryID).Scan(&position); err != nil {
		return fmt.Errorf("clean up after erasing %s: the erasure event: %w", user, Classify(err))
	}
	users := LiveUsers()
	rows, err := users.Load(ctx, tx, []string{user})
	if err != nil {
		return err
	}
	row := rows[user]
	row.User.ID = user
	row.User = domain.ErasedTombstone(row.User, e.At)
	row.LastPosition = max(row.LastPosition, position)
	if err := users.Upsert(ctx, tx, []UserRow{row}); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM user_emails WHERE user_id = $1`, user); err != nil {
		return fmt.Errorf("clean up after erasing %s: emails: %w", user, Classify(err))
	}
	orgs, err := deleteReturning(ctx, tx, `DELETE FROM organization_memberships WHERE user_id = $1 RETURNING organization_id`, user)
	if err != nil {
		return fmt.Errorf("clean up after erasing %s: memberships: %w", user, err)
	}
	if len(orgs) > 0 {
		if err := RecountMembers(ctx, tx, LiveOrganizations(), LiveMemberships(), orgs); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM projection_failures f USING events e WHERE e.position = f.position AND e.user_id = $1`, user); err != nil {
		return fmt.Errorf("clean up after erasing %s: projection failures: %w", user, Classify(err))
	}
	if _, err := tx.ExecContext(ctx, `UPDATE erasures SET completed_at = now() WHERE user_id = $1 AND completed_at IS NULL`, user); err != nil {
		return fmt.Errorf("clean up after erasing %s: %w", user, Classify(err))
	}
	return tx.Commit()
}

// redactAccessOf redacts in the access log (redactAccess) the values of
// user an auditor may have searched for: those of the users row
// (personalTerms) and every address of user_emails. BeginErasure calls it
// while both still hold them.
func redactAccessOf(ctx context.Context, tx *sqlx.Tx, user string) error {
	rows, err := LiveUsers().Load(ctx, tx, []string{user})
	if err != nil {
		return fmt.Errorf("redact the access log: %w", err)
	}
	terms := personalTerms(rows[user].User)
	emails, err := queryStrings(ctx, tx, `SELECT email FROM user_emails WHERE user_id = $1`, user)
	if err != nil {
		return fmt.Errorf("redact the access log: emails: %w", err)
	}
	if e := NormalizeEmail(rows[user].User.Email); e != "" {
		emails = append(emails, e)
	}
	return redactAccess(ctx, tx, append(terms, emails...), emails)
}

// personalTerms are the values of u that an auditor may have searched for.
func personalTerms(u domain.User) []string {
	var out []string
	for _, s := range []string{u.Email, u.FirstName, u.LastName, u.Name(), u.Username, u.Phone, u.ExternalID} {
		if s = strings.TrimSpace(s); len(s) >= 3 {
			out = append(out, s)
		}
	}
	return out
}

func deleteReturning(ctx context.Context, tx *sqlx.Tx, query string, args ...any) ([]string, error) {
	return queryStrings(ctx, tx, query, args...)
}

// queryStrings runs query on q and returns its one text column.
func queryStrings(ctx context.Context, q Queryer, query string, args ...any) ([]string, error) {
	rows, err := q.QueryxContext(ctx, query, args...)
	if err != nil {
		return nil, Classify(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, Classify(err)
		}
		out = append(out, s)
	}
	return out, Classify(rows.Err())
}

// redactAccess replaces, in every audit access entry, each filter value
// that contains one of terms (case-insensitively), or that is a prefix
// search (Search: a prefix ending in "*") whose prefix, 3 characters or
// more, starts one of emails (normalized, NormalizeEmail), with "[erased]".
func redactAccess(ctx context.Context, tx *sqlx.Tx, terms, emails []string) error {
	if len(terms) == 0 && len(emails) == 0 {
		return nil
	}
	for i := range terms {
		terms[i] = strings.ToLower(terms[i])
	}
	if _, err := tx.ExecContext(ctx, `SET LOCAL ledger.erasing = 'on'`); err != nil {
		return fmt.Errorf("redact the access log: %w", Classify(err))
	}
	_, err := tx.ExecContext(ctx, `UPDATE audit_access a SET filters = (
  SELECT jsonb_object_agg(f.key, CASE WHEN `+redactedValue(`(f.value #>> '{}')`)+`
    THEN to_jsonb('[erased]'::text) ELSE f.value END)
  FROM jsonb_each(a.filters) f)
WHERE EXISTS (SELECT 1 FROM jsonb_each_text(a.filters) f WHERE `+redactedValue(`f.value`)+`)`, pq.Array(terms), pq.Array(emails))
	if err != nil {
		return fmt.Errorf("redact the access log: %w", Classify(err))
	}
	if _, err := tx.ExecContext(ctx, `SET LOCAL ledger.erasing = 'off'`); err != nil {
		return fmt.Errorf("redact the access log: %w", Classify(err))
	}
	return nil
}

// redactedValue is redactAccess's condition on the filter value v (a text
// expression): it contains one of $1, or it is a prefix search of one of
// the addresses $2.
func redactedValue(v string) string {
	return `(EXISTS (SELECT 1 FROM unnest($1::text[]) t(s) WHERE strpos(lower(` + v + `), t.s) > 0)
    OR (right(` + v + `, 1) = '*' AND length(` + v + `) > 3
        AND EXISTS (SELECT 1 FROM unnest($2::text[]) m(s) WHERE starts_with(m.s, lower(left(` + v + `, -1))))))`
}

// GetErasure returns the erasure of user. Errors: ENOTFOUND when the user
// was not erased.
func GetErasure(ctx context.Context, q Queryer, user string) (Erasure, error) {
	e, err := scanErasure(q.QueryRowxContext(ctx, `SELECT `+erasureColumns+` FROM erasures WHERE user_id = $1`, user))
	if errorsIsNoRows(err) {
		return Erasure{}, domain.Errorf(domain.ENOTFOUND, "user %s was not erased", user)
	}
	if err != nil {
		return Erasure{}, fmt.Errorf("read the erasure of %s: %w", user, Classify(err))
	}
	return e, nil
}

const erasureColumns = `user_id, erased_at, erased_by, reason, delivery_id, completed_at`

func scanErasure(row interface{ Scan(...any) error }) (Erasure, error) {
	var e Erasure
	var done sql.NullTime
	if err := row.Scan(&e.UserID, &e.At, &e.By, &e.Reason, &e.DeliveryID, &done); err != nil {
		return Erasure{}, err
	}
	e.At = e.At.UTC()
	if done.Valid {
		e.CompletedAt = done.Time.UTC()
	}
	return e, nil
}

// PendingErasures returns the users whose erasure is begun but not
// completed (a crash between the two steps), oldest first.
func PendingErasures(ctx context.Context, q Queryer) ([]string, error) {
	out, err := queryStrings(ctx, q, `SELECT user_id FROM erasures WHERE completed_at IS NULL ORDER BY erased_at`)
	if err != nil {
		return nil, fmt.Errorf("read pending erasures: %w", err)
	}
	return out, nil
}

// DeletedBefore returns the users deleted in Clerk before t and not
// erased, at most limit (LEDGER_ERASE_AFTER_DELETE): those with a
// user.deleted event, or a user.snapshot_deleted (reconcile found the
// user gone from the Backend API: the webhook never came) before t.
func DeletedBefore(ctx context.Context, q Queryer, t time.Time, limit int) ([]string, error) {
	out, err := queryStrings(ctx, q, `SELECT DISTINCT e.user_id FROM events e
WHERE e.type = ANY($3) AND e.user_id IS NOT NULL AND e.occurred_at < $1
  AND NOT EXISTS (SELECT 1 FROM erasures r WHERE r.user_id = e.user_id)
LIMIT $2`, t, limit, pq.Array([]string{"user.deleted", domain.TypeUserSnapshotDeleted}))
	if err != nil {
		return nil, fmt.Errorf("read deleted users: %w", err)
	}
	return out, nil
}

// ErasureMark is what the audit views show of an erased event: when, by
// whom and why its user was erased.
type ErasureMark struct {
	At     time.Time `json:"at"`
	By     string    `json:"by"`
	Reason string    `json:"reason"`
}

// parseErasureMark reads auditColumns' erasure column: erased_at (RFC
// 3339, UTC), erased_by and reason joined by newlines (the reason may hold
// more).
func parseErasureMark(s string) *ErasureMark {
	parts := strings.SplitN(s, "\n", 3)
	if len(parts) != 3 {
		return nil
	}
	m := &ErasureMark{By: parts[1], Reason: parts[2]}
	if t, err := time.Parse(time.RFC3339Nano, parts[0]); err == nil {
		m.At = t.UTC()
	}
	return m
}
