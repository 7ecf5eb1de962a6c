package relay

import (
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// TestErasedEventPublishedWithoutBody: an erased event (its user's key
// destroyed) is published with no payload and content_omitted "erased";
// any other event carries its exact body and no such header.
func TestErasedEventPublishedWithoutBody(t *testing.T) {
	r := &Relay{}
	e := domain.Event{Position: 7, DeliveryID: "msg_1", Type: "user.updated", UserID: "user_ada", OccurredAt: time.Now(), Erased: true}
	m := r.message(e, 6, "", "reply")
	if len(m.Payload) != 0 || m.Metadata.Get(HeaderOmitted) != OmittedErased || m.Metadata.Get(HeaderUserID) != "user_ada" {
		t.Fatalf("erased event: payload %q, headers %v", m.Payload, m.Metadata)
	}
	e.Erased, e.Body = false, []byte(`{"type":"user.updated"}`)
	m = r.message(e, 6, "", "reply")
	if string(m.Payload) != string(e.Body) || m.Metadata.Get(HeaderOmitted) != "" {
		t.Fatalf("clear event: payload %q, headers %v", m.Payload, m.Metadata)
	}
}
