package schema_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
	"github.com/jmoiron/sqlx"
)

// TestStreamEventsSealed: StreamEvents over a sealed ledger of several
// batches hands every event once, with its exact body, an erased user's events as Erased with no
// body; fn's error stops it, is returned as is, and no call follows it.
func TestStreamEventsSealed(t *testing.T) {
	const n = 700 // more than two of StreamEvents' batches
	db, ctx, head, want := sealedHistory(t, n)
	var got []domain.Event
	if err := schema.StreamEvents(ctx, db, schema.Cursor{}, head, nil, func(e domain.Event) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("streamed %d events, want %d", len(got), n)
	}
	erased := 0
	seen := map[string]bool{}
	for _, e := range got {
		if _, ok := want[e.DeliveryID]; !ok || seen[e.DeliveryID] {
			t.Fatalf("streamed %s again or unknown", e.DeliveryID)
		}
		seen[e.DeliveryID] = true
		if checkHistoryEvent(t, e, want) {
			erased++
		}
	}
	if erased == 0 {
		t.Fatal("no event of the erased user streamed")
	}
	stop := errors.New("stop")
	calls := 0
	err := schema.StreamEvents(ctx, db, schema.Cursor{}, head, nil, func(e domain.Event) error {
		if calls++; calls == 300 {
			return stop
		}
		if calls > 300 {
			return fmt.Errorf("called after the error")
		}
		return nil
	})
	if err != stop || calls != 300 {
		t.Fatalf("fn's error: %v after %d calls", err, calls)
	}
	// Without the keyring a sealed event is an error, not a body.
	if err := schema.StreamEvents(context.Background(), db, schema.Cursor{}, head, nil, func(domain.Event) error { return nil }); domain.ErrorCode(err) != domain.EUNAVAILABLE {
		t.Fatalf("streamed a sealed ledger without the keyring: %v", err)
	}
}

