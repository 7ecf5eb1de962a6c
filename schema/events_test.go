package schema_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

func delivery(t testing.TB, id, typ, user string) domain.Delivery {
	t.Helper()
	body, err := clerkgen.Event(typ, clerkgen.User{ID: user, Email: "e@example.com"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	d, err := domain.NewDelivery(id, time.Now().Unix(), "v1,sig", body)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestMigrateTwiceAndConcurrently(t *testing.T) {
	dsn := schematest.NewURL(t)
	db := schematest.Open(t, dsn)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	applied := make([]int, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := schematest.Open(t, dsn)
			res, err := schema.Migrate(ctx, own.DB)
			errs[i], applied[i] = err, len(res)
		}()
	}
	wg.Wait()
	total := 0
	for i := range 4 {
		if errs[i] != nil {
			t.Fatalf("migrator %d: %v", i, errs[i])
		}
		total += applied[i]
	}
	st, err := schema.MigrationStatus(ctx, db.DB)
	if err != nil {
		t.Fatal(err)
	}
	if total != len(st) {
		t.Errorf("4 concurrent migrators applied %d migrations in all, want each of %d exactly once", total, len(st))
	}
	res, err := schema.Migrate(ctx, db.DB)
	if err != nil || len(res) != 0 {
		t.Fatalf("second migrate: %d applied, err %v", len(res), err)
	}
	ok, err := schema.MigrationsCurrent(ctx, db.DB)
	if err != nil || !ok {
		t.Fatalf("MigrationsCurrent = %v, %v", ok, err)
	}
	for _, s := range st {
		if !s.Applied {
			t.Errorf("%s not applied", s.Name)
		}
	}
}

func TestEventsAreAppendOnly(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	store := schema.NewStore(db)
	if _, err := store.Append(ctx, delivery(t, "msg_1", "user.created", "user_1")); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`UPDATE events SET body = '{}'`,
		`UPDATE events SET type = 'user.deleted'`,
		`DELETE FROM events`,
		`TRUNCATE events`,
	} {
		_, err := db.ExecContext(ctx, stmt)
		if err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v, want the append-only trigger to refuse", stmt, err)
		}
	}
	var n int
	db.Get(&n, `SELECT count(*) FROM events WHERE type = 'user.created'`)
	if n != 1 {
		t.Fatalf("rows after refused changes: %d", n)
	}
}

func TestAppendReportsNewAndDuplicate(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	store := schema.NewStore(db)
	d := delivery(t, "msg_x", "user.created", "user_1")
	if stored, err := store.Append(ctx, d); err != nil || !stored {
		t.Fatalf("first append: %v %v", stored, err)
	}
	d2 := delivery(t, "msg_x", "user.updated", "user_1") // same svix-id, other body
	if stored, err := store.Append(ctx, d2); err != nil || stored {
		t.Fatalf("second append: stored=%v err=%v, want a no-op", stored, err)
	}
	e, err := schema.EventByDeliveryID(ctx, db, "msg_x")
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != "user.created" || string(e.Body) != string(d.Body) {
		t.Errorf("first delivery was overwritten: %s", e.Type)
	}
	if _, err := schema.EventByDeliveryID(ctx, db, "msg_nope"); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Errorf("missing delivery: %v, want ENOTFOUND", err)
	}
}

