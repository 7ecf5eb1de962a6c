package schema_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
	"github.com/jmoiron/sqlx"
)

// twoKeyrings returns two keyrings of one master key: two processes of one
// ledger, each with its own cache.
func twoKeyrings(t *testing.T) (*userkeys.Keyring, *userkeys.Keyring) {
	t.Helper()
	text, err := userkeys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	a, err := userkeys.Load(text)
	if err != nil {
		t.Fatal(err)
	}
	b, err := userkeys.Load(text)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// newOneConnDBs is schematest.NewDBs with the store's pool on one
// connection, whose prepared statements a test can then list.
func newOneConnDBs(t *testing.T) (db, one *sqlx.DB) {
	t.Helper()
	u := schematest.NewURL(t)
	db = schematest.Open(t, u)
	if _, err := schema.Migrate(context.Background(), db.DB); err != nil {
		t.Fatal(err)
	}
	one, err := schema.Open(context.Background(), u, schema.PoolOptions{MaxOpen: 1, BinaryParameters: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { one.Close() })
	return db, one
}

// readAll reads every event of db opened with k, by delivery id.
func readAll(t *testing.T, db schema.Queryer, k *userkeys.Keyring) map[string]domain.Event {
	t.Helper()
	schematest.WaitVisible(t, db)
	events, err := schema.ReadAfter(schema.WithKeyring(context.Background(), k), db, schema.Cursor{}, 10000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]domain.Event{}
	for _, e := range events {
		out[e.DeliveryID] = e
	}
	return out
}

// A new user's data key is stored by the same statement as the events it
// seals: one transaction (the key row's xmin is the event's transaction
// id), no separate key statement, synchronous_commit untouched, and the
// key is cached once committed (the next delivery is sealed without the
// database).
func TestFreshKeysCommitWithTheirEvents(t *testing.T) {
	db, appends := newOneConnDBs(t)
	k := newKeyring(t)
	store := schema.NewStore(appends)
	store.Keys = k
	ctx := context.Background()
	const users = 8
	var sent []domain.Delivery
	for i := range users {
		user := fmt.Sprintf("user_fresh_%d", i)
		d := delivery(t, "msg_"+user, "user.created", user)
		if stored, err := store.Append(ctx, d); err != nil || !stored {
			t.Fatalf("append for %s: stored=%v err=%v", user, stored, err)
		}
		if k.CachedKey(user) == nil {
			t.Fatalf("%s's fresh key is not cached after its commit", user)
		}
		sent = append(sent, d)
	}
	var sameTx, keys int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE k.xmin::text::bigint = (e.transaction_id::text::numeric % 4294967296)::bigint), count(*)
FROM user_keys k JOIN events e ON e.user_id = k.user_id WHERE k.wrapped IS NOT NULL`).Scan(&sameTx, &keys); err != nil {
		t.Fatal(err)
	}
	if keys != users || sameTx != users {
		t.Fatalf("%d of %d key rows committed in their event's transaction, want %d of %d", sameTx, keys, users, users)
	}
	var keyStatements int
	if err := appends.GetContext(ctx, &keyStatements, `SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%commit_mode%'`); err != nil || keyStatements != 0 {
		t.Fatalf("the separate key statement was prepared %d times (%v): new users' keys should go with their events", keyStatements, err)
	}
	var sync string
	if err := appends.GetContext(ctx, &sync, `SHOW synchronous_commit`); err != nil || sync == "off" {
		t.Fatalf("synchronous_commit on the store's connection: %q (%v)", sync, err)
	}
	got := readAll(t, db, k)
	for _, d := range sent {
		if e := got[d.ID]; !bytes.Equal(e.Body, d.Body) {
			t.Errorf("%s reads back %q", d.ID, e.Body)
		}
	}
}

