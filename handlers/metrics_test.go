package handlers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsEnv is the service with its HTTP metrics on a private registry and
// JSON logs, over a fresh database reached through a proxy the test can
// take down.
type metricsEnv struct {
	*webhookEnv
	logs  *logBuffer
	proxy *schematest.Proxy
}

func newMetricsEnv(t *testing.T) *metricsEnv {
	t.Helper()
	dsn := schematest.NewURL(t)
	db := schematest.Open(t, dsn)
	if _, err := schema.Migrate(context.Background(), db.DB); err != nil {
		t.Fatal(err)
	}
	proxy := schematest.NewProxy(t, dsn)
	store := schema.NewStore(schematest.Open(t, proxy.URL(dsn)))
	store.AppendTimeout = 2 * time.Second
	secret, v, signer := newSigning(t)
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	store.OnCommit = m.ObserveCommit
	logs := &logBuffer{}
	srv := httptest.NewServer(NewServer(Deps{
		Log:      slog.New(slog.NewJSONHandler(logs, nil)),
		Verifier: v,
		Store:    m.TimeAppends(store),
		Ready:    store,
		Observer: m,
		Metrics:  m,
		DB:       db,
		// The test client is the "proxy" whose request ids are kept.
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	}))
	t.Cleanup(srv.Close)
	return &metricsEnv{webhookEnv: &webhookEnv{srv: srv, db: db, signer: signer, secret: secret}, logs: logs, proxy: proxy}
}

// scrapeMetrics GETs /metrics and returns every sample as
// `name{label="value",...}` -> value (histograms as _count and _sum).
func scrapeMetrics(t *testing.T, url string) (map[string]float64, string) {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	text, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %s", res.StatusCode, text)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v\n%s", err, text)
	}
	out := map[string]float64{}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := func(suffix string) string {
				if len(labels) == 0 {
					return name + suffix
				}
				return name + suffix + "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key("")] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key("")] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[key("_count")] = float64(m.GetHistogram().GetSampleCount())
				out[key("_sum")] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out, string(text)
}

