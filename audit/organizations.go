package audit

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// The events table names the user an event is about (user_id) but not its
// organization, so the organization views find an organization's events by
// type and by the id in the body (schema.EventFilter.Mentions, a
// prefilter), then match exactly with the projection's own decoding
// (domain.EventOrganization). That reads every organization, membership and
// invitation event of the ledger once per view; an organization_id column
// at ingest would make it an index range scan.

// orgHistoryTypes are the types an organization's history lists.
var orgHistoryTypes = append(domain.OrganizationEventTypes(), "organizationInvitation.*")

// checkID returns EINVALID unless id is 1 to 200 bytes.
func checkID(what, id string) error {
	if id == "" || len(id) > 200 {
		return domain.Errorf(domain.EINVALID, "%s must be 1 to 200 characters", what)
	}
	return nil
}

// occurredBy is the EventFilter.Until that keeps events whose occurred_at
// is at or before at (zero: no bound). occurred_at has microsecond
// precision: <= at is < at's next microsecond.
func occurredBy(at time.Time) time.Time {
	if at.IsZero() {
		return time.Time{}
	}
	return at.UTC().Truncate(time.Microsecond).Add(time.Microsecond)
}

// OrganizationPage says which page of an organization's history
// Organization lists. The history is in ledger order (an organization's
// events have no one updated_at to order by: membership and invitation
// events carry their own).
type OrganizationPage struct {
	After    schema.Cursor // continue after this place (from NextCursor)
	Limit    int           // events on the page, default DefaultAuditLimit
	MaxBytes int64         // end the page once its bodies reach this; default MaxPageBytes
	// Later lists the events that occurred after `at` too (the audit
	// page's history shows them greyed); the fold never reads them.
	Later bool
}

// OrganizationHistory is one organization's state at a point in time, its
// memberships by then (its members, and those who had left), and one page
// of its history: the organization, membership and invitation events
// about it.
type OrganizationHistory struct {
	OrganizationID string     `json:"organization_id"`
	At             *time.Time `json:"at"` // nil: now
	// Exists is false when no event about the organization occurred by At.
	Exists bool                `json:"exists"`
	State  domain.Organization `json:"state"`
	// MembersCount counts the memberships not deleted (0 once the
	// organization is deleted), as the projection's members_count.
	MembersCount int64 `json:"members_count"`
	// Memberships are every membership of the organization by At, deleted
	// ones included, oldest first.
	Memberships []domain.Membership `json:"memberships"`
	// Poison describes the first maxPoison events about the organization
	// the fold skipped; PoisonCount counts them all.
	Poison      []string `json:"poison,omitempty"`
	PoisonCount int      `json:"poison_count,omitempty"`
	// Total, Offset, Count, Events and NextCursor page the history as
	// UserHistory does.
	Total      int64       `json:"total"`
	Offset     int64       `json:"offset"`
	Count      int         `json:"count"`
	Events     []EventJSON `json:"events"`
	NextCursor string      `json:"next_cursor"`
	// Projection is the organizations table row and its memberships rows
	// (only without At); Matches says whether the fold equals them (nil
	// when there is no row yet).
	Projection            *schema.OrganizationRow `json:"projection,omitempty"`
	ProjectionMemberships []domain.Membership     `json:"projection_memberships,omitempty"`
	Matches               *bool                   `json:"matches_projection,omitempty"`
}

