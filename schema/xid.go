package schema

import (
	"context"
	"fmt"
	"strconv"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// XIDCounter compares the newest transaction id stored in the ledger with
// the cluster's transaction counter.
type XIDCounter struct {
	// MaxStored is the greatest events.transaction_id (0 on an empty ledger).
	MaxStored uint64
	// Next is the id the cluster gives the next transaction.
	Next uint64
}

// Behind reports whether new deliveries would be stored with smaller xid8
// values than existing ones: the state after a logical dump is restored into
// a new cluster (watermill issue 576). Readers ordered by (transaction_id,
// position) would then never see them.
func (c XIDCounter) Behind() bool { return c.Next <= c.MaxStored }

// ResetEpoch returns the transaction id epoch to give pg_resetwal (-e) so
// that every new transaction id is above MaxStored: one past MaxStored's
// epoch. Only the epoch moves: PostgreSQL keeps it nowhere but in the
// control file, while moving the 32-bit counter (-x) far ahead would make
// the restored rows' own, unfrozen xmins look like the future (they would
// vanish) or trip the wraparound limits.
func (c XIDCounter) ResetEpoch() uint64 { return c.MaxStored>>32 + 1 }

// ReadXIDCounter reads the counter (without taking a transaction id).
func ReadXIDCounter(ctx context.Context, q Queryer) (XIDCounter, error) {
	var maxStored, next string
	err := q.QueryRowxContext(ctx, `SELECT COALESCE((SELECT transaction_id FROM events ORDER BY transaction_id DESC LIMIT 1), '0'::xid8)::text,
	pg_snapshot_xmax(pg_current_snapshot())::text`).Scan(&maxStored, &next)
	if err != nil {
		return XIDCounter{}, fmt.Errorf("read transaction counter: %w", Classify(err))
	}
	var c XIDCounter
	if c.MaxStored, err = strconv.ParseUint(maxStored, 10, 64); err != nil {
		return c, domain.Errorf(domain.EINTERNAL, "read transaction counter: %v", err)
	}
	if c.Next, err = strconv.ParseUint(next, 10, 64); err != nil {
		return c, domain.Errorf(domain.EINTERNAL, "read transaction counter: %v", err)
	}
	return c, nil
}
