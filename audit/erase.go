package audit

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// EraseInput is an erasure request: the Clerk user id and why (GDPR
// Art. 17 request, account deleted, ...). The reason is kept in the
// erasures table, not in the ledger: write no personal data in it.
type EraseInput struct {
	UserID string
	Reason string
}

// EraseResult is what Erase did: the erasure as stored, and whether this
// call made it (false: the user was erased already, nothing was done).
type EraseResult struct {
	Erasure schema.Erasure
	Created bool
}

// MaxReasonBytes bounds an erasure's reason.
const MaxReasonBytes = 1000

// Erase erases a user by crypto-shredding (see README, Erasure): it
// destroys the user's data key, records the erasure, appends the erasure
// event and redacts the values naming the user in the access log
// (schema.BeginErasure), then turns the users row into a tombstone and
// removes the user's addresses, memberships and projection failures
// (schema.CompleteErasure), and drops the key from this process's cache.
// Every event of the user stays, its body unreadable from then on. It is
// idempotent: erasing an erased user finishes a cleanup a crash left
// undone and reports Created false. The request is recorded in the access
// log first. Errors: EINVALID for an empty or over-long id or reason;
// ENOTFOUND for a user the ledger has no event about.
func (s *Service) Erase(ctx context.Context, a Actor, in EraseInput) (EraseResult, error) {
	in.UserID, in.Reason = strings.TrimSpace(in.UserID), strings.TrimSpace(in.Reason)
	if in.UserID == "" || len(in.UserID) > domain.MaxUserIDBytes {
		return EraseResult{}, domain.Errorf(domain.EINVALID, "user id must be 1 to %d bytes", domain.MaxUserIDBytes)
	}
	if in.Reason == "" || len(in.Reason) > MaxReasonBytes {
		return EraseResult{}, domain.Errorf(domain.EINVALID, "an erasure needs a reason of 1 to %d bytes (--reason)", MaxReasonBytes)
	}
	if err := s.record(ctx, a, schema.ActionErase, map[string]string{"user_id": in.UserID}, 0); err != nil {
		return EraseResult{}, err
	}
	e, created, err := schema.BeginErasure(ctx, s.db, schema.Erasure{UserID: in.UserID, At: time.Now(), By: a.ID, Reason: in.Reason})
	if err != nil {
		return EraseResult{}, err
	}
	if k := schema.KeyringFrom(ctx); k != nil {
		k.Forget(in.UserID)
	}
	if e.CompletedAt.IsZero() {
		if err := schema.CompleteErasure(ctx, s.db, in.UserID); err != nil {
			return EraseResult{Erasure: e, Created: created}, fmt.Errorf("erase user %s: the key is destroyed, the cleanup failed (it is finished at the next start or erase): %w", in.UserID, err)
		}
		if e, err = schema.GetErasure(ctx, s.db, in.UserID); err != nil {
			return EraseResult{}, err
		}
	}
	// The destroyed key's old row version stays in the table's file until
	// it is vacuumed; do it now (best effort: an open snapshot may keep it
	// until the next autovacuum).
	_, _ = s.db.ExecContext(ctx, `VACUUM user_keys`)
	return EraseResult{Erasure: e, Created: created}, nil
}

// RecoverErasures finishes every erasure a crash left between the key's
// destruction and the cleanup (schema.PendingErasures), and returns how
// many it finished. Serve and project call it at start.
func (s *Service) RecoverErasures(ctx context.Context) (int, error) {
	users, err := schema.PendingErasures(ctx, s.db)
	if err != nil {
		return 0, err
	}
	for i, u := range users {
		if err := schema.CompleteErasure(ctx, s.db, u); err != nil {
			return i, err
		}
	}
	return len(users), nil
}

// EraseDeletedBefore erases every user deleted in Clerk (user.deleted, or
// user.snapshot_deleted from reconcile) before t and not erased yet, at
// most limit, as actor (LEDGER_ERASE_AFTER_DELETE); it returns the users
// it erased.
func (s *Service) EraseDeletedBefore(ctx context.Context, a Actor, t time.Time, limit int) ([]string, error) {
	users, err := schema.DeletedBefore(ctx, s.db, t, limit)
	if err != nil {
		return nil, err
	}
	var done []string
	for _, u := range users {
		if _, err := s.Erase(ctx, a, EraseInput{UserID: u, Reason: "automatic: deleted in Clerk before " + t.UTC().Format(time.RFC3339) + " (LEDGER_ERASE_AFTER_DELETE)"}); err != nil {
			return done, err
		}
		done = append(done, u)
	}
	return done, nil
}
