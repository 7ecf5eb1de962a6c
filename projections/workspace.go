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

// Workspace is the projector of the audit workspace's read models: every
// email address a user event named, with its user (user_emails: search by
// current or past email without reading bodies), and deliveries per day of
// arrival and event family (delivery_counts: the overview's chart). Both
// only grow by addition, so any split of the ledger into batches gives the
// same rows. A user event that does not decode names no address (the users
// projector records it as poison); it is counted like every delivery.
type Workspace struct{}

// NewWorkspace returns the workspace projector.
func NewWorkspace() *Workspace { return &Workspace{} }

// Name implements Projector.
func (*Workspace) Name() string { return WorkspaceName }

// Types implements Projector: every delivery is counted.
func (*Workspace) Types() []string { return nil }

// maxEmailBytes is the longest address user_emails keeps (RFC 5321 allows 254).
const maxEmailBytes = 320

// Apply implements Projector.
func (*Workspace) Apply(ctx context.Context, tx *sqlx.Tx, events []domain.Event) ([]Failure, error) {
	type dayFamily struct {
		day    time.Time
		family string
	}
	counts := map[dayFamily]int64{}
	var sightings []schema.EmailSighting
	for _, e := range events {
		if e.Source != domain.SourceClerkAPI {
			// Snapshots read from the Backend API are not deliveries: an
			// import of 100k users is no spike in the deliveries chart.
			family, _, _ := strings.Cut(e.Type, ".")
			counts[dayFamily{e.ReceivedAt.UTC().Truncate(24 * time.Hour), family}]++
		}
		if !domain.IsUserEvent(e.Type) {
			continue
		}
		d, err := domain.DecodeUserEvent(e)
		if err != nil {
			continue
		}
		for _, a := range d.EmailAddresses() {
			if len(a) > maxEmailBytes {
				continue // no address is this long; an index row might not take it
			}
			sightings = append(sightings, schema.EmailSighting{Email: schema.NormalizeEmail(a), UserID: d.UserID(), Position: e.Position, At: e.OccurredAt})
		}
	}
	list := make([]schema.DeliveryCount, 0, len(counts))
	for k, n := range counts {
		list = append(list, schema.DeliveryCount{Day: k.day, Family: k.family, Deliveries: n})
	}
	if err := schema.AddDeliveryCounts(ctx, tx, list); err != nil {
		return nil, err
	}
	if err := schema.AddEmails(ctx, tx, sightings); err != nil {
		return nil, err
	}
	// An erased user's addresses go (their events cannot be read any more).
	var erased []string
	for _, e := range events {
		if e.Type == domain.ErasureEventType && e.UserID != "" {
			erased = append(erased, e.UserID)
		}
	}
	return nil, schema.DeleteEmailsOf(ctx, tx, erased)
}
