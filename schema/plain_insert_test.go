package schema_test

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
)

// A group commit goes without ON CONFLICT first: a group holding a
// redelivery fails on the unique delivery id (ErrDeliveryTaken, told to
// OnCommit), stores nothing, and is inserted again with ON CONFLICT, so the
// redelivery is answered a duplicate and the rest of its group is stored,
// each once; groups right after go straight through ON CONFLICT; once the
// pause has passed, a redelivery is found by the failing INSERT again.
func TestGroupWithARedeliveryIsInsertedAgainSkippingIt(t *testing.T) {
	db, appends := schematest.NewDBs(t)
	ctx := context.Background()
	store := schema.NewStore(appends)
	store.Keys = newKeyring(t)
	commits := recordCommits(store)
	results := func() (taken, ok int) { return commits.count(schema.ErrDeliveryTaken) }

	first := delivery(t, "msg_a", "user.created", "user_a")
	if res, err := store.AppendDelivery(ctx, first); err != nil || res != domain.AppendStored {
		t.Fatalf("msg_a: %v %v", res, err)
	}
	if taken, ok := results(); taken != 0 || ok != 1 {
		t.Fatalf("a new delivery: %d taken, %d ok commits, want one plain INSERT", taken, ok)
	}

	// One group: the redelivery of msg_a and two new deliveries.
	group := []domain.Delivery{first, delivery(t, "msg_b", "user.created", "user_b"), delivery(t, "msg_c", "user.updated", "user_a")}
	var before, beforeOK int
	got, errs := appendAsOneGroup(t, db, store, group, func() { before, beforeOK = results() })
	want := []domain.AppendResult{domain.AppendDuplicate, domain.AppendStored, domain.AppendStored}
	for i := range group {
		if errs[i] != nil || got[i] != want[i] {
			t.Errorf("%s: %v %v, want %v", group[i].ID, got[i], errs[i], want[i])
		}
	}
	if taken, ok := results(); taken != before+1 || ok != beforeOK+2 { // msg_block's and the group's
		t.Fatalf("the group: %d taken, %d ok commits (before %d, %d), want one failed plain INSERT and its retry", taken, ok, before, beforeOK)
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM events WHERE delivery_id IN ('msg_a', 'msg_b', 'msg_c')`); err != nil || n != 3 {
		t.Fatalf("%d rows stored (%v), want 3", n, err)
	}

	// Right after, a redelivery goes straight through ON CONFLICT.
	taken0, _ := results()
	if res, err := store.AppendDelivery(ctx, first); err != nil || res != domain.AppendDuplicate {
		t.Fatalf("msg_a again: %v %v", res, err)
	}
	if taken, _ := results(); taken != taken0 {
		t.Fatal("a redelivery right after another failed a plain INSERT again")
	}
	// Past the pause, the plain INSERT finds it again.
	store.ResumePlainInserts()
	if res, err := store.AppendDelivery(ctx, first); err != nil || res != domain.AppendDuplicate {
		t.Fatalf("msg_a past the pause: %v %v", res, err)
	}
	if taken, _ := results(); taken != taken0+1 {
		t.Fatal("past the pause, a redelivery did not go through a plain INSERT first")
	}
}

// A group holding both a redelivery and a row PostgreSQL refuses (a CHECK
// only this test adds): whichever the plain INSERT fails on first, the
// redelivery is answered a duplicate, the offender alone EINVALID, and
// every other delivery stored once.
func TestGroupWithARedeliveryAndARefusedRow(t *testing.T) {
	db, appends := schematest.NewDBs(t)
	ctx := context.Background()
	if _, err := db.Exec(`ALTER TABLE events ADD CONSTRAINT test_refuse_poison CHECK (delivery_id NOT LIKE 'msg_poison%')`); err != nil {
		t.Fatal(err)
	}
	store := schema.NewStore(appends)
	store.Keys = newKeyring(t)
	first := delivery(t, "msg_m", "user.created", "user_m")
	if res, err := store.AppendDelivery(ctx, first); err != nil || res != domain.AppendStored {
		t.Fatalf("msg_m: %v %v", res, err)
	}
	group := []domain.Delivery{first, delivery(t, "msg_poison", "user.updated", "user_p")}
	for i := range 6 {
		group = append(group, delivery(t, "msg_ok_"+strconv.Itoa(i), "user.updated", "user_ok_"+strconv.Itoa(i)))
	}
	got, errs := appendAsOneGroup(t, db, store, group, store.ResumePlainInserts)
	for i, d := range group {
		switch {
		case i == 0:
			if errs[i] != nil || got[i] != domain.AppendDuplicate {
				t.Errorf("%s: %v %v, want a duplicate", d.ID, got[i], errs[i])
			}
		case i == 1:
			if domain.ErrorCode(errs[i]) != domain.EINVALID {
				t.Errorf("%s: %v %v, want EINVALID", d.ID, got[i], errs[i])
			}
		default:
			if errs[i] != nil || got[i] != domain.AppendStored {
				t.Errorf("%s: %v %v, want stored", d.ID, got[i], errs[i])
			}
		}
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM events WHERE delivery_id = 'msg_m' OR delivery_id LIKE 'msg_ok_%'`); err != nil || n != 7 {
		t.Fatalf("%d rows (%v), want msg_m once and the 6 others", n, err)
	}
}

// appendAsOneGroup appends group concurrently while the store's flusher is
// held (holdFlusher), so that every delivery queues for the same group
// commit; once all are pending it calls beforeRelease, releases the flusher
// and returns each delivery's result and error, in group's order.
func appendAsOneGroup(t *testing.T, db *sqlx.DB, store *schema.Store, group []domain.Delivery, beforeRelease func()) ([]domain.AppendResult, []error) {
	t.Helper()
	release := holdFlusher(t, db, store)
	got := make([]domain.AppendResult, len(group))
	errs := make([]error, len(group))
	var wg sync.WaitGroup
	for i, d := range group {
		wg.Go(func() { got[i], errs[i] = store.AppendDelivery(context.Background(), d) })
	}
	eventually(t, "the group queues behind the held group commit", func() bool { return store.Pending() == len(group) })
	beforeRelease()
	release()
	wg.Wait()
	return got, errs
}
