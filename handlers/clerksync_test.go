package handlers

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkapi"
	"github.com/clerk-ledger/clerk-ledger/clerkapi/clerkapitest"
	"github.com/clerk-ledger/clerk-ledger/clerksync"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"golang.org/x/time/rate"
)

// Auditors see where an event came from (a snapshot from Clerk's Backend
// API, not a Svix delivery) and every reconcile run on the overview.
func TestWorkspaceShowsSnapshotsAndReconcileRuns(t *testing.T) {
	e := newAuditEnv(t)
	ctx := context.Background()
	d, err := domain.NewSnapshot("user_snap", 1716897660000, []byte(`{"id":"user_snap","object":"user","created_at":1716897600000,"updated_at":1716897660000,"first_name":"Snap"}`))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := e.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := schema.AppendSnapshots(ctx, tx, []domain.Delivery{d}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	e.visible(t, 1)
	res, body := e.get(t, listedAuditor, "/audit/search?user_id=user_snap")
	if res.StatusCode != 200 || !strings.Contains(string(body), "Backend API") || !strings.Contains(string(body), "clerk_api:user_snap:1716897660000") {
		t.Fatalf("search: %d\n%.3000s", res.StatusCode, body)
	}
	res, body = e.get(t, listedAuditor, "/api/audit/events?user_id=user_snap")
	if res.StatusCode != 200 || !strings.Contains(string(body), `"source":"clerk_api"`) {
		t.Fatalf("api: %d %s", res.StatusCode, body)
	}

	if _, err := schema.RecordReconcile(ctx, e.db, schema.ReconcileRun{StartedAt: time.Now(), Trigger: "schedule", ClerkUsers: 12, Missing: 3, Stale: 2, Gone: 1, Same: 6, Repaired: 6}); err != nil {
		t.Fatal(err)
	}
	if _, err := schema.RecordReconcile(ctx, e.db, schema.ReconcileRun{StartedAt: time.Now(), Trigger: "cli", Gone: 500, HeldBack: "500 of 510 users seem gone"}); err != nil {
		t.Fatal(err)
	}
	res, body = e.get(t, listedAuditor, "/audit")
	page := string(body)
	if res.StatusCode != 200 || !strings.Contains(page, "Reconcile runs") || !strings.Contains(page, "<td>schedule</td>") ||
		!strings.Contains(page, "held back</span> 500 of 510 users seem gone") {
		t.Fatalf("overview: %d\n%s", res.StatusCode, page)
	}
	// The only event is a snapshot: no webhook delivery yet.
	if !strings.Contains(page, `<p class="tile-value"><span class="muted">none yet</span></p>`) || !strings.Contains(page, "ledger head at position 1") {
		t.Fatalf("last delivery tile:\n%s", page)
	}
}

// A user signed in before their user.created delivery: the page and
// /api/me fetch them from the Backend API and show the record at once;
// when Clerk fails, the page is today's "not synced yet".
func TestFirstSignInShowsTheRecordAtOnce(t *testing.T) {
	api := clerkapitest.New(clerkapitest.Options{Users: 3, Seed: 11})
	defer api.Close()
	cl, err := clerkapi.New(clerkapi.Config{SecretKey: api.SecretKey(), BaseURL: api.URL(), HTTPClient: api.Client(), RateLimit: rate.Inf, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	db := schematest.NewDB(t)
	store := schema.NewStore(db)
	_, v, _ := newSigning(t)
	srv := NewServer(Deps{Verifier: v, Store: store, Ready: store, DB: db, FirstSignIn: clerksync.NewFirstSignIn(db, cl, nil)})
	get := func(user, path string) (int, string) {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req = req.WithContext(withSession(req.Context(), Session{UserID: user, SessionID: "sess_1"}))
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	list := api.List()
	for i, name := range []string{"Grace", "Katherine"} {
		if err := api.Update(list[i].ID, func(u *clerkapitest.User) { u.FirstName = &name }); err != nil {
			t.Fatal(err)
		}
	}
	u, _ := api.Get(list[0].ID)
	code, page := get(u.ID, "/")
	if code != 200 || !strings.Contains(page, *u.FirstName) || strings.Contains(page, "Not synced yet") {
		t.Fatalf("page %d:\n%s", code, page)
	}
	u2, _ := api.Get(list[1].ID)
	code, body := get(u2.ID, "/api/me")
	if code != 200 || !strings.Contains(body, `"id":"`+u2.ID+`"`) || !strings.Contains(body, *u2.FirstName) {
		t.Fatalf("/api/me %d %s", code, body)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM events WHERE type = 'user.snapshot' AND source = 'clerk_api'`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d snapshots stored, %v", n, err)
	}
	api.Inject(5, clerkapitest.Fault{Status: 503})
	if code, page = get(list[2].ID, "/"); code != 200 || !strings.Contains(page, "Not synced yet") {
		t.Fatalf("with Clerk down: %d\n%s", code, page)
	}
	if code, _ = get("user_not_in_clerk", "/api/me"); code != http.StatusNotFound {
		t.Fatalf("/api/me for a user Clerk does not have: %d", code)
	}
}