// Organization folds the organization's state and its memberships as of
// `at` (zero: now) with the organizations projection's own fold, from every
// event about it whose occurred_at is at or before `at` (as User does for
// a user), and lists one page of its history (page: Limit, MaxBytes,
// After, and Later to list the events after `at` too). Without `at` it
// also reads the projection's rows and says whether the fold equals them.
// Everything comes from one snapshot, within an audit slot. The access is
// recorded (organization id, at, cursor, the events on the page as its
// row count) before Organization returns. Errors: EINVALID for a bad id;
// EUNAVAILABLE when the audit reads' connections are all busy.
func (s *Service) Organization(ctx context.Context, a Actor, orgID string, at time.Time, page OrganizationPage) (OrganizationHistory, error) {
	if err := checkID("organization id", orgID); err != nil {
		return OrganizationHistory{}, err
	}
	release, err := s.slots.acquire(ctx, 1)
	if err != nil {
		return OrganizationHistory{}, err
	}
	h, err := organizationView(ctx, s.db, orgID, at, page)
	release()
	if err != nil {
		return h, err
	}
	f := map[string]string{"organization_id": orgID}
	if !at.IsZero() {
		f["at"] = at.UTC().Format(time.RFC3339Nano)
	}
	if page.After != (schema.Cursor{}) {
		f["cursor"] = page.After.String()
	}
	if err := s.record(ctx, a, schema.ActionOrganization, f, int64(h.Count)); err != nil {
		return h, err
	}
	return h, nil
}

