package relay_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/relay"
	"github.com/clerk-ledger/clerk-ledger/relay/natstest"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkRelay publishes a seeded ledger (LEDGER_BENCH_EVENTS, default
// 100k realistic ~1 KB events) through the relay (batches of
// LEDGER_BENCH_BATCH, default relay.BatchSize) to a local JetStream and
// reports events/s, and, as the baseline in the same run, raw nats.go async
// JetStream publishes of the same payloads and headers (read from the
// ledger first, timed apart: ledger_read_events/s) with the same window, and
// the ratio.
//
//	go test ./relay -run '^$' -bench Relay -benchtime 1x
func BenchmarkRelay(b *testing.B) {
	n := 100000
	if v := os.Getenv("LEDGER_BENCH_EVENTS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	db := schematest.NewDB(b)
	for i := 0; i < n; i += 10000 {
		schematest.CopyEvents(b, db, min(10000, n-i), func(k int) domain.Delivery { return delivery("bench", i+k) })
	}
	srv := natstest.Start(b)
	_, js := srv.Connect(b)
	ctx := context.Background()
	rel, err := relay.New(relay.Config{URL: srv.URL()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer rel.Close()
	var events []domain.Event
	readStart := time.Now()
	for c := (schema.Cursor{}); ; {
		evs, err := schema.ReadAfter(ctx, db, c, 10000)
		if err != nil {
			b.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		events = append(events, evs...)
		c = schema.After(evs[len(evs)-1])
	}
	readRate := float64(len(events)) / time.Since(readStart).Seconds()
	batch := relay.BatchSize
	if v := os.Getenv("LEDGER_BENCH_BATCH"); v != "" {
		batch, _ = strconv.Atoi(v)
	}
	b.ResetTimer()
	var relayRate, baseRate float64
	for range b.N {
		b.StopTimer()
		_ = js.DeleteStream(ctx, relay.DefaultStream)
		if _, err := db.Exec(`DELETE FROM projection_checkpoints WHERE name = $1`, relay.Name); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		run := projections.NewRunner(db, nil, rel)
		run.BatchSize = batch
		if err := run.CatchUp(ctx); err != nil {
			b.Fatal(err)
		}
		relayRate = float64(n) / time.Since(start).Seconds()
		b.StopTimer()
		if got := natstest.Count(b, js, relay.DefaultStream); got != uint64(n) {
			b.Fatalf("stream holds %d messages, want %d", got, n)
		}
		baseRate = baseline(b, srv, events)
		b.StartTimer()
	}
	b.ReportMetric(relayRate, "events/s")
	b.ReportMetric(baseRate, "baseline_msgs/s")
	b.ReportMetric(relayRate/baseRate, "ratio")
	b.ReportMetric(readRate, "ledger_read_events/s")
}

// baseline publishes events with nats.go's JetStream PublishMsgAsync (the
// same subjects, payloads and headers, window 1000) to a fresh stream and
// returns messages/s until the last PubAck.
func baseline(b *testing.B, srv *natstest.Server, events []domain.Event) float64 {
	ctx := context.Background()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(relay.DefaultWindow))
	if err != nil {
		b.Fatal(err)
	}
	_ = js.DeleteStream(ctx, "BASELINE")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BASELINE", Subjects: []string{"base.>"}, Duplicates: relay.DefaultDuplicates}); err != nil {
		b.Fatal(err)
	}
	msgs := make([]*nats.Msg, len(events))
	for i, e := range events {
		m := nats.NewMsg(relay.Subject("base", e.Type))
		m.Data = e.Body
		m.Header.Set(nats.MsgIdHdr, e.DeliveryID)
		m.Header.Set(relay.HeaderDeliveryID, e.DeliveryID)
		m.Header.Set(relay.HeaderPosition, strconv.FormatInt(e.Position, 10))
		m.Header.Set(relay.HeaderType, e.Type)
		m.Header.Set(relay.HeaderUserID, e.UserID)
		m.Header.Set(relay.HeaderOccurredAt, e.OccurredAt.Format(time.RFC3339Nano))
		msgs[i] = m
	}
	start := time.Now()
	for _, m := range msgs {
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("baseline: acks missing")
	}
	return float64(len(events)) / time.Since(start).Seconds()
}
