package projections

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// TestSealedRebuildOpensEveryBodyOnce: over a sealed ledger (bodies opened
// by the fold's workers, each with its users' keys: userkeys.Slot) that
// holds every poison case, a rebuild and a check give exactly the live
// projection and its poison events (a key with no event adds no user); a
// key row changed to
// another key stops the rebuild with an error naming the event whose body
// does not open, and leaves the live table and no table aside; a key row
// cut short stops rebuild and check naming its user.
func TestSealedRebuildOpensEveryBodyOnce(t *testing.T) {
	db, k, ctx := schematest.NewSealedDB(t)
	// The history, and every poison case (NUL bytes, lone surrogates, values
	// PostgreSQL refuses, ...) sealed under its own user.
	ds := history(t, 7, 300, 3000)
	for i, c := range poisonCases() {
		id := fmt.Sprintf("user_case%02d", i)
		for j, typ := range []string{"user.created", "user.updated"} {
			f := userFields{}
			if j == 1 {
				f = c.f
			}
			d, err := domain.NewDelivery(fmt.Sprintf("msg_%s_%d", id, j), time.Now().Unix(), "v1,test", userEventBody(typ, id, int64(1000*(j+1)), f))
			if err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
		}
	}
	loadIn(t, ctx, db, ds)
	var sealed int
	if err := db.Get(&sealed, `SELECT count(*) FROM events WHERE body_sealed IS NOT NULL`); err != nil || sealed == 0 {
		t.Fatalf("sealed events: %d, %v", sealed, err)
	}
	waitVisible(t, db)
	r := NewRunner(db, nil, NewUsers())
	if err := r.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	snapshot := func() string {
		t.Helper()
		var s string
		if err := db.Get(&s, `SELECT string_agg(to_jsonb(u)::text, E'\n' ORDER BY id) FROM users u`); err != nil {
			t.Fatal(err)
		}
		return s
	}
	live := snapshot()
	// A user with a data key and no user event (the fold reads every key
	// first) is not a user of the rebuild.
	keyOnly, err := k.NewDataKey("user_key_only")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO user_keys (user_id, wrapped, kek_id) VALUES ('user_key_only', $1, $2)`, keyOnly, k.ID()); err != nil {
		t.Fatal(err)
	}
	chk, err := Check(ctx, db, NewUsers(), nil)
	if err != nil || len(chk.Differences) != 0 || chk.Users != 300+len(poisonCases()) {
		t.Fatalf("check of the sealed ledger: %v, %d users, %+v", err, chk.Users, chk.Differences)
	}
	var liveFailures int
	if err := db.Get(&liveFailures, `SELECT count(*) FROM projection_failures WHERE projector = 'users'`); err != nil {
		t.Fatal(err)
	}
	res, err := Rebuild(ctx, db, NewUsers(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Users != 300+len(poisonCases()) || snapshot() != live || res.Failures != liveFailures || liveFailures == 0 {
		t.Fatalf("rebuild of the sealed ledger: %d users, %d poison events (live %d), equal to live: %v", res.Users, res.Failures, liveFailures, snapshot() == live)
	}

	// Another key in one user's row: their bodies no longer open.
	var user string
	if err := db.Get(&user, `SELECT user_id FROM user_keys ORDER BY user_id LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	other, err := k.NewDataKey(user)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE user_keys SET wrapped = $1 WHERE user_id = $2`, other, user); err != nil {
		t.Fatal(err)
	}
	_, err = Rebuild(ctx, db, NewUsers(), nil)
	if err == nil || !strings.Contains(err.Error(), "open event ") || !strings.Contains(err.Error(), "does not open") {
		t.Fatalf("rebuild with a body that does not open: %v", err)
	}
	if snapshot() != live {
		t.Fatal("the failed rebuild changed the live table")
	}
	var aside bool
	if err := db.Get(&aside, `SELECT to_regclass('users_rebuild') IS NOT NULL`); err != nil || aside {
		t.Fatalf("a table aside was left: %v %v", aside, err)
	}
	if _, err := Check(ctx, db, NewUsers(), nil); err == nil {
		t.Fatal("check folded a body that does not open")
	}

	// A key row cut short (not a wrapped key at all): the fold refuses it
	// as it reads the keys, naming the user, before it folds any event.
	if _, err := db.Exec(`UPDATE user_keys SET wrapped = '\x0102' WHERE user_id = $1`, user); err != nil {
		t.Fatal(err)
	}
	_, err = Rebuild(ctx, db, NewUsers(), nil)
	if err == nil || !strings.Contains(err.Error(), "the data key of user "+user) || !strings.Contains(err.Error(), "2 bytes") {
		t.Fatalf("rebuild with a key row cut short: %v", err)
	}
	if snapshot() != live {
		t.Fatal("the failed rebuild changed the live table")
	}
	if _, err := Check(ctx, db, NewUsers(), nil); err == nil || !strings.Contains(err.Error(), "the data key of user "+user) {
		t.Fatalf("check with a key row cut short: %v", err)
	}
}