// TestStreamSealedLeavesBodiesToOpen: StreamSealed first gives every
// user's data key once (not the erased user's: destroyed), then hands every
// event of a sealed ledger once, a sealed body not opened yet (Sealed, no
// Body), which Open fills with the exact body using one Slot per user
// holding its key; the erased user's events open as Erased with no body,
// as does a body whose user's slot was given no key; Open does nothing to a
// clear event; without the keyring a sealed event is an error and no key
// is read; key's error stops the read, and with the keyring a nil key is
// an error.
func TestStreamSealedLeavesBodiesToOpen(t *testing.T) {
	const n = 300
	db, ctx, head, want := sealedHistory(t, n)
	slots := map[string]*userkeys.Slot{}
	key := func(user string, wrapped []byte) error {
		if slots[user] != nil {
			t.Fatalf("the key of %s given twice", user)
		}
		slots[user] = &userkeys.Slot{}
		return slots[user].Hold(wrapped)
	}
	var aad []byte
	sealed, erased, calls := 0, 0, 0
	if err := schema.StreamSealed(ctx, db, schema.Cursor{}, head, nil, key, func(s schema.Streamed) error {
		if calls++; calls == 1 {
			if len(slots) == 0 || slots["user_2"] != nil {
				t.Fatalf("before the first event: the keys of %d users, the erased user's %v", len(slots), slots["user_2"] != nil)
			}
		}
		e := s.Event
		if s.Sealed() {
			if e.Body != nil || e.Erased {
				t.Fatalf("%s: a sealed event came with a body (%q) or erased", e.DeliveryID, e.Body)
			}
			sealed++
		}
		slot := slots[e.UserID]
		if slot == nil {
			slot = &userkeys.Slot{} // no key given: the erased user
		}
		var err error
		if aad, err = s.Open(slot, aad); err != nil {
			return err
		}
		if e := s.Event; e.UserID == "user_2" && e.Type != "organization.created" {
			if !e.Erased || s.Sealed() || e.Body != nil {
				t.Fatalf("%s of the erased user: erased=%v sealed=%v body %q", e.DeliveryID, e.Erased, s.Sealed(), e.Body)
			}
			erased++
			return nil
		}
		if s.Sealed() || s.Event.Erased || !bytes.Equal(s.Event.Body, want[e.DeliveryID]) {
			t.Fatalf("%s: sealed=%v erased=%v body %q, want %q", e.DeliveryID, s.Sealed(), s.Event.Erased, s.Event.Body, want[e.DeliveryID])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if calls != n || sealed == 0 || erased == 0 || sealed == n {
		t.Fatalf("%d events streamed (want %d): %d sealed, %d of them erased, the rest clear", calls, n, sealed, erased)
	}
	// A user's body opened with a slot given no key is erased, not an error.
	opened := 0
	if err := schema.StreamSealed(ctx, db, schema.Cursor{}, head, nil, func(string, []byte) error { return nil }, func(s schema.Streamed) error {
		if !s.Sealed() {
			return nil
		}
		if _, err := s.Open(&userkeys.Slot{}, nil); err != nil || !s.Event.Erased || s.Event.Body != nil {
			t.Fatalf("%s with no key: erased=%v body %q err=%v", s.Event.DeliveryID, s.Event.Erased, s.Event.Body, err)
		}
		opened++
		return nil
	}); err != nil || opened != sealed {
		t.Fatalf("without keys: %d of %d sealed events erased, err=%v", opened, sealed, err)
	}
	stop := errors.New("stop")
	if err := schema.StreamSealed(ctx, db, schema.Cursor{}, head, nil, func(string, []byte) error { return stop }, func(schema.Streamed) error {
		t.Fatal("an event streamed after key's error")
		return nil
	}); err != stop {
		t.Fatalf("key's error: %v", err)
	}
	if err := schema.StreamSealed(ctx, db, schema.Cursor{}, head, nil, nil, func(schema.Streamed) error {
		t.Fatal("an event streamed with nowhere to give the keys")
		return nil
	}); err == nil {
		t.Fatal("a sealed ledger streamed with the keyring and no key function")
	}
	if err := schema.StreamSealed(context.Background(), db, schema.Cursor{}, head, nil, func(string, []byte) error {
		t.Fatal("a key read without the keyring")
		return nil
	}, func(schema.Streamed) error { return nil }); domain.ErrorCode(err) != domain.EUNAVAILABLE {
		t.Fatalf("streamed a sealed ledger without the keyring: %v", err)
	}
}

// sealedHistory returns a new database holding n history events (sealed
// under a new keyring, user_2's key destroyed), a context with the
// keyring, the gate head once they are all visible, and each delivery's
// body by id.
func sealedHistory(t *testing.T, n int) (*sqlx.DB, context.Context, schema.Cursor, map[string][]byte) {
	t.Helper()
	db := schematest.NewDB(t)
	ctx := schema.WithKeyring(context.Background(), newKeyring(t))
	bd := make([]schema.Backdated, n)
	want := map[string][]byte{}
	for i := range bd {
		d := historyEvent(t, i)
		bd[i] = schema.Backdated{Delivery: d, ReceivedAt: time.Now()}
		want[d.ID] = d.Body
	}
	tx, err := db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.CopyDeliveries(ctx, tx, bd); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE user_keys SET wrapped = NULL WHERE user_id = 'user_2'`); err != nil {
		t.Fatal(err)
	}
	schematest.WaitVisible(t, db)
	head, err := schema.GateHead(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	return db, ctx, head, want
}

// TestReadBatchSealed: ReadBatch, which reads its users' data keys after
// the events in one statement, hands every event of a sealed ledger once
// in ledger order, of every type or of the types asked, each with its
// exact body and its stored commitment; the erased user's sealed events
// come as Erased with no body, and its events kept in clear with theirs.
// A batch read without the keyring refuses sealed events (EUNAVAILABLE).
func TestReadBatchSealed(t *testing.T) {
	const n = 300
	db, ctx, _, want := sealedHistory(t, n)
	for _, types := range [][]string{nil, domain.UserEventTypes()} {
		var got []domain.Event
		c := schema.Cursor{}
		for {
			b, err := schema.ReadBatch(ctx, db, c, types, 70)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, b.Events...)
			c = b.Next
			if !b.Full {
				break
			}
		}
		wantN, erased := 0, 0
		for i := range n {
			if d := historyEvent(t, i); types == nil || slices.Contains(types, d.Type) {
				wantN++
			}
		}
		if len(got) != wantN {
			t.Fatalf("types %v: read %d events, want %d", types, len(got), wantN)
		}
		for i, e := range got {
			if i > 0 && !schema.After(got[i-1]).Less(schema.After(e)) {
				t.Fatalf("types %v: %s after %s: not in ledger order", types, e.DeliveryID, got[i-1].DeliveryID)
			}
			if e.UserID != "" && e.Type != "organization.created" && len(e.Commitment) != domain.HashSize {
				t.Fatalf("%s: sealed, read without its commitment", e.DeliveryID)
			}
			if checkHistoryEvent(t, e, want) {
				erased++
			}
		}
		if erased == 0 {
			t.Fatalf("types %v: no event of the erased user read", types)
		}
	}
	for _, types := range [][]string{nil, domain.UserEventTypes()} {
		if _, err := schema.ReadBatch(context.Background(), db, schema.Cursor{}, types, 70); domain.ErrorCode(err) != domain.EUNAVAILABLE {
			t.Fatalf("types %v: a sealed batch read without the keyring: %v", types, err)
		}
	}
}

// checkHistoryEvent checks e, an event of sealedHistory read back: the
// erased user's (user_2) sealed events come Erased with no body or salt
// (erased reports one), every other event with its exact body.
func checkHistoryEvent(t *testing.T, e domain.Event, want map[string][]byte) (erased bool) {
	t.Helper()
	if e.UserID == "user_2" && e.Type != "organization.created" {
		if !e.Erased || e.Body != nil || e.Salt != nil {
			t.Fatalf("%s of the erased user: erased=%v body %q", e.DeliveryID, e.Erased, e.Body)
		}
		return true
	}
	if e.Erased || !bytes.Equal(e.Body, want[e.DeliveryID]) {
		t.Fatalf("%s: erased=%v body %q, want %q", e.DeliveryID, e.Erased, e.Body, want[e.DeliveryID])
	}
	return false
}
