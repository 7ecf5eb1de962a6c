package schema_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
		switch {
		case e.UserID == "user_2" && e.Type != "organization.created":
			if !e.Erased || e.Body != nil || e.Salt != nil {
				t.Fatalf("%s of the erased user: erased=%v body %q", e.DeliveryID, e.Erased, e.Body)
			}
			erased++
		case e.Erased || !bytes.Equal(e.Body, want[e.DeliveryID]):
			t.Fatalf("%s: erased=%v body %q, want %q", e.DeliveryID, e.Erased, e.Body, want[e.DeliveryID])
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

// TestStreamSealedLeavesBodiesToOpen: StreamSealed hands every event of a
// sealed ledger once, a sealed body not opened yet (Sealed, no Body), which
// Open fills with the exact body using one Slot per user; an erased user's
// events come Erased and not Sealed; Open does nothing to a clear event;
// without the keyring a sealed event is an error.
func TestStreamSealedLeavesBodiesToOpen(t *testing.T) {
	const n = 300
	db, ctx, head, want := sealedHistory(t, n)
	slots := map[string]*userkeys.Slot{}
	var aad []byte
	sealed, erased, calls := 0, 0, 0
	if err := schema.StreamSealed(ctx, db, schema.Cursor{}, head, nil, func(s schema.Streamed) error {
		calls++
		e := s.Event
		switch {
		case e.UserID == "user_2" && e.Type != "organization.created":
			if !e.Erased || s.Sealed() || e.Body != nil {
				t.Fatalf("%s of the erased user: erased=%v sealed=%v body %q", e.DeliveryID, e.Erased, s.Sealed(), e.Body)
			}
			erased++
			return nil
		case s.Sealed():
			if e.Body != nil {
				t.Fatalf("%s: a sealed event came with a body", e.DeliveryID)
			}
			sealed++
		}
		slot := slots[e.UserID]
		if slot == nil {
			slot = &userkeys.Slot{}
			slots[e.UserID] = slot
		}
		var err error
		if aad, err = s.Open(slot, aad); err != nil {
			return err
		}
		if s.Sealed() || !bytes.Equal(s.Event.Body, want[e.DeliveryID]) {
			t.Fatalf("%s: sealed=%v body %q, want %q", e.DeliveryID, s.Sealed(), s.Event.Body, want[e.DeliveryID])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if calls != n || sealed == 0 || erased == 0 || sealed+erased == n {
		t.Fatalf("%d events streamed (want %d): %d sealed, %d erased, the rest clear", calls, n, sealed, erased)
	}
	if err := schema.StreamSealed(context.Background(), db, schema.Cursor{}, head, nil, func(schema.Streamed) error { return nil }); domain.ErrorCode(err) != domain.EUNAVAILABLE {
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
