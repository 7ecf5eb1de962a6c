package schema

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/lib/pq"
)

// OrganizationRow is one row of the organizations read model: the folded
// organization, how many memberships of it are not deleted (0 once it is
// deleted: RecountMembers), and the position of the last event applied.
type OrganizationRow struct {
	Organization domain.Organization
	MembersCount int64
	LastPosition int64
}

// MembershipRow is one row of the organization_memberships read model.
type MembershipRow struct {
	Membership   domain.Membership
	LastPosition int64
}

func jsonText(raw json.RawMessage, empty string) string {
	if len(raw) == 0 {
		return empty
	}
	return string(raw)
}

// permissionsText is the permissions as a JSON array (never null).
func permissionsText(p []string) string {
	if p == nil {
		p = []string{}
	}
	b, _ := json.Marshal(p) // []string always encodes
	return string(b)
}

func parsePermissions(s string) []string {
	var p []string
	if json.Unmarshal([]byte(s), &p) != nil || p == nil {
		p = []string{}
	}
	return p
}

// organizationColumns is the organizations table as the projection writes
// and reads it: the one list of its columns.
var organizationColumns = []column[OrganizationRow]{
	{"id", colText, false, func(r *OrganizationRow) any { return r.Organization.ID }, func(r *OrganizationRow, v any) { r.Organization.ID = v.(string) }},
	{"name", colText, true, func(r *OrganizationRow) any { return r.Organization.Name }, func(r *OrganizationRow, v any) { r.Organization.Name = v.(string) }},
	{"slug", colText, true, func(r *OrganizationRow) any { return r.Organization.Slug }, func(r *OrganizationRow, v any) { r.Organization.Slug = v.(string) }},
	{"image_url", colText, true, func(r *OrganizationRow) any { return r.Organization.ImageURL }, func(r *OrganizationRow, v any) { r.Organization.ImageURL = v.(string) }},
	{"members_count", colInt, false, func(r *OrganizationRow) any { return r.MembersCount }, func(r *OrganizationRow, v any) { r.MembersCount = v.(int64) }},
	{"public_metadata", colJSON, true, func(r *OrganizationRow) any { return jsonText(r.Organization.PublicMetadata, "{}") }, func(r *OrganizationRow, v any) { r.Organization.PublicMetadata = json.RawMessage(v.(string)) }},
	{"created_at", colTime, false, func(r *OrganizationRow) any { return tsText(r.Organization.CreatedAt) }, func(r *OrganizationRow, v any) { r.Organization.CreatedAt = v.(time.Time) }},
	{"updated_at", colTime, false, func(r *OrganizationRow) any { return tsText(r.Organization.UpdatedAt) }, func(r *OrganizationRow, v any) { r.Organization.UpdatedAt = v.(time.Time) }},
	{"deleted", colBool, false, func(r *OrganizationRow) any { return r.Organization.Deleted }, func(r *OrganizationRow, v any) { r.Organization.Deleted = v.(bool) }},
	{"deleted_at", colTime, false, func(r *OrganizationRow) any { return tsText(r.Organization.DeletedAt) }, func(r *OrganizationRow, v any) { r.Organization.DeletedAt = v.(time.Time) }},
	{"version_updated_at", colInt, false, func(r *OrganizationRow) any { return r.Organization.Version.UpdatedAt }, func(r *OrganizationRow, v any) { r.Organization.Version.UpdatedAt = v.(int64) }},
	{"version_occurred_at", colInt, false, func(r *OrganizationRow) any { return r.Organization.Version.OccurredAt }, func(r *OrganizationRow, v any) { r.Organization.Version.OccurredAt = v.(int64) }},
	{"version_delivery_id", colText, false, func(r *OrganizationRow) any { return r.Organization.Version.DeliveryID }, func(r *OrganizationRow, v any) { r.Organization.Version.DeliveryID = v.(string) }},
	{"last_position", colInt, false, func(r *OrganizationRow) any { return r.LastPosition }, func(r *OrganizationRow, v any) { r.LastPosition = v.(int64) }},
}

