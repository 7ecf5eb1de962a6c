package schema

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// UserRow is one row of the users read model: the folded user and the
// position of the last event applied to it.
type UserRow struct {
	User         domain.User
	LastPosition int64
}

func metaText(u domain.User) string {
	if len(u.PublicMetadata) == 0 {
		return "{}"
	}
	return string(u.PublicMetadata)
}

// userColumns is the users table as the projection writes and reads it,
// in the order of every statement below: the one list of its columns.
var userColumns = []column[UserRow]{
	{"id", colText, false, func(r *UserRow) any { return r.User.ID }, func(r *UserRow, v any) { r.User.ID = v.(string) }},
	{"email", colText, true, func(r *UserRow) any { return r.User.Email }, func(r *UserRow, v any) { r.User.Email = v.(string) }},
	{"first_name", colText, true, func(r *UserRow) any { return r.User.FirstName }, func(r *UserRow, v any) { r.User.FirstName = v.(string) }},
	{"last_name", colText, true, func(r *UserRow) any { return r.User.LastName }, func(r *UserRow, v any) { r.User.LastName = v.(string) }},
	{"name", colText, true, func(r *UserRow) any { return r.User.Name() }, nil},
	{"username", colText, true, func(r *UserRow) any { return r.User.Username }, func(r *UserRow, v any) { r.User.Username = v.(string) }},
	{"image_url", colText, true, func(r *UserRow) any { return r.User.ImageURL }, func(r *UserRow, v any) { r.User.ImageURL = v.(string) }},
	{"public_metadata", colJSON, true, func(r *UserRow) any { return metaText(r.User) }, func(r *UserRow, v any) { r.User.PublicMetadata = json.RawMessage(v.(string)) }},
	{"created_at", colTime, false, func(r *UserRow) any { return tsText(r.User.CreatedAt) }, func(r *UserRow, v any) { r.User.CreatedAt = v.(time.Time) }},
	{"updated_at", colTime, false, func(r *UserRow) any { return tsText(r.User.UpdatedAt) }, func(r *UserRow, v any) { r.User.UpdatedAt = v.(time.Time) }},
	{"deleted", colBool, false, func(r *UserRow) any { return r.User.Deleted }, func(r *UserRow, v any) { r.User.Deleted = v.(bool) }},
	{"deleted_at", colTime, false, func(r *UserRow) any { return tsText(r.User.DeletedAt) }, func(r *UserRow, v any) { r.User.DeletedAt = v.(time.Time) }},
	{"version_updated_at", colInt, false, func(r *UserRow) any { return r.User.Version.UpdatedAt }, func(r *UserRow, v any) { r.User.Version.UpdatedAt = v.(int64) }},
	{"version_occurred_at", colInt, false, func(r *UserRow) any { return r.User.Version.OccurredAt }, func(r *UserRow, v any) { r.User.Version.OccurredAt = v.(int64) }},
	{"version_delivery_id", colText, false, func(r *UserRow) any { return r.User.Version.DeliveryID }, func(r *UserRow, v any) { r.User.Version.DeliveryID = v.(string) }},
	{"last_position", colInt, false, func(r *UserRow) any { return r.LastPosition }, func(r *UserRow, v any) { r.LastPosition = v.(int64) }},
	// The rest of a complete user (migration 00016).
	{"phone_number", colText, true, func(r *UserRow) any { return r.User.Phone }, func(r *UserRow, v any) { r.User.Phone = v.(string) }},
	{"email_verified", colBool, false, func(r *UserRow) any { return r.User.EmailVerified }, func(r *UserRow, v any) { r.User.EmailVerified = v.(bool) }},
	{"external_id", colText, true, func(r *UserRow) any { return r.User.ExternalID }, func(r *UserRow, v any) { r.User.ExternalID = v.(string) }},
	{"banned", colBool, false, func(r *UserRow) any { return r.User.Banned }, func(r *UserRow, v any) { r.User.Banned = v.(bool) }},
	{"locked", colBool, false, func(r *UserRow) any { return r.User.Locked }, func(r *UserRow, v any) { r.User.Locked = v.(bool) }},
	{"two_factor_enabled", colBool, false, func(r *UserRow) any { return r.User.TwoFactorEnabled }, func(r *UserRow, v any) { r.User.TwoFactorEnabled = v.(bool) }},
	{"last_sign_in_at", colTime, false, func(r *UserRow) any { return tsText(r.User.LastSignInAt) }, func(r *UserRow, v any) { r.User.LastSignInAt = v.(time.Time) }},
	{"last_active_at", colTime, false, func(r *UserRow) any { return tsText(r.User.LastActiveAt) }, func(r *UserRow, v any) { r.User.LastActiveAt = v.(time.Time) }},
	{"private_metadata", colJSON, true, func(r *UserRow) any { return jsonText(r.User.PrivateMetadata, "{}") }, func(r *UserRow, v any) { r.User.PrivateMetadata = json.RawMessage(v.(string)) }},
	// Erasure (migration 00020): the tombstone's erasure time.
	{"erased_at", colTime, false, func(r *UserRow) any { return tsText(r.User.ErasedAt) }, func(r *UserRow, v any) { r.User.ErasedAt = v.(time.Time) }},
}

// UsersTable is a table of the users read model: the live "users", or a
// table aside that a rebuild or check builds (Aside).
type UsersTable = Table[UserRow]

// LiveUsers is the live users table.
func LiveUsers() UsersTable {
	return newTable("users", userColumns, func(r *UserRow) string { return r.User.ID })
}

// UserDiff is one user whose row differs between two users tables.
type UserDiff = RowDiff

// GetUser returns the projected user with that Clerk id from the live users
// table. Errors: ENOTFOUND when no event about that user has been projected.
func GetUser(ctx context.Context, q Queryer, id string) (domain.User, error) {
	r, ok, err := LiveUsers().get(ctx, q, id)
	if err != nil {
		return domain.User{}, fmt.Errorf("get user %s: %w", id, err)
	}
	if !ok {
		return domain.User{}, domain.Errorf(domain.ENOTFOUND, "user %s is not in the users projection yet", id)
	}
	return r.User, nil
}

// ListUsers returns up to limit projected users that are not deleted, most
// recently updated first (the dev sign-in's picker).
func ListUsers(ctx context.Context, q Queryer, limit int) ([]domain.User, error) {
	rows, err := LiveUsers().query(ctx, q, `WHERE NOT deleted ORDER BY updated_at DESC NULLS LAST, id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	out := make([]domain.User, len(rows))
	for i, r := range rows {
		out[i] = r.User
	}
	return out, nil
}
