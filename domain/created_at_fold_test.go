package domain_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// TestFoldCreatedAtIsOrderInsensitive folds every order of two snapshots
// whose created_at differ (one of them has none) and a deletion: the
// tombstone must tell the same created_at whatever the order, as the
// projector (ledger order) and the point-in-time view (time order) fold
// the same events in different orders.
func TestFoldCreatedAtIsOrderInsensitive(t *testing.T) {
	snap := func(pos, updated int64, created string) domain.Event {
		body := fmt.Sprintf(`{"type":"user.updated","object":"event","timestamp":%d,"data":{"id":"user_1","object":"user",%s"updated_at":%d}}`, 5000+pos, created, updated)
		return domain.Event{Position: pos, DeliveryID: fmt.Sprint("msg_", pos), Type: "user.updated", UserID: "user_1",
			Body: []byte(body), OccurredAt: time.UnixMilli(5000 + pos)}
	}
	deleted := userEvent(3, "user.deleted", "user_1", 0, "", "", "")
	for _, tc := range []struct{ name, older, newer string }{
		{"different created_at", `"created_at":100,`, `"created_at":200,`},
		{"newer has none", `"created_at":100,`, ``},
		{"older has none", ``, `"created_at":200,`},
	} {
		a, b := snap(1, 1000, tc.older), snap(2, 2000, tc.newer)
		orders := [][]domain.Event{{a, b, deleted}, {b, a, deleted}, {a, deleted, b}, {b, deleted, a}, {deleted, a, b}, {deleted, b, a}}
		want, errs := domain.Fold(orders[0])
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		for _, o := range orders[1:] {
			got, _ := domain.Fold(o)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: order %d,%d,%d folds to created_at %v, order 1,2,3 to %v",
					tc.name, o[0].Position, o[1].Position, o[2].Position, got.CreatedAt, want.CreatedAt)
			}
		}
		// Without the deletion too.
		ab, _ := domain.Fold([]domain.Event{a, b})
		ba, _ := domain.Fold([]domain.Event{b, a})
		if !reflect.DeepEqual(ab, ba) {
			t.Errorf("%s: snapshots fold to created_at %v or %v by order", tc.name, ab.CreatedAt, ba.CreatedAt)
		}
	}
}
