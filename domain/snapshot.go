package domain

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Event types the ledger writes itself, from Clerk's Backend API rather
// than from a Svix delivery (issue 12). Their bodies are not webhook
// envelopes:
//
//   - TypeUserSnapshot: the body is the exact bytes of one user object as
//     GET /v1/users (or /v1/users/{id}) returned it. The fold takes it like
//     a user.updated carrying that object: ordered by the user's
//     updated_at, so an older snapshot never overwrites a newer webhook, and
//     never reviving a deleted user.
//   - TypeUserSnapshotDeleted: the API no longer returns the user (a
//     reconcile saw the user missing from the list and GET answered 404). The
//     body records that observation; the fold takes it as a tombstone at its
//     occurred_at. It is not a user.deleted: no such delivery is ever made up.
const (
	TypeUserSnapshot        = "user.snapshot"
	TypeUserSnapshotDeleted = "user.snapshot_deleted"
	// TypeOrganizationSnapshot and TypeMembershipSnapshot hold an
	// organization or organization membership object as the Backend API
	// returned it; the organizations fold takes them like the
	// organization.updated / organizationMembership.updated carrying that
	// object (ordered by its updated_at).
	TypeOrganizationSnapshot = "organization.snapshot"
	TypeMembershipSnapshot   = "organizationMembership.snapshot"
)

// SnapshotTypes are the types of the events the ledger reads from the
// Backend API itself: not webhook deliveries.
func SnapshotTypes() []string {
	return []string{TypeUserSnapshot, TypeUserSnapshotDeleted, TypeOrganizationSnapshot, TypeMembershipSnapshot}
}

// Sources of events (the events.source column, Event.Source,
// Delivery.Source).
const (
	SourceSvix     = "svix"      // a verified webhook delivery
	SourceClerkAPI = "clerk_api" // read by the ledger from Clerk's Backend API
)

// IsSnapshot reports whether typ is one of SnapshotTypes, whose body is the
// object itself, not an envelope.
func IsSnapshot(typ string) bool {
	switch typ {
	case TypeUserSnapshot, TypeUserSnapshotDeleted, TypeOrganizationSnapshot, TypeMembershipSnapshot:
		return true
	}
	return false
}

// SnapshotDeliveryID is the delivery id of the snapshot of user id at
// updatedAt (Unix ms): "clerk_api:<id>:<updated_at>". The same user at the
// same updated_at always gets the same id, so importing twice stores it once.
func SnapshotDeliveryID(id string, updatedAt int64) string {
	return SourceClerkAPI + ":" + id + ":" + strconv.FormatInt(updatedAt, 10)
}

// SnapshotDeletedDeliveryID is the delivery id of the observation that user
// id is gone from the API: one per user, so a repeated reconcile stores it
// once.
func SnapshotDeletedDeliveryID(id string) string {
	return SourceClerkAPI + ":" + id + ":gone"
}

// NewSnapshot returns the TypeUserSnapshot delivery of one user object as
// the Backend API returned it (raw, kept byte for byte; the caller copies
// it if its memory is reused). id and updatedAt are the object's id and
// updated_at (Unix ms), as the API client read them. occurred_at is
// updated_at: the state the object shows is the user as of then.
//
// It returns EINVALID when raw is not a user object naming id with that
// updated_at (the fold would read it otherwise), or fails Delivery.Check.
func NewSnapshot(id string, updatedAt int64, raw []byte) (Delivery, error) {
	d := Delivery{
		ID:         SnapshotDeliveryID(id, updatedAt),
		Body:       raw,
		Type:       TypeUserSnapshot,
		UserID:     id,
		OccurredAt: time.UnixMilli(updatedAt).UTC(),
		Source:     SourceClerkAPI,
	}
	if err := checkText("user id", id, MaxUserIDBytes); err != nil {
		return Delivery{}, err
	}
	if err := d.Check(); err != nil {
		return Delivery{}, err
	}
	u, err := decodeUserObject(raw)
	if err != nil {
		return Delivery{}, Errorf(EINVALID, "user %s: the object does not decode: %v", id, err)
	}
	if u.ID != id || u.UpdatedAt != updatedAt {
		return Delivery{}, Errorf(EINVALID, "user %s: the object names %q updated at %d", id, u.ID, u.UpdatedAt)
	}
	if u.Deleted {
		return Delivery{}, Errorf(EINVALID, "user %s: the object is marked deleted", id)
	}
	return d, nil
}

// snapshotDeletedBody is the body of a TypeUserSnapshotDeleted event.
type snapshotDeletedBody struct {
	Object     string `json:"object"`
	ID         string `json:"id"`
	Deleted    bool   `json:"deleted"`
	Reason     string `json:"reason"`
	ObservedAt int64  `json:"observed_at"`
}

