package schema_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
)

// userRow is a complete users row about id, as a projector writes one.
func userRow(id, email string, at time.Time) schema.UserRow {
	return schema.UserRow{User: domain.User{ID: id, Email: email, FirstName: "Ada", LastName: "Lovelace", Username: "ada",
		ImageURL: "https://img.clerk.com/ada", PublicMetadata: json.RawMessage(`{"plan":"pro"}`), PrivateMetadata: json.RawMessage(`{"k":1}`),
		CreatedAt: at, UpdatedAt: at.Add(time.Second), LastSignInAt: at, LastActiveAt: at, EmailVerified: true,
		Version: domain.Version{UpdatedAt: 7, OccurredAt: 8, DeliveryID: "msg_1"}}, LastPosition: 42}
}

// incompressible returns n characters that PostgreSQL cannot compress
// below an index row's limit (a repeated letter would be).
func incompressible(n int) string {
	var b strings.Builder
	h := sha256.Sum256(nil)
	for b.Len() < n {
		h = sha256.Sum256(h[:])
		b.WriteString(hex.EncodeToString(h[:]))
	}
	return b.String()[:n]
}

// inTx runs f in a transaction on db and commits it when f returns nil.
func inTx(tb testing.TB, db *sqlx.DB, f func(tx *sqlx.Tx) error) error {
	tb.Helper()
	tx, err := db.BeginTxx(context.Background(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// InsertNew stores new users exactly as the upsert does (the same row read
// back); an id already stored is ErrRowTaken, which is not Refused (a
// projector retries the batch rather than poisoning its events), and every
// value PostgreSQL refuses (a NUL byte, a lone surrogate, a \u0000 escape in
// JSON, an id too long for its index) is Refused, as on the upsert's path,
// with nothing of the COPY kept.
func TestUsersInsertNewIsTheUpsertsRowAndTellsTakenFromRefused(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	live := schema.LiveUsers()
	at := time.Date(2026, 12, 2, 21, 0, 0, 123456000, time.UTC)
	row := func(id string) schema.UserRow { return userRow(id, "ada@example.com", at) }
	if err := inTx(t, db, func(tx *sqlx.Tx) error { return live.InsertNew(ctx, tx, []schema.UserRow{row("user_copied"), {}}) }); err != nil {
		t.Fatal(err)
	}
	if err := inTx(t, db, func(tx *sqlx.Tx) error { return live.Upsert(ctx, tx, []schema.UserRow{row("user_upserted")}) }); err != nil {
		t.Fatal(err)
	}
	copied, err := schema.GetUser(ctx, db, "user_copied")
	if err != nil {
		t.Fatal(err)
	}
	upserted, err := schema.GetUser(ctx, db, "user_upserted")
	if err != nil {
		t.Fatal(err)
	}
	upserted.ID = copied.ID
	a, _ := json.Marshal(copied)
	b, _ := json.Marshal(upserted)
	if string(a) != string(b) {
		t.Fatalf("InsertNew stored\n%s\nthe upsert\n%s", a, b)
	}

	err = inTx(t, db, func(tx *sqlx.Tx) error {
		return live.InsertNew(ctx, tx, []schema.UserRow{row("user_other"), row("user_upserted")})
	})
	if !errors.Is(err, schema.ErrRowTaken) || schema.Refused(err) {
		t.Fatalf("InsertNew of a stored id: %v (taken %t, refused %t), want ErrRowTaken and not Refused", err, errors.Is(err, schema.ErrRowTaken), schema.Refused(err))
	}
	hostile := map[string]func(r *schema.UserRow){
		"a NUL byte":            func(r *schema.UserRow) { r.User.FirstName = "Ada\x00" },
		"a lone surrogate":      func(r *schema.UserRow) { r.User.LastName = "Love\xed\xa0\x80lace" },
		"a \\u0000 in metadata": func(r *schema.UserRow) { r.User.PublicMetadata = json.RawMessage(`{"a":"\u0000"}`) },
		"a 10 kB id":            func(r *schema.UserRow) { r.User.ID = "user_" + incompressible(10000) },
	}
	for what, spoil := range hostile {
		bad := row("user_bad")
		spoil(&bad)
		err := inTx(t, db, func(tx *sqlx.Tx) error { return live.InsertNew(ctx, tx, []schema.UserRow{row("user_innocent"), bad}) })
		if !schema.Refused(err) || errors.Is(err, schema.ErrRowTaken) {
			t.Errorf("InsertNew of %s: %v, want Refused", what, err)
		}
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM users`); err != nil || n != 2 {
		t.Fatalf("%d users after the refused COPYs (%v), want the 2 written", n, err)
	}
	if err := inTx(t, db, func(tx *sqlx.Tx) error { return live.InsertNew(ctx, tx, nil) }); err != nil {
		t.Fatalf("InsertNew of no rows: %v", err)
	}
}