func TestMetricsCountDeliveriesByOutcome(t *testing.T) {
	e := newMetricsEnv(t)
	deliver := func(id string, body []byte, want int) {
		t.Helper()
		if res, a := e.deliver(t, id, body); res.StatusCode != want {
			t.Fatalf("delivery %s: status %d, want %d: %s", id, res.StatusCode, want, a)
		}
	}
	// Before any delivery every outcome is already there, at 0.
	got, _ := scrapeMetrics(t, e.srv.URL)
	for _, o := range []string{"stored", "duplicate", "conflict", "invalid_signature", "too_large", "malformed", "busy", "unavailable", "rate_limited", "error"} {
		if v, ok := got[`ledger_webhook_deliveries_total{outcome="`+o+`"}`]; !ok || v != 0 {
			t.Errorf("outcome %s before any delivery: %v (present %v), want 0", o, v, ok)
		}
	}

	m1 := userCreated(t, "user_m1", "m1@example.com")
	deliver("msg_m1", m1, http.StatusOK)
	deliver("msg_m2", userCreated(t, "user_m2", "m2@example.com"), http.StatusOK)
	deliver("msg_m1", m1, http.StatusOK)                                       // redelivery
	deliver("msg_m1", append([]byte(`{"other":1,`), m1[1:]...), http.StatusOK) // same svix-id, another body
	deliver("msg_m4", []byte(`{"hello":"not a Clerk event"}`), http.StatusBadRequest)
	body := userCreated(t, "user_m5", "m5@example.com")
	if res, _ := e.post(t, e.signer.Headers("msg_m5", time.Now(), []byte(`{"other":"body"}`)), body); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged delivery: %d", res.StatusCode)
	}
	big := bytes.Repeat([]byte("x"), domain.MaxBodyBytes+1)
	if res, _ := e.post(t, e.signer.Headers("msg_m6", time.Now(), big), big); res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("huge delivery: %d", res.StatusCode)
	}
	if res, _ := http.Get(e.srv.URL + "/no/such/page/12345"); res != nil {
		res.Body.Close()
	}
	e.proxy.Down()
	deliver("msg_m7", userCreated(t, "user_m7", "m7@example.com"), http.StatusServiceUnavailable)

	got, text := scrapeMetrics(t, e.srv.URL)
	want := map[string]float64{
		`ledger_webhook_deliveries_total{outcome="stored"}`:            2,
		`ledger_webhook_deliveries_total{outcome="duplicate"}`:         1,
		`ledger_webhook_deliveries_total{outcome="conflict"}`:          1,
		`ledger_webhook_deliveries_total{outcome="malformed"}`:         1,
		`ledger_webhook_deliveries_total{outcome="invalid_signature"}`: 1,
		`ledger_webhook_deliveries_total{outcome="too_large"}`:         1,
		`ledger_webhook_deliveries_total{outcome="unavailable"}`:       1,
		`ledger_webhook_deliveries_total{outcome="error"}`:             0,

		`ledger_http_request_duration_seconds_count{code="200",route="POST /api/webhooks/clerk"}`: 4,
		`ledger_http_request_duration_seconds_count{code="400",route="POST /api/webhooks/clerk"}`: 1,
		`ledger_http_request_duration_seconds_count{code="401",route="POST /api/webhooks/clerk"}`: 1,
		`ledger_http_request_duration_seconds_count{code="413",route="POST /api/webhooks/clerk"}`: 1,
		`ledger_http_request_duration_seconds_count{code="503",route="POST /api/webhooks/clerk"}`: 1,
		`ledger_http_request_duration_seconds_count{code="404",route="/"}`:                        1,
		`ledger_http_request_duration_seconds_count{code="200",route="GET /metrics"}`:             1,

		`ledger_append_duration_seconds_count{result="ok"}`:          4,
		`ledger_append_duration_seconds_count{result="unavailable"}`: 1,

		// One at a time: each delivery is its own group commit.
		`ledger_group_commit_duration_seconds_count{result="ok"}`:    4,
		`ledger_group_commit_duration_seconds_count{result="error"}`: 1,
		`ledger_group_commit_deliveries_count`:                       5,
		`ledger_group_commit_deliveries_sum`:                         5,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if got[`ledger_append_duration_seconds_sum{result="ok"}`] <= 0 {
		t.Error("append latency sum is 0")
	}
	// Routes are patterns, never raw paths: the label set stays bounded.
	if strings.Contains(text, "/no/such/page") {
		t.Error("a raw request path is a label value")
	}
	for _, s := range []string{"m1@example.com", "user_m1", "msg_m1"} {
		if strings.Contains(text, s) {
			t.Errorf("/metrics shows %q", s)
		}
	}
}

// TestRequestIDEchoedOrGenerated: a valid id from a trusted proxy is kept;
// an invalid one, or any id from a peer that is not a trusted proxy, is
// replaced by a new one.
func TestRequestIDEchoedOrGenerated(t *testing.T) {
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	srv := httptest.NewServer(NewServer(Deps{TrustedProxies: loopback}))
	t.Cleanup(srv.Close)
	direct := httptest.NewServer(NewServer(Deps{}))
	t.Cleanup(direct.Close)
	if got := getRequestID(t, direct.URL, "abc-123"); got == "abc-123" || !validRequestID(got) {
		t.Errorf("a client that is not a trusted proxy chose its request id: %q", got)
	}
	get := func(id string) string { return getRequestID(t, srv.URL, id) }
	for _, id := range []string{"abc-123", "req_2024.01.02:7", strings.Repeat("a", 128)} {
		if got := get(id); got != id {
			t.Errorf("request id %q answered as %q, want it echoed", id, got)
		}
	}
	a, b := get(""), get("")
	if !validRequestID(a) || !validRequestID(b) || a == b || len(a) < 16 {
		t.Errorf("generated ids %q and %q: want two different valid ids", a, b)
	}
	for _, bad := range []string{strings.Repeat("a", 129), "has space", "semi;colon", `quote"d`, "ünïcode", "a=b"} {
		got := get(bad)
		if got == bad || !validRequestID(got) {
			t.Errorf("request id %q answered as %q, want a new valid id", bad, got)
		}
	}
}

