package relay_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/relay"
	"github.com/clerk-ledger/clerk-ledger/relay/natstest"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestRelayPublishesTheLedgerInOrder: 10k deliveries appended by 16
// concurrent senders (group commits: ledger order is not position order)
// while two relays run on the same database and stream; a consumer then reads
// the stream: every event exactly once, in ledger order, payload byte for
// byte, headers, subjects (odd types on ledger._invalid).
func TestRelayPublishesTheLedgerInOrder(t *testing.T) {
	db := schematest.NewDB(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	log, _ := newLogger()
	runRelay(t, db, log, newRelay(t, srv, log, relay.Config{}))
	runRelay(t, db, log, newRelay(t, srv, log, relay.Config{}))

	const n = 10000
	appendConcurrently(t, db, "ord", n, 16)
	waitCount(t, js, relay.DefaultStream, n, 60*time.Second)

	events := ledger(t, db)
	if len(events) != n {
		t.Fatalf("ledger holds %d events", len(events))
	}
	msgs := natstest.Messages(t, js, relay.DefaultStream)
	checkFeed(t, relay.DefaultPrefix, events, msgs, nil)
	invalid := 0
	for _, m := range msgs {
		if m.Subject == "ledger._invalid" {
			invalid++
		}
	}
	if want := 103; invalid != want { // i%97 == 13 for i < 10000
		t.Errorf("%d messages on ledger._invalid, want %d", invalid, want)
	}
	// Applied counts each event once although two relays took turns.
	deadline := time.Now().Add(10 * time.Second)
	for s := status(t, db); s.Applied != n || s.LagEvents != 0; s = status(t, db) {
		if time.Now().After(deadline) {
			t.Fatalf("relay status: applied %d, lag %d, failed %d; want %d, 0, 0", s.Applied, s.LagEvents, s.Failed, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := status(t, db); s.Failed != 0 {
		t.Errorf("relay failed %d events", s.Failed)
	}
}

// TestRelayHeadersOfOddStoredValues: control characters in a stored user
// id, delivery id or type (rows the webhook refuses today
// but a ledger may hold) become U+FFFD in the headers, the body stays exact,
// the message id stays unique, and nothing stops.
func TestRelayHeadersOfOddStoredValues(t *testing.T) {
	db := schematest.NewDB(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	copyEvents(t, db, 200, func(i int) domain.Delivery { return rawDelivery("raw", i) })
	log, _ := newLogger()
	if err := projections.NewRunner(db, log, newRelay(t, srv, log, relay.Config{})).CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	events := ledger(t, db)
	msgs := natstest.Messages(t, js, relay.DefaultStream)
	checkFeed(t, relay.DefaultPrefix, events, msgs, nil)
	odd := 0
	for _, m := range msgs {
		if strings.ContainsRune(m.Header.Get(relay.HeaderUserID)+m.Header.Get(relay.HeaderDeliveryID)+m.Header.Get(relay.HeaderType), '\uFFFD') {
			odd++
		}
	}
	want := 0
	for i := range 200 {
		if r := i % 21; r == 3 || r == 10 || r == 17 {
			want++
		}
	}
	if odd != want {
		t.Errorf("%d messages with cleaned headers, want %d", odd, want)
	}
}

// TestRelayResumesFromTheStreamAfterACrash: a batch acknowledged by
// JetStream whose checkpoint never committed (the relay died in between) is
// not published again, even after the de-duplication window has passed:
// each batch starts after the stream's last message.
func TestRelayResumesFromTheStreamAfterACrash(t *testing.T) {
	db := schematest.NewDB(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: relay.DefaultStream, Subjects: []string{"ledger.>"}, Duplicates: time.Second}); err != nil {
		t.Fatal(err)
	}
	copyEvents(t, db, 50, func(i int) domain.Delivery { return delivery("crash", i) })
	events := ledger(t, db)
	log, logs := newLogger()
	rel := newRelay(t, srv, log, relay.Config{})

	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rel.Apply(ctx, tx, events[:30]); err != nil {
		t.Fatal(err)
	}
	tx.Rollback() // the crash: published, checkpoint not moved
	waitCount(t, js, relay.DefaultStream, 30, 5*time.Second)
	time.Sleep(1500 * time.Millisecond) // past the stream's 1 s de-duplication window

	run := projections.NewRunner(db, log, rel)
	if err := run.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	checkFeed(t, relay.DefaultPrefix, events, natstest.Messages(t, js, relay.DefaultStream), nil)
	if !strings.Contains(logs.String(), "events already in the stream skipped") || !strings.Contains(logs.String(), "events=30") {
		t.Errorf("the relay did not say it skipped the 30 published events:\n%s", logs.String())
	}
}

// TestRelayRepublishIsDroppedByJetStream: when the relay cannot see what
// the stream holds (its last message was deleted) it publishes the batch
// again from the checkpoint, and JetStream's de-duplication (Nats-Msg-Id =
// delivery id) drops every message it already has: none is stored twice,
// and the rest follow in order.
func TestRelayRepublishIsDroppedByJetStream(t *testing.T) {
	db := schematest.NewDB(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	copyEvents(t, db, 50, func(i int) domain.Delivery { return delivery("dup", i) })
	events := ledger(t, db)
	log, _ := newLogger()
	rel := newRelay(t, srv, log, relay.Config{})
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rel.Apply(ctx, tx, events[:30]); err != nil {
		t.Fatal(err)
	}
	tx.Rollback()
	s, err := js.Stream(ctx, relay.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, 30); err != nil {
		t.Fatal(err)
	}

	if err := projections.NewRunner(db, log, rel).CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	// The deleted event stays deleted: its id is still in the window.
	want := append(append([]domain.Event(nil), events[:29]...), events[30:]...)
	checkFeed(t, relay.DefaultPrefix, want, natstest.Messages(t, js, relay.DefaultStream), nil)
}

// TestRelayPublishesBodiesTooLargeForNATSWithoutThem: a body over the
// server's max_payload (refused by the client) or the stream's max_msg_size
// (refused by JetStream inside a window of later messages) is published
// without its body, in its place: the later messages are not stored before
// it, and it is recorded as a poison event.
func TestRelayPublishesBodiesTooLargeForNATSWithoutThem(t *testing.T) {
	big := func(run string, i int) domain.Delivery {
		d := delivery(run, i)
		if i == 7 || i == 12 {
			d.Type = "user.updated"
			d.Body = []byte(`{"data":{"id":"user_big","pad":"` + strings.Repeat("x", 6000) + `"},"object":"event","type":"user.updated"}`)
		}
		return d
	}
	for _, tc := range []struct {
		name       string
		opts       natstest.Options
		maxMsgSize int32
	}{
		{"server max_payload", natstest.Options{MaxPayload: 5000}, 0},
		{"stream max_msg_size", natstest.Options{}, 5000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := schematest.NewDB(t)
			srv := natstest.Start(t, tc.opts)
			_, js := srv.Connect(t)
			ctx := context.Background()
			if tc.maxMsgSize > 0 {
				if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: relay.DefaultStream, Subjects: []string{"ledger.>"}, MaxMsgSize: tc.maxMsgSize}); err != nil {
					t.Fatal(err)
				}
			}
			copyEvents(t, db, 40, func(i int) domain.Delivery { return big(tc.name[:6], i) })
			events := ledger(t, db)
			log, _ := newLogger()
			if err := projections.NewRunner(db, log, newRelay(t, srv, log, relay.Config{})).CatchUp(ctx); err != nil {
				t.Fatal(err)
			}
			omitted := map[int64]bool{events[7].Position: true, events[12].Position: true}
			checkFeed(t, relay.DefaultPrefix, events, natstest.Messages(t, js, relay.DefaultStream), omitted)
			s := status(t, db)
			if s.Failed != 2 || s.Applied != 38 || s.LastFailure == nil || !strings.Contains(s.LastFailure.Error, "published without it") {
				t.Errorf("status: failed %d, applied %d, last failure %+v; want 2, 38, published without it", s.Failed, s.Applied, s.LastFailure)
			}
		})
	}
}

// TestRelayWaitsWhileNATSIsDown: with the NATS server killed, the relay's
// batches fail and are retried with backoff (never poison: nothing is
// recorded as failed), ingest goes on, status shows the error; once the
// server is back every event is published once, in order.
func TestRelayWaitsWhileNATSIsDown(t *testing.T) {
	db := schematest.NewDB(t)
	srv := natstest.Start(t)
	log, _ := newLogger()
	runRelay(t, db, log, newRelay(t, srv, log, relay.Config{AckWait: time.Second}))
	copyEvents(t, db, 100, func(i int) domain.Delivery { return delivery("down1", i) })
	{
		_, js := srv.Connect(t)
		waitCount(t, js, relay.DefaultStream, 100, 20*time.Second)
	}

	srv.Kill()
	appendConcurrently(t, db, "down2", 300, 8) // ingest does not wait for NATS
	deadline := time.Now().Add(20 * time.Second)
	for s := status(t, db); !strings.Contains(s.LastError, "NATS") || s.Checkpoint.Position == 0; s = status(t, db) {
		if time.Now().After(deadline) {
			t.Fatalf("status while NATS is down: last error %q", s.LastError)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // several failed batches
	s := status(t, db)
	if s.Failed != 0 || s.LastFailure != nil || s.Applied != 100 || s.LagEvents != 300 {
		t.Fatalf("while NATS is down: applied %d, failed %d, lag %d, last failure %+v; want 100, 0, 300, none", s.Applied, s.Failed, s.LagEvents, s.LastFailure)
	}
	t.Logf("status while NATS is down: %s", s.LastError)

	srv.Restart()
	_, js := srv.Connect(t)
	waitCount(t, js, relay.DefaultStream, 400, 30*time.Second)
	checkFeed(t, relay.DefaultPrefix, ledger(t, db), natstest.Messages(t, js, relay.DefaultStream), nil)
	if s := status(t, db); s.Failed != 0 {
		t.Errorf("relay failed %d events", s.Failed)
	}
}

// TestRelayRefusesAStreamWithOtherSubjects: an existing stream whose
// subjects are not exactly <prefix>.> gives one clear line naming the stream
// and its subjects, at Check and at every batch; nothing is published.
func TestRelayRefusesAStreamWithOtherSubjects(t *testing.T) {
	db := schematest.NewDB(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	copyEvents(t, db, 5, func(i int) domain.Delivery { return delivery("subj", i) })
	for _, tc := range []struct {
		stream   string
		subjects []string
		want     string
	}{
		{"ORDERS", []string{"orders.>"}, `JetStream stream "ORDERS" has subjects ["orders.>"], which do not cover ledger.>`},
		{"NARROW", []string{"ledger.user.*"}, `JetStream stream "NARROW" has subjects ["ledger.user.*"], which do not cover ledger.>`},
		{"SHARED", []string{"ledger.>", "audit.>"}, `JetStream stream "SHARED" has subjects ["ledger.>" "audit.>"], and ["audit.>"] lie outside ledger.>`},
	} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: tc.stream, Subjects: tc.subjects}); err != nil {
			t.Fatal(err)
		}
		rel := newRelay(t, srv, nil, relay.Config{Stream: tc.stream})
		err := rel.Check(ctx)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") || domain.ErrorCode(err) != domain.ECONFLICT {
			t.Errorf("Check on %s: %v\nwant one line starting %s", tc.stream, err, tc.want)
		}
		run := projections.NewRunner(db, nil, rel)
		if err := projections.EnsureCheckpoint(ctx, db, relay.Name); err != nil {
			t.Fatal(err)
		}
		if _, err := run.Step(ctx, rel); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("batch on %s: %v", tc.stream, err)
		}
		if n := natstest.Count(t, js, tc.stream); n != 0 {
			t.Errorf("stream %s holds %d messages", tc.stream, n)
		}
		if err := js.DeleteStream(ctx, tc.stream); err != nil { // streams' subjects may not overlap
			t.Fatal(err)
		}
	}
	// The right subjects, on a stream made by someone else: used as it is.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MINE", Subjects: []string{"acme.feed.>"}}); err != nil {
		t.Fatal(err)
	}
	rel := newRelay(t, srv, nil, relay.Config{Stream: "MINE", Prefix: "acme.feed"})
	if err := projections.NewRunner(db, nil, rel).CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	checkFeed(t, "acme.feed", ledger(t, db), natstest.Messages(t, js, "MINE"), nil)
}

