package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// watchedBody is a request body that counts the bytes the server reads from
// it. With hold set, the first Read returns one byte, closes started and
// then blocks until hold is closed.
type watchedBody struct {
	data    []byte
	off     int
	read    atomic.Int64
	hold    chan struct{}
	started chan struct{}
	once    sync.Once
}

func (b *watchedBody) Read(p []byte) (int, error) {
	if b.off >= len(b.data) {
		return 0, io.EOF
	}
	if b.hold != nil {
		if b.off == 0 {
			p = p[:1]
		} else {
			b.once.Do(func() { close(b.started) })
			<-b.hold
		}
	}
	n := copy(p, b.data[b.off:])
	b.off += n
	b.read.Add(int64(n))
	return n, nil
}

// serveInProcess runs one request through h with body as its body (its
// declared length is contentLength) and returns the recorded answer.
func serveInProcess(h http.Handler, header http.Header, body io.Reader, contentLength int64) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/api/webhooks/clerk", body)
	req.ContentLength = contentLength
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// paddedEvent is a valid user.created envelope of about n bytes.
func paddedEvent(id string, n int) []byte {
	head := fmt.Sprintf(`{"type":"user.created","object":"event","timestamp":%d,"data":{"id":%q,"pad":"`, time.Now().UnixMilli(), id)
	return []byte(head + strings.Repeat("x", max(0, n-len(head)-3)) + `"}}`)
}

// Issue 11, item 3: a delivery whose headers cannot be good (missing, stale,
// malformed) or whose declared length is too large is answered without
// reading one byte of its body, however many arrive at once.
func TestWebhookRefusesBeforeReadingTheBody(t *testing.T) {
	db := schematest.NewDB(t)
	store := schema.NewStore(db)
	_, v, signer := newSigning(t)
	h := NewServer(Deps{Verifier: v, Store: store, Ready: store})
	body := paddedEvent("user_flood", 1<<20-64)
	now := time.Now()
	edit := func(hd http.Header, k, val string) http.Header {
		if val == "" {
			hd.Del(k)
		} else {
			hd.Set(k, val)
		}
		return hd
	}
	cases := []struct {
		name   string
		header func(i int) http.Header
		length int64
		status int
	}{
		{"no Svix headers", func(int) http.Header { return http.Header{"Content-Type": {"application/json"}} }, int64(len(body)), 401},
		{"stale timestamp", func(i int) http.Header {
			return signer.Headers(fmt.Sprint("msg_stale_", i), now.Add(-6*time.Minute), body)
		}, int64(len(body)), 401},
		{"timestamp ahead", func(i int) http.Header {
			return signer.Headers(fmt.Sprint("msg_ahead_", i), now.Add(6*time.Minute), body)
		}, int64(len(body)), 401},
		{"no signature", func(i int) http.Header {
			return edit(signer.Headers(fmt.Sprint("msg_nosig_", i), now, body), "svix-signature", "")
		}, int64(len(body)), 401},
		{"timestamp not a number", func(i int) http.Header {
			return edit(signer.Headers(fmt.Sprint("msg_ts_", i), now, body), "svix-timestamp", "soon")
		}, int64(len(body)), 400},
		{"signature not v1,<base64>", func(i int) http.Header {
			return edit(signer.Headers(fmt.Sprint("msg_sig_", i), now, body), "svix-signature", "v1,\xff")
		}, int64(len(body)), 400},
		{"too many signature entries", func(i int) http.Header {
			return edit(signer.Headers(fmt.Sprint("msg_many_", i), now, body), "svix-signature", strings.Repeat("v1,"+strings.Repeat("A", 43)+"= ", 11))
		}, int64(len(body)), 400},
		{"svix-id not UTF-8", func(i int) http.Header { return signer.Headers(fmt.Sprint("msg_\xff_", i), now, body) }, int64(len(body)), 400},
		{"declared over 1 MiB", func(i int) http.Header { return signer.Headers(fmt.Sprint("msg_big_", i), now, body) }, domain.MaxBodyBytes + 1, 413},
	}
	const copies = 25 // 225 requests at once
	var wg sync.WaitGroup
	type result struct {
		name   string
		status int
		read   int64
		answer string
	}
	results := make(chan result, len(cases)*copies)
	for _, c := range cases {
		for i := range copies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := &watchedBody{data: body}
				rec := serveInProcess(h, c.header(i), b, c.length)
				results <- result{c.name, rec.Code, b.read.Load(), rec.Body.String()}
			}()
		}
	}
	wg.Wait()
	close(results)
	want := map[string]int{}
	for _, c := range cases {
		want[c.name] = c.status
	}
	for r := range results {
		if r.status != want[r.name] {
			t.Errorf("%s: status %d, want %d: %s", r.name, r.status, want[r.name], r.answer)
		}
		if r.read != 0 {
			t.Errorf("%s: the server read %d bytes of the body before refusing it", r.name, r.read)
		}
	}
	if n := countEvents(t, db); n != 0 {
		t.Errorf("%d events stored", n)
	}
}

