package schema_test

import (
	"context"
	"strings"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/translog"
)

// TestExistingLedgerGetsItsTreeAndKeepsItsChain: a ledger sealed by the
// retired chain sealer, migrated, gets its whole tree from leaf 0 from the
// tree sealer; its chain stays frozen and its old digest still verifies.
func TestExistingLedgerGetsItsTreeAndKeepsItsChain(t *testing.T) {
	ctx := context.Background()
	dsn := schematest.NewURL(t)
	db := schematest.Open(t, dsn)
	if err := schema.MigrateTo(ctx, db.DB, 5); err != nil {
		t.Fatal(err)
	}
	store := schema.NewStore(db)
	for i := range 12 {
		if _, err := store.Append(ctx, historyEvent(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO projection_checkpoints (name, position) VALUES ('chain', 12)`); err != nil {
		t.Fatal(err)
	}
	if _, err := schema.Migrate(ctx, db.DB); err != nil {
		t.Fatal(err)
	}
	// The chain as the retired sealer made it (its links do not cover the
	// new source column, so making them after the migration is the same).
	old := schematest.Sealer{Chain: true}
	old.SealAll(t, db, 12)
	digest, _, err := schema.ChainHead(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if _, found, _ := schema.ReadCheckpoint(ctx, db, "chain"); found {
		t.Error("the retired chain sealer's checkpoint is still there")
	}
	r := projections.NewRunner(db, nil, projections.Default()...)
	if err := r.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := schema.VerifyLog(ctx, db, func(note []byte) (translog.Checkpoint, error) {
		return translog.ParseCheckpoint(translog.NoteBody(note))
	})
	if err != nil || !rep.OK || rep.Checked != 12 || rep.Tree.Size != 12 {
		t.Fatalf("tree of the migrated ledger: %+v %v", rep, err)
	}
	// New events extend the tree, not the frozen chain.
	if _, err := store.Append(ctx, historyEvent(t, 12)); err != nil {
		t.Fatal(err)
	}
	schematest.WaitReadable(t, db, 13)
	if err := r.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := schema.TreeSize(ctx, db); n != 13 {
		t.Errorf("tree size %d after a new event", n)
	}
	var links int
	if err := db.GetContext(ctx, &links, `SELECT count(*) FROM event_chain`); err != nil || links != 12 {
		t.Errorf("frozen chain has %d links (%v)", links, err)
	}
	chain, err := schema.VerifyChain(ctx, db, &digest)
	if err != nil || !chain.OK {
		t.Errorf("old digest over the frozen chain: %+v %v", chain, err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE events SET source = 'x'`); err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Errorf("events are still append-only after the migration: %v", err)
	}
}
