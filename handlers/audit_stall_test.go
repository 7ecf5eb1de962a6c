package handlers

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/clerksession"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
)

// stalledClient sends a GET with a bearer token over a connection whose
// receive buffer is as small as the kernel allows, and never reads: the
// server's writes stall once the socket buffers are full.
func stalledClient(t *testing.T, addr, path, token string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", path, addr, token); err != nil {
		t.Fatal(err)
	}
	return conn
}

// exportBackends counts the database's backends still inside an export's
// statement or transaction (other than the asking one). db is the test's
// own pool, so the question never waits behind the service's.
func exportBackends(t *testing.T, db *sqlx.DB) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n int
	if err := db.GetContext(ctx, &n, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)') AND query LIKE '%log_leaves%'`); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStalledExportsDoNotStarveIngest: 32 JSONL exports from clients that
// never read (within the default API burst) hold at most the audit share of
// the web pool: meanwhile Svix-signed deliveries keep getting 2xx, /readyz
// and /api/me answer, and a history query is refused with 503 + Retry-After
// instead of hanging. Once the exports have made no progress for the idle
// timeout they are aborted: their transactions roll back, their backends
// leave pg_stat_activity, their connections go back to the pool, and each
// is in the access log with the rows it sent.
func TestStalledExportsDoNotStarveIngest(t *testing.T) {
	ctx := context.Background()
	dsn := schematest.NewURL(t)
	// serve's pools at their defaults: ingest apart, the web pool for reads.
	ingest, err := schema.Open(ctx, dsn, schema.PoolOptions{MaxOpen: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ingest.Close() })
	if _, err := schema.Migrate(ctx, ingest.DB); err != nil {
		t.Fatal(err)
	}
	web, err := schema.Open(ctx, dsn, schema.PoolOptions{MaxOpen: 24})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { web.Close() })
	store := schema.NewStore(ingest)
	observer := schematest.Open(t, dsn)
	_, verifier, signer := newSigning(t)
	const events = 20_000 // ~30 MB of JSON lines: more than the socket buffers hold
	schematest.CopyEvents(t, ingest, events, func(i int) domain.Delivery { return synthDelivery(signer, i, 1000) })
	putUser(t, web, domain.User{ID: "user_me", Email: "me@example.com", FirstName: "Me", PublicMetadata: []byte(`{}`)})

	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	webhookLimit, _ := ParseRateLimit("webhook", "1000:2000")
	apiLimit, _ := ParseRateLimit("api", "20:60")
	sessions, err := clerksession.NewVerifier(clerksession.Config{JWTKey: publicPEM(t, testClerkKey()), PublishableKey: testPublishableKey, AuthorizedParties: []string{srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	const idle = 4 * time.Second // serve's is 30 s
	logs := &logBuffer{}
	h = NewServer(Deps{Log: slog.New(slog.NewTextHandler(logs, nil)), Verifier: verifier, Store: store, Ready: store, DB: web, Sessions: sessions, Auditors: []string{listedAuditor},
		WebhookRateLimit: webhookLimit, APIRateLimit: apiLimit, ExportIdleTimeout: idle})
	token := func(user string) string {
		return mintJWT(t, map[string]any{"alg": "RS256", "typ": "JWT", "kid": "ins_test"}, sessionClaims(user, srv.URL), testClerkKey(), nil)
	}
	auditor := token(listedAuditor)
	client := &http.Client{Timeout: 15 * time.Second}
	get := func(path, tok string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		res, err := client.Do(req)
		if err != nil {
			return &http.Response{StatusCode: 0, Status: err.Error()}, ""
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	delivered := 0
	deliver := func(n int) {
		var wg sync.WaitGroup
		errs := make(chan string, n)
		for range n {
			delivered++
			id := fmt.Sprintf("msg_during_%05d", delivered)
			wg.Add(1)
			go func() {
				defer wg.Done()
				body, _ := clerkgen.Event("user.created", clerkgen.User{ID: "user_" + id, Email: "d@example.com"}, time.Now())
				req, _ := http.NewRequest(http.MethodPost, srv.URL+webhookPath, bytes.NewReader(body))
				req.Header = signer.Headers(id, time.Now(), body)
				res, err := client.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode/100 != 2 {
					errs <- res.Status
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Errorf("a delivery during the stalled exports got %s", e)
		}
	}

	for range 32 {
		stalledClient(t, srv.Listener.Addr().String(), "/api/audit/events?format=jsonl", auditor)
	}
	deadline := time.Now().Add(20 * time.Second)
	for web.Stats().InUse < audit.DefaultConns {
		if time.Now().After(deadline) {
			t.Fatalf("the exports never started: %d web connections in use", web.Stats().InUse)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// While the slots are full, a history query waits briefly, then is refused.
	refused := make(chan *http.Response, 1)
	go func() { res, _ := get("/api/audit/events?limit=5", auditor); refused <- res }()

	// Ingest, readiness and the signed-in API keep answering until the
	// stalled exports are gone.
	rounds, heldRounds := 0, 0
	deadline = time.Now().Add(idle + 20*time.Second)
	for {
		held := web.Stats().InUse
		if held >= audit.DefaultConns {
			heldRounds++
		}
		if held > audit.DefaultConns {
			t.Errorf("%d web connections in use: the audit reads hold more than their %d", held, audit.DefaultConns)
		}
		deliver(10)
		if res, body := get("/readyz", ""); res.StatusCode != 200 {
			t.Errorf("/readyz during the stall: %s %s", res.Status, body)
		}
		if res, body := get("/api/me", token("user_me")); res.StatusCode != 200 || !strings.Contains(body, "me@example.com") {
			t.Errorf("/api/me during the stall: %s %s", res.Status, body)
		}
		rounds++
		if held == 0 && exportBackends(t, observer) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stalled exports were never aborted: %d connections in use, %d export backends", held, exportBackends(t, observer))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d rounds of checks, %d of them with the exports holding their %d connections; %d deliveries", rounds, heldRounds, audit.DefaultConns, delivered)
	if heldRounds < 2 {
		t.Errorf("only %d rounds ran while the exports held their connections: the checks did not overlap the stall", heldRounds)
	}
	if res := <-refused; res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Errorf("history while the audit slots are full: %s (Retry-After %q), want 503 with Retry-After", res.Status, res.Header.Get("Retry-After"))
	}

	// Every aborted export is recorded with what it sent (never the whole
	// ledger); the pool serves a whole export again. At least the first 8
	// ran and were aborted for taking no bytes. On a loaded machine a queued
	// export may take a slot the first ones gave back before its own wait ran
	// out; it is recorded too, with what it sent (0 rows when it failed
	// before its first row).
	list, err := schema.ListAccess(ctx, observer, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	recorded, sent := 0, 0
	for _, a := range list {
		if a.Action == schema.ActionExport {
			recorded++
			if a.RowCount > 0 {
				sent++
			}
			if a.RowCount < 0 || a.RowCount >= events {
				t.Errorf("an aborted export is recorded with %d rows", a.RowCount)
			}
		}
	}
	idleAborts := strings.Count(logs.String(), "audit export aborted: the client took no bytes")
	if idleAborts < audit.DefaultConns || sent > idleAborts || recorded < idleAborts || recorded > 32 {
		t.Errorf("%d exports recorded (%d with rows), %d aborted for taking no bytes: want at least the %d that ran first, each recorded:\n%s",
			recorded, sent, idleAborts, audit.DefaultConns, logs.String())
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/audit/events?format=jsonl", nil)
	req.Header.Set("Authorization", "Bearer "+auditor)
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	lines := 0
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 2<<20)
	for sc.Scan() {
		lines++
	}
	if res.StatusCode != 200 || lines < events {
		t.Errorf("an export after the stall: %s, %d lines, want %d or more", res.Status, lines, events)
	}
}
