package projections

import (
	"context"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
)

// BenchmarkRebuildUsersSealed rebuilds the users projection over the same
// history stored in clear (no master key: the baseline) and sealed under
// per-user keys, in the same run, and reports events/s and the sealed run
// as a ratio of the clear one (issue 14: at most 10% slower):
//
//	go test ./projections -run '^$' -bench RebuildUsersSealed -benchtime 3x
func BenchmarkRebuildUsersSealed(b *testing.B) {
	ds := history(b, 23, 5000, 100000)
	text, _ := userkeys.Generate()
	k, err := userkeys.Load(text)
	if err != nil {
		b.Fatal(err)
	}
	measure := func(b *testing.B, ctx context.Context) float64 {
		db := schematest.NewDB(b)
		bd := make([]schema.Backdated, len(ds))
		for i, d := range ds {
			d.Signature = "v1,test"
			bd[i] = schema.Backdated{Delivery: d, ReceivedAt: time.Now()}
		}
		tx, err := db.Beginx()
		if err != nil {
			b.Fatal(err)
		}
		if err := schema.CopyDeliveries(ctx, tx, bd); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		if _, err := db.Exec(`VACUUM ANALYZE events`); err != nil {
			b.Fatal(err)
		}
		waitVisible(b, db)
		if err := EnsureCheckpoint(ctx, db, UsersName); err != nil {
			b.Fatal(err)
		}
		var took time.Duration
		var events int64
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			res, err := Rebuild(ctx, db, NewUsers(), nil)
			if err != nil {
				b.Fatal(err)
			}
			took += time.Since(start)
			events += res.Events
		}
		rate := float64(events) / took.Seconds()
		b.ReportMetric(rate, "events/s")
		return rate
	}
	var clear, sealed float64
	b.Run("clear", func(b *testing.B) { clear = measure(b, context.Background()) })
	b.Run("sealed", func(b *testing.B) { sealed = measure(b, schema.WithKeyring(context.Background(), k)) })
	if sealed > 0 {
		b.Logf("rebuild of %d events: clear %.0f events/s, sealed %.0f events/s: sealed takes %.2fx the time", len(ds), clear, sealed, clear/sealed)
	}
}
