package schema_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
)

// BenchmarkUsersWriteNew measures writing a projector batch of 1,000 users
// the table does not hold, each batch in its own transaction: InsertNew
// (one COPY) against Upsert (INSERT … SELECT FROM unnest … ON CONFLICT),
// in alternating rounds of the same run, and logs each round's ratio:
//
//	go test ./schema -run '^$' -bench UsersWriteNew -benchtime 40x
func BenchmarkUsersWriteNew(b *testing.B) {
	db := schematest.NewDB(b)
	live := schema.LiveUsers()
	at := time.Date(2026, 12, 2, 21, 0, 0, 0, time.UTC)
	batch := 0
	rows := func() []schema.UserRow {
		batch++
		out := make([]schema.UserRow, 1000)
		for i := range out {
			out[i] = userRow(fmt.Sprintf("user_%05d_%04d", batch, i), fmt.Sprintf("ada%d.%d@example.com", batch, i), at)
		}
		return out
	}
	write := func(b *testing.B, f func(context.Context, *sqlx.Tx, []schema.UserRow) error) float64 {
		return perRow(b, db, rows, f)
	}
	for round := range 2 {
		var upsert, insert float64
		b.Run(fmt.Sprintf("round%d/upsert", round), func(b *testing.B) {
			upsert = write(b, func(ctx context.Context, tx *sqlx.Tx, rs []schema.UserRow) error { return live.Upsert(ctx, tx, rs) })
		})
		b.Run(fmt.Sprintf("round%d/insertnew", round), func(b *testing.B) { insert = write(b, live.InsertNew) })
		if upsert > 0 {
			b.Logf("round %d: InsertNew %.1f µs a row, Upsert %.1f: ratio %.2f", round, insert, upsert, insert/upsert)
		}
	}
}

// BenchmarkEmailsWriteNew writes batches of 1,000 sightings of new (email,
// user) pairs into user_emails with the upsert (AddEmails) and with the COPY
// of a batch's new users' addresses (AddNewEmails), in alternating rounds,
// each batch in its own transaction (commit included), and logs the ratio.
func BenchmarkEmailsWriteNew(b *testing.B) {
	db := schematest.NewDB(b)
	at := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	batch := 0
	sightings := func() []schema.EmailSighting {
		batch++
		s := make([]schema.EmailSighting, 1000)
		for i := range s {
			s[i] = schema.EmailSighting{Email: fmt.Sprintf("ada%d.%d@example.com", batch, i), UserID: fmt.Sprintf("user_%05d_%04d", batch, i), Position: int64(batch*1000 + i), At: at}
		}
		return s
	}
	write := func(b *testing.B, f func(context.Context, *sqlx.Tx, []schema.EmailSighting) error) float64 {
		return perRow(b, db, sightings, f)
	}
	for round := range 2 {
		var upsert, copied float64
		b.Run(fmt.Sprintf("round%d/upsert", round), func(b *testing.B) { upsert = write(b, schema.AddEmails) })
		b.Run(fmt.Sprintf("round%d/addnew", round), func(b *testing.B) { copied = write(b, schema.AddNewEmails) })
		if upsert > 0 {
			b.Logf("round %d: AddNewEmails %.1f µs a row, AddEmails %.1f: ratio %.2f", round, copied, upsert, copied/upsert)
		}
	}
}

// perRow writes b.N batches made by batch with write, each in its own
// transaction (commit included), and reports and returns the time a row.
func perRow[T any](b *testing.B, db *sqlx.DB, batch func() []T, write func(context.Context, *sqlx.Tx, []T) error) float64 {
	var took time.Duration
	rows := 0
	for range b.N {
		rs := batch()
		start := time.Now()
		if err := inTx(b, db, func(tx *sqlx.Tx) error { return write(context.Background(), tx, rs) }); err != nil {
			b.Fatal(err)
		}
		took += time.Since(start)
		rows += len(rs)
	}
	us := float64(took.Microseconds()) / float64(max(rows, 1))
	b.ReportMetric(us, "µs/row")
	return us
}
