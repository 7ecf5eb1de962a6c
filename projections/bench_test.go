package projections

import (
	"context"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// BenchmarkUsersProjectorLive measures the live users projector working off
// a backlog (shuffled realistic history) in its normal batches, against the
// same projector run one event per transaction (what a per-message
// subscriber handler does), in the same run:
//
//	go test ./projections -run '^$' -bench UsersProjectorLive -benchtime 3x
func BenchmarkUsersProjectorLive(b *testing.B) {
	db := schematest.NewDB(b)
	ds := history(b, 21, 4000, 40000)
	load(b, db, ds)
	waitVisible(b, db)
	ctx := context.Background()
	reset := func(b *testing.B) {
		b.Helper()
		if _, err := db.Exec(`TRUNCATE users; DELETE FROM projection_checkpoints; DELETE FROM projection_failures`); err != nil {
			b.Fatal(err)
		}
	}
	measure := func(b *testing.B, batch, limit int) float64 {
		r := NewRunner(db, nil, NewUsers())
		r.BatchSize = batch
		var events int64
		var took time.Duration
		for range b.N {
			b.StopTimer()
			reset(b)
			if err := EnsureCheckpoint(ctx, db, UsersName); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			start := time.Now()
			for int(events) < limit*(1+b.N) {
				res, err := r.Step(ctx, r.projectors[0])
				if err != nil {
					b.Fatal(err)
				}
				events += int64(res.Read)
				if !res.Full || res.Read == 0 {
					break
				}
			}
			took += time.Since(start)
		}
		rate := float64(events) / took.Seconds()
		b.ReportMetric(rate, "events/s")
		return rate
	}
	var batched, single float64
	b.Run("batch2000", func(b *testing.B) { batched = measure(b, 2000, 1<<30) })
	b.Run("batch1", func(b *testing.B) { single = measure(b, 1, 1000) })
	if single > 0 {
		b.Logf("batched %.0f events/s, one per transaction %.0f events/s: ratio %.1f", batched, single, batched/single)
	}

}
