package schema_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

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
	return newStoreDBs(t, 1, "")
}

// newStoreDBs is schematest.NewDBs with the store's pool of conns
// connections named appName (when not "") in pg_stat_activity.
func newStoreDBs(t *testing.T, conns int, appName string) (db, appends *sqlx.DB) {
	t.Helper()
	u := schematest.NewURL(t)
	db = schematest.Open(t, u)
	if _, err := schema.Migrate(context.Background(), db.DB); err != nil {
		t.Fatal(err)
	}
	if appName != "" {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		q := pu.Query()
		q.Set("application_name", appName)
		pu.RawQuery = q.Encode()
		u = pu.String()
	}
	appends, err := schema.Open(context.Background(), u, schema.PoolOptions{MaxOpen: conns, BinaryParameters: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { appends.Close() })
	return db, appends
}

// appendHeld appends ds from one goroutine each while store's group commit
// is held (holdFlusher), releases it once all wait, and returns each
// append's error: one group commit of all of ds.
func appendHeld(t *testing.T, db *sqlx.DB, store *schema.Store, ds []domain.Delivery) []error {
	t.Helper()
	release := holdFlusher(t, db, store)
	errs := make([]error, len(ds))
	var wg sync.WaitGroup
	for i, d := range ds {
		wg.Go(func() { _, errs[i] = store.AppendDelivery(context.Background(), d) })
	}
	eventually(t, "every delivery queues behind the held group commit", func() bool { return store.Pending() == len(ds) })
	release()
	wg.Wait()
	return errs
}

// keyMadeElsewhere stores a first delivery (id) about user through a store
// of keyring other on appends: another process of the ledger makes the
// user's key, which this test's keyring has never seen.
func keyMadeElsewhere(t *testing.T, appends *sqlx.DB, other *userkeys.Keyring, id, user string) {
	t.Helper()
	elsewhere := schema.NewStore(appends)
	elsewhere.Keys = other
	if _, err := elsewhere.Append(context.Background(), delivery(t, id, "user.created", user)); err != nil {
		t.Fatal(err)
	}
}

// checkReadBack reads db with k and checks that each of ds reads back as
// sent, not erased.
func checkReadBack(t *testing.T, db schema.Queryer, k *userkeys.Keyring, ds []domain.Delivery) {
	t.Helper()
	got := readAll(t, db, k)
	for _, d := range ds {
		if e := got[d.ID]; !bytes.Equal(e.Body, d.Body) || e.Erased {
			t.Errorf("%s reads back %q (erased %v)", d.ID, e.Body, e.Erased)
		}
	}
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
	checkReadBack(t, db, k, sent)
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
	// The refusal paused fresh keys: a new user's key, moments later, is
	// made by the key statement, in a transaction of its own.
	if _, err := second.Append(ctx, delivery(t, "msg_brand_new", "user.created", "user_brand_new")); err != nil {
		t.Fatal(err)
	}
	var sameTx bool
	if err := db.GetContext(ctx, &sameTx, `SELECT k.xmin::text::bigint = (e.transaction_id::text::numeric % 4294967296)::bigint
FROM user_keys k JOIN events e USING (user_id) WHERE k.user_id = 'user_brand_new'`); err != nil || sameTx {
		t.Errorf("a new user's key right after a refusal was stored with its event (%v): fresh keys were not paused", err)
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
	if len(sent) != users*each*len(stores) {
		t.Fatalf("%d deliveries stored of %d", len(sent), users*each*len(stores))
	}
	checkReadBack(t, db, one, sent)
}

// commitResults records each group commit's error (OnCommit) of store.
type commitResults struct {
	mu   sync.Mutex
	errs []error
}

func recordCommits(store *schema.Store) *commitResults {
	c := &commitResults{}
	store.OnCommit = func(_ int, _ time.Duration, err error) {
		c.mu.Lock()
		c.errs = append(c.errs, err)
		c.mu.Unlock()
	}
	return c
}

func (c *commitResults) taken() (taken, ok int) { return c.count(schema.ErrKeyRowTaken) }

// count returns how many group commits c saw end in target, and how many
// without error.
func (c *commitResults) count(target error) (matched, ok int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, err := range c.errs {
		switch {
		case errors.Is(err, target):
			matched++
		case err == nil:
			ok++
		}
	}
	return matched, ok
}

// The first delivery a process stores about a user erased by another
// process is refused as a fresh key (the destroyed row is taken), then
// stored discarded; the erased user gets no key, and nothing is cached.
func TestFreshKeyOfAnErasedUserIsDiscarded(t *testing.T) {
	db, appends := schematest.NewDBs(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `INSERT INTO user_keys (user_id, wrapped, destroyed_at) VALUES ('user_erased', NULL, now())`); err != nil {
		t.Fatal(err)
	}
	k := newKeyring(t)
	store := schema.NewStore(appends)
	store.Keys = k
	commits := recordCommits(store)
	d := delivery(t, "msg_after_erasure", "user.updated", "user_erased")
	if res, err := store.AppendDelivery(ctx, d); err != nil || res != domain.AppendStored {
		t.Fatalf("append: %v %v", res, err)
	}
	if taken, ok := commits.taken(); taken != 1 || ok != 1 {
		t.Errorf("group commits: %d refused as taken, %d ok; want 1 and 1", taken, ok)
	}
	var sealed, wrapped []byte
	if err := db.QueryRowContext(ctx, `SELECT e.body_sealed, k.wrapped FROM events e JOIN user_keys k USING (user_id) WHERE e.delivery_id = 'msg_after_erasure'`).Scan(&sealed, &wrapped); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sealed, userkeys.Discarded) || wrapped != nil {
		t.Errorf("stored body %x, key %x; want discarded and no key", sealed, wrapped)
	}
	if k.CachedKey("user_erased") != nil {
		t.Error("a key is cached for the erased user")
	}
}

// A group commit the database refuses because of some rows is split until
// only they fail; with fresh keys for users whose deliveries land in
// different halves, a later half meets the key row an earlier half stored
// and is sealed again under it. Every innocent delivery is stored and opens
// elsewhere, one key row per user, and every cached key is the stored one.
func TestFreshKeysSurviveASplitGroup(t *testing.T) {
	db, appends := schematest.NewDBs(t)
	ctx := context.Background()
	if _, err := db.Exec(`ALTER TABLE events ADD CONSTRAINT test_refuse_poison CHECK (delivery_id NOT LIKE 'msg_poison%')`); err != nil {
		t.Fatal(err)
	}
	mine, other := twoKeyrings(t)
	store := schema.NewStore(appends)
	store.Keys = mine
	commits := recordCommits(store)
	users := []string{"user_split_a", "user_split_b", "user_split_c"}
	var ds []domain.Delivery
	for i := range 42 { // more than a prepared group: the split's first INSERTs send their text
		ds = append(ds, delivery(t, fmt.Sprintf("msg_split_%02d", i), "user.updated", users[i%len(users)]))
	}
	ds = append(ds, delivery(t, "msg_poison_1", "user.updated", users[0]), delivery(t, "msg_poison_2", "user.updated", users[2]))
	errs := appendHeld(t, db, store, ds)
	for i, d := range ds {
		poison := strings.HasPrefix(d.ID, "msg_poison")
		if poison && domain.ErrorCode(errs[i]) != domain.EINVALID || !poison && errs[i] != nil {
			t.Errorf("%s: %v", d.ID, errs[i])
		}
	}
	if taken, _ := commits.taken(); taken == 0 {
		t.Error("no half met a key row stored by another half: the split did not exercise fresh keys")
	}
	checkReadBack(t, db, other, ds[:42])
	for _, u := range users {
		var rows int
		var stored []byte
		if err := db.QueryRowContext(ctx, `SELECT count(*), (array_agg(wrapped))[1] FROM user_keys WHERE user_id = $1`, u).Scan(&rows, &stored); err != nil {
			t.Fatal(err)
		}
		if rows != 1 {
			t.Errorf("%s has %d key rows", u, rows)
		}
		if c := mine.CachedKey(u); c != nil && !bytes.Equal(c, stored) {
			t.Errorf("%s: the cached key is not the stored one", u)
		}
	}
}

// One group with a new user and a user whose key another process made:
// the refused statement keeps the new user's key row and no event, and the
// group sealed again reads that row: every delivery opens.
func TestFreshKeysInAMixedGroup(t *testing.T) {
	db, appends := schematest.NewDBs(t)
	mine, other := twoKeyrings(t)
	keyMadeElsewhere(t, appends, other, "msg_mixed_known_0", "user_mixed_known")
	store := schema.NewStore(appends)
	store.Keys = mine
	commits := recordCommits(store)
	var ds []domain.Delivery
	for i := range 6 {
		user := "user_mixed_new"
		if i%2 == 1 {
			user = "user_mixed_known"
		}
		ds = append(ds, delivery(t, fmt.Sprintf("msg_mixed_%d", i), "user.updated", user))
	}
	for i, err := range appendHeld(t, db, store, ds) {
		if err != nil {
			t.Errorf("%s: %v", ds[i].ID, err)
		}
	}
	// The held group commit (holdFlusher's) and ours, which was refused once.
	if taken, ok := commits.taken(); taken != 1 || ok != 2 {
		t.Errorf("group commits: %d refused as taken, %d ok; want 1 and 2", taken, ok)
	}
	checkReadBack(t, db, other, ds)
}

// Keys made by the key statement (SealDeliveries) and by a group commit's
// fresh keys for the same new users, at the same time, are inserted in the
// same (user) order: neither waits for the other in a cycle. A trigger
// holds the fresh statement between its two key rows, so that the other
// statement starts in between; in delivery order it would take the second
// user's row first, and PostgreSQL would end one of them with a deadlock.
func TestKeyStatementsTakeUsersInOneOrder(t *testing.T) {
	db, appends := newStoreDBs(t, 2, "fresh")
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE FUNCTION test_slow_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.user_id = 'user_order_b' AND current_setting('application_name') = 'fresh' THEN
    PERFORM pg_sleep(1);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER test_slow_key BEFORE INSERT ON user_keys FOR EACH ROW EXECUTE FUNCTION test_slow_key()`); err != nil {
		t.Fatal(err)
	}
	one, other := twoKeyrings(t)
	store := schema.NewStore(appends)
	store.Keys = one
	release := holdFlusher(t, db, store)
	freshErrs := make([]error, 2)
	var wg sync.WaitGroup
	for i, user := range []string{"user_order_a", "user_order_b"} {
		wg.Go(func() {
			_, freshErrs[i] = store.AppendDelivery(ctx, delivery(t, fmt.Sprintf("msg_order_x_%d", i), "user.created", user))
		})
	}
	eventually(t, "both deliveries queue behind the held group commit", func() bool { return store.Pending() == 2 })
	release()
	eventually(t, "the fresh statement holds user_order_a's row and sleeps before user_order_b's", func() bool {
		var n int
		db.Get(&n, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fresh' AND wait_event = 'PgSleep'`)
		return n > 0
	})
	// In delivery order this batch names user_order_b first.
	_, sealErr := schema.SealDeliveries(ctx, db, other, []domain.Delivery{
		delivery(t, "msg_order_y_1", "user.updated", "user_order_b"),
		delivery(t, "msg_order_y_2", "user.updated", "user_order_a"),
	})
	wg.Wait()
	if sealErr != nil || freshErrs[0] != nil || freshErrs[1] != nil {
		t.Fatalf("key statement: %v; fresh keys: %v, %v", sealErr, freshErrs[0], freshErrs[1])
	}
}

