// Package projections builds read models from the ledger: projectors that
// consume the events table in ledger order, their checkpoints, status and
// rebuild. The first read model is users.
package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// userColumns is the column list scanUser reads from the users table.
const userColumns = `id, email, first_name, last_name, username, image_url, public_metadata,
created_at, updated_at, deleted, deleted_at, version_updated_at, version_occurred_at, version_delivery_id`

func scanUser(row interface{ Scan(...any) error }) (domain.User, error) {
	var u domain.User
	var meta []byte
	var created, updated, deletedAt sql.NullTime
	err := row.Scan(&u.ID, &u.Email, &u.FirstName, &u.LastName, &u.Username, &u.ImageURL, &meta,
		&created, &updated, &u.Deleted, &deletedAt, &u.Version.UpdatedAt, &u.Version.OccurredAt, &u.Version.DeliveryID)
	if err != nil {
		return domain.User{}, err
	}
	u.PublicMetadata = json.RawMessage(meta)
	u.CreatedAt, u.UpdatedAt, u.DeletedAt = created.Time.UTC(), updated.Time.UTC(), deletedAt.Time.UTC()
	if !created.Valid {
		u.CreatedAt = domain.User{}.CreatedAt
	}
	if !updated.Valid {
		u.UpdatedAt = domain.User{}.UpdatedAt
	}
	if !deletedAt.Valid {
		u.DeletedAt = domain.User{}.DeletedAt
	}
	return u, nil
}

// GetUser returns the projected user with that Clerk id from the live users
// table. Errors: ENOTFOUND when no event about that user has been projected.
func GetUser(ctx context.Context, q schema.Queryer, id string) (domain.User, error) {
	u, err := scanUser(q.QueryRowxContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return domain.User{}, domain.Errorf(domain.ENOTFOUND, "user %s is not in the users projection yet", id)
	}
	if err != nil {
		return domain.User{}, fmt.Errorf("get user %s: %w", id, schema.Classify(err))
	}
	return u, nil
}
