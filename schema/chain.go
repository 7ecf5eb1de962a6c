package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// ChainLink is the last sealed link of the hash chain.
type ChainLink struct {
	Seq      int64
	Position int64
	Hash     []byte
}

// LastLink returns the newest sealed link, or the zero ChainLink when nothing
// is sealed yet.
func LastLink(ctx context.Context, q Queryer) (ChainLink, error) {
	var l ChainLink
	err := q.QueryRowxContext(ctx, `SELECT seq, position, hash FROM event_chain ORDER BY seq DESC LIMIT 1`).Scan(&l.Seq, &l.Position, &l.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return ChainLink{}, nil
	}
	if err != nil {
		return ChainLink{}, fmt.Errorf("read chain head: %w", Classify(err))
	}
	return l, nil
}

// Seal appends the chain links of events, which must be the next events in
// ledger order after the last sealed one, inside tx. It must run in the same
// transaction as the sealer's checkpoint, with one sealer at a time (the
// projector runtime's lock guarantees both). It returns the new last link.
func Seal(ctx context.Context, tx *sqlx.Tx, events []domain.Event) (ChainLink, error) {
	last, err := LastLink(ctx, tx)
	if err != nil {
		return ChainLink{}, err
	}
	if len(events) == 0 {
		return last, nil
	}
	seqs := make([]int64, len(events))
	positions := make([]int64, len(events))
	hashes := make([][]byte, len(events))
	prev := last.Hash
	for i, e := range events {
		h := domain.ChainHash(prev, e)
		seqs[i] = last.Seq + int64(i) + 1
		positions[i] = e.Position
		hashes[i] = h[:]
		prev = hashes[i]
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO event_chain (seq, position, hash)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])`, pq.Array(seqs), pq.Array(positions), pq.Array(hashes))
	if err != nil {
		return ChainLink{}, fmt.Errorf("seal %d events after seq %d: %w", len(events), last.Seq, Classify(err))
	}
	n := len(events) - 1
	return ChainLink{Seq: seqs[n], Position: positions[n], Hash: hashes[n]}, nil
}