func countEvents(t testing.TB, db interface {
	Get(any, string, ...any) error
}) int {
	t.Helper()
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM events`); err != nil {
		t.Fatal(err)
	}
	return n
}

// Issue 11, item 3: the bodies being read at once take at most
// WebhookBodyMemory bytes, counted by their Content-Length: a delivery that
// does not fit is answered 503 + Retry-After without reading its body and
// stores nothing; small ones still fit beside a large one; the budget is
// whole again afterwards.
func TestWebhookBoundsBodiesReadAtOnce(t *testing.T) {
	db := schematest.NewDB(t)
	store := schema.NewStore(db)
	_, v, signer := newSigning(t)
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h := NewServer(Deps{Verifier: v, Store: store, Ready: store, Observer: m, Metrics: m, WebhookBodyMemory: MinWebhookBodyMemory})
	post := func(id string, body []byte) *httptest.ResponseRecorder {
		t.Helper()
		return serveInProcess(h, signer.Headers(id, time.Now(), body), bytes.NewReader(body), int64(len(body)))
	}

	// A 600 kB delivery still arriving holds 600 kB of the 1 MiB budget.
	big := paddedEvent("user_big", 600_000)
	hold := make(chan struct{})
	slow := &watchedBody{data: big, hold: hold, started: make(chan struct{})}
	var slowAnswer *httptest.ResponseRecorder
	done := make(chan struct{})
	go func() {
		defer close(done)
		slowAnswer = serveInProcess(h, signer.Headers("msg_big", time.Now(), big), slow, int64(len(big)))
	}()
	select {
	case <-slow.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the large delivery never started reading")
	}
	// A usual few-kB delivery fits beside it.
	small := userCreated(t, "user_small", "small@example.com")
	if rec := post("msg_small", small); rec.Code != http.StatusOK {
		t.Errorf("small delivery beside the large one: %d %s", rec.Code, rec.Body)
	}
	// Another 500 kB one does not.
	second := paddedEvent("user_second", 500_000)
	watched := &watchedBody{data: second}
	rec := serveInProcess(h, signer.Headers("msg_second", time.Now(), second), watched, int64(len(second)))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("over the budget: status %d, Retry-After %q, want 503 with Retry-After: %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if watched.read.Load() != 0 {
		t.Errorf("over the budget: %d bytes of the body read", watched.read.Load())
	}
	var n int
	db.Get(&n, `SELECT count(*) FROM events WHERE delivery_id = 'msg_second'`)
	if n != 0 {
		t.Error("the refused delivery was stored")
	}
	close(hold)
	<-done
	if slowAnswer.Code != http.StatusOK {
		t.Errorf("large delivery: %d %s", slowAnswer.Code, slowAnswer.Body)
	}
	// Svix retries the refused one: the budget is whole again.
	if rec := post("msg_second", second); rec.Code != http.StatusOK {
		t.Errorf("retry after the large one ended: %d %s", rec.Code, rec.Body)
	}
	if n := countEvents(t, db); n != 3 {
		t.Errorf("%d events stored, want 3", n)
	}
	var busy dto.Metric
	if err := m.deliveries.WithLabelValues(OutcomeBusy).Write(&busy); err != nil {
		t.Fatal(err)
	}
	if got := busy.GetCounter().GetValue(); got != 1 {
		t.Errorf("outcome busy counted %v times, want 1", got)
	}
}

// hostileDeliveries are signed deliveries whose values a database column
// refuses (issue 11, item 6), each with the field its 400 must name.
func hostileDeliveries(t *testing.T, e *webhookEnv, round int) []struct {
	name, field string
	header      http.Header
	body        []byte
} {
	t.Helper()
	now := time.Now()
	r := strconv.Itoa(round)
	good := userCreated(t, "user_h"+r, "h@example.com")
	extraEntry := e.signer.Headers("msg_extra_entry_"+r, now, good)
	extraEntry.Set("svix-signature", extraEntry.Get("svix-signature")+" v1,\xff")
	longID := []byte(`{"type":"user.created","object":"event","timestamp":` + strconv.FormatInt(now.UnixMilli(), 10) +
		`,"data":{"id":"user_` + strings.Repeat("x", 4000) + `"}}`)
	year10000 := []byte(`{"type":"user.created","object":"event","timestamp":253402300800000,"data":{"id":"user_y` + r + `"}}`)
	nulType := []byte(`{"type":"user.\u0000created","object":"event","data":{"id":"user_n` + r + `"}}`)
	nulUser := []byte(`{"type":"session.created","object":"event","data":{"id":"sess_1","user_id":"user_\u0000` + r + `"}}`)
	return []struct {
		name, field string
		header      http.Header
		body        []byte
	}{
		{"svix-id not UTF-8", "svix-id", e.signer.Headers("msg_\xff_"+r, now, good), good},
		{"v1,\\xff entry in the signature list", "svix-signature", extraEntry, good},
		{"4,000-character data.id", "data.id", e.signer.Headers("msg_long_id_"+r, now, longID), longID},
		{"timestamp in the year 10000", `"timestamp"`, e.signer.Headers("msg_y10000_"+r, now, year10000), year10000},
		{"NUL in the type", `"type"`, e.signer.Headers("msg_nul_type_"+r, now, nulType), nulType},
		{"NUL in data.user_id", "data.user_id", e.signer.Headers("msg_nul_user_"+r, now, nulUser), nulUser},
	}
}

// Issue 11, item 6: a signed delivery with a value the database refuses is a
// 400 naming the field and stores nothing; innocent deliveries arriving at
// the same time (so sharing its group commits) are all stored.
func TestWebhookHostileValuesAre400AndSpareOthers(t *testing.T) {
	e := newWebhookEnv(t)
	for _, h := range hostileDeliveries(t, e, 0) {
		res, a := e.post(t, h.header, h.body)
		var eb errorBody
		json.Unmarshal(a, &eb)
		if res.StatusCode != http.StatusBadRequest || eb.Error.Code != domain.EINVALID || !strings.Contains(eb.Error.Message, h.field) {
			t.Errorf("%s: %d %s, want 400 naming %s", h.name, res.StatusCode, a, h.field)
		}
	}
	if n := e.count(t); n != 0 {
		t.Fatalf("%d hostile deliveries stored", n)
	}
	const innocents = 60
	for round := 1; round <= 3; round++ {
		var wg sync.WaitGroup
		start := make(chan struct{})
		var failed atomic.Int64
		for i := range innocents {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("msg_innocent_%d_%d", round, i)
				body := userCreated(t, fmt.Sprintf("user_i%d_%d", round, i), "i@example.com")
				h := e.signer.Headers(id, time.Now(), body)
				<-start
				if res, a := e.post(t, h, body); res.StatusCode != http.StatusOK {
					failed.Add(1)
					t.Errorf("round %d: innocent %s: %d %s", round, id, res.StatusCode, a)
				}
			}()
		}
		for _, h := range hostileDeliveries(t, e, round) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if res, a := e.post(t, h.header, h.body); res.StatusCode != http.StatusBadRequest {
					t.Errorf("round %d: %s: %d %s, want 400", round, h.name, res.StatusCode, a)
				}
			}()
		}
		close(start)
		wg.Wait()
		if failed.Load() > 0 {
			t.Errorf("round %d: %d of %d innocent deliveries failed", round, failed.Load(), innocents)
		}
	}
	if n := e.count(t); n != 3*innocents {
		t.Errorf("%d events stored, want %d (every innocent one, no hostile one)", n, 3*innocents)
	}
}

// Issue 11, item 11: a database that refuses connections (ALLOW_CONNECTIONS
// false: SQLSTATE 55000) is an outage: 503 + Retry-After, nothing stored;
// once it accepts connections again Svix's retry is stored.
func TestWebhookDatabaseRefusingConnectionsAnswers503(t *testing.T) {
	dsn := schematest.NewURL(t)
	db := schematest.Open(t, dsn)
	if _, err := schema.Migrate(context.Background(), db.DB); err != nil {
		t.Fatal(err)
	}
	e := newWebhookEnvOn(t, db, schema.NewStore(db))
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	admin := schematest.Open(t, schematest.ServerURL())
	allow := func(on bool) {
		t.Helper()
		if _, err := admin.Exec(`ALTER DATABASE "` + name + `" ALLOW_CONNECTIONS ` + strconv.FormatBool(on)); err != nil {
			t.Fatal(err)
		}
	}
	allow(false)
	t.Cleanup(func() { admin.Exec(`ALTER DATABASE "` + name + `" ALLOW_CONNECTIONS true`) })
	// The pool's open connections would still work: end them, so the next
	// append needs a new connection, which the server refuses.
	if _, err := admin.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, name); err != nil {
		t.Fatal(err)
	}
	body := userCreated(t, "user_refused", "refused@example.com")
	res, a := e.deliver(t, "msg_refused", body)
	var eb errorBody
	json.Unmarshal(a, &eb)
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" || eb.Error.Code != domain.EUNAVAILABLE {
		t.Fatalf("database refusing connections: %d (Retry-After %q) %s, want 503 + Retry-After", res.StatusCode, res.Header.Get("Retry-After"), a)
	}
	allow(true)
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, a = e.deliver(t, "msg_refused", body)
		if res.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after connections are allowed again: %d %s", res.StatusCode, a)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(string(a), `"stored"`) {
		t.Errorf("retry answered %s, want stored (nothing was stored while refused)", a)
	}
	if n := e.count(t); n != 1 {
		t.Errorf("%d events, want 1", n)
	}
}

// Issue 11, item 12: a redelivery with the same svix-id and another body is
// answered 200 like a duplicate (the first body stays), but counted and
// logged as its own outcome, conflict; the body is never logged.
func TestWebhookRedeliveryWithAnotherBodyIsAConflict(t *testing.T) {
	e := newMetricsEnv(t)
	first := userCreated(t, "user_c", "c@example.com")
	second, err := clerkgen.Event("user.updated", clerkgen.User{ID: "user_c", Email: "c@example.com", FirstName: "Conflicting-Name"}, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		Status   string `json:"status"`
		Conflict *bool  `json:"conflict"`
	}
	post := func(body []byte) answer {
		t.Helper()
		res, a := e.deliver(t, "msg_conflict", body)
		var ans answer
		if res.StatusCode != http.StatusOK || json.Unmarshal(a, &ans) != nil {
			t.Fatalf("%d %s", res.StatusCode, a)
		}
		return ans
	}
	if a := post(first); a.Status != "stored" || a.Conflict != nil {
		t.Fatalf("first delivery: %+v", a)
	}
	if a := post(first); a.Status != "duplicate" || a.Conflict != nil {
		t.Errorf("same body again: %+v, want a plain duplicate", a)
	}
	if a := post(second); a.Status != "duplicate" || a.Conflict == nil || !*a.Conflict {
		t.Errorf("another body: %+v, want status duplicate with conflict true", a)
	}
	var stored string
	if err := e.db.Get(&stored, `SELECT body FROM events WHERE delivery_id = 'msg_conflict'`); err != nil {
		t.Fatal(err)
	}
	if stored != string(first) {
		t.Error("the stored body changed")
	}
	if n := e.count(t); n != 1 {
		t.Errorf("%d events, want 1", n)
	}
	got, _ := scrapeMetrics(t, e.srv.URL)
	for o, want := range map[string]float64{"stored": 1, "duplicate": 1, "conflict": 1} {
		if v := got[`ledger_webhook_deliveries_total{outcome="`+o+`"}`]; v != want {
			t.Errorf("outcome %s counted %v, want %v", o, v, want)
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"outcome":"conflict"`) || !strings.Contains(logs, `"delivery_id":"msg_conflict"`) {
		t.Errorf("no conflict log line:\n%s", logs)
	}
	if strings.Contains(logs, "Conflicting-Name") || strings.Contains(logs, "c@example.com") {
		t.Errorf("the logs hold the body:\n%s", logs)
	}
}

