package schema

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// The audit workspace's read models (migration 00014): user_emails, every
// email address user events named, and delivery_counts, deliveries per day
// and event family. The users projector keeps user_emails (it decodes the
// events anyway), the workspace projector delivery_counts.

// EmailSighting is one email address a user event named.
type EmailSighting struct {
	Email    string // lower-cased (NormalizeEmail)
	UserID   string
	Position int64
	At       time.Time // the event's occurred_at
}

// NormalizeEmail is the form user_emails keeps and searches: trimmed and
// lower-cased (email addresses are matched case-insensitively).
func NormalizeEmail(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// AddEmails records sightings in user_emails: a new (email, user) pair is
// added, a known one widened to the earliest and latest sighting. Any
// order and any split into calls give the same rows.
func AddEmails(ctx context.Context, tx *sqlx.Tx, s []EmailSighting) error {
	if len(s) == 0 {
		return nil
	}
	emails, users, positions, ats := make([]string, len(s)), make([]string, len(s)), make([]int64, len(s)), make([]time.Time, len(s))
	for i, x := range s {
		emails[i], users[i], positions[i], ats[i] = x.Email, x.UserID, x.Position, x.At
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO user_emails AS u (email, user_id, first_position, first_seen, last_seen)
SELECT email, user_id, min(position), min(at), max(at)
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[]) AS s(email, user_id, position, at)
GROUP BY email, user_id
ON CONFLICT (email, user_id) DO UPDATE SET
  first_position = LEAST(u.first_position, excluded.first_position),
  first_seen = LEAST(u.first_seen, excluded.first_seen),
  last_seen = GREATEST(u.last_seen, excluded.last_seen)`,
		pq.Array(emails), pq.Array(users), pq.Array(positions), pq.Array(ats))
	if err != nil {
		return fmt.Errorf("add %d email sightings: %w", len(s), Classify(err))
	}
	return nil
}

// AddNewEmails is AddEmails for the sightings of users whose pairs
// user_emails does not hold yet (the users projector's users new to the
// users table): each pair's earliest and latest sighting go in with one
// COPY, about half an upsert's work a row. Should a pair be stored after all
// (23505), the COPY is rolled back to a savepoint and the sightings
// recorded with AddEmails, so the rows are AddEmails' either way. Other
// errors are the COPY's (Refused for a value PostgreSQL refuses).
func AddNewEmails(ctx context.Context, tx *sqlx.Tx, s []EmailSighting) error {
	if len(s) == 0 {
		return nil
	}
	type pair struct{ email, user string }
	type seen struct {
		first      int64
		from, till time.Time
	}
	pairs := make(map[pair]*seen, len(s))
	order := make([]pair, 0, len(s))
	for _, x := range s {
		k := pair{x.Email, x.UserID}
		p := pairs[k]
		if p == nil {
			pairs[k] = &seen{first: x.Position, from: x.At, till: x.At}
			order = append(order, k)
			continue
		}
		p.first = min(p.first, x.Position)
		if x.At.Before(p.from) {
			p.from = x.At
		}
		if x.At.After(p.till) {
			p.till = x.At
		}
	}
	if _, err := tx.ExecContext(ctx, `SAVEPOINT new_emails`); err != nil {
		return fmt.Errorf("add %d new email sightings: %w", len(s), Classify(err))
	}
	err := func() error {
		stmt, err := tx.PrepareContext(ctx, pq.CopyIn("user_emails", "email", "user_id", "first_position", "first_seen", "last_seen"))
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, k := range order {
			p := pairs[k]
			if _, err := stmt.ExecContext(ctx, k.email, k.user, p.first, p.from, p.till); err != nil {
				return err
			}
		}
		_, err = stmt.ExecContext(ctx)
		return err
	}()
	if pe := (*pq.Error)(nil); errors.As(err, &pe) && pe.Code == "23505" {
		if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT new_emails`); err != nil {
			return fmt.Errorf("add %d new email sightings: %w", len(s), Classify(err))
		}
		return AddEmails(ctx, tx, s)
	}
	if err != nil {
		return fmt.Errorf("add %d new email sightings: %w", len(s), Classify(err))
	}
	return nil
}

