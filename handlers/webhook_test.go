package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/svixsig"
	"github.com/jmoiron/sqlx"
)

// webhookEnv is a real service over a fresh database: the webhook handler,
// the Postgres-backed store and a signer holding the service's secret.
type webhookEnv struct {
	srv    *httptest.Server
	db     *sqlx.DB
	signer *clerkgen.Signer
	secret string
}

func newWebhookEnv(t *testing.T) *webhookEnv {
	t.Helper()
	db := schematest.NewDB(t)
	return newWebhookEnvOn(t, db, schema.NewStore(db))
}

func newWebhookEnvOn(t *testing.T, db *sqlx.DB, store *schema.Store) *webhookEnv {
	t.Helper()
	secret, v, signer := newSigning(t)
	srv := httptest.NewServer(NewServer(Deps{Verifier: v, Store: store, Ready: store}))
	t.Cleanup(srv.Close)
	return &webhookEnv{srv: srv, db: db, signer: signer, secret: secret}
}

func (e *webhookEnv) post(t testing.TB, h http.Header, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/api/webhooks/clerk", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

// deliver signs body as Svix does (now) and posts it.
func (e *webhookEnv) deliver(t testing.TB, id string, body []byte) (*http.Response, []byte) {
	t.Helper()
	return e.post(t, e.signer.Headers(id, time.Now(), body), body)
}

func (e *webhookEnv) count(t testing.TB) int {
	t.Helper()
	var n int
	if err := e.db.Get(&n, `SELECT count(*) FROM events`); err != nil {
		t.Fatal(err)
	}
	return n
}

func userCreated(t testing.TB, id, email string) []byte {
	t.Helper()
	b, err := clerkgen.Event("user.created", clerkgen.User{ID: id, Email: email, FirstName: "Ada", LastName: "Lovelace"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWebhookStoresExactVerifiedBytes(t *testing.T) {
	e := newWebhookEnv(t)
	// Odd but valid JSON formatting must survive byte for byte.
	body := []byte("{ \"type\" : \"user.created\",\n  \"object\":\"event\", \"timestamp\": 1716883200123,\n \"data\": {\"id\":\"user_2abc\", \"first_name\": \"Zoë\", \"email_addresses\": [] } }\n")
	at := time.Now()
	h := e.signer.Headers("msg_exact", at, body)
	res, answer := e.post(t, h, body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, answer)
	}
	if !strings.Contains(string(answer), `"stored"`) {
		t.Errorf("answer %s, want status stored", answer)
	}
	var row struct {
		Body     string    `db:"body"`
		Type     string    `db:"type"`
		UserID   string    `db:"user_id"`
		Occurred time.Time `db:"occurred_at"`
		SvixTS   int64     `db:"svix_timestamp"`
		SvixSig  string    `db:"svix_signature"`
		Delivery string    `db:"delivery_id"`
		Received time.Time `db:"received_at"`
	}
	if err := e.db.Get(&row, `SELECT body, type, user_id, occurred_at, svix_timestamp, svix_signature, delivery_id, received_at FROM events`); err != nil {
		t.Fatal(err)
	}
	if row.Body != string(body) {
		t.Errorf("stored body differs:\n got %q\nwant %q", row.Body, body)
	}
	if row.Type != "user.created" || row.UserID != "user_2abc" || row.Delivery != "msg_exact" {
		t.Errorf("row = %+v", row)
	}
	if !row.Occurred.Equal(time.UnixMilli(1716883200123)) {
		t.Errorf("occurred_at = %v, want the envelope timestamp", row.Occurred)
	}
	if row.SvixTS != at.Unix() || row.SvixSig != h.Get("svix-signature") {
		t.Errorf("svix headers not stored as sent: %d %q", row.SvixTS, row.SvixSig)
	}
	if time.Since(row.Received) > time.Minute {
		t.Errorf("received_at = %v", row.Received)
	}
	// The stored row re-verifies: proof that these are the bytes Clerk signed.
	v, _ := svixsig.NewVerifier([]string{e.secret})
	stored := http.Header{}
	stored.Set("svix-id", row.Delivery)
	stored.Set("svix-timestamp", strconv.FormatInt(row.SvixTS, 10))
	stored.Set("svix-signature", row.SvixSig)
	if err := v.VerifyIgnoringTimestamp([]byte(row.Body), stored); err != nil {
		t.Errorf("stored delivery does not re-verify: %v", err)
	}
}

func TestWebhookRejectsBadInputAndStoresNothing(t *testing.T) {
	e := newWebhookEnv(t)
	other, _ := clerkgen.NewSigner(clerkgen.NewSecret())
	good := userCreated(t, "user_1", "a@example.com")
	now := time.Now()
	big := append([]byte(`{"type":"user.created","data":{"id":"user_1","pad":"`), bytes.Repeat([]byte("x"), 1<<20)...)
	big = append(big, []byte(`"}}`)...)
	without := func(h http.Header, k string) http.Header { h.Del(k); return h }
	with := func(h http.Header, k, v string) http.Header { h.Set(k, v); return h }

	cases := []struct {
		name   string
		header http.Header
		body   []byte
		status int
		code   string
	}{
		{"too large", e.signer.Headers("msg_big", now, big), big, 413, "too_large"},
		{"no signature headers", http.Header{"Content-Type": {"application/json"}}, good, 401, "unauthorized"},
		{"no svix-id", without(e.signer.Headers("msg_a", now, good), "svix-id"), good, 401, "unauthorized"},
		{"no svix-signature", without(e.signer.Headers("msg_a", now, good), "svix-signature"), good, 401, "unauthorized"},
		{"bad timestamp", with(e.signer.Headers("msg_a", now, good), "svix-timestamp", "yesterday"), good, 400, "invalid"},
		{"signed with another secret", other.Headers("msg_a", now, good), good, 401, "unauthorized"},
		{"signature of another body", e.signer.Headers("msg_a", now, []byte(`{}`)), good, 401, "unauthorized"},
		{"signature for another id", with(e.signer.Headers("msg_a", now, good), "svix-id", "msg_b"), good, 401, "unauthorized"},
		{"garbage signature", with(e.signer.Headers("msg_a", now, good), "svix-signature", "v1,AAAA v2,zzz nonsense"), good, 400, "invalid"},
		{"well-formed wrong signature", with(e.signer.Headers("msg_a", now, good), "svix-signature", "v1,"+strings.Repeat("A", 43)+"="), good, 401, "unauthorized"},
		{"too old", e.signer.Headers("msg_a", now.Add(-6*time.Minute), good), good, 401, "unauthorized"},
		{"too new", e.signer.Headers("msg_a", now.Add(6*time.Minute), good), good, 401, "unauthorized"},
		{"not JSON", e.signer.Headers("msg_a", now, []byte("hello")), []byte("hello"), 400, "invalid"},
		{"JSON array", e.signer.Headers("msg_a", now, []byte("[1,2]")), []byte("[1,2]"), 400, "invalid"},
		{"no type", e.signer.Headers("msg_a", now, []byte(`{"data":{"id":"u"}}`)), []byte(`{"data":{"id":"u"}}`), 400, "invalid"},
		{"no data", e.signer.Headers("msg_a", now, []byte(`{"type":"user.created"}`)), []byte(`{"type":"user.created"}`), 400, "invalid"},
		{"data not an object", e.signer.Headers("msg_a", now, []byte(`{"type":"user.created","data":"x"}`)), []byte(`{"type":"user.created","data":"x"}`), 400, "invalid"},
		{"not UTF-8", e.signer.Headers("msg_a", now, []byte("{\"type\":\"user.created\",\"data\":{\"id\":\"\xff\"}}")), []byte("{\"type\":\"user.created\",\"data\":{\"id\":\"\xff\"}}"), 400, "invalid"},
		{"empty body", e.signer.Headers("msg_a", now, nil), nil, 400, "invalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, answer := e.post(t, c.header, c.body)
			if res.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, c.status, answer)
			}
			var eb errorBody
			if err := json.Unmarshal(answer, &eb); err != nil || eb.Error.Code != c.code || eb.Error.Message == "" {
				t.Errorf("answer %s, want a JSON error with code %s and a message", answer, c.code)
			}
			if n := e.count(t); n != 0 {
				t.Errorf("%d events stored, want 0", n)
			}
		})
	}
}