// membershipColumns is the organization_memberships table as the
// projection writes and reads it: the one list of its columns.
var membershipColumns = []column[MembershipRow]{
	{"id", colText, false, func(r *MembershipRow) any { return r.Membership.ID }, func(r *MembershipRow, v any) { r.Membership.ID = v.(string) }},
	{"organization_id", colText, false, func(r *MembershipRow) any { return r.Membership.OrganizationID }, func(r *MembershipRow, v any) { r.Membership.OrganizationID = v.(string) }},
	{"user_id", colText, false, func(r *MembershipRow) any { return r.Membership.UserID }, func(r *MembershipRow, v any) { r.Membership.UserID = v.(string) }},
	{"role", colText, false, func(r *MembershipRow) any { return r.Membership.Role }, func(r *MembershipRow, v any) { r.Membership.Role = v.(string) }},
	{"permissions", colJSON, false, func(r *MembershipRow) any { return permissionsText(r.Membership.Permissions) }, func(r *MembershipRow, v any) { r.Membership.Permissions = parsePermissions(v.(string)) }},
	{"created_at", colTime, false, func(r *MembershipRow) any { return tsText(r.Membership.CreatedAt) }, func(r *MembershipRow, v any) { r.Membership.CreatedAt = v.(time.Time) }},
	{"updated_at", colTime, false, func(r *MembershipRow) any { return tsText(r.Membership.UpdatedAt) }, func(r *MembershipRow, v any) { r.Membership.UpdatedAt = v.(time.Time) }},
	{"deleted", colBool, false, func(r *MembershipRow) any { return r.Membership.Deleted }, func(r *MembershipRow, v any) { r.Membership.Deleted = v.(bool) }},
	{"deleted_at", colTime, false, func(r *MembershipRow) any { return tsText(r.Membership.DeletedAt) }, func(r *MembershipRow, v any) { r.Membership.DeletedAt = v.(time.Time) }},
	{"version_updated_at", colInt, false, func(r *MembershipRow) any { return r.Membership.Version.UpdatedAt }, func(r *MembershipRow, v any) { r.Membership.Version.UpdatedAt = v.(int64) }},
	{"version_occurred_at", colInt, false, func(r *MembershipRow) any { return r.Membership.Version.OccurredAt }, func(r *MembershipRow, v any) { r.Membership.Version.OccurredAt = v.(int64) }},
	{"version_delivery_id", colText, false, func(r *MembershipRow) any { return r.Membership.Version.DeliveryID }, func(r *MembershipRow, v any) { r.Membership.Version.DeliveryID = v.(string) }},
	{"last_position", colInt, false, func(r *MembershipRow) any { return r.LastPosition }, func(r *MembershipRow, v any) { r.LastPosition = v.(int64) }},
}

// OrganizationsTable is a table of the organizations read model.
type OrganizationsTable = Table[OrganizationRow]

// MembershipsTable is a table of the organization_memberships read model.
type MembershipsTable = Table[MembershipRow]

// LiveOrganizations is the live organizations table.
func LiveOrganizations() OrganizationsTable {
	return newTable("organizations", organizationColumns, func(r *OrganizationRow) string { return r.Organization.ID })
}

// LiveMemberships is the live organization_memberships table.
func LiveMemberships() MembershipsTable {
	return newTable("organization_memberships", membershipColumns, func(r *MembershipRow) string { return r.Membership.ID })
}

// RecountMembers sets members_count of the organizations ids in orgs (all
// of them when ids is nil) to the number of memberships of each in mems
// that are not deleted, and to 0 for a deleted organization.
func RecountMembers(ctx context.Context, q Execer, orgs OrganizationsTable, mems MembershipsTable, ids []string) error {
	where, args := "", []any{}
	if ids != nil {
		where, args = ` WHERE o.id = ANY($1)`, []any{pq.Array(ids)}
	}
	_, err := q.ExecContext(ctx, `UPDATE `+orgs.ident()+` o SET members_count = CASE WHEN o.deleted THEN 0 ELSE
  (SELECT count(*) FROM `+mems.ident()+` m WHERE m.organization_id = o.id AND NOT m.deleted) END`+where, args...)
	if err != nil {
		return fmt.Errorf("recount the members of %s: %w", orgs.name, Classify(err))
	}
	return nil
}

