package projections

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
)

// TestUsersProjectorKeepsUserEmails: the users projector records every
// address its user events name in user_emails (lower-cased, in storable
// form; an address too long for the index is left out without making the
// event poison), the workspace projector is not needed for it, and an
// erasure event in the ledger drops the user's addresses, also those a
// pass wrote after the erasure's own clean-up.
func TestUsersProjectorKeepsUserEmails(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	event := func(typ string, u clerkgen.User, at time.Time) domain.Delivery {
		t.Helper()
		body, err := clerkgen.Event(typ, u, at)
		if err != nil {
			t.Fatal(err)
		}
		d, err := domain.NewDelivery(clerkgen.NewID("msg"), at.Unix(), "v1,test", body)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	long := strings.Repeat("x", 400) + "@example.com"
	load(t, db, []domain.Delivery{
		event("user.created", clerkgen.User{ID: "user_ada", Email: "Ada@Example.com", CreatedAt: t0, UpdatedAt: t0}, t0),
		event("user.updated", clerkgen.User{ID: "user_ada", Email: "ada.l@example.com", CreatedAt: t0, UpdatedAt: t0.Add(time.Minute)}, t0.Add(time.Minute)),
		event("user.created", clerkgen.User{ID: "user_nul", Email: "b\u0000@example.com", CreatedAt: t0, UpdatedAt: t0}, t0),
		event("user.created", clerkgen.User{ID: "user_long", Email: long, CreatedAt: t0, UpdatedAt: t0}, t0),
	})
	waitVisible(t, db)
	run := func() {
		t.Helper()
		if err := NewRunner(db, nil, NewUsers()).CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
	}
	run()
	want := map[string]string{"ada@example.com": "user_ada", "ada.l@example.com": "user_ada", "b\uFFFD@example.com": "user_nul"}
	if got := emails(t, db); len(got) != len(want) || !sameEmails(got, want) {
		t.Fatalf("user_emails %v, want %v", got, want)
	}
	var failed, long0 int
	if err := db.Get(&failed, `SELECT count(*) FROM projection_failures WHERE projector = 'users'`); err != nil || failed != 0 {
		t.Fatalf("poison: %d %v", failed, err)
	}
	if err := db.Get(&long0, `SELECT count(*) FROM users WHERE id = 'user_long'`); err != nil || long0 != 1 {
		t.Fatalf("the user with a long address projected %d times: %v", long0, err)
	}

	// A sighting written after the erasure's clean-up (a pass that read the
	// user's events before the erasure) goes when the erasure event is
	// projected.
	if _, err := db.Exec(`INSERT INTO user_emails (email, user_id, first_position, first_seen, last_seen) VALUES ('stale@example.com', 'user_ada', 1, now(), now())`); err != nil {
		t.Fatal(err)
	}
	erasure, err := domain.NewDelivery("ledger_erasure_user_ada", t0.Add(time.Hour).Unix(), "v1,test", domain.ErasureEventBody("user_ada", t0.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	load(t, db, []domain.Delivery{erasure})
	waitVisible(t, db)
	run()
	delete(want, "ada@example.com")
	delete(want, "ada.l@example.com")
	if got := emails(t, db); !sameEmails(got, want) {
		t.Fatalf("after the erasure event, user_emails %v, want %v", got, want)
	}
}

func emails(t *testing.T, db *sqlx.DB) map[string]string {
	t.Helper()
	rows, err := db.Query(`SELECT email, user_id FROM user_emails`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var e, u string
		if err := rows.Scan(&e, &u); err != nil {
			t.Fatal(err)
		}
		out[e] = u
	}
	return out
}

func sameEmails(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