func TestWebhookTooLargeWithoutContentLength(t *testing.T) {
	e := newWebhookEnv(t)
	body := bytes.Repeat([]byte("a"), 1<<20+1)
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/webhooks/clerk", io.MultiReader(bytes.NewReader(body)))
	req.ContentLength = -1 // chunked
	req.Header = e.signer.Headers("msg_chunked", time.Now(), body)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", res.StatusCode)
	}
	if n := e.count(t); n != 0 {
		t.Errorf("%d events stored", n)
	}
}

func TestWebhookStoresEveryEventType(t *testing.T) {
	e := newWebhookEnv(t)
	now := time.Now()
	want := map[string]string{} // delivery id -> user id
	for _, typ := range clerkgen.EventTypes {
		body, err := clerkgen.Event(typ, clerkgen.User{ID: "user_" + strings.ReplaceAll(typ, ".", "_"), Email: "x@example.com"}, now)
		if err != nil {
			t.Fatal(err)
		}
		id := "msg_" + typ
		if res, answer := e.deliver(t, id, body); res.StatusCode != 200 {
			t.Fatalf("%s: status %d: %s", typ, res.StatusCode, answer)
		}
		want[id] = "user_" + strings.ReplaceAll(typ, ".", "_")
		if typ == "organization.created" {
			want[id] = "" // about an organization; its creator is not its subject
		}
	}
	// Types nobody has heard of are kept too; membership events name the user in public_user_data.
	extra := map[string]string{
		`{"type":"organizationMembership.created","object":"event","timestamp":1,"data":{"id":"orgmem_1","object":"organization_membership","public_user_data":{"user_id":"user_member"}}}`: "user_member",
		`{"type":"brand.new.thing","object":"event","timestamp":2,"data":{"id":"thing_1"}}`:                                                                                                 "",
	}
	i := 0
	for body, user := range extra {
		i++
		id := "msg_extra_" + strconv.Itoa(i)
		if res, answer := e.deliver(t, id, []byte(body)); res.StatusCode != 200 {
			t.Fatalf("status %d: %s", res.StatusCode, answer)
		}
		want[id] = user
	}
	rows, err := e.db.Query(`SELECT delivery_id, COALESCE(user_id, '') FROM events`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]string{}
	for rows.Next() {
		var id, user string
		rows.Scan(&id, &user)
		got[id] = user
	}
	if len(got) != len(want) {
		t.Fatalf("stored %d events, want %d", len(got), len(want))
	}
	for id, user := range want {
		if got[id] != user {
			t.Errorf("%s: user_id %q, want %q", id, got[id], user)
		}
	}
}

