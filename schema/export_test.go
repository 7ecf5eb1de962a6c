package schema

import (
	"context"
	"database/sql"
	"time"
)

// VerifyChainInRanges exposes verifyChain to the tests: the same check split
// into more ranges than a small test ledger would get.
var VerifyChainInRanges = verifyChain

// VerifyLogInPages exposes verifyLog to the tests: the same check in pages
// of a few leaves, so that a small ledger crosses pages.
var VerifyLogInPages = verifyLog

// Pending is how many appends wait for a group commit: tests use it to
// gather a batch deterministically.
func (s *Store) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// MigrateTo applies the embedded migrations up to version: tests of a
// ledger from before a migration.
func MigrateTo(ctx context.Context, db *sql.DB, version int64) error {
	p, err := provider(db)
	if err != nil {
		return err
	}
	_, err = p.UpTo(ctx, version)
	return err
}

// PauseFreshKeys makes s seal through the key statement, not fresh keys,
// for d (as after a fresh key found its user's row taken).
func (s *Store) PauseFreshKeys(d time.Duration) {
	s.freshPaused.Store(time.Now().Add(d).UnixNano())
}

// Keep and Take expose Bodies' keep and take to the tests.
func (b *Bodies) Keep(id, typ string, sealed []byte) { b.keep(id, typ, sealed) }
func (b *Bodies) Take(id string) []byte              { return b.take(id) }

// ResumePlainInserts ends s's run of ON CONFLICT inserts (plainPaused), as
// when its pause has passed.
func (s *Store) ResumePlainInserts() { s.plainPaused.Store(0) }
