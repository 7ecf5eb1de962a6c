package schema_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
)

// BenchmarkReadBatchSealed reads a sealed ledger of 20,000 user events, each
// about a new user (as bench ingest sends them), in the users projector's
// batches (ReadBatch of the user types, 500 at a time), and a clear ledger
// of the same history: the cost of a sealed batch read per event, its
// users' keys read and its bodies opened, against a clear one; and the
// sealed read again with every body handed over in memory, as serve's
// event store hands them to its users projector (ReadBatchTaking, Bodies).
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
		for _, taking := range []bool{false, true} {
			if taking && !sealed {
				continue
			}
			name := fmt.Sprintf("sealed=%v", sealed)
			if taking {
				name += "/bodies_handed_over"
			}
			b.Run(name, func(b *testing.B) {
				types := domain.UserEventTypes()
				for range b.N {
					var bodies *schema.Bodies
					if taking {
						b.StopTimer()
						bodies = handOver(b, db, n)
						b.StartTimer()
					}
					c, read := schema.Cursor{}, 0
					for {
						bt, err := schema.ReadBatchTaking(ctx, db, c, types, 500, bodies)
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
					if taking && bodies.Len() != 0 {
						b.Fatalf("%d bodies not taken", bodies.Len())
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
			})
		}
	}
}

// handOver returns Bodies holding the sealed body of each of the n events
// of db, as the event store hands them over after its commits.
func handOver(b *testing.B, db *sqlx.DB, n int) *schema.Bodies {
	bodies := schema.NewBodies(nil, n, n*4096)
	rows, err := db.Query(`SELECT delivery_id, body_sealed FROM events WHERE body_sealed IS NOT NULL`)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var sealed []byte
		if err := rows.Scan(&id, &sealed); err != nil {
			b.Fatal(err)
		}
		bodies.Keep(id, "", sealed)
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	if bodies.Len() != n {
		b.Fatalf("handed over %d bodies, want %d", bodies.Len(), n)
	}
	return bodies
}