// Hostile but signed deliveries about new users, in one group commit with
// fresh keys: JSON escapes PostgreSQL refuses in text and jsonb (\u0000, a
// lone surrogate) are stored sealed byte for byte beside an innocent
// delivery, and a delivery the store cannot take (a user id over the limit,
// a raw NUL) is refused alone with a clear EINVALID, before it joins the
// group.
func TestFreshKeysTakeHostileDeliveries(t *testing.T) {
	db, appends := schematest.NewDBs(t)
	k := newKeyring(t)
	store := schema.NewStore(appends)
	store.Keys = k
	mk := func(id, user, name string) domain.Delivery {
		body := []byte(`{"type":"user.updated","object":"event","timestamp":1716883200000,"data":{"id":"` + user + `","object":"user","first_name":"` + name + `"}}`)
		d, err := domain.NewDelivery(id, time.Now().Unix(), "v1,sig", body)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		return d
	}
	ds := []domain.Delivery{
		mk("msg_hostile_nul", "user_hostile_1", `a\u0000b`),
		mk("msg_hostile_surrogate", "user_hostile_2", `\ud800`),
		mk("msg_hostile_innocent", "user_hostile_3", "Ada"),
	}
	for i, err := range appendHeld(t, db, store, ds) {
		if err != nil {
			t.Errorf("%s: %v", ds[i].ID, err)
		}
	}
	checkReadBack(t, db, k, ds)

	long := ds[2]
	long.ID, long.UserID = "msg_hostile_long", "user_"+strings.Repeat("x", domain.MaxUserIDBytes)
	nul := ds[2]
	nul.ID, nul.Body = "msg_hostile_raw_nul", append([]byte(nil), ds[2].Body...)
	nul.Body[len(nul.Body)-3] = 0
	for _, d := range []domain.Delivery{long, nul} {
		if _, err := store.AppendDelivery(context.Background(), d); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("%s: %v, want EINVALID", d.ID, err)
		}
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM events WHERE delivery_id LIKE 'msg_hostile_%'`); err != nil || n != 3 {
		t.Errorf("%d hostile-test events stored (%v), want the 3 valid ones", n, err)
	}
}
