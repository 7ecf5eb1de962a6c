package handlers

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/jmoiron/sqlx"
	"golang.org/x/mod/sumdb/tlog"
)

// noopProjector reads every event and writes nothing but its checkpoint:
// the projector runtime's own cost, the baseline the sealer is measured
// against.
type noopProjector struct{}

func (noopProjector) Name() string    { return "bench_noop" }
func (noopProjector) Types() []string { return nil }
func (noopProjector) Apply(context.Context, *sqlx.Tx, []domain.Event) ([]projections.Failure, error) {
	return nil, nil
}

// BenchmarkLog measures the verifiable log on LEDGER_BENCH_EVENTS events
// (default 1,000,000) over events/100 users (100 events each), loaded with
// COPY. Sub-benchmarks, in this order:
//
//	seal         the tree sealer working off the whole ledger in its
//	             batches of 2000, events/s; seal_baseline a projector that
//	             writes nothing, in the same run (the runtime's own cost)
//	proof        GET /api/audit/events/{position}/proof for random events
//	             in-process, access recorded, p50/p99 ms over 300;
//	             proof_baseline one indexed select and one durable
//	             access-log INSERT, in the same run (the floor)
//	bundle       GET /api/audit/users/{id}/proof (100 events), p50/p99 ms
//	verify       the full re-read (schema.VerifyLog), events/s;
//	             verify_baseline a bare read of every event with its leaf
//	             (one join, no ordering, no hashing), rows/s, in the same run
//	consistency  audit.VerifyCheckpoint of a checkpoint of 1 leaf against
//	             the latest (n leaves), recorded, p50/p99 ms over 50
//
// Run: go test ./handlers -run '^$' -bench Log -benchtime 1x
func BenchmarkLog(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("LEDGER_BENCH_EVENTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1000 {
			b.Fatalf("LEDGER_BENCH_EVENTS=%q: want an integer >= 1000", s)
		}
		n = v
	}
	defer debug.SetGCPercent(debug.SetGCPercent(400)) // as serve runs
	users := n / 100
	e := newAuditEnv(b)
	ctx := context.Background()
	start := time.Now()
	schematest.CopyEvents(b, e.db, n, func(i int) domain.Delivery { return synthDelivery(e.signer, i, users) })
	for _, q := range []string{`VACUUM (ANALYZE) events`, `CHECKPOINT`} {
		if _, err := e.db.Exec(q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	b.Logf("%d events over %d users loaded in %s", n, users, time.Since(start).Round(time.Millisecond))
	schematest.WaitReadable(b, e.db, int64(n))

	run := func(b *testing.B, p projections.Projector) {
		r := projections.NewRunner(e.db, nil, p)
		if err := projections.EnsureCheckpoint(ctx, e.db, p.Name()); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		events := 0
		for {
			res, err := r.Step(ctx, p)
			if err != nil {
				b.Fatal(err)
			}
			events += res.Read
			if !res.Full {
				break
			}
		}
		b.ReportMetric(float64(events)/time.Since(t0).Seconds(), "events/s")
	}
	b.Run("seal_baseline", func(b *testing.B) {
		for b.Loop() {
			run(b, noopProjector{})
		}
	})
	b.Run("seal", func(b *testing.B) {
		for b.Loop() {
			run(b, projections.NewTree())
		}
	})
	if size, _ := schema.TreeSize(ctx, e.db); size != int64(n) {
		b.Fatalf("tree of %d leaves, want %d (run with -benchtime 1x)", size, n)
	}
	for _, q := range []string{`VACUUM (ANALYZE) log_leaves`, `CHECKPOINT`} {
		if _, err := e.db.Exec(q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	signer, verifier := schematest.NewLogKey(b, "clerk-ledger/bench")
	schematest.SignCheckpoint(b, e.db, signer, "clerk-ledger/bench")

	get := func(b *testing.B, path string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("X-Test-Session", listedAuditor)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("%s: %d %.200s", path, rec.Code, rec.Body)
		}
		return rec
	}
	// proof_baseline is the floor of a recorded read, in the same run: one
	// indexed select of an event and one durable access-log INSERT.
	b.Run("proof_baseline", func(b *testing.B) {
		var lat []time.Duration
		r := rand.New(rand.NewPCG(3, 4))
		for b.Loop() {
			for range 300 {
				t0 := time.Now()
				var body []byte
				if err := e.db.QueryRowContext(ctx, `SELECT body FROM events WHERE position = $1`, 1+r.IntN(n)).Scan(&body); err != nil {
					b.Fatal(err)
				}
				if err := schema.RecordAccess(ctx, e.db, schema.Access{Actor: "bench", Channel: "api", Action: "baseline", RowCount: 1}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
		}
		reportLatency(b, lat)
	})
	b.Run("proof", func(b *testing.B) {
		var lat []time.Duration
		r := rand.New(rand.NewPCG(3, 4))
		for b.Loop() {
			for range 300 {
				t0 := time.Now()
				get(b, fmt.Sprintf("/api/audit/events/%d/proof", 1+r.IntN(n)))
				lat = append(lat, time.Since(t0))
			}
		}
		reportLatency(b, lat)
	})
	b.Run("bundle", func(b *testing.B) {
		var lat []time.Duration
		r := rand.New(rand.NewPCG(5, 6))
		for b.Loop() {
			for range 300 {
				t0 := time.Now()
				rec := get(b, fmt.Sprintf("/api/audit/users/user_%027d/proof", r.IntN(users)))
				lat = append(lat, time.Since(t0))
				if c := strings.Count(rec.Body.String(), `"leaf_index"`); c != 100 {
					b.Fatalf("bundle of %d events", c)
				}
			}
		}
		reportLatency(b, lat)
	})
	b.Run("verify_baseline", func(b *testing.B) {
		// A bare streaming read of every event with its leaf, in the same run.
		var rows int64
		t0 := time.Now()
		for b.Loop() {
			rs, err := e.db.QueryContext(ctx, `SELECT l.leaf, l.hashes, e.position, e.delivery_id, e.type, e.user_id, e.source, e.occurred_at, e.received_at, e.body, e.svix_timestamp, e.svix_signature
FROM log_leaves l JOIN events e ON e.position = l.position`)
			if err != nil {
				b.Fatal(err)
			}
			var leaf, pos, ts int64
			var hashes, id, typ, user, src, body, sig sql.RawBytes
			var occ, rec time.Time
			for rs.Next() {
				if err := rs.Scan(&leaf, &hashes, &pos, &id, &typ, &user, &src, &occ, &rec, &body, &ts, &sig); err != nil {
					b.Fatal(err)
				}
				rows++
			}
			rs.Close()
		}
		b.ReportMetric(float64(rows)/time.Since(t0).Seconds(), "rows/s")
	})
	b.Run("verify", func(b *testing.B) {
		var events int64
		t0 := time.Now()
		for b.Loop() {
			rep, err := schema.VerifyLog(ctx, e.db, verifier.Open)
			if err != nil || !rep.OK {
				b.Fatalf("%+v %v", rep, err)
			}
			events += rep.Checked
		}
		b.ReportMetric(float64(events)/time.Since(t0).Seconds(), "events/s")
	})
	b.Run("consistency", func(b *testing.B) {
		root1, err := tlog.TreeHash(1, schema.HashReader(ctx, e.db))
		if err != nil {
			b.Fatal(err)
		}
		kept, _ := signer.Sign(translog.Checkpoint{Origin: "clerk-ledger/bench", Size: 1, Root: root1})
		svc := audit.New(audit.Config{DB: e.db, LogKey: verifier, Conns: 8})
		var lat []time.Duration
		for b.Loop() {
			for range 50 {
				t0 := time.Now()
				res, err := svc.VerifyCheckpoint(ctx, audit.Actor{ID: "bench", Channel: "cli"}, kept)
				lat = append(lat, time.Since(t0))
				if err != nil || !res.OK || res.Latest.Size != int64(n) {
					b.Fatalf("%s %v", res.Message(), err)
				}
			}
		}
		reportLatency(b, lat)
	})
}
