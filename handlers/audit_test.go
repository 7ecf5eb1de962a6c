package handlers

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/svixsig"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/jmoiron/sqlx"
	"golang.org/x/mod/sumdb/tlog"
)

// auditEnv is the service over a fresh database with the audit routes; a
// request's session comes from the test-only X-Test-Session header (the real
// token middleware is branch web's), set with withSession.
type auditEnv struct {
	h        http.Handler
	db       *sqlx.DB
	store    *schema.Store
	signer   *clerkgen.Signer
	verifier *svixsig.Verifier
	sealer   schematest.Sealer
}

const listedAuditor = "user_listed_auditor"

func newAuditEnv(t testing.TB) *auditEnv {
	t.Helper()
	db := schematest.NewDB(t)
	_, v, signer := newSigning(t)
	store := schema.NewStore(db)
	srv := NewServer(Deps{Verifier: v, Store: store, Ready: store, DB: db, Auditors: []string{listedAuditor}})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := r.Header.Get("X-Test-Session"); id != "" {
			r = r.WithContext(withSession(r.Context(), Session{UserID: id, SessionID: "sess_test"}))
		}
		srv.ServeHTTP(w, r)
	})
	return &auditEnv{h: h, db: db, store: store, signer: signer, verifier: v}
}

// get serves GET path as the session user (none when ""), asked from the
// workspace's own pages (Sec-Fetch-Site: same-origin), as a browser
// following the workspace's links does.
func (e *auditEnv) get(t testing.TB, user, path string) (*http.Response, []byte) {
	t.Helper()
	return e.serve(t, http.MethodGet, user, path, "", http.Header{"Sec-Fetch-Site": {"same-origin"}})
}

// post serves POST path with the urlencoded form as the session user, sent
// from the workspace's own origin (past checkOrigin).
func (e *auditEnv) post(t testing.TB, user, path, form string) (*http.Response, []byte) {
	t.Helper()
	return e.serve(t, http.MethodPost, user, path, form, http.Header{"Origin": {"http://example.com"}, "Sec-Fetch-Site": {"same-origin"},
		"Content-Type": {"application/x-www-form-urlencoded"}})
}