// EmailMatch is a user an email address search found.
type EmailMatch struct {
	Email     string    `json:"email"`
	UserID    string    `json:"user_id"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// UsersByEmail returns the users whose events named an email address equal
// to email (case-insensitive), or, when email ends in "*", starting with
// the rest; at most limit pairs, by address and user. An index lookup on
// user_emails' primary key.
func UsersByEmail(ctx context.Context, q Queryer, email string, limit int) ([]EmailMatch, error) {
	email = NormalizeEmail(email)
	cond, arg := `email = $1`, email
	if p, ok := strings.CutSuffix(email, "*"); ok {
		cond, arg = `email >= $1 AND email < $1 || chr(1114111)`, p
	}
	rows, err := q.QueryxContext(ctx, `SELECT email, user_id, first_seen, last_seen FROM user_emails WHERE `+cond+
		` ORDER BY email, user_id LIMIT $2`, arg, limit)
	if err != nil {
		return nil, fmt.Errorf("find users by email: %w", Classify(err))
	}
	defer rows.Close()
	var out []EmailMatch
	for rows.Next() {
		var m EmailMatch
		if err := rows.Scan(&m.Email, &m.UserID, &m.FirstSeen, &m.LastSeen); err != nil {
			return nil, fmt.Errorf("find users by email: %w", Classify(err))
		}
		m.FirstSeen, m.LastSeen = m.FirstSeen.UTC(), m.LastSeen.UTC()
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find users by email: %w", Classify(err))
	}
	return out, nil
}

// DeliveryCount is how many deliveries of one family arrived on one day.
type DeliveryCount struct {
	Day        time.Time // UTC midnight
	Family     string
	Deliveries int64
}

// AddDeliveryCounts adds counts to delivery_counts (summed with what the
// table holds for each day and family).
func AddDeliveryCounts(ctx context.Context, tx *sqlx.Tx, counts []DeliveryCount) error {
	if len(counts) == 0 {
		return nil
	}
	days, families, ns := make([]string, len(counts)), make([]string, len(counts)), make([]int64, len(counts))
	for i, c := range counts {
		days[i], families[i], ns[i] = c.Day.UTC().Format("2006-01-02"), c.Family, c.Deliveries
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO delivery_counts AS d (day, family, deliveries)
SELECT day, family, sum(n) FROM unnest($1::date[], $2::text[], $3::bigint[]) AS c(day, family, n) GROUP BY day, family
ON CONFLICT (day, family) DO UPDATE SET deliveries = d.deliveries + excluded.deliveries`,
		pq.Array(days), pq.Array(families), pq.Array(ns))
	if err != nil {
		return fmt.Errorf("add delivery counts: %w", Classify(err))
	}
	return nil
}

// DeliveryCounts returns the counts of the days from since (a UTC day) on,
// by day and family.
func DeliveryCounts(ctx context.Context, q Queryer, since time.Time) ([]DeliveryCount, error) {
	rows, err := q.QueryxContext(ctx, `SELECT day, family, deliveries FROM delivery_counts WHERE day >= $1::date ORDER BY day, family`,
		since.UTC().Format("2006-01-02"))
	if err != nil {
		return nil, fmt.Errorf("read delivery counts: %w", Classify(err))
	}
	defer rows.Close()
	var out []DeliveryCount
	for rows.Next() {
		var c DeliveryCount
		if err := rows.Scan(&c.Day, &c.Family, &c.Deliveries); err != nil {
			return nil, fmt.Errorf("read delivery counts: %w", Classify(err))
		}
		c.Day = time.Date(c.Day.Year(), c.Day.Month(), c.Day.Day(), 0, 0, 0, 0, time.UTC)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read delivery counts: %w", Classify(err))
	}
	return out, nil
}

// LastDelivery returns when the newest stored event arrived and its
// position (zero when the ledger is empty). It reads the newest row by
// position (events_position_key), committed or behind the gate alike.
func LastDelivery(ctx context.Context, q Queryer) (time.Time, int64, error) {
	var at time.Time
	var pos int64
	err := q.QueryRowxContext(ctx, `SELECT received_at, position FROM events ORDER BY position DESC LIMIT 1`).Scan(&at, &pos)
	if errorsIsNoRows(err) {
		return time.Time{}, 0, nil
	}
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("read the last delivery: %w", Classify(err))
	}
	return at.UTC(), pos, nil
}

// CountAuditEventsUpTo counts the visible events matching f as
// CountAuditEvents does, but stops at max: it returns max+1 when there
// are more (a search shows "of more than max" instead of counting a
// million rows).
func CountAuditEventsUpTo(ctx context.Context, q Queryer, f EventFilter, max int64) (int64, error) {
	where, args := f.where()
	args = append(args, max+1)
	var n int64
	if err := q.QueryRowxContext(ctx, fmt.Sprintf(`SELECT count(*) FROM (SELECT 1 FROM events e WHERE %s LIMIT $%d) x`, where, len(args)), args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count audit events: %w", Classify(err))
	}
	return n, nil
}

// DeleteEmailsOf deletes every address of users from user_emails (their
// erasure).
func DeleteEmailsOf(ctx context.Context, tx *sqlx.Tx, users []string) error {
	if len(users) == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM user_emails WHERE user_id = ANY($1)`, pq.Array(users)); err != nil {
		return fmt.Errorf("delete the addresses of %d erased users: %w", len(users), Classify(err))
	}
	return nil
}
