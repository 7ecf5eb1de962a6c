package relay_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/relay"
	"github.com/clerk-ledger/clerk-ledger/relay/natstest"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// TestRelayPublishesNoPlaintextOfAnErasedUser: on a sealed ledger, events
// of a user erased before the relay reaches them are published without a
// payload (content_omitted: erased), the user's email appears in no
// message, and the other users' events carry their exact bodies.
func TestRelayPublishesNoPlaintextOfAnErasedUser(t *testing.T) {
	db, k, ctx := schematest.NewSealedDB(t)
	store := schema.NewStore(db)
	store.Keys = k
	secret := []byte("erasable.person@example.org")
	for i, id := range []string{"user_erased", "user_kept", "user_erased", "user_kept"} {
		email := "kept.person@example.org"
		if id == "user_erased" {
			email = string(secret)
		}
		now := time.Now()
		body := fmt.Sprintf(`{"data":{"id":%q,"object":"user","email_addresses":[{"email_address":%q}],"updated_at":%d},"object":"event","type":"user.updated","timestamp":%d}`,
			id, email, now.UnixMilli()+int64(i), now.UnixMilli())
		d, err := domain.NewDelivery(fmt.Sprintf("msg_erase_%d", i), now.Unix(), "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.AppendDelivery(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := audit.New(audit.Config{DB: db}).Erase(ctx, audit.Actor{ID: "user_auditor", Channel: schema.ChannelCLI}, audit.EraseInput{UserID: "user_erased", Reason: "DSR-7"}); err != nil {
		t.Fatal(err)
	}
	schematest.WaitVisible(t, db)
	events, err := schema.ReadAfter(ctx, db, schema.Cursor{}, 100)
	if err != nil {
		t.Fatal(err)
	}

	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	log, _ := newLogger()
	rel := newRelay(t, srv, log, relay.Config{})
	if err := projections.NewRunner(db, log, rel).CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := natstest.Messages(t, js, relay.DefaultStream)
	if len(msgs) != len(events) || len(msgs) < 4 {
		t.Fatalf("%d messages for %d events", len(msgs), len(events))
	}
	erased := 0
	for i, m := range msgs {
		e := events[i]
		if bytes.Contains(m.Data, secret) || bytes.Contains(m.Data, []byte("erasable")) {
			t.Errorf("message %d (%s) carries the erased user's plaintext", m.Seq, m.Header.Get(relay.HeaderType))
		}
		if e.UserID == "user_erased" && e.Type == "user.updated" {
			erased++
			if len(m.Data) != 0 || m.Header.Get(relay.HeaderOmitted) != relay.OmittedErased {
				t.Errorf("erased event %d: payload %d bytes, %s %q", e.Position, len(m.Data), relay.HeaderOmitted, m.Header.Get(relay.HeaderOmitted))
			}
		}
		if e.UserID == "user_kept" && !bytes.Equal(m.Data, e.Body) {
			t.Errorf("kept event %d: payload %q, want its body", e.Position, m.Data)
		}
	}
	if erased != 2 {
		t.Fatalf("%d erased events published, want 2", erased)
	}
}