// NewSnapshotDeleted returns the TypeUserSnapshotDeleted delivery recording
// that the Backend API no longer returned user id at observedAt, for reason
// (a short text without personal data, e.g. "not listed; GET answered
// 404"). Its occurred_at is observedAt: the latest the user can have been
// deleted. EINVALID when id is not a storable user id.
func NewSnapshotDeleted(id string, observedAt time.Time, reason string) (Delivery, error) {
	if id == "" || strings.TrimSpace(id) != id {
		return Delivery{}, Errorf(EINVALID, "snapshot deleted: user id %q is not an id", id)
	}
	if err := checkText("user id", id, MaxUserIDBytes); err != nil {
		return Delivery{}, err
	}
	at := observedAt.UTC().Truncate(time.Millisecond)
	body, err := json.Marshal(snapshotDeletedBody{Object: "user", ID: id, Deleted: true, Reason: reason, ObservedAt: at.UnixMilli()})
	if err != nil {
		return Delivery{}, Errorf(EINTERNAL, "snapshot deleted %s: %v", id, err)
	}
	d := Delivery{
		ID:         SnapshotDeletedDeliveryID(id),
		Body:       body,
		Type:       TypeUserSnapshotDeleted,
		UserID:     id,
		OccurredAt: at,
		Source:     SourceClerkAPI,
	}
	if err := d.Check(); err != nil {
		return Delivery{}, err
	}
	return d, nil
}

// decodeUserObject decodes a bare user object (a snapshot's body) as
// json.Unmarshal into userData would, through the fold's scanner when it can.
func decodeUserObject(body []byte) (userData, error) {
	s := &scanner{b: body}
	s.ws()
	var d userData
	s.userData(&d)
	s.ws()
	if !s.bad && s.i == len(body) {
		return d, nil
	}
	d = userData{}
	if b := bytes.TrimSpace(body); len(b) == 0 || b[0] != '{' {
		return d, Errorf(EINVALID, "not a JSON object")
	}
	err := json.Unmarshal(body, &d)
	return d, err
}

// NewOrganizationSnapshot returns the TypeOrganizationSnapshot delivery of
// one organization object as the Backend API returned it (raw, kept byte
// for byte), its delivery id SnapshotDeliveryID(id, updatedAt). EINVALID
// when raw is not an organization object naming id with that updated_at.
func NewOrganizationSnapshot(id string, updatedAt int64, raw []byte) (Delivery, error) {
	d := Delivery{ID: SnapshotDeliveryID(id, updatedAt), Body: raw, Type: TypeOrganizationSnapshot,
		OccurredAt: time.UnixMilli(updatedAt).UTC(), Source: SourceClerkAPI}
	if err := d.Check(); err != nil {
		return Delivery{}, err
	}
	x, err := ParseOrganizationEvent(Event{DeliveryID: d.ID, Type: d.Type, Body: raw, OccurredAt: d.OccurredAt})
	if err != nil {
		return Delivery{}, Errorf(EINVALID, "organization %s: %v", id, err)
	}
	if x.OrganizationID() != id || x.org.v.UpdatedAt != updatedAt || x.org.deleted {
		return Delivery{}, Errorf(EINVALID, "organization %s: the object names %q updated at %d", id, x.OrganizationID(), x.org.v.UpdatedAt)
	}
	return d, nil
}

// NewMembershipSnapshot returns the TypeMembershipSnapshot delivery of one
// organization membership object as the Backend API returned it, stored
// for its user (public_user_data.user_id). EINVALID when raw is not a
// membership naming id with that updated_at, an organization and a user.
func NewMembershipSnapshot(id string, updatedAt int64, raw []byte) (Delivery, error) {
	d := Delivery{ID: SnapshotDeliveryID(id, updatedAt), Body: raw, Type: TypeMembershipSnapshot,
		OccurredAt: time.UnixMilli(updatedAt).UTC(), Source: SourceClerkAPI}
	if err := d.Check(); err != nil {
		return Delivery{}, err
	}
	x, err := ParseOrganizationEvent(Event{DeliveryID: d.ID, Type: d.Type, Body: raw, OccurredAt: d.OccurredAt})
	if err != nil {
		return Delivery{}, Errorf(EINVALID, "membership %s: %v", id, err)
	}
	if x.MembershipID() != id || x.mem.v.UpdatedAt != updatedAt || x.mem.deleted {
		return Delivery{}, Errorf(EINVALID, "membership %s: the object names %q updated at %d", id, x.MembershipID(), x.mem.v.UpdatedAt)
	}
	d.UserID = x.MembershipUserID()
	if err := checkText("user id", d.UserID, MaxUserIDBytes); err != nil {
		return Delivery{}, err
	}
	return d, nil
}
