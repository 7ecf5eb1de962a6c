package schema_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// BenchmarkReadBatchSealed reads a sealed ledger of 20,000 user events, each
// about a new user (as bench ingest sends them), in the users projector's
// batches (ReadBatch of the user types, 500 at a time), and a clear ledger
// of the same history: the cost of a sealed batch read per event, its
// users' keys read and its bodies opened, against a clear one.
func BenchmarkReadBatchSealed(b *testing.B) {
	const n = 20000
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	bd := make([]schema.Backdated, n)
	for i := range bd {
		bd[i] = schema.Backdated{Delivery: deliveryAt(b, fmt.Sprintf("msg_%07d", i), "user.updated", fmt.Sprintf("user_%07d", i), t0.Add(time.Duration(i)*time.Second)), ReceivedAt: t0}
	}
	for _, sealed := range []bool{false, true} {
		db := schematest.NewDB(b)
		ctx := context.Background()
		if sealed {
			ctx = schema.WithKeyring(ctx, newKeyring(b))
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
		for _, table := range []string{"events", "user_keys"} {
			if _, err := db.Exec(`VACUUM ANALYZE ` + table); err != nil {
				b.Fatal(err)
			}
		}
		schematest.WaitVisible(b, db)
		b.Run(fmt.Sprintf("sealed=%v", sealed), func(b *testing.B) {
			types := domain.UserEventTypes()
			for range b.N {
				c, read := schema.Cursor{}, 0
				for {
					bt, err := schema.ReadBatch(ctx, db, c, types, 500)
					if err != nil {
						b.Fatal(err)
					}
					read += len(bt.Events)
					c = bt.Next
					if !bt.Full {
						break
					}
				}
				if read != n {
					b.Fatalf("read %d events, want %d", read, n)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
	}
}