// TestRelayStopsAtAForeignMessage: a message another publisher put into the
// relay's stream stops the relay with an error naming it, instead of
// publishing after it; nothing more is stored.
func TestRelayStopsAtAForeignMessage(t *testing.T) {
	db := schematest.NewDB(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	copyEvents(t, db, 10, func(i int) domain.Delivery { return delivery("for1", i) })
	rel := newRelay(t, srv, nil, relay.Config{})
	run := projections.NewRunner(db, nil, rel)
	if err := run.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "ledger.user.updated", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	copyEvents(t, db, 10, func(i int) domain.Delivery { return delivery("for2", i) })
	_, err := run.Step(ctx, rel)
	if err == nil || !strings.Contains(err.Error(), `its last message (sequence 11, subject ledger.user.updated) was not published by a relay`) {
		t.Errorf("batch after a foreign message: %v", err)
	}
	if n := natstest.Count(t, js, relay.DefaultStream); n != 11 {
		t.Errorf("stream holds %d messages, want 11", n)
	}
}

func TestSubject(t *testing.T) {
	for typ, want := range map[string]string{
		"user.created":                   "ledger.user.created",
		"organizationMembership.updated": "ledger.organizationMembership.updated",
		"ledger.user_erased":             "ledger.ledger.user_erased",
		"waitlistEntry.created":          "ledger.waitlistEntry.created",
		"subscription-item.active":       "ledger.subscription-item.active",
		"user created":                   "ledger._invalid",
		"user.*":                         "ledger._invalid",
		"user.>":                         "ledger._invalid",
		">":                              "ledger._invalid",
		"a..b":                           "ledger._invalid",
		".a":                             "ledger._invalid",
		"a.":                             "ledger._invalid",
		"":                               "ledger._invalid",
		"_invalid":                       "ledger._invalid",
		"usér.created":                   "ledger._invalid",
		"user\tcreated":                  "ledger._invalid",
		"$JS.API.INFO":                   "ledger._invalid",
	} {
		if got := relay.Subject("ledger", typ); got != want {
			t.Errorf("Subject(%q) = %q, want %q", typ, got, want)
		}
	}
}

func TestCheckNames(t *testing.T) {
	for _, p := range []string{"ledger", "acme.ledger", "a-b_c"} {
		if err := relay.CheckPrefix(p); err != nil {
			t.Errorf("CheckPrefix(%q): %v", p, err)
		}
	}
	for _, p := range []string{"", "a b", "ledger.>", "a.*", "a.", ".a", "$SYS"} {
		if err := relay.CheckPrefix(p); err == nil || domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("CheckPrefix(%q) = %v, want EINVALID", p, err)
		}
	}
	for _, s := range []string{"LEDGER", "ledger-feed_2"} {
		if err := relay.CheckStreamName(s); err != nil {
			t.Errorf("CheckStreamName(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "A.B", "A B", "A*", "A>", "A/B", strings.Repeat("A", 201)} {
		if err := relay.CheckStreamName(s); err == nil {
			t.Errorf("CheckStreamName(%q) = nil", s)
		}
	}
	if _, err := relay.New(relay.Config{URL: "nats://127.0.0.1:1", Prefix: "a b"}, nil); err == nil || !strings.Contains(err.Error(), `"a b"`) {
		t.Errorf("New with a bad prefix: %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                        "nats://127.0.0.1:4222",
		"nats://alice:s3cret@n1:4222,nats://bob:pw@n2": "nats://alice:xxxxx@n1:4222,nats://bob:xxxxx@n2",
		"nats://t0ken@n1:4222":                         "nats://xxxxx@n1:4222",
	} {
		if got := relay.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDurableConsumerFollowsUserEvents runs the README's consumer (a
// durable consumer on ledger.user.>, one message at a time) against the
// feed of a ledger that grows while it consumes: it gets exactly the user
// events, in ledger order, with their bodies, and resumes where it left off.
func TestDurableConsumerFollowsUserEvents(t *testing.T) {
	db := schematest.NewDB(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	log, _ := newLogger()
	runRelay(t, db, log, newRelay(t, srv, log, relay.Config{}))
	copyEvents(t, db, 300, func(i int) domain.Delivery { return delivery("cons1", i) })
	waitCount(t, js, relay.DefaultStream, 300, 20*time.Second)

	ctx := context.Background()
	got := make(chan jetstream.Msg, 1000)
	consume := func() jetstream.ConsumeContext {
		cons, err := js.CreateOrUpdateConsumer(ctx, relay.DefaultStream, jetstream.ConsumerConfig{
			Durable: "billing", FilterSubject: "ledger.user.>", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) { got <- m; m.Ack() })
		if err != nil {
			t.Fatal(err)
		}
		return cc
	}
	var want []domain.Event
	userEvents := func() {
		want = want[:0]
		for _, e := range ledger(t, db) {
			if strings.HasPrefix(relay.Subject("ledger", e.Type), "ledger.user.") {
				want = append(want, e)
			}
		}
	}
	var seen []jetstream.Msg
	take := func(n int) {
		t.Helper()
		for len(seen) < n {
			select {
			case m := <-got:
				seen = append(seen, m)
			case <-time.After(10 * time.Second):
				t.Fatalf("consumer got %d user events, want %d", len(seen), n)
			}
		}
	}
	userEvents()
	cc := consume()
	take(len(want))
	cc.Stop()
	copyEvents(t, db, 300, func(i int) domain.Delivery { return delivery("cons2", i) })
	waitCount(t, js, relay.DefaultStream, 600, 20*time.Second)
	userEvents()
	cc = consume() // the same durable: resumes after the last ack
	take(len(want))
	cc.Stop()
	select {
	case m := <-got:
		t.Fatalf("an extra message: %s", m.Headers().Get(relay.HeaderPosition))
	case <-time.After(300 * time.Millisecond):
	}
	msgs := make([]natstest.Msg, len(seen))
	for i, m := range seen {
		md, _ := m.Metadata()
		msgs[i] = natstest.Msg{Seq: md.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}
	}
	checkFeed(t, relay.DefaultPrefix, want, msgs, nil)
}
