package projections

import (
	"context"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// ChainName is the name of the hash-chain sealer.
const ChainName = "chain"

// Chain is the hash-chain sealer: a projector that appends the chain link of
// every event, in ledger order, to event_chain (schema.Seal). Its output is
// tamper evidence made once when the event is first seen; it cannot be
// rebuilt (a rebuild would re-seal whatever the table holds now, tampered or
// not), so Rebuild refuses it.
type Chain struct{}

// NewChain returns the chain sealer.
func NewChain() *Chain { return &Chain{} }

// Name implements Projector.
func (*Chain) Name() string { return ChainName }

// Types implements Projector: every event is sealed.
func (*Chain) Types() []string { return nil }

// Apply implements Projector. It never skips an event: any error rolls the
// batch back, and the Runner retries it (Chain is gapless: no event is ever
// isolated as poison, or the chain would not cover the ledger).
//
// No event can make its own link refused: a link is (seq, position, hash),
// all computed from the stored row (position, and SHA-256 over the stored
// bytes, see domain.ChainHash), and the body is hashed, never decoded, so a
// body the users projection refuses seals like any other. The errors left
// are the database's (down, or event_chain tampered with), which retrying
// and `ledger audit verify` are for.
func (*Chain) Apply(ctx context.Context, tx *sqlx.Tx, events []domain.Event) ([]Failure, error) {
	_, err := schema.Seal(ctx, tx, events)
	return nil, err
}

func (*Chain) gapless() {}

// Default returns the projectors a service runs: users, organizations,
// the chain sealer and the audit workspace's read models.
func Default() []Projector {
	return []Projector{NewUsers(), NewOrganizations(), NewChain(), NewWorkspace()}
}