// readOnly runs fn in a read-only REPEATABLE READ transaction on db.
func readOnly(ctx context.Context, db *sqlx.DB, what string, fn func(tx *sqlx.Tx) error) error {
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("read %s: %w", what, schema.Classify(err))
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// organizationView reads what Organization answers, without slot or record.
func organizationView(ctx context.Context, db *sqlx.DB, orgID string, at time.Time, page OrganizationPage) (OrganizationHistory, error) {
	h := OrganizationHistory{OrganizationID: orgID, Events: []EventJSON{}, Memberships: []domain.Membership{}}
	if !at.IsZero() {
		at = at.UTC()
		h.At = &at
	}
	if page.Limit <= 0 {
		page.Limit = DefaultAuditLimit
	}
	if page.MaxBytes <= 0 {
		page.MaxBytes = MaxPageBytes
	}
	err := readOnly(ctx, db, "organization "+orgID, func(tx *sqlx.Tx) error {
		var org domain.Organization
		mems := map[string]domain.Membership{}
		var bytesOnPage int64
		// One pass over the organization's history in ledger order: the
		// fold takes the events that occurred by `at` (in any order: the
		// fold does not care), the page the listed ones after its cursor.
		_, err := schema.EachAuditEventIn(ctx, tx, schema.EventFilter{Types: orgHistoryTypes, Mentions: []string{orgID}}, func(e schema.AuditEvent) error {
			by := at.IsZero() || !e.OccurredAt.After(at)
			if domain.EventOrganization(e.Event) != orgID {
				if by && domain.IsOrganizationEvent(e.Type) && bytes.Contains(e.Body, []byte(orgID)) {
					if _, err := domain.ParseOrganizationEvent(e.Event); err != nil {
						if h.PoisonCount++; len(h.Poison) < maxPoison {
							h.Poison = append(h.Poison, domain.ErrorMessage(err))
						}
					}
				}
				return nil
			}
			if by && domain.IsOrganizationEvent(e.Type) {
				x, _ := domain.ParseOrganizationEvent(e.Event) // it decodes: it names the organization
				if x.OrganizationID() == orgID {
					org = domain.ApplyOrganization(org, x)
				}
				if id := x.MembershipID(); id != "" {
					mems[id] = domain.ApplyMembership(mems[id], x)
				}
			}
			if !by && !page.Later {
				return nil
			}
			h.Total++
			switch c := schema.After(e.Event); {
			case !page.After.Less(c):
				h.Offset++
			case h.Count < page.Limit && (h.Count == 0 || bytesOnPage < page.MaxBytes):
				h.Events = append(h.Events, NewEventJSON(e))
				h.Count++
				bytesOnPage += int64(len(e.Body))
				if h.Count == page.Limit || bytesOnPage >= page.MaxBytes {
					h.NextCursor = EncodeCursor(c)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("fold organization %s: %w", orgID, err)
		}
		if h.Offset+int64(h.Count) == h.Total {
			h.NextCursor = "" // the page ended with the history
		}
		if len(mems) > 0 && !org.Exists() {
			org.ID = orgID // known from its memberships only
		}
		h.State, h.Exists = org, org.Exists()
		h.Memberships = sortedMemberships(mems)
		h.MembersCount = membersCount(org, h.Memberships)
		if !at.IsZero() {
			return nil
		}
		row, err := schema.GetOrganization(ctx, tx, orgID)
		switch {
		case domain.ErrorCode(err) == domain.ENOTFOUND:
			return nil
		case err != nil:
			return err
		}
		rows, err := schema.OrganizationMemberships(ctx, tx, orgID)
		if err != nil {
			return err
		}
		h.Projection = &row
		h.ProjectionMemberships = make([]domain.Membership, len(rows))
		for i, r := range rows {
			h.ProjectionMemberships[i] = r.Membership
		}
		same := SameOrganization(org, row.Organization) && row.MembersCount == h.MembersCount &&
			sameMemberships(h.Memberships, h.ProjectionMemberships)
		h.Matches = &same
		return nil
	})
	return h, err
}

// membersCount is the projection's members_count rule.
func membersCount(o domain.Organization, mems []domain.Membership) int64 {
	if o.Deleted {
		return 0
	}
	var n int64
	for _, m := range mems {
		if !m.Deleted {
			n++
		}
	}
	return n
}

func sortedMemberships(m map[string]domain.Membership) []domain.Membership {
	out := make([]domain.Membership, 0, len(m))
	for _, x := range m {
		out = append(out, x)
	}
	slices.SortFunc(out, func(a, b domain.Membership) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

func sameMemberships(a, b []domain.Membership) bool {
	if len(a) != len(b) {
		return false
	}
	byID := make(map[string]domain.Membership, len(b))
	for _, m := range b {
		byID[m.ID] = m
	}
	for _, m := range a {
		n, ok := byID[m.ID]
		if !ok || !SameMembership(m, n) {
			return false
		}
	}
	return true
}

// SameOrganization reports whether a and b are the same state, comparing
// public metadata as JSON values (jsonb does not keep the bytes).
func SameOrganization(a, b domain.Organization) bool {
	if !sameJSON(a.PublicMetadata, b.PublicMetadata) {
		return false
	}
	return a.ID == b.ID && a.Name == b.Name && a.Slug == b.Slug && a.ImageURL == b.ImageURL &&
		a.CreatedAt.Equal(b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt) && a.Deleted == b.Deleted &&
		a.DeletedAt.Equal(b.DeletedAt) && a.Version == b.Version
}

// SameMembership reports whether a and b are the same state.
func SameMembership(a, b domain.Membership) bool {
	return a.ID == b.ID && a.OrganizationID == b.OrganizationID && a.UserID == b.UserID && a.Role == b.Role &&
		slices.Equal(a.Permissions, b.Permissions) && a.CreatedAt.Equal(b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt) &&
		a.Deleted == b.Deleted && a.DeletedAt.Equal(b.DeletedAt) && a.Version == b.Version
}

func sameJSON(a, b json.RawMessage) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// UserOrganization is one membership of a user as of a point in time, with
// its organization's state then.
type UserOrganization struct {
	Membership   domain.Membership   `json:"membership"`
	Organization domain.Organization `json:"organization"`
	// Member says whether the user was in the organization then: the
	// membership and the organization both existed and were not deleted.
	Member bool `json:"member"`
}

// UserOrganizations is the answer of Service.UserOrganizations.
type UserOrganizations struct {
	UserID string     `json:"user_id"`
	At     *time.Time `json:"at"` // nil: now
	// Organizations are every membership of the user by At, deleted ones
	// included (Member false), by organization name.
	Organizations []UserOrganization `json:"organizations"`
	// Poison describes the first maxPoison membership events of the user
	// the fold skipped; PoisonCount counts them all.
	Poison      []string `json:"poison,omitempty"`
	PoisonCount int      `json:"poison_count,omitempty"`
}

// UserOrganizations answers "which organizations was this user in, with
// which role, at `at`" (zero: now): it folds the user's membership events
// that occurred by `at` (found by the events' user_id), then the events of
// those organizations that occurred by `at` (for their names and
// deletions), with the organizations projection's own fold, from one
// snapshot, within an audit slot. The access is recorded (user id, at,
// the memberships as its row count) before it returns. Errors: EINVALID
// for a bad id; EUNAVAILABLE when the audit reads' connections are all
// busy.
func (s *Service) UserOrganizations(ctx context.Context, a Actor, userID string, at time.Time) (UserOrganizations, error) {
	if err := checkID("user id", userID); err != nil {
		return UserOrganizations{}, err
	}
	release, err := s.slots.acquire(ctx, 1)
	if err != nil {
		return UserOrganizations{}, err
	}
	res, err := userOrganizationsView(ctx, s.db, userID, at)
	release()
	if err != nil {
		return res, err
	}
	f := map[string]string{"user_id": userID}
	if !at.IsZero() {
		f["at"] = at.UTC().Format(time.RFC3339Nano)
	}
	if err := s.record(ctx, a, schema.ActionUserOrganizations, f, int64(len(res.Organizations))); err != nil {
		return res, err
	}
	return res, nil
}

func userOrganizationsView(ctx context.Context, db *sqlx.DB, userID string, at time.Time) (UserOrganizations, error) {
	res := UserOrganizations{UserID: userID, Organizations: []UserOrganization{}}
	if !at.IsZero() {
		at = at.UTC()
		res.At = &at
	}
	err := readOnly(ctx, db, "the organizations of user "+userID, func(tx *sqlx.Tx) error {
		f := domain.NewOrganizationFold()
		// Every membership type the organizations projector folds, the
		// Backend API's snapshots (stored for their user) included.
		memTypes := []string{"organizationMembership.created", "organizationMembership.updated", "organizationMembership.deleted", domain.TypeMembershipSnapshot}
		_, err := schema.EachEvent(ctx, tx, schema.EventFilter{UserID: userID, Types: memTypes, Until: occurredBy(at)}, func(e domain.Event) error {
			x, err := domain.ParseOrganizationEvent(e)
			if err != nil {
				if res.PoisonCount++; len(res.Poison) < maxPoison {
					res.Poison = append(res.Poison, domain.ErrorMessage(err))
				}
				return nil
			}
			if x.MembershipUserID() == userID {
				f.Memberships[x.MembershipID()] = domain.ApplyMembership(f.Memberships[x.MembershipID()], x)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("fold the memberships of user %s: %w", userID, err)
		}
		orgs := map[string]bool{}
		for _, m := range f.Memberships {
			orgs[m.OrganizationID] = true
		}
		if len(orgs) == 0 {
			return nil
		}
		ids := make([]string, 0, len(orgs))
		for id := range orgs {
			ids = append(ids, id)
		}
		_, err = schema.EachEvent(ctx, tx, schema.EventFilter{Types: domain.OrganizationEventTypes(), Until: occurredBy(at), Mentions: ids}, func(e domain.Event) error {
			if x, err := domain.ParseOrganizationEvent(e); err == nil && orgs[x.OrganizationID()] {
				f.Organizations[x.OrganizationID()] = domain.ApplyOrganization(f.Organizations[x.OrganizationID()], x)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("fold the organizations of user %s: %w", userID, err)
		}
		for _, m := range f.Memberships {
			o, ok := f.Organizations[m.OrganizationID]
			if !ok {
				o.ID = m.OrganizationID
			}
			res.Organizations = append(res.Organizations, UserOrganization{Membership: m, Organization: o, Member: !m.Deleted && !o.Deleted})
		}
		slices.SortFunc(res.Organizations, func(a, b UserOrganization) int {
			if c := strings.Compare(a.Organization.DisplayName(), b.Organization.DisplayName()); c != 0 {
				return c
			}
			return strings.Compare(a.Membership.ID, b.Membership.ID)
		})
		return nil
	})
	return res, err
}