// serve serves one request as the session user (none when "") with header.
// The test session stands for a browser's cookie session (not Bearer).
func (e *auditEnv) serve(t testing.TB, method, user, path, body string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	if user != "" {
		req.Header.Set("X-Test-Session", user)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

// append stores a signed delivery of typ about u that occurred at `at`.
func (e *auditEnv) append(t testing.TB, id, typ string, u clerkgen.User, at time.Time) domain.Delivery {
	t.Helper()
	body, err := clerkgen.Event(typ, u, at)
	if err != nil {
		t.Fatal(err)
	}
	sig := e.signer.Headers(id, at, body).Get("svix-signature")
	d, err := domain.NewDelivery(id, at.Unix(), sig, body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Append(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	return d
}

// visible waits until n events are readable below the xid8 gate (other
// tests' open transactions in the cluster hold it back).
func (e *auditEnv) visible(t testing.TB, n int64) {
	t.Helper()
	schematest.WaitReadable(t, e.db, n)
}

// putUser writes a users projection row with the users projector's own upsert.
func putUser(t testing.TB, db *sqlx.DB, u domain.User) {
	t.Helper()
	if err := schema.LiveUsers().Upsert(context.Background(), db, []schema.UserRow{{User: u}}); err != nil {
		t.Fatal(err)
	}
}

var tBase = time.Date(2024, 5, 28, 12, 0, 0, 0, time.UTC)

func TestAuditAuthorizationMatrix(t *testing.T) {
	e := newAuditEnv(t)
	e.append(t, "msg_1", "user.created", clerkgen.User{ID: "user_subject", Email: "s@example.com"}, tBase)
	e.visible(t, 1)
	putUser(t, e.db, domain.User{ID: "user_role_auditor", PublicMetadata: json.RawMessage(`{"role":"auditor"}`)})
	putUser(t, e.db, domain.User{ID: "user_member", PublicMetadata: json.RawMessage(`{"role":"member"}`)})
	putUser(t, e.db, domain.User{ID: "user_deleted_auditor", PublicMetadata: json.RawMessage(`{"role":"auditor"}`), Deleted: true})
	putUser(t, e.db, domain.User{ID: "user_role_object", PublicMetadata: json.RawMessage(`{"role":{"auditor":true}}`)})

	routes := []string{
		"/api/audit/events", "/api/audit/events?format=jsonl", "/api/audit/events?format=csv",
		"/api/audit/users/user_subject", "POST /api/audit/verify",
		"/audit", "/audit/search?user_id=user_subject", "/audit/users/user_subject", "/audit/chain", "/audit/chain?verify=1", "POST /audit/chain", "/audit/log",
	}
	sessions := []struct {
		name, user string
		want       int
	}{
		{"no session", "", http.StatusUnauthorized},
		{"ordinary user, not projected", "user_nobody", http.StatusForbidden},
		{"ordinary user with another role", "user_member", http.StatusForbidden},
		{"role that is not the string auditor", "user_role_object", http.StatusForbidden},
		{"deleted user", "user_deleted_auditor", http.StatusForbidden},
		{"auditor by LEDGER_AUDITORS", listedAuditor, http.StatusOK},
		{"auditor by public_metadata.role", "user_role_auditor", http.StatusOK},
	}
	for _, s := range sessions {
		for _, r := range routes {
			var res *http.Response
			var body []byte
			if path, ok := strings.CutPrefix(r, "POST "); ok {
				res, body = e.post(t, s.user, path, "")
			} else {
				res, body = e.get(t, s.user, r)
			}
			if res.StatusCode != s.want {
				t.Errorf("%s %s: %d, want %d: %.200s", s.name, r, res.StatusCode, s.want, body)
			}
			if s.want != http.StatusOK && bytes.Contains(body, []byte("s@example.com")) {
				t.Errorf("%s GET %s leaks ledger data", s.name, r)
			}
		}
	}
}

func TestAuditEventsRejectsBadParameters(t *testing.T) {
	e := newAuditEnv(t)
	for q, name := range map[string]string{
		"limit=0": "limit", "limit=1001": "limit", "limit=ten": "limit",
		"since=yesterday": "since", "until=2024-13-01T00:00:00Z": "until",
		"since=2024-05-02T00:00:00Z&until=2024-05-01T00:00:00Z": "until",
		"type=us*er": "type", "type=*": "type", "cursor=garbage": "cursor", "cursor=" + base64.RawURLEncoding.EncodeToString([]byte("v1:x:1")): "cursor",
		"format=xml": "format", "usr=user_1": "usr", "user_id=a&user_id=b": "user_id",
	} {
		res, body := e.get(t, listedAuditor, "/api/audit/events?"+q)
		var eb errorBody
		json.Unmarshal(body, &eb)
		if res.StatusCode != http.StatusBadRequest || eb.Error.Code != domain.EINVALID || !strings.Contains(eb.Error.Message, name) {
			t.Errorf("%s: %d %s (want 400 naming %s)", q, res.StatusCode, body, name)
		}
	}
	for _, q := range []string{"at=noon", "when=2024-05-01T00:00:00Z"} {
		if res, body := e.get(t, listedAuditor, "/api/audit/users/user_1?"+q); res.StatusCode != http.StatusBadRequest {
			t.Errorf("user %s: %d %s", q, res.StatusCode, body)
		}
	}
	if res, body := e.post(t, listedAuditor, "/api/audit/verify", "digest=12:zz"); res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "digest") {
		t.Errorf("bad digest: %d %s", res.StatusCode, body)
	}
	if res, body := e.post(t, listedAuditor, "/api/audit/verify", "signatures=true&verbose=1"); res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "verbose") {
		t.Errorf("unknown verify field: %d %s", res.StatusCode, body)
	}
	// Bad parameters are not queries: nothing recorded.
	if list, _ := schema.ListAccess(context.Background(), e.db, 0, 10); len(list) != 0 {
		t.Errorf("rejected queries were recorded: %+v", list)
	}
}

func TestAuditEventsPagingExportAndAccessLog(t *testing.T) {
	e := newAuditEnv(t)
	ctx := context.Background()
	var stored []domain.Delivery
	for i := range 25 {
		typ := []string{"user.created", "session.created", "user.updated", "email.created"}[i%4]
		stored = append(stored, e.append(t, fmt.Sprintf("msg_%03d", i), typ, clerkgen.User{ID: fmt.Sprintf("user_%d", i%2), Email: "p@example.com"}, tBase.Add(time.Duration(i)*time.Minute)))
	}
	e.sealer.SealAll(t, e.db, 25)
	e.append(t, "msg_unsealed", "user.updated", clerkgen.User{ID: "user_0"}, tBase.Add(time.Hour))
	e.visible(t, 26)

	// Page through user.* events of user_0, four at a time.
	var got []audit.EventJSON
	path := "/api/audit/events?type=user.*&user_id=user_0&limit=4"
	pages := 0
	for {
		res, body := e.get(t, listedAuditor, path)
		if res.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, res.StatusCode, body)
		}
		var p audit.EventsPage
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		got = append(got, p.Events...)
		pages++
		if p.NextCursor == "" {
			break
		}
		path = "/api/audit/events?type=user.*&user_id=user_0&limit=4&cursor=" + url.QueryEscape(p.NextCursor)
	}
	var want []string
	for _, d := range stored {
		if d.UserID == "user_0" && strings.HasPrefix(d.Type, "user.") {
			want = append(want, d.ID)
		}
	}
	want = append(want, "msg_unsealed")
	var ids []string
	for _, ev := range got {
		ids = append(ids, ev.DeliveryID)
	}
	if fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("paged %v, want %v", ids, want)
	}
	first := got[0]
	if first.LeafHash == nil || len(*first.LeafHash) != 44 || first.LeafIndex == nil || first.UserID == nil || *first.UserID != "user_0" || first.Position == 0 {
		t.Errorf("event fields: %+v", first)
	}
	if last := got[len(got)-1]; last.LeafHash != nil || last.LeafIndex != nil {
		t.Errorf("unsealed event has a leaf: %+v", last)
	}
	var payload struct {
		Type string `json:"type"`
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(first.Payload, &payload); err != nil || payload.Type != "user.created" || payload.Data.ID != "user_0" {
		t.Errorf("payload is not the stored event: %s", first.Payload)
	}

	// Exports: every matching event, filename, parseable lines.
	res, body := e.get(t, listedAuditor, "/api/audit/events?format=jsonl&since=2024-05-28T12:05:00Z")
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Disposition"), `attachment; filename="ledger-events-`) || !strings.HasSuffix(res.Header.Get("Content-Disposition"), `.jsonl"`) {
		t.Fatalf("jsonl export: %d %v", res.StatusCode, res.Header)
	}
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	if len(lines) != 21 {
		t.Fatalf("jsonl export has %d lines, want 21", len(lines))
	}
	for i, l := range lines {
		var ev audit.EventJSON
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, l)
		}
		if i < 20 {
			st, err := schema.EventByDeliveryID(ctx, e.db, ev.DeliveryID)
			if err != nil || !bytes.Equal(st.Body, ev.Payload) || !st.OccurredAt.Equal(ev.OccurredAt) {
				t.Errorf("line %d does not carry the stored event exactly", i)
			}
		}
	}
	res, body = e.get(t, listedAuditor, "/api/audit/events?format=csv&type=session.*")
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/csv") || !strings.Contains(res.Header.Get("Content-Disposition"), `.csv"`) {
		t.Fatalf("csv export: %d %v", res.StatusCode, res.Header)
	}
	recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1+6 || strings.Join(recs[0], ",") != "position,delivery_id,type,user_id,occurred_at,received_at,leaf_index,leaf_hash,payload,source" {
		t.Fatalf("csv: %d records, header %v", len(recs), recs[0])
	}
	if !json.Valid([]byte(recs[1][8])) || recs[1][2] != "session.created" || recs[1][9] != "svix" {
		t.Errorf("csv row: %v", recs[1])
	}

	// Each query and export is in the access log, with its filters and rows.
	list, err := schema.ListAccess(ctx, e.db, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != pages+2 {
		t.Fatalf("access log has %d entries, want %d", len(list), pages+2)
	}
	if a := list[0]; a.Action != schema.ActionExport || a.Filters["format"] != "csv" || a.Filters["type"] != "session.*" || a.RowCount != 6 || a.Actor != listedAuditor {
		t.Errorf("csv export entry: %+v", a)
	}
	if a := list[1]; a.Action != schema.ActionExport || a.RowCount != 21 || a.Filters["since"] != "2024-05-28T12:05:00Z" {
		t.Errorf("jsonl export entry: %+v", a)
	}
	if a := list[len(list)-1]; a.Action != schema.ActionEvents || a.Filters["user_id"] != "user_0" || a.RowCount != 4 || a.Channel != schema.ChannelAPI {
		t.Errorf("first query entry: %+v", a)
	}
	// The workspace shows it.
	if res, body := e.get(t, listedAuditor, "/audit/log"); res.StatusCode != 200 || !strings.Contains(string(body), "session.*") {
		t.Errorf("access log page: %d", res.StatusCode)
	}
}

func TestAuditPointInTimeAgainstHandComputedStates(t *testing.T) {
	e := newAuditEnv(t)
	id := "user_ada"
	t1, t2, t3, t4 := tBase, tBase.Add(time.Hour), tBase.Add(2*time.Hour), tBase.Add(3*time.Hour)
	created := clerkgen.User{ID: id, Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", CreatedAt: t1, UpdatedAt: t1}
	renamed := created
	renamed.FirstName, renamed.UpdatedAt = "Augusta", t2
	promoted := renamed
	promoted.Email, promoted.PublicMetadata, promoted.UpdatedAt = "augusta@example.com", map[string]any{"role": "auditor"}, t3
	// Delivered out of order, with a redelivery and another user's events.
	e.append(t, "msg_c", "user.updated", promoted, t3)
	e.append(t, "msg_a", "user.created", created, t1)
	e.append(t, "msg_x", "user.created", clerkgen.User{ID: "user_other", Email: "o@example.com"}, t2)
	e.append(t, "msg_s", "session.created", created, t1.Add(time.Minute))
	e.append(t, "msg_b", "user.updated", renamed, t2)
	e.append(t, "msg_d", "user.deleted", created, t4)
	e.visible(t, 6)

	state := func(at string) (int, audit.UserHistory) {
		t.Helper()
		path := "/api/audit/users/" + id
		if at != "" {
			path += "?at=" + url.QueryEscape(at)
		}
		res, body := e.get(t, listedAuditor, path)
		var h audit.UserHistory
		if res.StatusCode == 200 {
			if err := json.Unmarshal(body, &h); err != nil {
				t.Fatal(err)
			}
		}
		return res.StatusCode, h
	}
	if code, _ := state(t1.Add(-time.Second).Format(time.RFC3339)); code != http.StatusNotFound {
		t.Errorf("before creation: %d, want 404", code)
	}
	for _, c := range []struct {
		at                 time.Time
		first, email, meta string
		deleted            bool
		events             int
	}{
		{t1, "Ada", "ada@example.com", `{}`, false, 1},
		{t1.Add(30 * time.Minute), "Ada", "ada@example.com", `{}`, false, 2},
		{t2.Add(-time.Millisecond), "Ada", "ada@example.com", `{}`, false, 2},
		{t2, "Augusta", "ada@example.com", `{}`, false, 3},
		{t3, "Augusta", "augusta@example.com", `{"role":"auditor"}`, false, 4},
		{t4, "", "", `{}`, true, 5},
	} {
		code, h := state(c.at.Format(time.RFC3339Nano))
		if code != 200 {
			t.Fatalf("at %v: %d", c.at, code)
		}
		u := h.State
		var meta any
		json.Unmarshal(u.PublicMetadata, &meta)
		wantMeta, _ := json.Marshal(meta)
		if !h.Exists || u.FirstName != c.first || u.Email != c.email || string(wantMeta) != c.meta || u.Deleted != c.deleted || len(h.Events) != c.events {
			t.Errorf("at %v: got %+v (%d events), want first %q email %q meta %s deleted %v, %d events", c.at, u, len(h.Events), c.first, c.email, c.meta, c.deleted, c.events)
		}
		if h.Projection != nil || h.Matches != nil {
			t.Errorf("at %v: projection compared for a past instant", c.at)
		}
	}
	if _, h := state(t4.Format(time.RFC3339)); !h.State.CreatedAt.Equal(t1) || !h.State.DeletedAt.Equal(t4) || h.State.LastName != "" {
		t.Errorf("tombstone: %+v", h.State)
	}
	// Now, without at: the fold equals the projection's row (hand-written
	// here as the users projector writes it), and says so when it does not.
	_, now := state("")
	if now.At != nil || now.Matches != nil || len(now.Events) != 5 {
		t.Fatalf("now without a projection row: %+v", now)
	}
	want := domain.User{ID: id, PublicMetadata: json.RawMessage(`{}`), CreatedAt: t1, UpdatedAt: t4, Deleted: true, DeletedAt: t4}
	putUser(t, e.db, want)
	if _, now = state(""); now.Matches == nil || !*now.Matches || !audit.SameUser(now.State, want) {
		t.Errorf("now: fold %+v, projection %+v, matches %v", now.State, now.Projection, now.Matches)
	}
	putUser(t, e.db, domain.User{ID: id, Email: "stale@example.com", PublicMetadata: json.RawMessage(`{}`)})
	if _, now = state(""); now.Matches == nil || *now.Matches {
		t.Errorf("a differing projection row was reported as matching")
	}
	// The timeline page shows the picker and the state then.
	res, body := e.get(t, listedAuditor, "/audit/users/"+id+"?at=2024-05-28T14:00:00")
	if res.StatusCode != 200 || !strings.Contains(string(body), "augusta@example.com") || !strings.Contains(string(body), `value="2024-05-28T14:00:00"`) || !strings.Contains(string(body), `class="change after`) {
		t.Errorf("user page at 14:00: %d\n%.2000s", res.StatusCode, body)
	}
}

