package projections

import (
	"context"
	"fmt"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// ListUsers returns up to limit projected users that are not deleted, most
// recently updated first (the dev sign-in's picker).
func ListUsers(ctx context.Context, q schema.Queryer, limit int) ([]domain.User, error) {
	rows, err := q.QueryxContext(ctx, `SELECT `+userColumns+` FROM users WHERE NOT deleted
ORDER BY updated_at DESC NULLS LAST, id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", schema.Classify(err))
	}
	defer rows.Close()
	var out []domain.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", schema.Classify(err))
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", schema.Classify(err))
	}
	return out, nil
}