func TestWebhookRedeliveryStoredOnce(t *testing.T) {
	e := newWebhookEnv(t)
	body := userCreated(t, "user_dup", "d@example.com")
	res, a := e.deliver(t, "msg_dup", body)
	if res.StatusCode != 200 || !strings.Contains(string(a), `"stored"`) {
		t.Fatalf("first: %d %s", res.StatusCode, a)
	}
	// A retry is re-signed by Svix with a new timestamp; same svix-id.
	res, a = e.post(t, e.signer.Headers("msg_dup", time.Now().Add(time.Second), body), body)
	if res.StatusCode != 200 || !strings.Contains(string(a), `"duplicate"`) {
		t.Fatalf("redelivery: %d %s", res.StatusCode, a)
	}
	if n := e.count(t); n != 1 {
		t.Fatalf("%d rows, want 1", n)
	}
}

func TestWebhookConcurrentCopiesStoredOnce(t *testing.T) {
	e := newWebhookEnv(t)
	body := userCreated(t, "user_race", "r@example.com")
	for round := range 5 {
		id := "msg_race_" + strconv.Itoa(round)
		h := e.signer.Headers(id, time.Now(), body)
		var wg sync.WaitGroup
		statuses := make([]int, 20)
		stored := make([]bool, 20)
		start := make(chan struct{})
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res, a := e.post(t, h, body)
				statuses[i] = res.StatusCode
				stored[i] = strings.Contains(string(a), `"stored"`)
			}()
		}
		close(start)
		wg.Wait()
		nStored := 0
		for i, s := range statuses {
			if s != 200 {
				t.Errorf("copy %d: status %d", i, s)
			}
			if stored[i] {
				nStored++
			}
		}
		if nStored != 1 {
			t.Errorf("round %d: %d copies answered stored, want exactly 1", round, nStored)
		}
	}
	if n := e.count(t); n != 5 {
		t.Fatalf("%d rows, want 5", n)
	}
}