func TestAuditVerifyCatchesTampering(t *testing.T) {
	e := newAuditEnv(t)
	var ds []domain.Delivery
	for i := range 10 {
		ds = append(ds, e.append(t, fmt.Sprintf("msg_%d", i), "user.updated", clerkgen.User{ID: "user_v", Email: "v@example.com", UpdatedAt: tBase.Add(time.Duration(i) * time.Minute)}, tBase.Add(time.Duration(i)*time.Minute)))
	}
	e.sealer.SealAll(t, e.db, 10)
	verify := func(q string) verifyAnswer {
		t.Helper()
		res, body := e.post(t, listedAuditor, "/api/audit/verify"+q, "")
		if res.StatusCode != 200 {
			t.Fatalf("verify%s: %d %s", q, res.StatusCode, body)
		}
		var a verifyAnswer
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	ok := verify("?signatures=true")
	if !ok.OK || ok.Checked != 10 || ok.TreeSize != 10 || ok.Signatures == nil || ok.Signatures.Checked != 10 || ok.Root == "" {
		t.Fatalf("intact: %+v", ok)
	}
	ev, err := schema.EventByDeliveryID(context.Background(), e.db, ds[3].ID)
	if err != nil {
		t.Fatal(err)
	}
	schematest.Tamper(t, e.db, `UPDATE events SET body = replace(body, 'v@example.com', 'x@example.com') WHERE position = $1`, ev.Position)
	bad := verify("")
	if bad.OK || bad.FirstBad != ev.Position {
		t.Errorf("edited row: %+v", bad)
	}
	if sig := verify("?signatures=true"); sig.OK || sig.FirstBad != ev.Position || sig.Signatures == nil || sig.Signatures.Failed != 1 || sig.Signatures.Bad[0] != ev.Position {
		t.Errorf("signatures after edit: %+v", sig)
	}
	// The workspace shows the last verification and can run one.
	res, body := e.get(t, listedAuditor, "/audit/chain")
	if res.StatusCode != 200 || !strings.Contains(string(body), `id="verify-badge">Failed`) || !strings.Contains(string(body), `id="tree-size">10 events sealed`) {
		t.Errorf("chain page: %d\n%.3000s", res.StatusCode, body)
	}
	res, body = e.post(t, listedAuditor, "/audit/chain", "digest=&signatures=true")
	if res.StatusCode != 200 || !strings.Contains(string(body), fmt.Sprintf("position %d", ev.Position)) {
		t.Errorf("chain page verify: %d\n%.3000s", res.StatusCode, body)
	}
}

// The search page runs the query, pages, links exports and records the search.
func TestAuditSearchPage(t *testing.T) {
	e := newAuditEnv(t)
	for i := range 5 {
		e.append(t, fmt.Sprintf("msg_%d", i), "session.created", clerkgen.User{ID: "user_p"}, tBase.Add(time.Duration(i)*time.Minute))
	}
	e.visible(t, 5)
	res, body := e.get(t, listedAuditor, "/audit/search?user_id=user_p&type=session.*&limit=2&since=2024-05-28T12:00")
	s := string(body)
	if res.StatusCode != 200 || strings.Count(s, `<span class="type"><bdi>session.created</bdi></span>`) != 2 || !strings.Contains(s, "rel=\"next\"") ||
		!strings.Contains(s, "/api/audit/events?format=jsonl&amp;since=2024-05-28T12%3A00%3A00Z&amp;type=session.%2A&amp;user_id=user_p") {
		t.Errorf("search page: %d\n%s", res.StatusCode, s)
	}
	res, body = e.get(t, listedAuditor, "/audit/search?limit=5000")
	if res.StatusCode != 400 || !strings.Contains(string(body), "limit 5000 is more than 1000") {
		t.Errorf("bad search: %d", res.StatusCode)
	}
	if list, _ := schema.ListAccess(context.Background(), e.db, 0, 10); len(list) != 1 || list[0].Channel != schema.ChannelPage {
		t.Errorf("page search not recorded: %+v", list)
	}
}

// synthDelivery is the i-th delivery of a large synthetic history over
// `users` users, signed with signer: user.created first, then updates and
// sessions.
func synthDelivery(signer *clerkgen.Signer, i, users int) domain.Delivery {
	u := i % users
	uid := fmt.Sprintf("user_%027d", u)
	at := tBase.Add(time.Duration(i) * time.Second)
	typ := "user.updated"
	switch {
	case i < users:
		typ = "user.created"
	case i%3 == 0:
		typ = "session.created"
	}
	body := fmt.Appendf(nil, `{"data":{"id":%q,"object":"user","first_name":"Name%d","last_name":null,"username":null,"image_url":"https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCIsImlpZCI6Imluc18yY1hqVm1FMWx3Zm5HYUhXb0FiNnA3WFBrRFMifQ","primary_email_address_id":"idn_%d","email_addresses":[{"id":"idn_%d","object":"email_address","email_address":"u%d@example.com","verification":{"status":"verified","strategy":"email_code"}}],"public_metadata":{},"private_metadata":{},"unsafe_metadata":{},"created_at":%d,"updated_at":%d,"user_id":%q},"object":"event","type":%q,"timestamp":%d,"instance_id":"ins_2cXjVmE1lwfnGaHWoAb6p7XPkDS","event_attributes":{"http_request":{"client_ip":"192.0.2.10","user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"}}}`,
		uid, i, u, u, u, tBase.UnixMilli(), at.UnixMilli(), uid, typ, at.UnixMilli())
	id := fmt.Sprintf("msg_%027d", i)
	return domain.Delivery{ID: id, Timestamp: at.Unix(), Signature: signer.Headers(id, at, body).Get("svix-signature"),
		Body: body, Type: typ, UserID: uid, OccurredAt: at}
}

// countingWriter is a ResponseWriter that discards the body, counts lines
// and samples the heap every sampleEvery lines.
type countingWriter struct {
	header   http.Header
	status   int
	lines    int
	bytes    int64
	maxHeap  uint64
	tail     []byte
	sampleAt int
}

func (c *countingWriter) Header() http.Header { return c.header }
func (c *countingWriter) WriteHeader(s int)   { c.status = s }
func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	c.bytes += int64(len(p))
	c.lines += bytes.Count(p, []byte{'\n'})
	if c.lines >= c.sampleAt {
		c.sampleAt += 20000
		if h := heapInUse(); h > c.maxHeap {
			c.maxHeap = h
		}
	}
	return len(p), nil
}

