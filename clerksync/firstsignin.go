package clerksync

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"golang.org/x/sync/singleflight"
)

// FirstSignIn fetches a signed-in user whom the users projection does not
// have yet (their user.created delivery has not arrived: the race Clerk's
// guide warns about) from the Backend API, appends the user.snapshot, and
// returns the user as the fold makes them, so the page shows the record at
// once. It is safe for concurrent use: at most one fetch per user runs at a
// time, and callers asking for the same user meanwhile share its answer.
type FirstSignIn struct {
	db      *sqlx.DB
	api     API
	log     *slog.Logger
	group   singleflight.Group
	timeout time.Duration
}

// NewFirstSignIn returns a FirstSignIn appending to db and reading Clerk
// through api. Each fetch is bounded by 5 s (a page must not wait on
// Clerk's retries for long).
func NewFirstSignIn(db *sqlx.DB, api API, log *slog.Logger) *FirstSignIn {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &FirstSignIn{db: db, api: api, log: log, timeout: 5 * time.Second}
}

// FetchUser GETs user id from the Backend API, appends it as a
// user.snapshot (idempotent: the delivery id is id + updated_at) and
// returns the user folded from that snapshot alone. An erased user
// (schema.GetErasure) is never fetched nor shown: ENOTFOUND, Clerk not
// asked. Errors: the API's (ENOTFOUND when Clerk has no such user,
// EINVALID for a malformed object: nothing is stored), the database's. The caller falls back to
// what it showed before (no record yet).
func (f *FirstSignIn) FetchUser(ctx context.Context, id string) (domain.User, error) {
	v, err, _ := f.group.Do(id, func() (any, error) {
		// Not the first caller's context: a caller that goes away must not
		// fail the others waiting on the same fetch.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.timeout)
		defer cancel()
		return f.fetch(ctx, id)
	})
	if err != nil {
		return domain.User{}, err
	}
	return v.(domain.User), nil
}

func (f *FirstSignIn) fetch(ctx context.Context, id string) (domain.User, error) {
	// The projection may not have their tombstone (a lagging replica, an
	// erasure's cleanup not done yet): the erasures table decides.
	switch _, err := schema.GetErasure(ctx, f.db, id); domain.ErrorCode(err) {
	case "":
		return domain.User{}, domain.Errorf(domain.ENOTFOUND, "first sign-in of %s: the user was erased", id)
	case domain.ENOTFOUND:
	default:
		return domain.User{}, fmt.Errorf("first sign-in of %s: %w", id, err)
	}
	u, err := f.api.GetUser(ctx, id)
	if err != nil {
		return domain.User{}, fmt.Errorf("first sign-in of %s: %w", id, err)
	}
	d, err := domain.NewSnapshot(u.ID, u.UpdatedAt, u.Raw)
	if err != nil {
		return domain.User{}, fmt.Errorf("first sign-in of %s: %w", id, err)
	}
	tx, err := f.db.BeginTxx(ctx, nil)
	if err != nil {
		return domain.User{}, fmt.Errorf("first sign-in of %s: %w", id, schema.Classify(err))
	}
	defer tx.Rollback()
	inserted, err := schema.AppendSnapshots(ctx, tx, []domain.Delivery{d})
	if err != nil {
		return domain.User{}, fmt.Errorf("first sign-in of %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return domain.User{}, fmt.Errorf("first sign-in of %s: %w", id, schema.Classify(err))
	}
	f.log.Info("first sign-in: user fetched from the Backend API", "user_id", id, "stored", inserted[d.ID])
	return domain.Apply(domain.User{}, domain.Event{DeliveryID: d.ID, Type: d.Type, UserID: d.UserID, Body: d.Body, OccurredAt: d.OccurredAt, Source: d.Source})
}
