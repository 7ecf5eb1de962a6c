package domain_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// An erased user whom reconcile later finds gone from Clerk is deleted by
// the user.snapshot_deleted stored (body discarded) after the erasure, in
// every order of the events; an erased user.snapshot (Clerk still has the
// user) neither deletes nor brings anything back.
func TestErasedSnapshotDeletedStillDeletes(t *testing.T) {
	const id = "user_erased_1"
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	created := domain.Event{Position: 1, DeliveryID: "msg_1", Type: "user.created", UserID: id, OccurredAt: t0,
		Body: []byte(fmt.Sprintf(`{"type":"user.created","object":"event","timestamp":%d,"data":{"id":%q,"object":"user","first_name":"Zenobia","created_at":%d,"updated_at":%d}}`, t0.UnixMilli(), id, t0.UnixMilli(), t0.UnixMilli()))}
	erasedAt := t0.Add(time.Hour)
	erasure := domain.Event{Position: 2, DeliveryID: "ledger_erasure_" + id, Type: domain.ErasureEventType, UserID: id, OccurredAt: erasedAt, Body: domain.ErasureEventBody(id, erasedAt)}
	snap := domain.Event{Position: 3, DeliveryID: "clerk_api:" + id + ":9", Type: domain.TypeUserSnapshot, UserID: id, OccurredAt: t0.Add(2 * time.Hour), Erased: true}
	gone := domain.Event{Position: 4, DeliveryID: "clerk_api:" + id + ":gone", Type: domain.TypeUserSnapshotDeleted, UserID: id, OccurredAt: t0.Add(3 * time.Hour), Erased: true}
	fold := func(es ...domain.Event) domain.User {
		t.Helper()
		var u domain.User
		for _, e := range es {
			var err error
			if u, err = domain.Apply(u, e); err != nil {
				t.Fatal(err)
			}
		}
		return u
	}
	if u := fold(created, erasure, snap); u.Deleted || !u.Erased() || u.FirstName != "" {
		t.Fatalf("after an erased snapshot: %+v, want the live erased tombstone", u)
	}
	for _, order := range [][]domain.Event{{created, erasure, snap, gone}, {gone, snap, erasure, created}, {created, gone, erasure}, {erasure, gone, created}} {
		u := fold(order...)
		if !u.Deleted || !u.DeletedAt.Equal(gone.OccurredAt) || !u.Erased() || !u.ErasedAt.Equal(erasedAt) || u.FirstName != "" {
			t.Fatalf("folded %v: %+v, want deleted at %v, erased at %v, nothing else", []int64{order[0].Position, order[1].Position}, u, gone.OccurredAt, erasedAt)
		}
	}
}