// A delivery about a user the ledger knows but this process does not (its
// key row made by another process) is stored under the stored key, not a
// second one: the fresh key's row is refused, nothing of that group is
// stored by it, and the group is sealed again through the key statement.
// The same for a user erased by another process: the body is discarded.
func TestFreshKeyOfAKnownUserFallsBack(t *testing.T) {
	db, appends := newOneConnDBs(t)
	one, other := twoKeyrings(t)
	first := schema.NewStore(appends)
	first.Keys = one
	ctx := context.Background()
	known := delivery(t, "msg_known_1", "user.created", "user_known")
	erased := delivery(t, "msg_gone_1", "user.created", "user_gone")
	for _, d := range []domain.Delivery{known, erased} {
		if _, err := first.Append(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, `UPDATE user_keys SET wrapped = NULL, destroyed_at = now() WHERE user_id = 'user_gone'`); err != nil {
		t.Fatal(err)
	}
	var storedKey []byte
	if err := db.GetContext(ctx, &storedKey, `SELECT wrapped FROM user_keys WHERE user_id = 'user_known'`); err != nil {
		t.Fatal(err)
	}

	// Another process, its cache empty: both users are new to it.
	second := schema.NewStore(appends)
	second.Keys = other
	again := delivery(t, "msg_known_2", "user.updated", "user_known")
	after := delivery(t, "msg_gone_2", "user.updated", "user_gone")
	for _, d := range []domain.Delivery{again, after} {
		if res, err := second.AppendDelivery(ctx, d); err != nil || res != domain.AppendStored {
			t.Fatalf("append %s: %v %v", d.ID, res, err)
		}
	}
	var rows int
	var wrapped []byte
	if err := db.QueryRowContext(ctx, `SELECT count(*), (array_agg(wrapped))[1] FROM user_keys WHERE user_id = 'user_known'`).Scan(&rows, &wrapped); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || !bytes.Equal(wrapped, storedKey) {
		t.Fatalf("user_known has %d key rows, the stored key changed: %v", rows, !bytes.Equal(wrapped, storedKey))
	}
	got := readAll(t, db, one)
	if e := got[again.ID]; !bytes.Equal(e.Body, again.Body) || e.Erased {
		t.Errorf("the known user's delivery reads back %q (erased %v)", e.Body, e.Erased)
	}
	if e := got[after.ID]; !e.Erased || len(e.Body) != 0 {
		t.Errorf("the erased user's delivery reads back %q (erased %v), want erased", e.Body, e.Erased)
	}
	var sealed []byte
	if err := db.GetContext(ctx, &sealed, `SELECT body_sealed FROM events WHERE delivery_id = 'msg_gone_2'`); err != nil || !bytes.Equal(sealed, userkeys.Discarded) {
		t.Errorf("the erased user's new body is stored as %x (%v), want discarded", sealed, err)
	}
	// The fallback ran the key statement.
	var keyStatements int
	if err := appends.GetContext(ctx, &keyStatements, `SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%commit_mode%'`); err != nil || keyStatements != 1 {
		t.Errorf("the key statement was prepared %d times (%v), want 1 (the fallback)", keyStatements, err)
	}
}

// Two processes racing to store the first deliveries about the same new
// users each make a fresh key; one row wins per user, and every delivery of
// both reads back under it.
func TestFreshKeysRacingProcesses(t *testing.T) {
	db, appends := schematest.NewDBs(t)
	one, other := twoKeyrings(t)
	stores := []*schema.Store{schema.NewStore(appends), schema.NewStore(appends)}
	stores[0].Keys, stores[1].Keys = one, other
	ctx := context.Background()
	const users, each = 20, 4
	var mu sync.Mutex
	var sent []domain.Delivery
	var wg sync.WaitGroup
	for p, store := range stores {
		for w := range each {
			wg.Go(func() {
				for u := range users {
					user := fmt.Sprintf("user_race_%02d", u)
					d := delivery(t, fmt.Sprintf("msg_race_%d_%d_%d", p, w, u), "user.updated", user)
					if res, err := store.AppendDelivery(ctx, d); err != nil || res != domain.AppendStored {
						t.Errorf("append %s: %v %v", d.ID, res, err)
						return
					}
					mu.Lock()
					sent = append(sent, d)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	var keys int
	if err := db.GetContext(ctx, &keys, `SELECT count(*) FROM user_keys`); err != nil || keys != users {
		t.Fatalf("%d key rows (%v), want one per user (%d)", keys, err, users)
	}
	got := readAll(t, db, one)
	if len(got) != len(sent) || len(sent) != users*each*len(stores) {
		t.Fatalf("%d events read, %d sent", len(got), len(sent))
	}
	for _, d := range sent {
		if e := got[d.ID]; !bytes.Equal(e.Body, d.Body) || e.Erased {
			t.Errorf("%s reads back %q (erased %v)", d.ID, e.Body, e.Erased)
		}
	}
}
