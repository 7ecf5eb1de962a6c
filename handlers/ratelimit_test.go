package handlers

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// fakeClock is a settable clock for Deps.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// outcomes records ObserveDelivery calls.
type outcomes struct {
	mu   sync.Mutex
	seen map[string]int
}

func (o *outcomes) ObserveDelivery(outcome, _ string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.seen == nil {
		o.seen = map[string]int{}
	}
	o.seen[outcome]++
}

func (o *outcomes) count(outcome string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seen[outcome]
}

// serveFrom serves GET path on h as a client at remote (ip:port) with the
// given X-Forwarded-For (none when "").
func serveFrom(h http.Handler, remote, xff, path string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = remote
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestRateLimitAPI: past its burst a client gets 429 JSON with a
// Retry-After that is enough; other clients, pages and health checks are not
// throttled; X-Forwarded-For counts only from trusted proxies, read from
// the right.
func TestRateLimitAPI(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	h := NewServer(Deps{Now: clock.Now, APIRateLimit: RateLimit{Rate: 0.5, Burst: 3},
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	const a, b = "198.51.100.1:5000", "198.51.100.2:5000"
	for i := range 3 {
		if rec := serveFrom(h, a, "", "/api/me"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("request %d within the burst: %d %s", i, rec.Code, rec.Body)
		}
	}
	rec := serveFrom(h, a, "", "/api/me")
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("over the limit: %d, want 429", rec.Code)
	}
	if ra := rec.Header().Get("Retry-After"); ra != "2" {
		t.Errorf("Retry-After %q, want 2 (one token at 0.5/s)", ra)
	}
	var eb errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code != domain.ERATELIMIT {
		t.Errorf("429 body %q is not the JSON error shape", rec.Body)
	}
	if rec.Header().Get("Content-Security-Policy") == "" {
		t.Error("429 without the security headers")
	}
	// The client's own X-Forwarded-For does not make it someone else.
	if rec := serveFrom(h, a, "203.0.113.50", "/api/audit/events"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("spoofed X-Forwarded-For from an untrusted peer: %d, want 429", rec.Code)
	}
	// Another client, pages and health are not throttled.
	if rec := serveFrom(h, b, "", "/api/me"); rec.Code != http.StatusUnauthorized {
		t.Errorf("another client: %d", rec.Code)
	}
	for _, p := range []string{"/healthz", "/static/app.css", "/nowhere"} {
		if rec := serveFrom(h, a, "", p); rec.Code == http.StatusTooManyRequests {
			t.Errorf("%s throttled", p)
		}
	}
	// After Retry-After the client gets one more request.
	clock.Add(2 * time.Second)
	if rec := serveFrom(h, a, "", "/api/me"); rec.Code != http.StatusUnauthorized {
		t.Errorf("after Retry-After: %d", rec.Code)
	}
	if rec := serveFrom(h, a, "", "/api/me"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("right after: %d, want 429", rec.Code)
	}

	// Behind a trusted proxy: the rightmost untrusted X-Forwarded-For entry
	// is the client; entries left of it (client-written) are ignored.
	const proxy = "10.1.2.3:443"
	for i := range 3 {
		if rec := serveFrom(h, proxy, "spoof-"+strconv.Itoa(i)+", 192.0.2.7, 10.9.9.9", "/api/me"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("via proxy %d: %d", i, rec.Code)
		}
	}
	if rec := serveFrom(h, proxy, "192.0.2.99, 192.0.2.7", "/api/me"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("same client via proxy: %d, want 429", rec.Code)
	}
	if rec := serveFrom(h, proxy, "192.0.2.8", "/api/me"); rec.Code != http.StatusUnauthorized {
		t.Errorf("another client via proxy: %d", rec.Code)
	}
}

// TestRateLimitDisabled: zero limits (LEDGER_*_RATE_LIMIT=0) throttle nothing.
func TestRateLimitDisabled(t *testing.T) {
	h := NewServer(Deps{})
	for i := range 500 {
		if rec := serveFrom(h, "198.51.100.1:1", "", "/api/me"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("request %d: %d", i, rec.Code)
		}
	}
}

// TestRateLimitedDeliveryRetriedStoredOnce: a signed delivery refused with
// 429 is not stored, is logged and counted, and Svix's retry after
// Retry-After stores it exactly once; later retries are duplicates.
func TestRateLimitedDeliveryRetriedStoredOnce(t *testing.T) {
	db := schematest.NewDB(t)
	store := schema.NewStore(db)
	secret, v, signer := newSigning(t)
	clock := &fakeClock{t: time.Now()}
	obs := &outcomes{}
	logs := &logBuffer{}
	srv := httptest.NewServer(NewServer(Deps{Log: slog.New(slog.NewTextHandler(logs, nil)), Verifier: v, Store: store, Ready: store,
		Observer: obs, Now: clock.Now, WebhookRateLimit: RateLimit{Rate: 0.1, Burst: 1}}))
	t.Cleanup(srv.Close)
	e := &webhookEnv{srv: srv, db: db, signer: signer, secret: secret}

	if res, a := e.deliver(t, "msg_first", userCreated(t, "user_rl1", "a@example.com")); res.StatusCode != http.StatusOK {
		t.Fatalf("first: %d %s", res.StatusCode, a)
	}
	body := userCreated(t, "user_rl2", "b@example.com")
	res, a := e.deliver(t, "msg_limited", body)
	if res.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(a), `"rate_limited"`) {
		t.Fatalf("over the limit: %d %s", res.StatusCode, a)
	}
	wait, err := strconv.Atoi(res.Header.Get("Retry-After"))
	if err != nil || wait != 10 {
		t.Fatalf("Retry-After %q, want 10", res.Header.Get("Retry-After"))
	}
	if n := e.count(t); n != 1 {
		t.Fatalf("%d rows after the 429, want 1", n)
	}
	if obs.count(OutcomeRateLimited) != 1 || !strings.Contains(logs.String(), "msg_limited") || !strings.Contains(logs.String(), "outcome=rate_limited") {
		t.Errorf("the refused delivery was not counted and logged: %v\n%s", obs.seen, logs)
	}
	clock.Add(time.Duration(wait) * time.Second)
	if res, a := e.deliver(t, "msg_limited", body); res.StatusCode != http.StatusOK || !strings.Contains(string(a), `"stored"`) {
		t.Fatalf("retry after Retry-After: %d %s", res.StatusCode, a)
	}
	clock.Add(time.Duration(wait) * time.Second)
	if res, a := e.deliver(t, "msg_limited", body); res.StatusCode != http.StatusOK || !strings.Contains(string(a), `"duplicate"`) {
		t.Fatalf("second retry: %d %s", res.StatusCode, a)
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM events WHERE delivery_id = 'msg_limited'`); err != nil || n != 1 {
		t.Fatalf("msg_limited stored %d times (%v), want 1", n, err)
	}
	if n := e.count(t); n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
}

// TestIPLimiterBounded: however many addresses call, the bucket table
// never holds more than its bound; beyond it new clients share one overflow
// bucket, and a throttled client is not evicted to come back with a full
// burst; idle buckets are swept inline; IPv6 clients share a bucket per /64.
func TestIPLimiterBounded(t *testing.T) {
	l := newIPLimiter(RateLimit{Rate: 1, Burst: 1}, 100)
	now := time.Now()
	addr := func(i int) netip.Prefix {
		return bucketKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), true)
	}
	if ok, _, _ := l.allow(addr(0), now); !ok {
		t.Fatal("first client refused")
	}
	if ok, _, _ := l.allow(addr(0), now); ok {
		t.Fatal("client 0 not throttled after its burst")
	}
	refused := 0
	for i := 1; i < 10000; i++ {
		ok, _, _ := l.allow(addr(i), now)
		switch {
		case i < 100 && !ok:
			t.Fatalf("client %d refused while the table has room", i)
		case !ok:
			refused++
		}
		if n := l.size(); n > 100 {
			t.Fatalf("%d buckets after %d clients, bound 100", n, i+1)
		}
	}
	// Clients 100..9999 shared the overflow bucket: one burst between them.
	if refused != 9900-1 {
		t.Errorf("%d overflow clients refused, want %d", refused, 9900-1)
	}
	if ok, _, _ := l.allow(addr(0), now); ok {
		t.Error("throttled client 0 got a fresh burst after the table filled")
	}
	// Idle buckets are forgotten by the next request once idle has passed.
	now = now.Add(l.idle)
	l.allow(bucketKey(netip.MustParseAddr("192.0.2.1"), true), now)
	if n := l.size(); n != 1 {
		t.Errorf("%d buckets after the idle sweep, want 1", n)
	}
	// One /64 is one client.
	k1 := bucketKey(netip.MustParseAddr("2001:db8:1:2::1"), true)
	k2 := bucketKey(netip.MustParseAddr("2001:db8:1:2:ffff::9"), true)
	if ok, _, _ := l.allow(k1, now); !ok {
		t.Fatal("first IPv6 request refused")
	}
	if ok, wait, first := l.allow(k2, now); ok || wait <= 0 || !first {
		t.Errorf("same /64: ok=%v wait=%v first=%v, want refused", ok, wait, first)
	}
	if _, _, first := l.allow(k2, now); first {
		t.Error("second refusal in a row reported as a new episode")
	}
}
