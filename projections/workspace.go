package projections

import (
	"context"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// WorkspaceName is the name of the workspace projector.
const WorkspaceName = "workspace"

// Workspace is the projector of the audit workspace's deliveries per day of
// arrival and event family (delivery_counts: the overview's chart). It
// only grows by addition, so any split of the ledger into batches gives the
// same rows. It reads no body (leafReader): the addresses users' events
// name (user_emails) are written by the users projector, which decodes
// those events anyway.
type Workspace struct{}

// NewWorkspace returns the workspace projector.
func NewWorkspace() *Workspace { return &Workspace{} }

// Name implements Projector.
func (*Workspace) Name() string { return WorkspaceName }

// Types implements Projector: every delivery is counted.
func (*Workspace) Types() []string { return nil }

// leavesOnly implements leafReader: a count needs an event's type, source
// and arrival, never its body.
func (*Workspace) leavesOnly() {}

// Apply implements Projector.
func (*Workspace) Apply(ctx context.Context, tx *sqlx.Tx, events []domain.Event) ([]Failure, error) {
	type dayFamily struct {
		day    time.Time
		family string
	}
	counts := map[dayFamily]int64{}
	for _, e := range events {
		if e.Source != domain.SourceClerkAPI {
			// Snapshots read from the Backend API are not deliveries: an
			// import of 100k users is no spike in the deliveries chart.
			family, _, _ := strings.Cut(e.Type, ".")
			counts[dayFamily{e.ReceivedAt.UTC().Truncate(24 * time.Hour), family}]++
		}
	}
	list := make([]schema.DeliveryCount, 0, len(counts))
	for k, n := range counts {
		list = append(list, schema.DeliveryCount{Day: k.day, Family: k.family, Deliveries: n})
	}
	return nil, schema.AddDeliveryCounts(ctx, tx, list)
}
