package handlers

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/clerksession"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
)

// The fake Clerk instance of the web tests: its Frontend API host, the
// publishable key that encodes it, and the issuer of its session tokens.
const (
	testFrontendAPI = "clerk.example.test"
	testIssuer      = "https://" + testFrontendAPI
)

var testPublishableKey = "pk_test_" + base64.StdEncoding.EncodeToString([]byte(testFrontendAPI+"$"))

// RSA keys are slow to make: the tests share two, the instance's and a
// stranger's.
var (
	testClerkKey = sync.OnceValue(func() *rsa.PrivateKey { return newTestKey() })
	testOtherKey = sync.OnceValue(func() *rsa.PrivateKey { return newTestKey() })
)

func newTestKey() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err) // test setup only
	}
	return k
}

func publicPEM(t testing.TB, k *rsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// logBuffer collects the service's log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// webEnv is the real service over a fresh database with sessions verified
// networklessly against testClerkKey (CLERK_JWT_KEY), ClerkJS configured for
// testFrontendAPI, and the server's own URL as the only authorized party.
type webEnv struct {
	srv    *httptest.Server
	db     *sqlx.DB
	signer *clerkgen.Signer
	logs   *logBuffer
	dev    *clerksession.Dev
}

type webOptions struct {
	dev      bool     // ledger dev: no Clerk keys, the dev sign-in
	auditors []string // LEDGER_AUDITORS
}

func newWebEnv(t *testing.T, opt webOptions) *webEnv {
	t.Helper()
	db := schematest.NewDB(t)
	store := schema.NewStore(db)
	_, verifier, signer := newSigning(t)
	var err error
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	e := &webEnv{srv: srv, db: db, signer: signer, logs: &logBuffer{}}
	deps := Deps{
		Log:      slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Verifier: verifier, Store: store, Ready: store, DB: db, Auditors: opt.auditors,
	}
	if deps.Metrics, err = NewMetrics(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	deps.Observer = deps.Metrics
	if opt.dev {
		e.dev, err = clerksession.NewDev(clerksession.DevConfig{Addr: srv.Listener.Addr().String()})
		if err != nil {
			t.Fatal(err)
		}
		deps.DevSignIn = e.dev
		deps.Sessions, err = clerksession.NewVerifier(e.dev.Config())
	} else {
		deps.PublishableKey = testPublishableKey
		deps.Sessions, err = clerksession.NewVerifier(clerksession.Config{
			JWTKey:            publicPEM(t, testClerkKey()),
			PublishableKey:    testPublishableKey,
			AuthorizedParties: []string{srv.URL},
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	h = NewServer(deps)
	return e
}

// deliver sends a Clerk event of typ about u, occurring at `at`, through the
// real webhook endpoint, signed like Svix, and requires a 200.
func (e *webEnv) deliver(t testing.TB, typ string, u clerkgen.User, at time.Time) {
	t.Helper()
	body, err := clerkgen.Event(typ, u, at)
	if err != nil {
		t.Fatal(err)
	}
	e.deliverBody(t, body)
}

// deliverBody sends body through the real webhook endpoint, signed like
// Svix, and requires a 200.
func (e *webEnv) deliverBody(t testing.TB, body []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+webhookPath, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = e.signer.Headers(clerkgen.NewID("msg"), time.Now(), body)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	answer, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("deliver %.60s: %s %s", body, res.Status, answer)
	}
}

// projectUsers folds the ledger's user events into the users table with
// domain.Fold and the users projector's own upsert, so these tests read the
// projection exactly as the pages do.
func projectUsers(t testing.TB, db *sqlx.DB) {
	t.Helper()
	ctx := context.Background()
	events := waitVisible(t, db)
	byUser := map[string][]domain.Event{}
	for _, ev := range events {
		if domain.IsUserEvent(ev.Type) && ev.UserID != "" {
			byUser[ev.UserID] = append(byUser[ev.UserID], ev)
		}
	}
	var rows []schema.UserRow
	for id, evs := range byUser {
		u, errs := domain.Fold(evs)
		if len(errs) > 0 {
			t.Fatalf("fold %s: %v", id, errs)
		}
		rows = append(rows, schema.UserRow{User: u})
	}
	if err := schema.LiveUsers().Upsert(ctx, db, rows); err != nil {
		t.Fatalf("project users: %v", err)
	}
}

// projectOrganizations runs the organizations projector over the ledger.
func projectOrganizations(t testing.TB, db *sqlx.DB) {
	t.Helper()
	schematest.WaitVisible(t, db)
	if err := projections.NewRunner(db, nil, projections.NewOrganizations()).CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// waitVisible returns every stored event once all are visible to ledger
// readers. Reads are gated below the oldest running transaction in the whole
// cluster (the xid8 gate), and other tests share the cluster, so a
// just-committed event may stay invisible for a moment.
func waitVisible(t testing.TB, db *sqlx.DB) []domain.Event {
	t.Helper()
	schematest.WaitVisible(t, db)
	events, err := schema.QueryEvents(context.Background(), db, schema.EventFilter{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// sessionClaims are Clerk-shaped session token claims for userID issued to
// origin azp, valid now for 60 s.
func sessionClaims(userID, azp string) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": testIssuer, "sub": userID, "sid": clerkgen.NewID("sess"), "azp": azp,
		"iat": now.Unix(), "nbf": now.Unix() - 10, "exp": now.Add(60 * time.Second).Unix(),
		"v": 2, "fva": []int{0, -1},
	}
}

// mintJWT returns a compact JWT of claims with header, signed with key for
// RS256, with hmacKey for HS256, and unsigned for alg none.
func mintJWT(t testing.TB, header, claims map[string]any, key *rsa.PrivateKey, hmacKey []byte) string {
	t.Helper()
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	signing := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	var sig []byte
	switch header["alg"] {
	case "RS256":
		sum := sha256.Sum256([]byte(signing))
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:]); err != nil {
			t.Fatal(err)
		}
	case "HS256":
		m := hmac.New(sha256.New, hmacKey)
		m.Write([]byte(signing))
		sig = m.Sum(nil)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// token returns a valid Clerk session token for userID on this server.
func (e *webEnv) token(t testing.TB, userID string) string {
	return mintJWT(t, map[string]any{"alg": "RS256", "typ": "JWT", "kid": "ins_test"}, sessionClaims(userID, e.srv.URL), testClerkKey(), nil)
}

// get requests path with the given cookies and headers and returns the
// response and its body. Redirects are not followed.
func (e *webEnv) get(t testing.TB, path string, cookies map[string]string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	for k, v := range cookies {
		req.AddCookie(&http.Cookie{Name: k, Value: v})
	}
	return do(t, req)
}

func do(t testing.TB, req *http.Request) (*http.Response, string) {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// seedAda delivers Ada's account through the webhook endpoint (created,
// then renamed, then a session), Bob's account, and projects them.
func (e *webEnv) seedAdaAndBob(t testing.TB) (ada, bob clerkgen.User) {
	t.Helper()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	ada = clerkgen.User{ID: clerkgen.NewID("user"), Email: "ada@example.com", FirstName: "Ada", LastName: "Byron", CreatedAt: t0, UpdatedAt: t0}
	e.deliver(t, "user.created", ada, t0)
	ada.LastName, ada.UpdatedAt = "Lovelace", t0.Add(10*time.Minute)
	e.deliver(t, "user.updated", ada, ada.UpdatedAt)
	e.deliver(t, "session.created", ada, t0.Add(20*time.Minute))
	e.deliver(t, "email.created", ada, t0.Add(21*time.Minute))
	bob = clerkgen.User{ID: clerkgen.NewID("user"), Email: "bob@example.com", FirstName: "Bob", LastName: "Secretperson", CreatedAt: t0, UpdatedAt: t0}
	e.deliver(t, "user.created", bob, t0)
	e.deliver(t, "session.created", bob, t0.Add(5*time.Minute))
	projectUsers(t, e.db)
	return ada, bob
}

func mustContain(t testing.TB, body string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("response lacks %q", w)
		}
	}
}

func mustNotContain(t testing.TB, body string, bad ...string) {
	t.Helper()
	for _, b := range bad {
		if strings.Contains(body, b) {
			t.Errorf("response contains %q", b)
		}
	}
}
