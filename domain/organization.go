package domain

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
)

// Organization is the read model of one Clerk organization, folded from the
// ledger by ApplyOrganization. The same fold feeds the organizations
// projection and the auditors' point-in-time view. How many members it has
// is not part of the fold: the projection counts the memberships
// (schema.OrganizationRow.MembersCount), the point-in-time view counts the
// memberships it folds.
type Organization struct {
	ID             string          `json:"id"`
	Name           string          `json:"name"`
	Slug           string          `json:"slug"`
	ImageURL       string          `json:"image_url"`
	PublicMetadata json.RawMessage `json:"public_metadata"`
	CreatedAt      time.Time       `json:"created_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
	Deleted        bool            `json:"deleted"`
	DeletedAt      time.Time       `json:"deleted_at,omitzero"`
	// Version is the greatest snapshot the fold has seen (kept after a
	// deletion: it says which snapshot CreatedAt comes from).
	Version Version `json:"-"`
}

// Exists reports whether any event has been folded into o.
func (o Organization) Exists() bool { return o.ID != "" }

// DisplayName is the name, else the slug, else the id.
func (o Organization) DisplayName() string {
	switch {
	case strings.TrimSpace(o.Name) != "":
		return o.Name
	case o.Slug != "":
		return o.Slug
	}
	return o.ID
}

// Membership is the read model of one Clerk organization membership (one
// user in one organization, with a role), folded by ApplyMembership and
// keyed by the membership's id: a user who leaves and joins again gets a
// new membership, so the old one's deletion does not absorb the new one.
type Membership struct {
	ID             string    `json:"id"`
	OrganizationID string    `json:"organization_id"`
	UserID         string    `json:"user_id"`
	Role           string    `json:"role"`
	Permissions    []string  `json:"permissions"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	Deleted        bool      `json:"deleted"`
	DeletedAt      time.Time `json:"deleted_at,omitzero"`
	// Version is the greatest snapshot the fold has seen (kept after a
	// deletion: OrganizationID, UserID and CreatedAt come from it).
	Version Version `json:"-"`
}

// Exists reports whether any event has been folded into m.
func (m Membership) Exists() bool { return m.ID != "" }

// OrganizationEventTypes returns the event types the organizations fold
// reads: organization.* and organizationMembership.* (whose data carries
// the organization object, a snapshot of it).
func OrganizationEventTypes() []string {
	return []string{
		"organization.created", "organization.updated", "organization.deleted",
		"organizationMembership.created", "organizationMembership.updated", "organizationMembership.deleted",
		TypeOrganizationSnapshot, TypeMembershipSnapshot,
	}
}

// IsOrganizationEvent reports whether the organizations fold reads events
// of this type.
func IsOrganizationEvent(typ string) bool {
	switch typ {
	case "organization.created", "organization.updated", "organization.deleted",
		"organizationMembership.created", "organizationMembership.updated", "organizationMembership.deleted",
		TypeOrganizationSnapshot, TypeMembershipSnapshot:
		return true
	}
	return false
}

// orgData is the part of Clerk's organization object the fold reads.
type orgData struct {
	ID             string          `json:"id"`
	Deleted        bool            `json:"deleted"`
	Name           *string         `json:"name"`
	Slug           *string         `json:"slug"`
	ImageURL       *string         `json:"image_url"`
	PublicMetadata json.RawMessage `json:"public_metadata"`
	CreatedAt      int64           `json:"created_at"`
	UpdatedAt      int64           `json:"updated_at"`
}

// membershipData is the part of Clerk's organization membership object the
// fold reads.
type membershipData struct {
	ID             string   `json:"id"`
	Deleted        bool     `json:"deleted"`
	Organization   *orgData `json:"organization"`
	PublicUserData *struct {
		UserID string `json:"user_id"`
	} `json:"public_user_data"`
	Role        *string  `json:"role"`
	Permissions []string `json:"permissions"`
	CreatedAt   int64    `json:"created_at"`
	UpdatedAt   int64    `json:"updated_at"`
}

// OrganizationEvent is what one ledger event tells the organizations fold,
// decoded once (ParseOrganizationEvent): a snapshot or deletion of at most
// one organization and of at most one membership.
type OrganizationEvent struct {
	org *orgSnapshot
	mem *memSnapshot
	at  time.Time // the event's occurred_at
}

