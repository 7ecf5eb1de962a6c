package schema_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
)

// emailRows returns user_emails as "email user first_position first_seen
// last_seen" lines, in key order.
func emailRows(t testing.TB, db *sqlx.DB) string {
	t.Helper()
	rows, err := db.Queryx(`SELECT email || ' ' || user_id || ' ' || first_position || ' ' || first_seen || ' ' || last_seen FROM user_emails ORDER BY email, user_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, "\n")
}

// TestAddNewEmailsIsAddEmails: the COPY of new pairs gives the rows the
// upsert gives, a pair sighted several times widened to its earliest and
// latest; a pair stored after all falls back to the upsert in the same
// transaction, which stays usable; a value PostgreSQL refuses (NUL, lone
// surrogate, too long for an index row) is Refused and stores nothing.
func TestAddNewEmailsIsAddEmails(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sightings := []schema.EmailSighting{
		{Email: "ada@example.com", UserID: "user_a", Position: 7, At: at.Add(time.Hour)},
		{Email: "ada@example.com", UserID: "user_a", Position: 3, At: at},
		{Email: "ada@example.com", UserID: "user_a", Position: 9, At: at.Add(2 * time.Hour)},
		{Email: "ada@example.com", UserID: "user_b", Position: 4, At: at},
		{Email: "bob@example.com", UserID: "user_b", Position: 5, At: at.Add(time.Minute)},
	}
	upserted, copied := schematest.NewDB(t), schematest.NewDB(t)
	if err := inTx(t, upserted, func(tx *sqlx.Tx) error { return schema.AddEmails(ctx, tx, sightings) }); err != nil {
		t.Fatal(err)
	}
	if err := inTx(t, copied, func(tx *sqlx.Tx) error { return schema.AddNewEmails(ctx, tx, sightings) }); err != nil {
		t.Fatal(err)
	}
	want := emailRows(t, upserted)
	if got := emailRows(t, copied); got != want || strings.Count(want, "\n") != 2 {
		t.Fatalf("AddNewEmails:\n%s\nAddEmails:\n%s", got, want)
	}

	// Taken: a pair already stored, sighted earlier and later.
	again := []schema.EmailSighting{
		{Email: "ada@example.com", UserID: "user_a", Position: 1, At: at.Add(-time.Hour)},
		{Email: "eve@example.com", UserID: "user_e", Position: 12, At: at.Add(3 * time.Hour)},
	}
	for _, db := range []*sqlx.DB{upserted, copied} {
		add := schema.AddEmails
		if db == copied {
			add = schema.AddNewEmails
		}
		if err := inTx(t, db, func(tx *sqlx.Tx) error {
			if err := add(ctx, tx, again); err != nil {
				return err
			}
			// The transaction goes on after the fallback.
			_, err := tx.ExecContext(ctx, `SELECT 1`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := emailRows(t, copied), emailRows(t, upserted); got != want || !strings.Contains(want, "eve@example.com") || !strings.Contains(want, "ada@example.com user_a 1 ") {
		t.Fatalf("with a pair taken, AddNewEmails:\n%s\nAddEmails:\n%s", got, want)
	}

	// Refused: a NUL, a lone surrogate (CESU bytes, not UTF-8), and an
	// address too long for an index row.
	for _, bad := range []string{"nul\x00@example.com", "lone\xed\xa0\x80@example.com", incompressible(10_000)} {
		before := emailRows(t, copied)
		err := inTx(t, copied, func(tx *sqlx.Tx) error {
			return schema.AddNewEmails(ctx, tx, []schema.EmailSighting{{Email: "ok@example.com", UserID: "user_o", Position: 20, At: at}, {Email: bad, UserID: "user_o", Position: 21, At: at}})
		})
		if err == nil || !schema.Refused(err) || errors.Is(err, schema.ErrRowTaken) {
			t.Fatalf("%.20q: %v, want Refused", bad, err)
		}
		if got := emailRows(t, copied); got != before {
			t.Fatalf("%.20q refused, yet user_emails changed:\n%s", bad, got)
		}
	}
}
