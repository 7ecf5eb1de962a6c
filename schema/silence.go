package schema

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/lib/pq"
)

// FamilyDelivery is when the newest webhook delivery of an event family
// (the type up to its first dot: user, session, email, organization, …)
// was stored.
type FamilyDelivery struct {
	Family     string    `json:"family"`
	ReceivedAt time.Time `json:"received_at"`
}

// LastDeliveries returns, per event family, when its newest Svix delivery
// was stored (received_at), newest first; the Backend API's own snapshot
// types are left out (they are not deliveries). It walks the type index
// (events_type_idx) one type at a time, newest row per type, so it reads a
// few rows per type however large the ledger: cheap enough for every
// metrics scrape.
func LastDeliveries(ctx context.Context, q Queryer) ([]FamilyDelivery, error) {
	rows, err := q.QueryxContext(ctx, `WITH RECURSIVE types(type) AS (
    (SELECT type FROM events ORDER BY type LIMIT 1)
    UNION ALL
    SELECT (SELECT e.type FROM events e WHERE e.type > t.type ORDER BY e.type LIMIT 1)
    FROM types t WHERE t.type IS NOT NULL
)
SELECT t.type, last.received_at
FROM types t
CROSS JOIN LATERAL (
    SELECT e.received_at FROM events e WHERE e.type = t.type
    ORDER BY e.transaction_id DESC, e.position DESC LIMIT 1
) last
WHERE t.type IS NOT NULL AND t.type <> ALL($1)`, pq.Array(domain.SnapshotTypes()))
	if err != nil {
		return nil, fmt.Errorf("read the last deliveries: %w", Classify(err))
	}
	defer rows.Close()
	byFamily := map[string]time.Time{}
	for rows.Next() {
		var typ string
		var at time.Time
		if err := rows.Scan(&typ, &at); err != nil {
			return nil, fmt.Errorf("read the last deliveries: %w", Classify(err))
		}
		family, _, _ := strings.Cut(typ, ".")
		if at.After(byFamily[family]) {
			byFamily[family] = at.UTC()
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the last deliveries: %w", Classify(err))
	}
	out := make([]FamilyDelivery, 0, len(byFamily))
	for f, at := range byFamily {
		out = append(out, FamilyDelivery{Family: f, ReceivedAt: at})
	}
	slices.SortFunc(out, func(a, b FamilyDelivery) int {
		if c := b.ReceivedAt.Compare(a.ReceivedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Family, b.Family)
	})
	return out, nil
}
