package audit

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// TestAppendEventsPageMatchesEncodingJSON: the hand-written page encoder
// gives the same JSON value as encoding/json on the documented shape, for
// awkward events (escapes, non-ASCII, invalid UTF-8, unsealed, no user, a
// multi-line body, a tampered body that is not JSON).
func TestAppendEventsPageMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2024, 5, 28, 12, 0, 0, 123456000, time.UTC) // as scanAuditEvent returns it
	ev := func(pos int64, user, body string, hash []byte) schema.AuditEvent {
		return schema.AuditEvent{Event: domain.Event{Position: pos, DeliveryID: "msg_<&>\"" + user, Type: "user.updated", UserID: user,
			OccurredAt: at, ReceivedAt: at.Add(time.Microsecond), Body: []byte(body)}, LeafIndex: pos * 7, LeafHash: hash}
	}
	events := []schema.AuditEvent{
		ev(1, "user_1", `{"data":{"id":"user_1","first_name":"Zoë <b>"},"type":"user.updated"}`, []byte{0xde, 0xad}),
		ev(2, "", "{\n  \"type\": \"session.created\",\n  \"data\": {}\n}", nil),
		ev(3, "user_\xff\u2028", `not json at all "quoted"`, []byte{1}),
		ev(4, "user_4", `[1,2,3]`, nil),
	}
	for _, page := range [][]schema.AuditEvent{nil, events[:1], events} {
		want := EventsPage{Events: []EventJSON{}, Count: len(page), NextCursor: "abc\"def"}
		for _, e := range page {
			want.Events = append(want.Events, NewEventJSON(e))
		}
		wantJSON, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		got := AppendEventsPage(nil, page, want.NextCursor)
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, got)
		}
		if err := json.Unmarshal(wantJSON, &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("page of %d:\n got %s\nwant %s", len(page), got, wantJSON)
		}
	}
}