// getRequestID GETs /healthz at url with X-Request-Id id (none when "") and
// returns the answer's X-Request-Id.
func getRequestID(t *testing.T, url, id string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/healthz", nil)
	if id != "" {
		req.Header.Set("X-Request-Id", id)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.Header.Get("X-Request-Id")
}

// Every log line of a request carries its request_id, in JSON; no payload,
// email or secret is logged.
func TestRequestIDInJSONLogs(t *testing.T) {
	e := newMetricsEnv(t)
	body, err := clerkgen.Event("user.created", clerkgen.User{ID: "user_log", Email: "grace@example.com", FirstName: "Grace", LastName: "Hopper-Unique"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h := e.signer.Headers("msg_log", time.Now(), body)
	h.Set("X-Request-Id", "req-log-1")
	if res, a := e.post(t, h, body); res.StatusCode != http.StatusOK || res.Header.Get("X-Request-Id") != "req-log-1" {
		t.Fatalf("status %d, X-Request-Id %q: %s", res.StatusCode, res.Header.Get("X-Request-Id"), a)
	}
	// A request without an id gets one, and its log line has the same.
	h = e.signer.Headers("msg_log2", time.Now(), []byte(`{"not":"an envelope"}`))
	res, _ := e.post(t, h, []byte(`{"not":"an envelope"}`))
	generated := res.Header.Get("X-Request-Id")
	// A 5xx is logged once, on the delivery's line with its error and id.
	e.proxy.Down()
	h = e.signer.Headers("msg_log3", time.Now(), body)
	h.Set("X-Request-Id", "req-log-3")
	if res, _ := e.post(t, h, body); res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("database down: %d", res.StatusCode)
	}

	idsByDelivery := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(e.logs.String()))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		id, _ := line["request_id"].(string)
		if id == "" {
			t.Errorf("log line without request_id: %s", sc.Text())
		}
		if line["msg"] == "webhook delivery" {
			d, _ := line["delivery_id"].(string)
			idsByDelivery[d] = append(idsByDelivery[d], id)
			if d == "msg_log3" && (line["level"] != "ERROR" || line["err"] == nil) {
				t.Errorf("the failed delivery's line lacks level ERROR and its err: %s", sc.Text())
			}
		} else if id == "req-log-3" {
			t.Errorf("the failed delivery is logged twice: %s", sc.Text())
		}
	}
	wantIDs := map[string]string{"msg_log": "req-log-1", "msg_log2": generated, "msg_log3": "req-log-3"}
	for d, id := range wantIDs {
		if got := idsByDelivery[d]; len(got) != 1 || got[0] != id {
			t.Errorf("%s logged with request ids %v, want [%s]", d, got, id)
		}
	}
	logs := e.logs.String()
	for _, s := range []string{"grace@example.com", "Hopper-Unique", "an envelope", e.secret[6:], h.Get("svix-signature")} {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain %q:\n%s", s, logs)
		}
	}
}

// A group commit is counted by result: ok, error, resealed (a new user's
// data key was stored already: the group was sealed again under it and
// inserted once more) or redelivered (a delivery of the group was stored
// already: the group was inserted once more skipping it), so fallbacks do
// not look like failed commits.
func TestObserveCommitResults(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveCommit(3, time.Millisecond, nil)
	m.ObserveCommit(2, time.Millisecond, fmt.Errorf("publish: %w", schema.ErrKeyRowTaken))
	m.ObserveCommit(2, time.Millisecond, fmt.Errorf("publish: %w", io.ErrUnexpectedEOF))
	m.ObserveCommit(4, time.Millisecond, fmt.Errorf("publish: %w", schema.ErrDeliveryTaken))
	m.ObserveCommit(1, time.Millisecond, nil)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	got, text := scrapeMetrics(t, srv.URL)
	for result, want := range map[string]float64{"ok": 2, "resealed": 1, "redelivered": 1, "error": 1} {
		if n := got[`ledger_group_commit_duration_seconds_count{result="`+result+`"}`]; n != want {
			t.Errorf("group commits with result %s: %v, want %v\n%s", result, n, want, text)
		}
	}
	// A group tried again is counted when it is inserted again.
	if n := got["ledger_group_commit_deliveries_count"]; n != 3 {
		t.Errorf("group sizes observed: %v, want 3 (not the resealed or redelivered attempt)\n%s", n, text)
	}
}
