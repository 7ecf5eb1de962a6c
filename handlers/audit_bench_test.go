package handlers

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/clerksession"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkAudit measures the auditors' paths on a large sealed ledger:
// LEDGER_BENCH_EVENTS events (default 200,000) over events/100 users, loaded
// with COPY and sealed once. Sub-benchmarks:
//
//	history     GET /api/audit/events?user_id=U (100 events), p50/p99 ms,
//	            in-process (history_tcp: over TCP with a verified token),
//	            with GOGC 400 as serve runs; history_gogc100 the same at
//	            Go's default, in the same run
//	parts       at serve's GOGC 400: its steps (query, access-log
//	            commit, encode), the streamed query and its record as
//	            history runs them (recorded), the whole request (http) and,
//	            in the same run, a bare indexed select and a bare durable
//	            INSERT
//	export      GET /api/audit/events?format=jsonl of everything, rows/s
//	scan        baseline: a bare streaming read of every row, rows/s
//	verify      schema.VerifyLog (the tree) over everything, events/s
//	signatures  re-check of every stored Svix signature, events/s
//
// Run: go test ./handlers -run '^$' -bench Audit -benchtime 1x
func BenchmarkAudit(b *testing.B) {
	n := 200_000
	if s := os.Getenv("LEDGER_BENCH_EVENTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1000 {
			b.Fatalf("LEDGER_BENCH_EVENTS=%q: want an integer >= 1000", s)
		}
		n = v
	}
	users := n / 100
	e := newAuditEnv(b)
	start := time.Now()
	schematest.CopyEvents(b, e.db, n, func(i int) domain.Delivery { return synthDelivery(e.signer, i, users) })
	loaded := time.Since(start)
	e.sealer.SealAll(b, e.db, n)
	// Measure the steady state, not the aftermath of a 1 GB bulk load: set
	// hint bits and the visibility map (VACUUM) and write the load's dirty
	// pages out (CHECKPOINT) before timing anything, as a database that has
	// been running would have.
	for _, q := range []string{`VACUUM (ANALYZE) events`, `VACUUM (ANALYZE) log_leaves`, `CHECKPOINT`} {
		if _, err := e.db.Exec(q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	b.Logf("%d events over %d users: COPY %s, sealed in %s", n, users, loaded.Round(time.Millisecond), (time.Since(start) - loaded).Round(time.Millisecond))
	ctx := context.Background()

	// history runs with the collector set as `ledger serve` sets it (GOGC
	// 400, serveGCPercent in cmd/ledger); history_gogc100, in the same run,
	// with Go's default, the baseline that setting is measured against. Each
	// asks for other users (its own seed), and ours runs first, nearest the
	// load's CHECKPOINT: any order effect counts against it.
	for i, gc := range []struct {
		name    string
		percent int
	}{{"history", 400}, {"history_gogc100", 100}} {
		b.Run(gc.name, func(b *testing.B) {
			defer debug.SetGCPercent(debug.SetGCPercent(gc.percent))
			benchHistory(b, e, users, uint64(i+1))
		})
	}
	// history_tcp is history as a client sees it from `ledger serve`: over
	// TCP with keep-alive, through every middleware (request ids, metrics,
	// rate limits at their defaults scaled out of the way, logging), with a
	// Clerk session token verified (RS256, networkless) on each request.
	b.Run("history_tcp", func(b *testing.B) {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
		base, token := historyServer(b, e)
		client := &http.Client{}
		var lat []time.Duration
		r := rand.New(rand.NewPCG(7, 2))
		for b.Loop() {
			for range 300 {
				req, err := http.NewRequest(http.MethodGet, base+"/api/audit/events?user_id="+fmt.Sprintf("user_%027d", r.IntN(users)), nil)
				if err != nil {
					b.Fatal(err)
				}
				req.Header.Set("Authorization", "Bearer "+token)
				t0 := time.Now()
				res, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				lat = append(lat, time.Since(t0))
				if err != nil || res.StatusCode != 200 || !strings.Contains(string(body), `"count":100`) {
					b.Fatalf("%d %v %.200s", res.StatusCode, err, body)
				}
			}
		}
		reportLatency(b, lat)
	})
	// parts splits the history request into its steps, and times next to
	// them, in the same run, the machine's floor for each: the same user's
	// rows by the same index without the tree join and the gate, and a
	// bare single-row durable INSERT (what one access-log record costs).
	b.Run("parts", func(b *testing.B) {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
		if _, err := e.db.Exec(`CREATE TABLE IF NOT EXISTS bench_commit (id bigserial PRIMARY KEY, note text)`); err != nil {
			b.Fatal(err)
		}
		lat := map[string][]time.Duration{}
		r := rand.New(rand.NewPCG(3, 4))
		for b.Loop() {
			for range 300 {
				uid := fmt.Sprintf("user_%027d", r.IntN(users))
				t0 := time.Now()
				evs, err := schema.QueryAuditEvents(ctx, e.db, schema.EventFilter{UserID: uid, Limit: 100, MaxBytes: audit.MaxPageBytes})
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := schema.RecordAccess(ctx, e.db, schema.Access{Actor: "bench", Channel: schema.ChannelAPI, Action: schema.ActionEvents, RowCount: int64(len(evs))}); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				_ = audit.AppendEventsPage(nil, evs, "")
				t3 := time.Now()
				uid2 := fmt.Sprintf("user_%027d", r.IntN(users))
				rows, err := e.db.Query(`SELECT body FROM events WHERE user_id = $1 ORDER BY transaction_id, position LIMIT 100`, uid2)
				if err != nil {
					b.Fatal(err)
				}
				for rows.Next() {
				}
				rows.Close()
				t4 := time.Now()
				if _, err := e.db.Exec(`INSERT INTO bench_commit (note) VALUES ('x')`); err != nil {
					b.Fatal(err)
				}
				t5 := time.Now()
				uid3 := fmt.Sprintf("user_%027d", r.IntN(users))
				if _, err := schema.QueryAuditEventsRecorded(ctx, e.db, schema.EventFilter{UserID: uid3, Limit: 100, MaxBytes: audit.MaxPageBytes}, schema.Access{Actor: "bench", Channel: schema.ChannelAPI, Action: schema.ActionEvents}, func(schema.AuditEvent) error { return nil }); err != nil {
					b.Fatal(err)
				}
				t6 := time.Now()
				req := httptest.NewRequest(http.MethodGet, "/api/audit/events?user_id="+fmt.Sprintf("user_%027d", r.IntN(users)), nil)
				req.Header.Set("X-Test-Session", listedAuditor)
				req.Header.Set("Sec-Fetch-Site", "same-origin") // as the workspace's pages ask (requireOwnPages)
				rec := httptest.NewRecorder()
				e.h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("%d %.200s", rec.Code, rec.Body)
				}
				t7 := time.Now()
				for k, d := range map[string]time.Duration{"http": t7.Sub(t6), "query": t1.Sub(t0), "access": t2.Sub(t1), "recorded": t6.Sub(t5), "encode": t3.Sub(t2), "base_select": t4.Sub(t3), "base_insert": t5.Sub(t4)} {
					lat[k] = append(lat[k], d)
				}
			}
		}
		for name, l := range lat {
			slices.Sort(l)
			b.ReportMetric(float64(l[len(l)/2].Microseconds())/1000, name+"_p50_ms")
			b.ReportMetric(float64(l[len(l)*99/100].Microseconds())/1000, name+"_p99_ms")
		}
	})
	b.Run("export", func(b *testing.B) {
		var rows int
		t0 := time.Now()
		for b.Loop() {
			w := &countingWriter{header: http.Header{}, sampleAt: 1 << 62}
			req := httptest.NewRequest(http.MethodGet, "/api/audit/events?format=jsonl", nil)
			req.Header.Set("X-Test-Session", listedAuditor)
			req.Header.Set("Sec-Fetch-Site", "same-origin") // as the workspace's pages ask (requireOwnPages)
			e.h.ServeHTTP(w, req)
			if w.lines != n {
				b.Fatalf("exported %d rows, want %d", w.lines, n)
			}
			rows += w.lines
		}
		b.ReportMetric(float64(rows)/time.Since(t0).Seconds(), "rows/s")
	})
	b.Run("scan", func(b *testing.B) {
		var rows int
		t0 := time.Now()
		for b.Loop() {
			rs, err := e.db.QueryContext(ctx, `SELECT position, transaction_id, delivery_id, type, user_id, occurred_at, received_at, body, svix_timestamp, svix_signature FROM events`)
			if err != nil {
				b.Fatal(err)
			}
			var pos, ts int64
			var tx, id, typ, user, body, sig sql.RawBytes
			var occ, rec time.Time
			for rs.Next() {
				if err := rs.Scan(&pos, &tx, &id, &typ, &user, &occ, &rec, &body, &ts, &sig); err != nil {
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
			rep, err := schema.VerifyLog(ctx, e.db, func(note []byte) (translog.Checkpoint, error) {
				return translog.ParseCheckpoint(translog.NoteBody(note))
			})
			if err != nil || !rep.OK || rep.Checked != int64(n) {
				b.Fatalf("%+v %v", rep, err)
			}
			events += rep.Checked
		}
		b.ReportMetric(float64(events)/time.Since(t0).Seconds(), "events/s")
	})
	b.Run("signatures", func(b *testing.B) {
		var events int64
		t0 := time.Now()
		for b.Loop() {
			svc := audit.New(audit.Config{DB: e.db, Verifier: e.verifier, Conns: 8})
			res, err := svc.Verify(ctx, audit.Actor{ID: "bench", Channel: "cli"}, audit.VerifyOptions{Signatures: true})
			if err != nil || !res.OK {
				b.Fatalf("%s %v", res.Message(), err)
			}
			events += res.Signatures.Checked
		}
		b.ReportMetric(float64(events)/time.Since(t0).Seconds(), "events/s")
	})
}

// benchHistory times 300 history requests per iteration, each for a random
// user's 100 events, and reports p50 and p99.
func benchHistory(b *testing.B, e *auditEnv, users int, seed uint64) {
	var lat []time.Duration
	r := rand.New(rand.NewPCG(seed, 2))
	for b.Loop() {
		// 300 samples per iteration, so -benchtime 1x still gives a p99.
		for range 300 {
			uid := fmt.Sprintf("user_%027d", r.IntN(users))
			req := httptest.NewRequest(http.MethodGet, "/api/audit/events?user_id="+uid, nil)
			req.Header.Set("X-Test-Session", listedAuditor)
			req.Header.Set("Sec-Fetch-Site", "same-origin") // as the workspace's pages ask (requireOwnPages)
			rec := httptest.NewRecorder()
			t0 := time.Now()
			e.h.ServeHTTP(rec, req)
			lat = append(lat, time.Since(t0))
			if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"count":100`) {
				b.Fatalf("%d %.200s", rec.Code, rec.Body)
			}
		}
	}
	reportLatency(b, lat)
}

// reportLatency reports the p50 and p99 of lat in milliseconds.
func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
}

// historyServer serves e's ledger over TCP as serve builds it, with Clerk
// session verification, and returns its URL and a session token of the
// listed auditor (valid 60 s).
func historyServer(b *testing.B, e *auditEnv) (string, string) {
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	b.Cleanup(srv.Close)
	sessions, err := clerksession.NewVerifier(clerksession.Config{JWTKey: publicPEM(b, testClerkKey()), PublishableKey: testPublishableKey, AuthorizedParties: []string{srv.URL}})
	if err != nil {
		b.Fatal(err)
	}
	metrics, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	h = NewServer(Deps{
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Verifier: e.verifier, Store: e.store, Ready: e.store, DB: e.db, Auditors: []string{listedAuditor},
		Sessions: sessions, PublishableKey: testPublishableKey, Metrics: metrics, Observer: metrics,
		// serve's default is 20/s per client: one benchmark client asks
		// far faster than an auditor would.
		APIRateLimit: RateLimit{Rate: 100000, Burst: 100000},
	})
	token := mintJWT(b, map[string]any{"alg": "RS256", "typ": "JWT", "kid": "ins_test"}, sessionClaims(listedAuditor, srv.URL), testClerkKey(), nil)
	return srv.URL, token
}