type orgSnapshot struct {
	deleted bool
	v       Version
	o       Organization // the snapshot's fields in storable form (not for deletions)
}

type memSnapshot struct {
	deleted bool
	v       Version
	m       Membership // the snapshot's fields in storable form (role and permissions too for deletions)
}

// OrganizationID returns the id of the organization e snapshots or deletes
// ("" when it says nothing about one).
func (x OrganizationEvent) OrganizationID() string {
	if x.org == nil {
		return ""
	}
	return x.org.o.ID
}

// MembershipID returns the id of the membership e snapshots or deletes
// ("" when it is about none).
func (x OrganizationEvent) MembershipID() string {
	if x.mem == nil {
		return ""
	}
	return x.mem.m.ID
}

// MembershipOrganizationID returns the organization of the membership e is
// about ("" when it is about none).
func (x OrganizationEvent) MembershipOrganizationID() string {
	if x.mem == nil {
		return ""
	}
	return x.mem.m.OrganizationID
}

// MembershipUserID returns the user of the membership e is about ("" when
// it is about none).
func (x OrganizationEvent) MembershipUserID() string {
	if x.mem == nil {
		return ""
	}
	return x.mem.m.UserID
}

// Role is the role the membership snapshot of e names ("" when none).
func (x OrganizationEvent) Role() string {
	if x.mem == nil {
		return ""
	}
	return x.mem.m.Role
}