// Issue 11, item 14: Clerk's published examples carry "timestamp" in
// seconds; such an event's occurred_at is that second, not a day of 1970.
// An envelope time later than a day after the svix-timestamp is not
// believed; an old one (a replay) is.
func TestWebhookOccurredAtFromImplausibleTimestamps(t *testing.T) {
	e := newWebhookEnv(t)
	now := time.Now().Truncate(time.Second)
	cases := []struct {
		name      string
		timestamp string
		want      time.Time
	}{
		{"seconds, as in Clerk's examples", "1716883200", time.Unix(1716883200, 0)},
		{"milliseconds", "1716883200123", time.UnixMilli(1716883200123)},
		{"a replay, three days old", strconv.FormatInt(now.Add(-72*time.Hour).UnixMilli(), 10), now.Add(-72 * time.Hour)},
		{"a week ahead of the svix-timestamp", strconv.FormatInt(now.Add(7*24*time.Hour).UnixMilli(), 10), now},
		{"absent", "0", now},
	}
	for i, c := range cases {
		body := []byte(`{"type":"user.updated","object":"event","timestamp":` + c.timestamp + `,"data":{"id":"user_ts","object":"user"}}`)
		id := fmt.Sprint("msg_ts_", i)
		if res, a := e.post(t, e.signer.Headers(id, now, body), body); res.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", c.name, res.StatusCode, a)
		}
		var got time.Time
		if err := e.db.Get(&got, `SELECT occurred_at FROM events WHERE delivery_id = $1`, id); err != nil {
			t.Fatal(err)
		}
		if !got.Equal(c.want) {
			t.Errorf("%s: occurred_at %s, want %s", c.name, got.UTC(), c.want.UTC())
		}
	}
}

