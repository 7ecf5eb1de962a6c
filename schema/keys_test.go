package schema_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
)

func newKeyring(t testing.TB) *userkeys.Keyring { return schematest.NewKeyring(t) }

// TestSealedBodiesAreStoredSealedAndReadInClear: with a keyring, a body
// about a user is stored only sealed (the body column is empty, the bytes
// are not in the row), reads with the keyring see the exact body, its
// commitment opens with the salt read, a read without a keyring fails
// loudly, and an event about no user stays clear. Redeliveries still tell
// duplicate from conflict.
func TestSealedBodiesAreStoredSealedAndReadInClear(t *testing.T) {
	db, appends := schematest.NewDBs(t) // bytea parameters sent in binary
	k := newKeyring(t)
	store := schema.NewStore(appends)
	store.Keys = k
	ctx := context.Background()
	d := delivery(t, "msg_sealed", "user.created", "user_sealed")
	if _, err := store.Append(ctx, d); err != nil {
		t.Fatal(err)
	}
	org, err := domain.NewDelivery("msg_org", d.Timestamp, "v1,sig", []byte(`{"type":"organization.created","object":"event","timestamp":1716883200000,"data":{"id":"org_1","object":"organization","name":"Acme"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Append(ctx, org); err != nil {
		t.Fatal(err)
	}
	// The user's key is now cached: the next delivery is sealed on the
	// appending goroutine (presealed), not in the group commit.
	if k.CachedKey("user_sealed") == nil {
		t.Fatal("the key the first append made is not cached")
	}
	d2 := delivery(t, "msg_sealed_2", "user.updated", "user_sealed")
	if _, err := store.Append(ctx, d2); err != nil {
		t.Fatal(err)
	}
	var body string
	var sealed []byte
	if err := db.QueryRowContext(ctx, `SELECT body, body_sealed FROM events WHERE delivery_id = 'msg_sealed'`).Scan(&body, &sealed); err != nil {
		t.Fatal(err)
	}
	if body != "" || len(sealed) == 0 || bytes.Contains(sealed, []byte("e@example.com")) {
		t.Fatalf("stored body %q, sealed %d bytes", body, len(sealed))
	}
	schematest.WaitVisible(t, db)
	if _, err := schema.ReadAfter(ctx, db, schema.Cursor{}, 10); err == nil {
		t.Fatal("a sealed event read without the keyring did not fail")
	}
	kctx := schema.WithKeyring(ctx, k)
	events, err := schema.ReadAfter(kctx, db, schema.Cursor{}, 10)
	if err != nil || len(events) != 3 {
		t.Fatalf("read: %v %d", err, len(events))
	}
	if p := events[2]; !bytes.Equal(p.Body, d2.Body) || len(p.Salt) != userkeys.SaltSize || bytes.Equal(p.Salt, events[0].Salt) ||
		domain.BodyCommitment(p.Salt, d2.Body) != p.BodyCommitment() {
		t.Fatalf("presealed delivery read back %q salt %x", p.Body, p.Salt)
	}
	e := events[0]
	if !bytes.Equal(e.Body, d.Body) || e.Erased || len(e.Salt) != userkeys.SaltSize {
		t.Fatalf("read back %q erased=%v salt %d", e.Body, e.Erased, len(e.Salt))
	}
	if domain.BodyCommitment(e.Salt, d.Body) != e.BodyCommitment() {
		t.Fatal("the stored commitment is not BodyCommitment(salt, body)")
	}
	if o := events[1]; !bytes.Equal(o.Body, org.Body) || o.Salt != nil || o.Commitment != nil {
		t.Fatalf("organization event: %q salt %v", o.Body, o.Salt)
	}
	if res, err := store.AppendDelivery(ctx, d); err != nil || res != domain.AppendDuplicate {
		t.Fatalf("redelivery: %v %v", res, err)
	}
	other := d
	other.Body = append(bytes.Clone(d.Body[:len(d.Body)-1]), ' ', '}')
	if res, err := store.AppendDelivery(ctx, other); err != nil || res != domain.AppendConflict {
		t.Fatalf("redelivery with another body: %v %v", res, err)
	}
	// Another keyring (a wrong master key) cannot open it: an error, not
	// an erased event.
	if _, err := schema.ReadAfter(schema.WithKeyring(ctx, newKeyring(t)), db, schema.Cursor{}, 10); err == nil {
		t.Fatal("a wrong master key read the sealed event")
	}
	// The key destroyed: the event reads as erased, with its metadata.
	if _, err := db.ExecContext(ctx, `UPDATE user_keys SET wrapped = NULL`); err != nil {
		t.Fatal(err)
	}
	events, err = schema.ReadAfter(kctx, db, schema.Cursor{}, 10)
	if err != nil || !events[0].Erased || events[0].Body != nil || events[0].DeliveryID != "msg_sealed" {
		t.Fatalf("after the key's destruction: %+v %v", events[0], err)
	}
	// A new delivery for the erased user is stored as a fact, body discarded.
	if _, err := store.Append(ctx, delivery(t, "msg_after", "user.updated", "user_sealed")); err != nil {
		t.Fatal(err)
	}
	schematest.WaitVisible(t, db)
	e, err = schema.EventByDeliveryID(kctx, db, "msg_after")
	if err != nil || !e.Erased || e.Body != nil {
		t.Fatalf("delivery after erasure: %+v %v", e, err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM user_keys WHERE wrapped IS NOT NULL`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("a delivery after erasure made a new key: %d %v", n, err)
	}
}

// TestErasureRacingDeliveries: deliveries about a user keep arriving while
// the user is erased. Whatever the interleaving, once the erasure has
// committed no event of the user can be read (each was sealed under the key
// destroyed, or discarded at ingest), no new key was made for them, and
// every delivery was answered stored.
func TestErasureRacingDeliveries(t *testing.T) {
	db := schematest.NewDB(t)
	k := newKeyring(t)
	store := schema.NewStore(db)
	store.Keys = k
	ctx := schema.WithKeyring(context.Background(), k)
	if _, err := store.Append(ctx, delivery(t, "msg_race_first", "user.created", "user_race")); err != nil {
		t.Fatal(err)
	}
	const n = 200
	errs := make(chan error, n)
	started := make(chan struct{})
	go func() {
		for i := range n {
			if i == 20 {
				close(started)
			}
			_, err := store.Append(ctx, delivery(t, fmt.Sprintf("msg_race_%03d", i), "user.updated", "user_race"))
			errs <- err
		}
	}()
	<-started
	if _, created, err := schema.BeginErasure(ctx, db, schema.Erasure{UserID: "user_race", At: time.Now(), By: "test", Reason: "race"}); err != nil || !created {
		t.Fatalf("erase: %v", err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	schematest.WaitVisible(t, db)
	var readable, erased int
	if _, err := schema.EachEvent(ctx, db, schema.EventFilter{UserID: "user_race"}, func(e domain.Event) error {
		if e.Erased {
			erased++
		} else if e.Type != domain.ErasureEventType {
			readable++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if readable != 0 || erased != n+1 {
		t.Fatalf("after the erasure: %d of the user's events readable, %d erased (want 0, %d)", readable, erased, n+1)
	}
	var live int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM user_keys WHERE wrapped IS NOT NULL`).Scan(&live); err != nil || live != 0 {
		t.Fatalf("%d live keys after the erasure (%v)", live, err)
	}
}

// TestReadLeavesAfterReadsNoSealedBody: the tree sealer's read gives every
// event the same leaf as a full read with the keyring (a sealed, an erased
// and a clear one), without a keyring and without the sealed body: a
// sealed event comes with its stored commitment and no body, a clear one
// with its body. A sealed row without a stored commitment is an error.
func TestReadLeavesAfterReadsNoSealedBody(t *testing.T) {
	db := schematest.NewDB(t)
	k := newKeyring(t)
	store := schema.NewStore(db)
	store.Keys = k
	ctx := context.Background()
	for _, d := range []domain.Delivery{delivery(t, "msg_a", "user.created", "user_a"), delivery(t, "msg_b", "user.created", "user_b")} {
		if _, err := store.Append(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	org, err := domain.NewDelivery("msg_org", time.Now().Unix(), "v1,sig", []byte(`{"type":"organization.created","object":"event","timestamp":1716883200000,"data":{"id":"org_1","object":"organization","name":"Acme"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Append(ctx, org); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE user_keys SET wrapped = NULL WHERE user_id = 'user_b'`); err != nil {
		t.Fatal(err)
	}
	schematest.WaitVisible(t, db)
	full, err := schema.ReadAfter(schema.WithKeyring(ctx, k), db, schema.Cursor{}, 10)
	if err != nil || len(full) != 3 {
		t.Fatalf("full read: %v %d", err, len(full))
	}
	leaves, err := schema.ReadLeavesAfter(ctx, db, schema.Cursor{}, 10)
	if err != nil || len(leaves) != 3 {
		t.Fatalf("leaf read: %v %d", err, len(leaves))
	}
	for i, e := range leaves {
		if e.Leaf() != full[i].Leaf() || schema.After(e) != schema.After(full[i]) {
			t.Fatalf("event %d: leaf %+v, full read's %+v", i, e.Leaf(), full[i].Leaf())
		}
	}
	if leaves[0].Body != nil || leaves[1].Body != nil || len(leaves[0].Commitment) != domain.HashSize || !full[1].Erased {
		t.Fatalf("sealed events: bodies %q %q, commitment %d", leaves[0].Body, leaves[1].Body, len(leaves[0].Commitment))
	}
	if !bytes.Equal(leaves[2].Body, org.Body) || leaves[2].Commitment != nil {
		t.Fatalf("clear event: %q %x", leaves[2].Body, leaves[2].Commitment)
	}
	b, err := schema.ReadLeafBatch(ctx, db, schema.After(leaves[0]), 10)
	if err != nil || len(b.Events) != 2 || b.Full || b.Next != schema.After(leaves[2]) {
		t.Fatalf("batch after the first: %v %+v", err, b)
	}
	// The table is append-only: the row is damaged past its trigger.
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL session_replication_role = replica; UPDATE events SET body_commitment = NULL WHERE delivery_id = 'msg_a'`); err != nil {
		t.Fatal(err)
	}
	if _, err := schema.ReadLeavesAfter(ctx, tx, schema.Cursor{}, 10); err == nil || !strings.Contains(err.Error(), "no stored body commitment") {
		t.Fatalf("a sealed event without its commitment read as a leaf: %v", err)
	}
}

// TestNewKeysCommitAsyncOnlyTheirOwnTransaction: the key statement (the
// path a group commit takes for a while after a fresh key found its user's
// row taken, TestFreshKeyOfAKnownUserFallsBack) commits with
// synchronous_commit off for its own transaction only: on the store's one
// connection, the next statement (the events INSERT and every later one)
// runs with the server's durable setting, and the event and its key are
// both stored.
func TestNewKeysCommitAsyncOnlyTheirOwnTransaction(t *testing.T) {
	db, one := newOneConnDBs(t)
	ctx := context.Background()
	var before string
	if err := one.GetContext(ctx, &before, `SHOW synchronous_commit`); err != nil {
		t.Fatal(err)
	}
	mine, other := twoKeyrings(t)
	// A user another process made a key for: this store's fresh key for
	// them is refused, which sends the next group commits through the key
	// statement (for a second).
	keyMadeElsewhere(t, one, other, "msg_known", "user_known")
	store := schema.NewStore(one)
	store.Keys = mine
	if _, err := store.Append(ctx, delivery(t, "msg_known_2", "user.updated", "user_known")); err != nil {
		t.Fatal(err)
	}
	// The refusal paused fresh keys for a second; hold the pause however
	// slow this machine is.
	store.PauseFreshKeys(time.Minute)
	// Eight new users, one append each: past the five runs after which
	// PostgreSQL may plan the prepared key statement generically.
	const users = 8
	for i := range users {
		user := fmt.Sprintf("user_async_%d", i)
		if stored, err := store.Append(ctx, delivery(t, "msg_"+user, "user.created", user)); err != nil || !stored {
			t.Fatalf("append for %s: stored=%v err=%v", user, stored, err)
		}
	}
	// The key statement is the store's prepared one (parsed and planned
	// once per connection, not at each group commit).
	var prepared int
	if err := one.GetContext(ctx, &prepared, `SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%commit_mode%'`); err != nil || prepared != 1 {
		t.Fatalf("prepared key statements on the store's connection: %d (%v), want 1", prepared, err)
	}
	// While paused, the new users' keys were made by the key statement:
	// each in its own transaction, before its event's.
	var own int
	if err := db.GetContext(ctx, &own, `SELECT count(*) FROM user_keys k JOIN events e ON e.user_id = k.user_id
WHERE k.user_id LIKE 'user_async_%' AND k.xmin::text::bigint <> (e.transaction_id::text::numeric % 4294967296)::bigint`); err != nil || own != users {
		t.Fatalf("%d of %d new users' keys committed in a transaction of their own (%v)", own, users, err)
	}
	var after string
	if err := one.GetContext(ctx, &after, `SHOW synchronous_commit`); err != nil {
		t.Fatal(err)
	}
	if after != before || after == "off" {
		t.Fatalf("synchronous_commit on the store's connection after appends: %q (before: %q)", after, before)
	}
	var keys, events int
	if err := db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM user_keys WHERE wrapped IS NOT NULL AND user_id LIKE 'user_async_%'), (SELECT count(*) FROM events WHERE body_sealed IS NOT NULL AND user_id LIKE 'user_async_%')`).Scan(&keys, &events); err != nil || keys != users || events != users {
		t.Fatalf("keys %d, sealed events %d: %v", keys, events, err)
	}
}

// CheckKeyring refuses a ledger holding a live data key wrapped by another
// master key whether that key's id sorts before or after this one's, names
// how many there are, ignores destroyed keys, and accepts a ledger whose
// live keys are all this master key's.
func TestCheckKeyringFindsOtherMasterKeysOnBothSides(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	k := newKeyring(t)
	mine, err := k.NewDataKey("user_mine")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO user_keys (user_id, wrapped, kek_id) VALUES ('user_mine', $1, $2),
  ('user_destroyed', NULL, '')`, mine, k.ID()); err != nil {
		t.Fatal(err)
	}
	if err := schema.CheckKeyring(ctx, db, k); err != nil {
		t.Fatalf("this master key's ledger (and a destroyed key of none): %v", err)
	}
	for _, other := range []string{"", "0", "~~~~"} { // before and after any hex id
		if _, err := db.ExecContext(ctx, `INSERT INTO user_keys (user_id, wrapped, kek_id) VALUES ('user_other_1', '\x01', $1), ('user_other_2', '\x02', $1)`, other); err != nil {
			t.Fatal(err)
		}
		err := schema.CheckKeyring(ctx, db, k)
		if domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), "2 data keys are wrapped by key id "+other) {
			t.Errorf("keys wrapped by %q: %v", other, err)
		}
		if _, err := db.ExecContext(ctx, `DELETE FROM user_keys WHERE user_id LIKE 'user_other_%'`); err != nil {
			t.Fatal(err)
		}
	}
}