func TestWebhookSecretRotationAndWebhookHeaders(t *testing.T) {
	db := schematest.NewDB(t)
	store := schema.NewStore(db)
	oldSecret, newSecret := clerkgen.NewSecret(), clerkgen.NewSecret()
	v, err := svixsig.NewVerifier([]string{oldSecret, newSecret})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewServer(Deps{Verifier: v, Store: store, Ready: store}))
	defer srv.Close()
	e := &webhookEnv{srv: srv, db: db}
	for i, secret := range []string{oldSecret, newSecret} {
		s, _ := clerkgen.NewSigner(secret)
		body := userCreated(t, "user_rot", "r@example.com")
		h := s.Headers("msg_rot_"+strconv.Itoa(i), time.Now(), body)
		if i == 1 { // Svix's unbranded header names
			for _, k := range []string{"id", "timestamp", "signature"} {
				h.Set("webhook-"+k, h.Get("svix-"+k))
				h.Del("svix-" + k)
			}
		}
		if res, a := e.post(t, h, body); res.StatusCode != 200 {
			t.Fatalf("secret %d: %d %s", i, res.StatusCode, a)
		}
	}
	if n := e.count(t); n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
}

func TestWebhookDatabaseDownAnswers503ThenStores(t *testing.T) {
	dsn := schematest.NewURL(t)
	db := schematest.Open(t, dsn)
	if _, err := schema.Migrate(context.Background(), db.DB); err != nil {
		t.Fatal(err)
	}
	proxy := schematest.NewProxy(t, dsn)
	viaProxy := schematest.Open(t, proxy.URL(dsn))
	store := schema.NewStore(viaProxy)
	store.AppendTimeout = 2 * time.Second
	e := newWebhookEnvOn(t, db, store)

	body := userCreated(t, "user_down", "down@example.com")
	proxy.Down()
	res, a := e.deliver(t, "msg_down", body)
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("database down: status %d, want 503: %s", res.StatusCode, a)
	}
	if res.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if strings.Contains(string(a), "127.0.0.1") || strings.Contains(string(a), "dial") {
		t.Errorf("answer leaks internals: %s", a)
	}
	if n := e.count(t); n != 0 {
		t.Fatalf("%d rows stored while down", n)
	}
	ready, err := http.Get(e.srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	ready.Body.Close()
	if ready.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("readyz while down: %d, want 503", ready.StatusCode)
	}

	proxy.Up()
	// Svix retries the same delivery, re-signed later.
	var ok bool
	for range 20 {
		res, _ = e.deliver(t, "msg_down", body)
		if res.StatusCode == 200 {
			ok = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !ok {
		t.Fatalf("after recovery: status %d", res.StatusCode)
	}
	if n := e.count(t); n != 1 {
		t.Fatalf("%d rows after recovery, want 1", n)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	e := newWebhookEnv(t)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		res, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, res.StatusCode, want)
		}
	}
	// Wrong method on the webhook.
	res, err := http.Get(e.srv.URL + "/api/webhooks/clerk")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed && res.StatusCode != http.StatusNotFound {
		t.Errorf("GET webhook: %d, want 405 or 404", res.StatusCode)
	}
}

// newSigning returns a fresh webhook secret, a Verifier for it and a
// Svix-like signer with it.
func newSigning(t testing.TB) (string, *svixsig.Verifier, *clerkgen.Signer) {
	t.Helper()
	secret := clerkgen.NewSecret()
	v, err := svixsig.NewVerifier([]string{secret})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := clerkgen.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	return secret, v, signer
}

// A delivery the store cannot take is answered 5xx and logged once, on its
// own delivery line with the error, not again as a failed request.
func TestWebhookFailureLoggedOnce(t *testing.T) {
	db := schematest.NewDB(t)
	store := schema.NewStore(db)
	_, v, signer := newSigning(t)
	logs := &logBuffer{}
	srv := httptest.NewServer(NewServer(Deps{Log: slog.New(slog.NewTextHandler(logs, nil)), Verifier: v, Store: store, Ready: store}))
	t.Cleanup(srv.Close)
	db.Close() // the store's pool is gone: every append fails
	e := &webhookEnv{srv: srv, db: db, signer: signer}
	res, _ := e.deliver(t, "msg_logged_once", userCreated(t, "user_logged_once", "once@example.com"))
	if res.StatusCode < 500 {
		t.Fatalf("append on a closed pool: %s, want 5xx", res.Status)
	}
	var lines []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "msg_logged_once") || strings.Contains(l, "request failed") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "level=ERROR") || !strings.Contains(lines[0], "err=") {
		t.Fatalf("want one ERROR line with the error, got %d:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}
