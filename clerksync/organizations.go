package clerksync

import (
	"context"
	"slices"

	"github.com/clerk-ledger/clerk-ledger/clerkapi"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// KindOrganizations is the import kind of ImportOrganizations.
const KindOrganizations = "organizations"

// ImportOrganizations is ImportUsers for organizations and their
// memberships: every organization (GET /v1/organizations, pages of
// PageSize) becomes an organization.snapshot, and each of its memberships
// (GET /v1/organizations/{id}/memberships, every page) an
// organizationMembership.snapshot stored for the member; a page of
// organizations and all their memberships commit in one transaction, with
// the same idempotence (delivery id = object id + updated_at), resumption
// and failure reporting. The organizations fold orders them against the
// webhooks by updated_at. Counts are of snapshots (organizations and
// memberships together); Total is the organizations' total_count.
func (s *Syncer) ImportOrganizations(ctx context.Context, o ImportOptions) (ImportSummary, error) {
	return s.importAll(ctx, importKind{name: KindOrganizations, list: s.api.ListOrganizationsInto,
		count: func(ctx context.Context) (int64, error) {
			var p clerkapi.Page
			if err := s.api.ListOrganizationsInto(ctx, &p, 0, 1); err != nil {
				return 0, err
			}
			return p.TotalCount, nil
		},
		build: s.organizationSnapshots}, o)
}

// organizationSnapshots is the snapshots of a page of organizations and of
// all their memberships.
func (s *Syncer) organizationSnapshots(ctx context.Context, p *clerkapi.Page) ([]domain.Delivery, []schema.ImportFailure, error) {
	ds, failures := pageSnapshots(p, domain.NewOrganizationSnapshot, -1)
	size := s.PageSize
	if size <= 0 || size > clerkapi.MaxLimit {
		size = clerkapi.MaxLimit
	}
	for i, org := range p.Users {
		if !slices.ContainsFunc(ds, func(d domain.Delivery) bool { return d.ID == domain.SnapshotDeliveryID(org.ID, org.UpdatedAt) }) {
			continue // refused: a failure already
		}
		// Each membership page has memory of its own: the snapshots point
		// into it until the caller copies them.
		for off := 0; ; {
			mp := new(clerkapi.Page)
			err := s.api.ListMembershipsInto(ctx, mp, org.ID, off, size)
			if domain.ErrorCode(err) == domain.ENOTFOUND {
				break // deleted since it was listed: its deletion comes by webhook or reconcile
			}
			if err != nil {
				return nil, nil, err
			}
			mds, mf := pageSnapshots(mp, domain.NewMembershipSnapshot, int64(p.Offset+i))
			ds, failures = append(ds, mds...), append(failures, mf...)
			if mp.Last() {
				break
			}
			off = mp.Next()
		}
	}
	return ds, failures, nil
}