// A transaction that appended an event but commits late must not be skipped
// by a reader that already read past events committed after it.
func TestReadAfterNeverSkipsLateCommit(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	store := schema.NewStore(db)

	late, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Rollback()
	pub, err := wmsql.NewPublisher(late, wmsql.PublisherConfig{SchemaAdapter: schema.EventsSchema{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(schema.Topic, schema.DeliveryMessage(delivery(t, "msg_late", "user.created", "user_l"))); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Append(ctx, delivery(t, "msg_early", "user.created", "user_e")); err != nil {
		t.Fatal(err)
	}
	// msg_early is committed, but an older transaction is still open: the gate holds it back.
	got, err := schema.ReadAfter(ctx, db, schema.Cursor{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("read %d events past an open older transaction, want 0", len(got))
	}
	if err := late.Commit(); err != nil {
		t.Fatal(err)
	}
	// The gate is cluster-wide: another test's open transaction may hold
	// both back a moment longer.
	schematest.WaitReadable(t, db, 2)
	got, err = schema.ReadAfter(ctx, db, schema.Cursor{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].DeliveryID != "msg_late" || got[1].DeliveryID != "msg_early" {
		t.Fatalf("ledger order = %v, want msg_late then msg_early", ids(got))
	}
	// Paging with the cursor continues after the last one read.
	rest, err := schema.ReadAfter(ctx, db, schema.After(got[0]), 10)
	if err != nil || len(rest) != 1 || rest[0].DeliveryID != "msg_early" {
		t.Fatalf("after first: %v %v", ids(rest), err)
	}
}

func ids(es []domain.Event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.DeliveryID
	}
	return out
}

// The Watermill SQL subscriber reads the ledger through EventsSchema, in
// ledger order, with the exact bodies.
func TestWatermillSubscriberReadsLedger(t *testing.T) {
	db := schematest.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store := schema.NewStore(db)
	var want []domain.Delivery
	for i := range 25 {
		d := delivery(t, fmt.Sprintf("msg_%02d", i), "user.updated", "user_w")
		if _, err := store.Append(ctx, d); err != nil {
			t.Fatal(err)
		}
		want = append(want, d)
	}
	sub, err := wmsql.NewSubscriber(db, wmsql.SubscriberConfig{
		ConsumerGroup:    "test",
		SchemaAdapter:    schema.EventsSchema{BatchSize: 10},
		OffsetsAdapter:   wmsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true,
		PollInterval:     50 * time.Millisecond,
	}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, schema.Topic)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range want {
		select {
		case m := <-msgs:
			if m.Metadata.Get(schema.MetaDeliveryID) != d.ID || string(m.Payload) != string(d.Body) {
				t.Fatalf("message %d: %s, want %s", i, m.Metadata.Get(schema.MetaDeliveryID), d.ID)
			}
			m.Ack()
		case <-ctx.Done():
			t.Fatalf("only %d of %d messages arrived", i, len(want))
		}
	}
}

func TestQueryEventsFilters(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	store := schema.NewStore(db)
	for i, c := range []struct{ typ, user string }{
		{"user.created", "user_a"}, {"session.created", "user_a"}, {"user.updated", "user_b"},
		{"email.created", "user_a"}, {"user.deleted", "user_a"},
	} {
		if _, err := store.Append(ctx, delivery(t, fmt.Sprintf("msg_%d", i), c.typ, c.user)); err != nil {
			t.Fatal(err)
		}
	}
	// Readers see events below the cluster-wide xid8 gate: wait until any
	// transaction open elsewhere on the cluster has let these through.
	schematest.WaitReadable(t, db, 5)
	check := func(f schema.EventFilter, want ...string) {
		t.Helper()
		got, err := schema.QueryEvents(ctx, db, f)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ids(got)) != fmt.Sprint(want) {
			t.Errorf("%+v: got %v, want %v", f, ids(got), want)
		}
	}
	check(schema.EventFilter{UserID: "user_a"}, "msg_0", "msg_1", "msg_3", "msg_4")
	check(schema.EventFilter{Types: []string{"user.*"}}, "msg_0", "msg_2", "msg_4")
	check(schema.EventFilter{Types: []string{"user.*", "email.created"}, UserID: "user_a"}, "msg_0", "msg_3", "msg_4")
	check(schema.EventFilter{Types: []string{"session.created"}}, "msg_1")
	check(schema.EventFilter{Since: time.Now().Add(time.Hour)})
	check(schema.EventFilter{Until: time.Now().Add(time.Hour), Limit: 2}, "msg_0", "msg_1")
}

// Many concurrent appends, with copies of the same delivery racing inside
// and across group commits: every delivery stored exactly once, exactly one
// caller told "stored" per delivery id, every caller answered.
func TestGroupCommitUnderConcurrency(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	for _, cfg := range []struct{ batch, inFlight int }{{1, 1}, {3, 2}, {200, 4}} {
		store := schema.NewStore(db)
		store.MaxBatch, store.MaxInFlight = cfg.batch, cfg.inFlight
		const ids, copies = 60, 4
		var mu sync.Mutex
		storedBy := map[string]int{}
		var wg sync.WaitGroup
		for i := range ids * copies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("msg_gc_%d_%d_%d", cfg.batch, cfg.inFlight, i%ids)
				stored, err := store.Append(ctx, delivery(t, id, "user.updated", "user_gc"))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if stored {
					storedBy[id]++
				} else if _, ok := storedBy[id]; !ok {
					storedBy[id] += 0
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		var n int
		db.Get(&n, `SELECT count(*) FROM events WHERE delivery_id LIKE $1`, fmt.Sprintf("msg_gc_%d_%d_%%", cfg.batch, cfg.inFlight))
		if n != ids {
			t.Errorf("%+v: %d rows, want %d", cfg, n, ids)
		}
		for id, k := range storedBy {
			if k != 1 {
				t.Errorf("%+v: %s answered stored %d times", cfg, id, k)
			}
		}
		if len(storedBy) != ids {
			t.Errorf("%+v: %d ids answered stored, want %d", cfg, len(storedBy), ids)
		}
	}
}

// A Watermill message carries its delivery typed, not as metadata strings:
// published in the caller's transaction, every column is the delivery's
// (the body byte for byte, no user id as NULL), and a message that carries
// no delivery is refused as EINVALID with nothing stored.
func TestDeliveryMessageCarriesTypedDelivery(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	body := []byte(`{"type":"email.created","object":"event","timestamp":1716883200123,"data":{"id":"ema_1","to":"Zoë <z@example.com>","q":"\"quoted\" \\ back"}}`)
	d, err := domain.NewDelivery("msg_typed", 1716883260, "v1,sig v1a,other", body)
	if err != nil {
		t.Fatal(err)
	}
	msg := schema.DeliveryMessage(d)
	if len(msg.Metadata) != 0 {
		t.Errorf("message metadata %v, want none", msg.Metadata)
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	pub, err := wmsql.NewPublisher(tx, wmsql.PublisherConfig{SchemaAdapter: schema.EventsSchema{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	bare := message.NewMessage(watermill.NewUUID(), body)
	bare.Metadata.Set(schema.MetaDeliveryID, "msg_bare")
	bare.Metadata.Set(schema.MetaType, "email.created")
	if err := pub.Publish(schema.Topic, bare); domain.ErrorCode(err) != domain.EINVALID {
		t.Fatalf("a message without a delivery: %v, want EINVALID", err)
	}
	if err := pub.Publish(schema.Topic, msg); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	e, err := schema.EventByDeliveryID(ctx, db, "msg_typed")
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Body) != string(body) || e.Type != d.Type || e.UserID != "" || !e.OccurredAt.Equal(d.OccurredAt) ||
		e.SvixTimestamp != d.Timestamp || e.SvixSignature != d.Signature {
		t.Errorf("stored %+v (body %q), want the delivery %+v", e, e.Body, d)
	}
	var nullUser bool
	if err := db.Get(&nullUser, `SELECT user_id IS NULL FROM events WHERE delivery_id = 'msg_typed'`); err != nil || !nullUser {
		t.Errorf("user_id NULL: %v %v, want true", nullUser, err)
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM events WHERE delivery_id = 'msg_bare'`); err != nil || n != 0 {
		t.Errorf("the refused message stored %d rows (%v)", n, err)
	}
}