func TestAuditExportOfLargeHistoryInConstantMemory(t *testing.T) {
	e := newAuditEnv(t)
	const n = 200_000
	schematest.CopyEvents(t, e.db, n, func(i int) domain.Delivery { return synthDelivery(e.signer, i, 2000) })
	e.visible(t, n)
	base := heapInUse()
	w := &countingWriter{header: http.Header{}, sampleAt: 20000}
	req := httptest.NewRequest(http.MethodGet, "/api/audit/events?format=jsonl", nil)
	req.Header.Set("X-Test-Session", listedAuditor)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	e.h.ServeHTTP(w, req)
	if w.status != 200 || w.lines != n {
		t.Fatalf("export: status %d, %d lines, want %d", w.status, w.lines, n)
	}
	growth := int64(w.maxHeap) - int64(base)
	t.Logf("exported %d rows, %d MB; heap in use grew by at most %.1f MB", n, w.bytes>>20, float64(growth)/(1<<20))
	// The body is ~200 MB; buffering even a tenth of it would show.
	if growth > 16<<20 {
		t.Errorf("heap grew by %d MB while exporting %d MB: the export is not streamed", growth>>20, w.bytes>>20)
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestAuditHistoryUnrecordedIsNotAnswered: when the access log refuses the
// record, the history API and page answer an error and show no event.
func TestAuditHistoryUnrecordedIsNotAnswered(t *testing.T) {
	e := newAuditEnv(t)
	u := clerkgen.User{ID: "user_secret", Email: "secret@example.com"}
	e.append(t, "msg_unrecorded", "user.created", u, time.Date(2024, 5, 28, 12, 0, 0, 0, time.UTC))
	e.visible(t, 1)
	for _, path := range []string{"/api/audit/events?user_id=user_secret", "/audit/search?user_id=user_secret"} {
		if res, body := e.get(t, listedAuditor, path); res.StatusCode != 200 || !strings.Contains(string(body), "msg_unrecorded") {
			t.Fatalf("%s before: %d %.300s", path, res.StatusCode, body)
		}
	}
	for _, q := range []string{
		`CREATE FUNCTION refuse_access() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'access log refused'; END $$`,
		`CREATE TRIGGER refuse BEFORE INSERT ON audit_access FOR EACH ROW EXECUTE FUNCTION refuse_access()`,
	} {
		e.db.MustExec(q)
	}
	for _, path := range []string{"/api/audit/events?user_id=user_secret", "/audit/search?user_id=user_secret"} {
		res, body := e.get(t, listedAuditor, path)
		if res.StatusCode < 500 || strings.Contains(string(body), "msg_unrecorded") || strings.Contains(string(body), "secret@example.com") {
			t.Errorf("%s with the access log refusing: %d %.300s", path, res.StatusCode, body)
		}
	}
	if list, _ := schema.ListAccess(context.Background(), e.db, 0, 10); len(list) != 2 {
		t.Errorf("access log: %d entries, want only the 2 answered queries'", len(list))
	}
}

// The log's routes: the signed checkpoint as text, an inclusion proof the
// library's own checker accepts, a user's bundle that verifies offline, the
// checkpoint and the bundle link in the workspace, each read recorded.
func TestAuditLogRoutes(t *testing.T) {
	e := newAuditEnv(t)
	for i := range 12 {
		e.append(t, fmt.Sprintf("msg_%d", i), "user.updated", clerkgen.User{ID: fmt.Sprint("user_", i%3), Email: "l@example.com"}, tBase.Add(time.Duration(i)*time.Minute))
	}
	if res, body := e.get(t, listedAuditor, "/api/audit/checkpoint"); res.StatusCode != http.StatusNotFound {
		t.Errorf("checkpoint before any: %d %s", res.StatusCode, body)
	}
	e.sealer.SealAll(t, e.db, 12)
	signer, verifier := schematest.NewLogKey(t, "clerk-ledger/handlers")
	cp := schematest.SignCheckpoint(t, e.db, signer, "clerk-ledger/handlers")

	res, body := e.get(t, listedAuditor, "/api/audit/checkpoint")
	if res.StatusCode != 200 || string(body) != cp.Note || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("checkpoint: %d %q", res.StatusCode, body)
	}
	if res, _ := e.get(t, listedAuditor, "/api/audit/checkpoint?size=5"); res.StatusCode != http.StatusNotFound {
		t.Errorf("checkpoint of an unkept size: %d", res.StatusCode)
	}
	if res, _ := e.get(t, listedAuditor, "/api/audit/checkpoint?size=x"); res.StatusCode != http.StatusBadRequest {
		t.Errorf("bad size: %d", res.StatusCode)
	}
	ev, _ := schema.EventByDeliveryID(context.Background(), e.db, "msg_4")
	res, body = e.get(t, listedAuditor, fmt.Sprintf("/api/audit/events/%d/proof", ev.Position))
	var p audit.InclusionProof
	if res.StatusCode != 200 || json.Unmarshal(body, &p) != nil || p.LeafIndex != 4 || p.TreeSize != 12 || p.Checkpoint != cp.Note {
		t.Fatalf("proof: %d %s", res.StatusCode, body)
	}
	leaf, _ := base64.StdEncoding.DecodeString(p.Leaf)
	var proof tlog.RecordProof
	for _, s := range p.Proof {
		h, _ := base64.StdEncoding.DecodeString(s)
		proof = append(proof, tlog.Hash(h))
	}
	stated, err := verifier.Open([]byte(p.Checkpoint))
	if err != nil || tlog.CheckRecord(proof, p.TreeSize, stated.Root, p.LeafIndex, tlog.RecordHash(leaf)) != nil {
		t.Errorf("the proof does not check: %v", err)
	}
	if want := domain.LeafOf(ev, nil).Encode(nil); !bytes.Equal(leaf, want) {
		t.Errorf("the proof's leaf is not the event's")
	}
	for path, want := range map[string]int{"/api/audit/events/999/proof": 404, "/api/audit/events/x/proof": 400, "/api/audit/users/user_none/proof": 404} {
		if res, _ := e.get(t, listedAuditor, path); res.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, res.StatusCode, want)
		}
	}
	// The consistency proof from a tree of 5 leaves (a witness's).
	res, body = e.get(t, listedAuditor, "/api/audit/consistency?from=5")
	var cproof audit.ConsistencyProof
	if res.StatusCode != 200 || json.Unmarshal(body, &cproof) != nil || cproof.From != 5 || cproof.To != 12 {
		t.Fatalf("consistency: %d %s", res.StatusCode, body)
	}
	var tp tlog.TreeProof
	for _, s := range cproof.Proof {
		h, _ := base64.StdEncoding.DecodeString(s)
		tp = append(tp, tlog.Hash(h))
	}
	root5, _ := tlog.TreeHash(5, schema.HashReader(context.Background(), e.db))
	if err := tlog.CheckTree(tp, 12, stated.Root, 5, root5); err != nil {
		t.Errorf("consistency proof does not check: %v", err)
	}
	for path, want := range map[string]int{"/api/audit/consistency?from=13": 400, "/api/audit/consistency?from=0": 400, "/api/audit/consistency?from=2&size=7": 404} {
		if res, _ := e.get(t, listedAuditor, path); res.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, res.StatusCode, want)
		}
	}
	res, body = e.get(t, listedAuditor, "/api/audit/users/user_1/proof")
	if res.StatusCode != 200 || !strings.Contains(res.Header.Get("Content-Disposition"), `filename="ledger-proof-user_1.json"`) {
		t.Fatalf("bundle: %d %v", res.StatusCode, res.Header)
	}
	rep, err := translog.VerifyBundle(body, verifier)
	if err != nil || !rep.OK || len(rep.Events) != 4 || rep.UserID != "user_1" {
		t.Fatalf("bundle does not verify: %+v %v", rep, err)
	}
	// The workspace shows the checkpoint and links the bundle.
	_, page := e.get(t, listedAuditor, "/audit/chain")
	if !strings.Contains(html.UnescapeString(string(page)), cp.Note) || !strings.Contains(string(page), `id="tree-size">12 events sealed`) ||
		!strings.Contains(string(page), `id="checkpoint-size">tree size 12`) {
		t.Errorf("chain page lacks the checkpoint:\n%.3000s", page)
	}
	_, page = e.get(t, listedAuditor, "/audit/users/user_1")
	if !strings.Contains(string(page), `href="/api/audit/users/user_1/proof"`) {
		t.Errorf("user page lacks the bundle link")
	}
	if !strings.Contains(html.UnescapeString(string(page)), "#4 <code class=\"id hash\" title=\"leaf hash "+p.LeafHash+"\">") {
		t.Errorf("user page lacks the event's leaf (#4 %s)", p.LeafHash)
	}
	list, _ := schema.ListAccess(context.Background(), e.db, 0, 20)
	var actions []string
	for _, a := range list {
		actions = append(actions, a.Action)
	}
	// Newest first: the user page (its organizations, then the user), the bundle, the consistency proof, the proof, the checkpoint (the refused reads record nothing).
	if got := strings.Join(actions, ","); got != "user_organizations,user,user_proof,proof,proof,checkpoint" {
		t.Errorf("access log: %s", got)
	}
}