// OrganizationsShapedBy returns the ids of the organizations in orgs whose
// row an event about one of users shaped: its winning snapshot
// (version_delivery_id) or its last event (last_position) is one of theirs.
// A membership event carries its organization's object, so an erased
// member's event can be what the row shows; the organizations projector
// folds those rows again when the member is erased. Each organization
// costs two index probes of events.
func OrganizationsShapedBy(ctx context.Context, q Queryer, orgs OrganizationsTable, users []string) ([]string, error) {
	out, err := queryStrings(ctx, q, `SELECT o.id FROM `+orgs.ident()+` o
WHERE EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = o.version_delivery_id AND e.user_id = ANY($1))
   OR EXISTS (SELECT 1 FROM events e WHERE e.position = o.last_position AND e.user_id = ANY($1))`, pq.Array(users))
	if err != nil {
		return nil, fmt.Errorf("read the organizations shaped by %d users: %w", len(users), err)
	}
	return out, nil
}

// GetOrganization returns the projected organization with that id.
// Errors: ENOTFOUND when none has been projected.
func GetOrganization(ctx context.Context, q Queryer, id string) (OrganizationRow, error) {
	r, ok, err := LiveOrganizations().get(ctx, q, id)
	if err != nil {
		return OrganizationRow{}, fmt.Errorf("get organization %s: %w", id, err)
	}
	if !ok {
		return OrganizationRow{}, domain.Errorf(domain.ENOTFOUND, "organization %s is not in the organizations projection yet", id)
	}
	return r, nil
}

// OrganizationMemberships returns the projected memberships of an
// organization, deleted ones included, oldest first.
func OrganizationMemberships(ctx context.Context, q Queryer, orgID string) ([]MembershipRow, error) {
	rows, err := LiveMemberships().query(ctx, q, `WHERE organization_id = $1 ORDER BY created_at NULLS FIRST, id`, orgID)
	if err != nil {
		return nil, fmt.Errorf("memberships of organization %s: %w", orgID, err)
	}
	return rows, nil
}

// UserOrganization is one organization a user belongs to, as the
// projections hold it: the membership and its organization (zero, with
// only the id, when no snapshot of it has been projected).
type UserOrganization struct {
	Membership   domain.Membership
	Organization domain.Organization
	MembersCount int64
}

// UserOrganizations returns the organizations the user belongs to now: the
// user's memberships that are not deleted, of organizations that are not
// deleted, by organization name, at most limit (the first limit by
// organization id).
func UserOrganizations(ctx context.Context, q Queryer, userID string, limit int) ([]UserOrganization, error) {
	mems, err := LiveMemberships().query(ctx, q, `WHERE user_id = $1 AND NOT deleted
AND NOT EXISTS (SELECT 1 FROM organizations o WHERE o.id = organization_memberships.organization_id AND o.deleted)
ORDER BY organization_id LIMIT $2`, userID, limit)
	if err != nil {
		return nil, fmt.Errorf("organizations of user %s: %w", userID, err)
	}
	if len(mems) == 0 {
		return nil, nil
	}
	ids := make([]string, len(mems))
	for i, m := range mems {
		ids[i] = m.Membership.OrganizationID
	}
	orgs, err := LiveOrganizations().Load(ctx, q, ids)
	if err != nil {
		return nil, fmt.Errorf("organizations of user %s: %w", userID, err)
	}
	out := make([]UserOrganization, len(mems))
	for i, m := range mems {
		o, ok := orgs[m.Membership.OrganizationID]
		if !ok {
			o.Organization.ID = m.Membership.OrganizationID
		}
		out[i] = UserOrganization{Membership: m.Membership, Organization: o.Organization, MembersCount: o.MembersCount}
	}
	slices.SortFunc(out, func(a, b UserOrganization) int {
		return cmp.Or(strings.Compare(a.Organization.DisplayName(), b.Organization.DisplayName()), strings.Compare(a.Membership.ID, b.Membership.ID))
	})
	return out, nil
}
