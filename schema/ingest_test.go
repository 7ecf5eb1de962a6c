package schema_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	wmsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// holdFlusher makes store's only flusher wait: another transaction inserts
// the delivery id "msg_block" and keeps it uncommitted, then an Append of
// msg_block starts and its INSERT waits on that row. Every Append started
// meanwhile queues for the next group commit. release rolls the other
// transaction back (so msg_block is stored) and waits for that Append.
func holdFlusher(t *testing.T, db *sqlx.DB, store *schema.Store) (release func()) {
	t.Helper()
	ctx := context.Background()
	store.MaxInFlight = 1
	blocker, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := wmsql.NewPublisher(blocker, wmsql.PublisherConfig{SchemaAdapter: schema.EventsSchema{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(schema.Topic, schema.DeliveryMessage(delivery(t, "msg_block", "user.created", "user_block"))); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := store.Append(ctx, delivery(t, "msg_block", "user.created", "user_block"))
		done <- err
	}()
	eventually(t, "the first group commit waits on the uncommitted row", func() bool {
		var n int
		db.Get(&n, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)
		return n > 0
	})
	return func() {
		t.Helper()
		if err := blocker.Rollback(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("msg_block: %v", err)
		}
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Issue 11, item 6: when PostgreSQL refuses a group commit because of one
// row (here a CHECK only this test adds, standing for any value validation
// let through), every other delivery of that batch is still stored and
// answered; only the offenders fail, as EINVALID.
func TestGroupCommitSparesInnocentsWhenARowIsRefused(t *testing.T) {
	db, appends := schematest.NewDBs(t) // the service's store pool
	ctx := context.Background()
	if _, err := db.Exec(`ALTER TABLE events ADD CONSTRAINT test_refuse_poison CHECK (delivery_id NOT LIKE 'msg_poison%')`); err != nil {
		t.Fatal(err)
	}
	store := schema.NewStore(appends)
	var mu sync.Mutex
	var failedSizes []int
	store.OnCommit = func(n int, _ time.Duration, err error) {
		if err != nil {
			mu.Lock()
			failedSizes = append(failedSizes, n)
			mu.Unlock()
		}
	}
	release := holdFlusher(t, db, store)

	const innocents = 60
	ids := []string{"msg_poison_a", "msg_poison_b"}
	for i := range innocents {
		ids = append(ids, fmt.Sprintf("msg_innocent_%02d", i))
	}
	type outcome struct {
		res domain.AppendResult
		err error
	}
	out := make([]outcome, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := store.AppendDelivery(ctx, delivery(t, id, "user.updated", "user_gc"))
			out[i] = outcome{res, err}
		}()
	}
	eventually(t, "every delivery queues behind the held group commit", func() bool { return store.Pending() == len(ids) })
	release()
	wg.Wait()

	for i, id := range ids {
		o := out[i]
		if i < 2 {
			if domain.ErrorCode(o.err) != domain.EINVALID {
				t.Errorf("%s: %v %v, want EINVALID", id, o.res, o.err)
			}
			continue
		}
		if o.err != nil || o.res != domain.AppendStored {
			t.Errorf("innocent %s: %v %v, want stored", id, o.res, o.err)
		}
	}
	var n int
	db.Get(&n, `SELECT count(*) FROM events WHERE delivery_id LIKE 'msg_innocent_%'`)
	if n != innocents {
		t.Errorf("%d innocent deliveries stored, want %d", n, innocents)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failedSizes) == 0 || failedSizes[0] != len(ids) {
		t.Errorf("failed group commits carried %v deliveries: the %d were never one batch", failedSizes, len(ids))
	}
}

// Issue 11, item 12: AppendDelivery tells a redelivery of the same body
// (duplicate) from one with another body (conflict), for copies already
// stored and for copies racing in one group commit; the first body stays.
func TestAppendDeliveryTellsDuplicateFromConflict(t *testing.T) {
	db, appends := schematest.NewDBs(t) // the service's store pool
	ctx := context.Background()
	store := schema.NewStore(appends)
	d := delivery(t, "msg_c", "user.created", "user_c")
	other := delivery(t, "msg_c", "user.updated", "user_c")
	for _, c := range []struct {
		d    domain.Delivery
		want domain.AppendResult
	}{{d, domain.AppendStored}, {d, domain.AppendDuplicate}, {other, domain.AppendConflict}, {d, domain.AppendDuplicate}} {
		if res, err := store.AppendDelivery(ctx, c.d); err != nil || res != c.want {
			t.Errorf("%s: %v %v, want %v", c.d.Type, res, err, c.want)
		}
	}
	e, err := schema.EventByDeliveryID(ctx, db, "msg_c")
	if err != nil || !bytes.Equal(e.Body, d.Body) {
		t.Fatalf("stored body changed (err %v)", err)
	}

	// Copies in one batch: msg_pair (never stored) and msg_c (stored above).
	release := holdFlusher(t, db, store)
	pairA, pairB := delivery(t, "msg_pair", "user.created", "user_p"), delivery(t, "msg_pair", "user.updated", "user_p")
	copies := []domain.Delivery{pairA, pairA, pairB, pairB, d, other}
	res := make([]domain.AppendResult, len(copies))
	var wg sync.WaitGroup
	for i, c := range copies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if res[i], err = store.AppendDelivery(ctx, c); err != nil {
				t.Error(err)
			}
		}()
	}
	eventually(t, "the copies queue behind the held group commit", func() bool { return store.Pending() == len(copies) })
	release()
	wg.Wait()
	storedBody := map[string][]byte{}
	for _, id := range []string{"msg_pair", "msg_c"} {
		e, err := schema.EventByDeliveryID(ctx, db, id)
		if err != nil {
			t.Fatal(err)
		}
		storedBody[id] = e.Body
	}
	if !bytes.Equal(storedBody["msg_c"], d.Body) {
		t.Error("msg_c's stored body changed")
	}
	nStored := 0
	for i, c := range copies {
		want := domain.AppendConflict
		if bytes.Equal(c.Body, storedBody[c.ID]) {
			want = domain.AppendDuplicate
		}
		if res[i] == domain.AppendStored && c.ID == "msg_pair" && want == domain.AppendDuplicate {
			nStored++
			continue
		}
		if res[i] != want {
			t.Errorf("copy %d (%s, %s): %v, want %v", i, c.ID, c.Type, res[i], want)
		}
	}
	if nStored != 1 {
		t.Errorf("msg_pair answered stored %d times, want 1", nStored)
	}
}

// Issue 11, item 11: one classification of database errors. What is not
// the delivery's own fault is retryable (EUNAVAILABLE) when it is an outage;
// what a row's values cause is a data fault.
func TestClassifySQLSTATEs(t *testing.T) {
	for code, want := range map[string]string{
		"55000": "unavailable", // database is not currently accepting connections (ALLOW_CONNECTIONS false)
		"55P03": "unavailable", // lock not available
		"57P01": "unavailable", // admin shutdown
		"57P03": "unavailable", // cannot connect now (starting up)
		"57014": "unavailable", // query canceled (statement timeout)
		"53300": "unavailable", // too many connections
		"53100": "unavailable", // disk full
		"08006": "unavailable", // connection failure
		"40001": "unavailable", // serialization failure
		"40P01": "unavailable", // deadlock
		"25006": "unavailable", // read-only transaction: a standby after failover
		"58030": "unavailable", // I/O error
		"22021": "data",        // invalid byte sequence (NUL, not UTF-8)
		"22P05": "data",        // untranslatable character (jsonb NUL)
		"22008": "data",        // datetime field overflow
		"23514": "data",        // check violation
		"54000": "data",        // index row size exceeds the maximum
		"42P01": "neither",     // undefined table: a bug or a missing migration
		"42501": "neither",     // insufficient privilege: configuration
		"XX000": "neither",     // internal error
	} {
		err := fmt.Errorf("insert: %w", &pq.Error{Code: pq.ErrorCode(code), Message: "test"})
		got := "neither"
		switch {
		case schema.Unavailable(err) && schema.Refused(err):
			got = "both"
		case schema.Unavailable(err):
			got = "unavailable"
		case schema.Refused(err):
			got = "data"
		}
		if got != want {
			t.Errorf("SQLSTATE %s: %s, want %s", code, got, want)
		}
		if c := domain.ErrorCode(schema.Classify(err)); (c == domain.EUNAVAILABLE) != (want == "unavailable") {
			t.Errorf("SQLSTATE %s: Classify gives %s", code, c)
		}
	}
}
