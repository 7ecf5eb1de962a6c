package schema_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// BenchmarkAppendSealed measures the event store's append (group commit)
// of deliveries about 1,000 users sent 16 at a time, into a store that
// keeps bodies in clear (no master key: the baseline) and one that seals
// them under per-user keys, both on the store pool a service opens
// (schematest.NewDBs: bytea parameters in binary), in alternating rounds of the same run (the
// machine is shared: alternating keeps load drift out of the ratio). It
// reports both costs per delivery and sealed/clear (issue 14: at most 1.10):
//
//	go test ./schema -run '^$' -bench AppendSealed -benchtime 40000x
func BenchmarkAppendSealed(b *testing.B) {
	bodies := make([]domain.Delivery, 1000)
	for i := range bodies {
		bodies[i] = delivery(b, "x", "user.updated", fmt.Sprintf("user_bench_%04d", i))
	}
	ctx := context.Background()
	// Both on the pool a service gives its store (bytea sent in binary).
	_, clearDB := schematest.NewDBs(b)
	_, sealedDB := schematest.NewDBs(b)
	clearStore, sealedStore := schema.NewStore(clearDB), schema.NewStore(sealedDB)
	sealedStore.Keys = newKeyring(b)
	var seq atomic.Int64
	run := func(s *schema.Store, n int) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		per := max(1, n/16)
		for range 16 {
			wg.Go(func() {
				for range per {
					i := seq.Add(1)
					d := bodies[i%int64(len(bodies))]
					d.ID = fmt.Sprintf("msg_bench_%09d", i)
					if _, err := s.Append(ctx, d); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	// Warm up both (the sealed store makes its 1,000 keys once).
	run(clearStore, 2000)
	run(sealedStore, 2000)
	b.ResetTimer()
	const rounds = 8
	var clear, sealed time.Duration
	n := max(16, b.N/(2*rounds))
	for range rounds {
		clear += run(clearStore, n)
		sealed += run(sealedStore, n)
	}
	b.StopTimer()
	total := float64(rounds * (n / 16) * 16)
	b.ReportMetric(float64(clear.Nanoseconds())/total, "clear-ns/delivery")
	b.ReportMetric(float64(sealed.Nanoseconds())/total, "sealed-ns/delivery")
	b.ReportMetric(float64(sealed)/float64(clear), "sealed/clear")
}