// Issue 11, item 15: billing events name their user in data.payer.user_id;
// they are stored with that user id (so they show in the user's history).
func TestWebhookBillingEventsNameTheirPayer(t *testing.T) {
	e := newWebhookEnv(t)
	cases := map[string]string{
		`{"type":"subscription.created","object":"event","timestamp":1716883200000,"data":{"id":"csub_1","object":"commerce_subscription","status":"active","payer":{"id":"cpayer_1","user_id":"user_payer","email":"p@example.com"},"items":[]}}`: "user_payer",
		`{"type":"subscriptionItem.active","object":"event","timestamp":1716883200000,"data":{"id":"csubi_1","object":"commerce_subscription_item","payer":{"id":"cpayer_2","user_id":"user_item"}}}`:                                              "user_item",
		`{"type":"paymentAttempt.updated","object":"event","timestamp":1716883200000,"data":{"id":"cpa_1","object":"commerce_payment_attempt","status":"paid","payer":{"id":"cpayer_3","user_id":"user_paid"}}}`:                                   "user_paid",
		`{"type":"subscription.updated","object":"event","timestamp":1716883200000,"data":{"id":"csub_2","object":"commerce_subscription","payer":{"id":"cpayer_4","organization_id":"org_1"}}}`:                                                   "",
	}
	i := 0
	for body, want := range cases {
		i++
		id := fmt.Sprint("msg_billing_", i)
		if res, a := e.deliver(t, id, []byte(body)); res.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", body, res.StatusCode, a)
		}
		var got string
		if err := e.db.Get(&got, `SELECT COALESCE(user_id, '') FROM events WHERE delivery_id = $1`, id); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s: user_id %q, want %q", body[:40], got, want)
		}
	}
}
