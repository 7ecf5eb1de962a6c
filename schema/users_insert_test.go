package schema_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
)

// InsertNew stores new users exactly as the upsert does (the same row read
// back); an id already stored is ErrRowTaken, which is not Refused (a
// projector retries the batch rather than poisoning its events), and a
// value PostgreSQL refuses is Refused, as on the upsert's path.
func TestUsersInsertNewIsTheUpsertsRowAndTellsTakenFromRefused(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	live := schema.LiveUsers()
	at := time.Date(2026, 12, 2, 21, 0, 0, 123456000, time.UTC)
	row := func(id string) schema.UserRow {
		return schema.UserRow{User: domain.User{ID: id, Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", Username: "ada",
			PublicMetadata: json.RawMessage(`{"plan":"pro"}`), PrivateMetadata: json.RawMessage(`{"k":1}`), CreatedAt: at, UpdatedAt: at.Add(time.Second),
			LastSignInAt: at, EmailVerified: true, Version: domain.Version{UpdatedAt: 7, OccurredAt: 8, DeliveryID: "msg_1"}}, LastPosition: 42}
	}
	write := func(f func(tx *sqlx.Tx) error) error {
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if err := f(tx); err != nil {
			return err
		}
		return tx.Commit()
	}
	if err := write(func(tx *sqlx.Tx) error { return live.InsertNew(ctx, tx, []schema.UserRow{row("user_copied"), {}}) }); err != nil {
		t.Fatal(err)
	}
	if err := write(func(tx *sqlx.Tx) error { return live.Upsert(ctx, tx, []schema.UserRow{row("user_upserted")}) }); err != nil {
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

	err = write(func(tx *sqlx.Tx) error {
		return live.InsertNew(ctx, tx, []schema.UserRow{row("user_other"), row("user_upserted")})
	})
	if !errors.Is(err, schema.ErrRowTaken) || schema.Refused(err) {
		t.Fatalf("InsertNew of a stored id: %v (taken %t, refused %t), want ErrRowTaken and not Refused", err, errors.Is(err, schema.ErrRowTaken), schema.Refused(err))
	}
	if _, err := schema.GetUser(ctx, db, "user_other"); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Fatalf("a refused COPY kept a row: %v", err)
	}
	bad := row("user_nul")
	bad.User.FirstName = "Ada\x00"
	err = write(func(tx *sqlx.Tx) error { return live.InsertNew(ctx, tx, []schema.UserRow{bad}) })
	if !schema.Refused(err) || errors.Is(err, schema.ErrRowTaken) {
		t.Fatalf("InsertNew of a NUL byte: %v, want Refused", err)
	}
	if err := write(func(tx *sqlx.Tx) error { return live.InsertNew(ctx, tx, nil) }); err != nil {
		t.Fatalf("InsertNew of no rows: %v", err)
	}
}
