package projections

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
)

// BenchmarkRebuildUsersSealed rebuilds the users projection over the same
// history stored in clear (no master key: the baseline) in one database and
// sealed under per-user keys in another, in alternating rounds of the same
// run (the machine is shared: alternating keeps load drift out of the
// ratio), and reports both rates and sealed/clear time (issue 14: at most
// 1.10):
//
//	go test ./projections -run '^$' -bench RebuildUsersSealed -benchtime 4x
func BenchmarkRebuildUsersSealed(b *testing.B) {
	// 5,000 users: an Opener (16,384 keys) holds every one; 25,000: it
	// holds fewer than the users, as in the 1M-event bench rebuild.
	for _, size := range []struct{ users, events int }{{5000, 100000}, {25000, 200000}} {
		b.Run(fmt.Sprintf("users=%d/events=%d", size.users, size.events), func(b *testing.B) {
			benchRebuildSealed(b, size.users, size.events)
		})
	}
}

func benchRebuildSealed(b *testing.B, users, n int) {
	ds := history(b, 23, users, n)
	k := schematest.NewKeyring(b)
	seed := func(ctx context.Context) *sqlx.DB {
		db := schematest.NewDB(b)
		loadIn(b, ctx, db, ds)
		if _, err := db.Exec(`VACUUM ANALYZE events`); err != nil {
			b.Fatal(err)
		}
		waitVisible(b, db)
		if err := EnsureCheckpoint(ctx, db, UsersName); err != nil {
			b.Fatal(err)
		}
		return db
	}
	clearCtx, sealedCtx := context.Background(), schema.WithKeyring(context.Background(), k)
	clearDB, sealedDB := seed(clearCtx), seed(sealedCtx)
	rebuild := func(ctx context.Context, db *sqlx.DB) (time.Duration, int64) {
		start := time.Now()
		res, err := Rebuild(ctx, db, NewUsers(), nil)
		if err != nil {
			b.Fatal(err)
		}
		return time.Since(start), res.Events
	}
	rebuild(clearCtx, clearDB) // warm caches alike
	rebuild(sealedCtx, sealedDB)
	b.ResetTimer()
	var clear, sealed time.Duration
	var events int64
	for range b.N {
		d, n := rebuild(clearCtx, clearDB)
		clear, events = clear+d, events+n
		d, _ = rebuild(sealedCtx, sealedDB)
		sealed += d
	}
	b.StopTimer()
	b.ReportMetric(float64(events)/clear.Seconds(), "clear-events/s")
	b.ReportMetric(float64(events)/sealed.Seconds(), "sealed-events/s")
	b.ReportMetric(float64(sealed)/float64(clear), "sealed/clear")
}