// ParseOrganizationEvent decodes what e tells the organizations fold. An
// event of a type the fold does not read gives the zero OrganizationEvent
// (about nothing) and no error.
//
// organization.created and organization.updated are snapshots of
// data (the organization object), organization.deleted (or data.deleted
// true) its deletion. Each organizationMembership.* is a snapshot of the
// membership (organizationMembership.deleted, or data.deleted true: its
// deletion) and, when its data.organization carries an updated_at, a
// snapshot of that organization too: an organization whose own events
// were never delivered is still known from its memberships.
//
// It returns an EINVALID error for a poison event: the body does not decode
// (a field of another JSON type, say); the organization has no id, or a NUL
// in it (the id is the key: replacing the NUL could merge two); a
// membership without an id, without data.organization.id or without
// data.public_user_data.user_id (Clerk's membership events carry all three,
// deletions included; the point-in-time views find a membership's events
// by them), or with a NUL in any; or a membership stored for another user
// than the one its data names (the events' user_id column). Every consumer
// (projector, rebuild, check, point-in-time) parses with this function, so
// they agree on what is poison.
//
// An erased event (e.Erased: a membership event of an erased user) and the
// erasure event itself parse as about nothing: content unavailable, they
// change no organization or membership.
func ParseOrganizationEvent(e Event) (OrganizationEvent, error) {
	if e.Erased || e.Type == ErasureEventType {
		return OrganizationEvent{at: e.OccurredAt.UTC()}, nil
	}
	// The event's time as ingest stored it, in milliseconds like the users
	// fold, so the fold and the occurred_at column agree.
	occurred := e.OccurredAt.UnixMilli()
	x := OrganizationEvent{at: time.UnixMilli(occurred).UTC()}
	if !IsOrganizationEvent(e.Type) {
		return x, nil
	}
	family, action, _ := strings.Cut(e.Type, ".")
	body := e.Body
	if action == "snapshot" {
		// The Backend API's object itself (organization.snapshot,
		// organizationMembership.snapshot): read it as an envelope's data.
		body = append(append([]byte(`{"data":`), e.Body...), '}')
	}
	if family == "organization" {
		var env struct {
			Data orgData `json:"data"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			return OrganizationEvent{}, Errorf(EINVALID, "event %d (%s): organization data does not decode: %v", e.Position, e.Type, err)
		}
		if err := checkKey(e, "organization id", env.Data.ID); err != nil {
			return OrganizationEvent{}, err
		}
		x.org = newOrgSnapshot(env.Data, action == "deleted" || env.Data.Deleted, occurred, e.DeliveryID)
		return x, nil
	}
	var env struct {
		Data membershipData `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return OrganizationEvent{}, Errorf(EINVALID, "event %d (%s): membership data does not decode: %v", e.Position, e.Type, err)
	}
	d := env.Data
	orgID, userID := "", ""
	if d.Organization != nil {
		orgID = d.Organization.ID
	}
	if d.PublicUserData != nil {
		userID = d.PublicUserData.UserID
	}
	if err := checkKey(e, "membership id", d.ID); err != nil {
		return OrganizationEvent{}, err
	}
	if err := checkKey(e, "membership organization (data.organization.id)", orgID); err != nil {
		return OrganizationEvent{}, err
	}
	if err := checkKey(e, "membership user (data.public_user_data.user_id)", userID); err != nil {
		return OrganizationEvent{}, err
	}
	if e.UserID != "" && e.UserID != userID {
		// Never written by ingest (the column is derived from the data); a
		// row like it would put a membership under another user.
		return OrganizationEvent{}, Errorf(EINVALID, "event %d (%s) is stored for user %s but its data names %s", e.Position, e.Type, e.UserID, userID)
	}
	perms := make([]string, 0, len(d.Permissions))
	for _, p := range d.Permissions {
		perms = append(perms, StorableText(p))
	}
	x.mem = &memSnapshot{
		deleted: action == "deleted" || d.Deleted,
		v:       Version{UpdatedAt: d.UpdatedAt, OccurredAt: occurred, DeliveryID: e.DeliveryID},
		m: Membership{
			ID: d.ID, OrganizationID: orgID, UserID: userID,
			Role: StorableText(str(d.Role)), Permissions: perms,
			CreatedAt: msTime(d.CreatedAt), UpdatedAt: msTime(d.UpdatedAt),
		},
	}
	if d.Organization.UpdatedAt != 0 {
		x.org = newOrgSnapshot(*d.Organization, false, occurred, e.DeliveryID)
	}
	return x, nil
}

// checkKey returns EINVALID unless id can be a key: not empty, no NUL.
func checkKey(e Event, what, id string) error {
	if id == "" {
		return Errorf(EINVALID, "event %d (%s) has no %s", e.Position, e.Type, what)
	}
	if strings.IndexByte(id, 0) >= 0 {
		// Not replaced like other text (see StorableText): the id is a
		// key, and a replaced id could name another object.
		return Errorf(EINVALID, "event %d (%s): %s contains a NUL character", e.Position, e.Type, what)
	}
	return nil
}

func newOrgSnapshot(d orgData, deleted bool, occurred int64, delivery string) *orgSnapshot {
	meta := bytes.TrimSpace(d.PublicMetadata)
	if len(meta) == 0 || string(meta) == "null" {
		meta = []byte(`{}`)
	}
	return &orgSnapshot{
		deleted: deleted,
		v:       Version{UpdatedAt: d.UpdatedAt, OccurredAt: occurred, DeliveryID: delivery},
		o: Organization{
			ID: d.ID, Name: StorableText(str(d.Name)), Slug: StorableText(str(d.Slug)), ImageURL: StorableText(str(d.ImageURL)),
			PublicMetadata: append(json.RawMessage(nil), StorableJSON(meta)...),
			CreatedAt:      msTime(d.CreatedAt), UpdatedAt: msTime(d.UpdatedAt),
		},
	}
}

// ApplyOrganization folds x into o and returns the new state; x about no
// organization, or about another one than o, leaves o unchanged.
//
// The fold is order-insensitive and idempotent: any permutation of a set of
// events, with any duplicates, gives the same Organization. The snapshot
// with the greatest Version (Clerk's updated_at, then occurred_at, then the
// delivery id) wins; a deletion is a tombstone that no snapshot, earlier or
// later, resurrects. A tombstone keeps the id, when the organization was
// created (from the greatest snapshot) and when it was deleted (the
// earliest deletion), and clears the rest: the ledger keeps the history.
func ApplyOrganization(o Organization, x OrganizationEvent) Organization {
	s := x.org
	if s == nil || (o.ID != "" && o.ID != s.o.ID) {
		return o
	}
	o.ID = s.o.ID
	if s.deleted {
		if !o.Deleted || x.at.Before(o.DeletedAt) {
			o.DeletedAt = x.at
		}
		o.Deleted = true
		return orgTombstone(o)
	}
	if o.Version != (Version{}) && !o.Version.Less(s.v) {
		return o
	}
	if o.Deleted {
		o.Version, o.CreatedAt = s.v, s.o.CreatedAt
		return orgTombstone(o)
	}
	next := s.o
	next.Version = s.v
	return next
}

func orgTombstone(o Organization) Organization {
	return Organization{ID: o.ID, PublicMetadata: json.RawMessage(`{}`), CreatedAt: o.CreatedAt, UpdatedAt: o.DeletedAt,
		Deleted: true, DeletedAt: o.DeletedAt, Version: o.Version}
}

// ApplyMembership folds x into m and returns the new state; x about no
// membership, or about another one than m, leaves m unchanged. Its rules
// are ApplyOrganization's: the greatest snapshot wins, deletions are
// absorbing. A tombstone keeps the id, the organization, the user and the
// creation time of the greatest snapshot (deletions are snapshots for
// these: Clerk sends the whole membership) and clears the role and the
// permissions.
func ApplyMembership(m Membership, x OrganizationEvent) Membership {
	s := x.mem
	if s == nil || (m.ID != "" && m.ID != s.m.ID) {
		return m
	}
	newer := m.Version == (Version{}) || m.Version.Less(s.v)
	if s.deleted {
		if newer {
			m.ID, m.OrganizationID, m.UserID, m.CreatedAt, m.Version = s.m.ID, s.m.OrganizationID, s.m.UserID, s.m.CreatedAt, s.v
		}
		if !m.Deleted || x.at.Before(m.DeletedAt) {
			m.DeletedAt = x.at
		}
		m.Deleted = true
		return memTombstone(m)
	}
	if !newer {
		return m
	}
	if m.Deleted {
		m.ID, m.OrganizationID, m.UserID, m.CreatedAt, m.Version = s.m.ID, s.m.OrganizationID, s.m.UserID, s.m.CreatedAt, s.v
		return memTombstone(m)
	}
	next := s.m
	next.Permissions = append([]string{}, s.m.Permissions...)
	next.Version = s.v
	return next
}

func memTombstone(m Membership) Membership {
	return Membership{ID: m.ID, OrganizationID: m.OrganizationID, UserID: m.UserID, Permissions: []string{},
		CreatedAt: m.CreatedAt, UpdatedAt: m.DeletedAt, Deleted: true, DeletedAt: m.DeletedAt, Version: m.Version}
}

// OrganizationFold is the state of several organizations and memberships
// folded from events (FoldOrganizations).
type OrganizationFold struct {
	Organizations map[string]Organization
	Memberships   map[string]Membership
}

// NewOrganizationFold returns an empty fold.
func NewOrganizationFold() *OrganizationFold {
	return &OrganizationFold{Organizations: map[string]Organization{}, Memberships: map[string]Membership{}}
}

// Add folds x into f.
func (f *OrganizationFold) Add(x OrganizationEvent) {
	if id := x.OrganizationID(); id != "" {
		f.Organizations[id] = ApplyOrganization(f.Organizations[id], x)
	}
	if id := x.MembershipID(); id != "" {
		f.Memberships[id] = ApplyMembership(f.Memberships[id], x)
	}
}

// FoldOrganizations parses and folds events in order and returns the
// organizations and memberships they make and the events that are poison
// (ParseOrganizationEvent), which are skipped.
func FoldOrganizations(events []Event) (*OrganizationFold, []error) {
	f := NewOrganizationFold()
	var errs []error
	for _, e := range events {
		x, err := ParseOrganizationEvent(e)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f.Add(x)
	}
	return f, errs
}

// EventOrganization returns the id of the organization e is about, for
// listing an organization's history: data.id of organization.*,
// data.organization.id of organizationMembership.*, data.organization_id
// of organizationInvitation.*; "" for other types and for events that do
// not decode (a poison event of the fold names no organization).
func EventOrganization(e Event) string {
	switch {
	case IsOrganizationEvent(e.Type):
		x, err := ParseOrganizationEvent(e)
		if err != nil {
			return ""
		}
		if id := x.MembershipOrganizationID(); id != "" {
			return id
		}
		return x.OrganizationID()
	case strings.HasPrefix(e.Type, "organizationInvitation."):
		var env struct {
			Data struct {
				OrganizationID string `json:"organization_id"`
			} `json:"data"`
		}
		if json.Unmarshal(e.Body, &env) != nil {
			return ""
		}
		return env.Data.OrganizationID
	}
	return ""
}
