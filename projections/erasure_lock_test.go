package projections

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
)

// heldProjector's Apply says when a batch is in it (in) and returns only
// once released.
type heldProjector struct {
	once    sync.Once
	in      chan struct{}
	release chan struct{}
}

func (p *heldProjector) Name() string    { return "held" }
func (p *heldProjector) Types() []string { return nil }
func (p *heldProjector) Apply(ctx context.Context, tx *sqlx.Tx, events []domain.Event) ([]Failure, error) {
	p.once.Do(func() { close(p.in) })
	<-p.release
	return nil, nil
}

// TestAnErasureWaitsForABatchInFlight: a batch holds the erasure lock
// shared from its read to its commit, so an erasure (BeginErasure, which
// destroys the key) waits for it: nothing a projector, or the relay (a
// projector of the same Runner, publishing inside Apply), read before the
// key went can be written or published after the erasure commits.
func TestAnErasureWaitsForABatchInFlight(t *testing.T) {
	ctx := context.Background()
	db := schematest.NewDB(t)
	ds := history(t, 7, 1, 3)
	load(t, db, ds)
	waitVisible(t, db)
	p := &heldProjector{in: make(chan struct{}), release: make(chan struct{})}
	if err := EnsureCheckpoint(ctx, db, p.Name()); err != nil {
		t.Fatal(err)
	}
	stepped := make(chan error, 1)
	go func() {
		_, err := NewRunner(db, nil, p).Step(ctx, p)
		stepped <- err
	}()
	<-p.in
	erased := make(chan error, 1)
	go func() {
		_, _, err := schema.BeginErasure(ctx, db, schema.Erasure{UserID: ds[0].UserID, At: time.Now(), By: "test", Reason: "test"})
		erased <- err
	}()
	waitFor(t, "the erasure to wait for the batch's lock", func() bool {
		select {
		case err := <-erased:
			t.Fatalf("the erasure returned while a batch was in flight (err %v)", err)
		default:
		}
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND datname = current_database()`); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	select {
	case err := <-erased:
		t.Fatalf("the erasure returned while a batch was in flight (err %v)", err)
	default:
	}
	close(p.release)
	if err := <-stepped; err != nil {
		t.Fatal(err)
	}
	if err := <-erased; err != nil {
		t.Fatal(err)
	}
}
