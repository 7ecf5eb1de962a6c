package handlers

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// TestWorkspaceErase: the user page offers the erasure form; a POST that
// does not repeat the user id is 400 and erases nothing; a confirmed one
// erases (the key destroyed, the tombstone), a second says so; afterwards
// the user page shows the events' metadata with "Content erased" and none
// of the user's data; a non-auditor's POST is refused.
func TestWorkspaceErase(t *testing.T) {
	e := newAuditEnv(t)
	k := schematest.NewKeyring(t)
	e.store.Keys = k
	inner := e.h
	e.h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(w, r.WithContext(schema.WithKeyring(r.Context(), k)))
	})
	ada := clerkgen.User{ID: "user_ada", Email: "ada.erase@example.com", FirstName: "Augusta"}
	e.append(t, "msg_1", "user.created", ada, tBase)
	e.append(t, "msg_2", "session.created", ada, tBase.Add(1))
	e.visible(t, 2)
	ctx := schema.WithKeyring(context.Background(), k)
	if err := projections.NewRunner(e.db, nil, projections.Default()...).CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	res, body := e.get(t, listedAuditor, "/audit/users/user_ada")
	if res.StatusCode != 200 || !bytes.Contains(body, []byte(`action="/audit/users/user_ada/erase"`)) || !bytes.Contains(body, []byte("ada.erase@example.com")) {
		t.Fatalf("user page: %d\n%.500s", res.StatusCode, body)
	}
	res, body = e.post(t, listedAuditor, "/audit/users/user_ada/erase", url.Values{"reason": {"DSR-1"}, "confirm": {"user_bob"}}.Encode())
	if res.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte("confirmation")) {
		t.Fatalf("unconfirmed erase: %d\n%.500s", res.StatusCode, body)
	}
	if _, err := schema.GetErasure(ctx, e.db, "user_ada"); err == nil {
		t.Fatal("an unconfirmed POST erased the user")
	}
	if res, _ = e.post(t, "user_nobody", "/audit/users/user_ada/erase", url.Values{"reason": {"DSR-1"}, "confirm": {"user_ada"}}.Encode()); res.StatusCode != http.StatusForbidden {
		t.Fatalf("non-auditor erase: %d", res.StatusCode)
	}
	res, body = e.post(t, listedAuditor, "/audit/users/user_ada/erase", url.Values{"reason": {"DSR-1"}, "confirm": {"user_ada"}}.Encode())
	if res.StatusCode != 200 || !bytes.Contains(body, []byte("Erased")) || !bytes.Contains(body, []byte("DSR-1")) {
		t.Fatalf("erase: %d\n%.800s", res.StatusCode, body)
	}
	res, body = e.post(t, listedAuditor, "/audit/users/user_ada/erase", url.Values{"reason": {"DSR-1"}, "confirm": {"user_ada"}}.Encode())
	if res.StatusCode != 200 || !bytes.Contains(body, []byte("Already erased")) {
		t.Fatalf("second erase: %d\n%.800s", res.StatusCode, body)
	}
	if err := projections.NewRunner(e.db, nil, projections.Default()...).CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	res, body = e.get(t, listedAuditor, "/audit/users/user_ada")
	if res.StatusCode != 200 || bytes.Contains(body, []byte("ada.erase@example.com")) || bytes.Contains(body, []byte("Augusta")) ||
		!bytes.Contains(body, []byte("Content erased")) || !bytes.Contains(body, []byte("msg_2")) || bytes.Contains(body, []byte(`/erase"`)) {
		t.Fatalf("user page after erasure: %d\n%s", res.StatusCode, body)
	}
	// The user's own view (a token minted for them) shows the tombstone only.
	res, body = e.get(t, "user_ada", "/api/me")
	if res.StatusCode != 200 || bytes.Contains(body, []byte("ada.erase@example.com")) || bytes.Contains(body, []byte("Augusta")) {
		t.Fatalf("/api/me of the erased user: %d %s", res.StatusCode, body)
	}
}
