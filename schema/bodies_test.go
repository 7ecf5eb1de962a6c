package schema_test

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// TestReadBatchTakingReadsWhatReadBatchReads: a store handing its bodies
// over (Store.Bodies), a batch read taking them gives the events ReadBatch
// gives, field for field, when it holds half of them (the rest read from
// the table); the bodies are taken, so the next read of the same range
// reads them all from the table, and gives the same events again.
// A user whose key is destroyed after the append reads Erased either way,
// though the store still holds the body.
func TestReadBatchTakingReadsWhatReadBatchReads(t *testing.T) {
	db, appends := schematest.NewDBs(t)
	k := newKeyring(t)
	ctx := schema.WithKeyring(context.Background(), k)
	store := schema.NewStore(appends)
	store.Keys = k
	bodies := schema.NewBodies(domain.UserEventTypes(), 100, 1<<20)
	store.Bodies = bodies
	users := []string{"user_a", "user_b", "user_gone"}
	for i := range 12 {
		typ := "user.updated"
		if i < len(users) {
			typ = "user.created"
		}
		d := delivery(t, fmt.Sprintf("msg_%02d", i), typ, users[i%len(users)])
		if res, err := store.AppendDelivery(ctx, d); err != nil || res != domain.AppendStored {
			t.Fatalf("append %s: %v %v", d.ID, res, err)
		}
	}
	// A redelivery is not stored again and hands nothing over.
	if res, err := store.AppendDelivery(ctx, delivery(t, "msg_00", "user.created", "user_a")); err != nil || res == domain.AppendStored {
		t.Fatalf("redelivery: %v %v", res, err)
	}
	if got := bodies.Len(); got != 12 {
		t.Fatalf("store handed over %d bodies, want 12", got)
	}
	if _, err := db.ExecContext(ctx, `UPDATE user_keys SET wrapped = NULL, destroyed_at = now() WHERE user_id = 'user_gone'`); err != nil {
		t.Fatal(err)
	}
	schematest.WaitVisible(t, db)
	types := domain.UserEventTypes()
	want, err := schema.ReadBatch(ctx, db, schema.Cursor{}, types, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(want.Events) != 12 {
		t.Fatalf("ReadBatch read %d events, want 12", len(want.Events))
	}
	erased := 0
	for _, e := range want.Events {
		if e.Erased {
			erased++
		}
	}
	if erased != 4 {
		t.Fatalf("ReadBatch: %d erased events, want user_gone's 4", erased)
	}
	// Every other body taken out first: one batch takes half its bodies
	// and reads the other half from the table.
	for i, e := range want.Events {
		if i%2 == 1 && bodies.Take(e.DeliveryID) == nil {
			t.Fatalf("%s was not handed over", e.DeliveryID)
		}
	}
	for _, round := range []string{"taking half the bodies", "reading every body"} {
		got, err := schema.ReadBatchTaking(ctx, db, schema.Cursor{}, types, 100, bodies)
		if err != nil {
			t.Fatalf("%s: %v", round, err)
		}
		if !reflect.DeepEqual(got, want) {
			for i := range min(len(got.Events), len(want.Events)) {
				if !reflect.DeepEqual(got.Events[i], want.Events[i]) {
					t.Errorf("%s, event %d:\n got %+v\nwant %+v", round, i, got.Events[i], want.Events[i])
				}
			}
			t.Fatalf("%s: batch differs from ReadBatch's (%d events, next %v; want %d, %v)", round, len(got.Events), got.Next, len(want.Events), want.Next)
		}
		if n := bodies.Len(); n != 0 {
			t.Fatalf("%s: %d bodies left, want all taken", round, n)
		}
	}
	// A limit below the batch: the same events as ReadBatch's, and its cursor.
	store.Bodies = nil
	part, err := schema.ReadBatch(ctx, db, schema.Cursor{}, types, 5)
	if err != nil {
		t.Fatal(err)
	}
	got, err := schema.ReadBatchTaking(ctx, db, schema.Cursor{}, types, 5, schema.NewBodies(nil, 10, 1<<20))
	if err != nil || !reflect.DeepEqual(got, part) {
		t.Fatalf("limit 5: %v, equal %v", err, reflect.DeepEqual(got, part))
	}
}

// TestBodiesKeepsTheNewestWithinItsBounds: Bodies drops its oldest body
// when it holds its most bodies or bytes, keeps no body larger than the
// bound allows, and a body taken is gone.
func TestBodiesKeepsTheNewestWithinItsBounds(t *testing.T) {
	b := schema.NewBodies(nil, 3, 100)
	body := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
	for i, id := range []string{"a", "b", "c", "d"} {
		b.Keep(id, "user.updated", body(10, byte('a'+i)))
	}
	if b.Len() != 3 || b.Take("a") != nil {
		t.Fatalf("3 entries: holds %d, the oldest still there", b.Len())
	}
	if got := b.Take("b"); !bytes.Equal(got, body(10, 'b')) {
		t.Fatalf("take b: %q", got)
	}
	if b.Take("b") != nil || b.Len() != 2 {
		t.Fatalf("b taken twice, or %d left", b.Len())
	}
	// 20 bytes held (c, d): 85 more make room by dropping c only.
	b.Keep("e", "user.updated", body(85, 'e'))
	if b.Len() != 2 || b.Take("c") != nil {
		t.Fatalf("100 bytes: c should have made room for e (%d held)", b.Len())
	}
	// 95 held (d, e): 40 more drop both.
	b.Keep("f", "user.updated", body(40, 'f'))
	if b.Len() != 1 || b.Take("d") != nil || b.Take("e") != nil || b.Take("f") == nil {
		t.Fatal("100 bytes: d and e should have made room for f")
	}
	b.Keep("big", "user.updated", body(101, 'x'))
	if b.Take("big") != nil {
		t.Fatal("a body over the byte bound was kept")
	}
	// The same id kept twice holds the first body, counted once.
	twice := schema.NewBodies(nil, 2, 30)
	twice.Keep("a", "user.updated", body(10, 'a'))
	twice.Keep("a", "user.updated", body(20, 'b'))
	twice.Keep("c", "user.updated", body(10, 'c'))
	if got := twice.Take("a"); !bytes.Equal(got, body(10, 'a')) || twice.Take("c") == nil {
		t.Fatalf("kept twice: a is %q", got)
	}
	twice.Keep("d", "user.updated", body(30, 'd'))
	if twice.Take("d") == nil {
		t.Fatal("30 bytes did not fit in an empty Bodies of 30")
	}
	// A Bodies for some types keeps no other type's body.
	users := schema.NewBodies([]string{"user.updated"}, 10, 1000)
	users.Keep("s", "session.created", body(10, 's'))
	users.Keep("u", "user.updated", body(10, 'u'))
	if users.Len() != 1 || users.Take("s") != nil || users.Take("u") == nil {
		t.Fatal("a session event's body was kept by a Bodies of user.updated")
	}
	huge := schema.NewBodies(nil, 10, 1<<30)
	huge.Keep("huge", "user.updated", body(1<<20, 'h'))
	if huge.Len() != 0 {
		t.Fatal("a 1 MiB body was kept")
	}
	// Taken bodies' slots are dropped when they reach the oldest: many keeps
	// and takes never hold more than the bound.
	for i := range 1000 {
		id := fmt.Sprint("k", i)
		b.Keep(id, "user.updated", body(10, 'k'))
		if i%2 == 0 {
			b.Take(id)
		}
		if b.Len() > 3 {
			t.Fatalf("after %d keeps: %d bodies", i, b.Len())
		}
	}
}
