package projections

import (
	"context"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// TreeName is the name of the tree sealer.
const TreeName = "tree"

// Tree is the sealer: a projector that appends every event, in ledger order,
// as the next leaf of the Merkle tree (schema.AppendLeaves). It replaced the
// hash chain's sealer, whose table event_chain is kept frozen; on a ledger
// that had a chain it starts from the first event and builds the tree of
// the whole ledger. Its output is tamper evidence made once when the event
// is first seen; it cannot be rebuilt (a rebuild would vouch for whatever
// the ledger holds now), so Rebuild refuses it.
type Tree struct{}

// NewTree returns the tree sealer.
func NewTree() *Tree { return &Tree{} }

// Name implements Projector.
func (*Tree) Name() string { return TreeName }

// Types implements Projector: every event is sealed. The Runner reads them
// without their sealed bodies (leafReader).
func (*Tree) Types() []string { return nil }

// Apply implements Projector. It never skips an event: any error rolls the
// batch back, and the Runner retries it (Tree is gapless: no event is ever
// isolated as poison, or the tree would not cover the ledger).
//
// No event can make its own leaf refused: a leaf row is (leaf index,
// position) and its hashes are computed from the stored row (the body is
// hashed, never decoded; see domain.LeafOf), so a body the users projection
// refuses seals like any other. The errors left are the database's (down,
// or the tree's tables tampered with), which retrying and `ledger audit
// verify` are for.
func (*Tree) Apply(ctx context.Context, tx *sqlx.Tx, events []domain.Event) ([]Failure, error) {
	_, err := schema.AppendLeaves(ctx, tx, events)
	return nil, err
}

func (*Tree) gapless() {}

// leavesOnly implements leafReader: a leaf needs the stored commitment of
// a sealed event, never its body.
func (*Tree) leavesOnly() {}

// Default returns the projectors a service runs: users, organizations,
// the tree sealer and the audit workspace's read models.
func Default() []Projector {
	return []Projector{NewUsers(), NewOrganizations(), NewTree(), NewWorkspace()}
}
