package domain

import (
	"encoding/json"
	"strings"
	"time"
)

// User is the read model of one Clerk user, folded from the ledger. The same
// fold (Apply) feeds the users projection and the auditors' point-in-time view.
type User struct {
	ID             string          `json:"id"`
	Email          string          `json:"email"`
	FirstName      string          `json:"first_name"`
	LastName       string          `json:"last_name"`
	Username       string          `json:"username"`
	ImageURL       string          `json:"image_url"`
	PublicMetadata json.RawMessage `json:"public_metadata"`
	CreatedAt      time.Time       `json:"created_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
	Deleted        bool            `json:"deleted"`
	DeletedAt      time.Time       `json:"deleted_at,omitzero"`
	// Version orders the snapshots the fold has seen; the greatest wins.
	Version Version `json:"-"`

	// Phone is the primary phone number (primary_phone_number_id into
	// phone_numbers), "" when there is none.
	Phone string `json:"phone_number"`
	// EmailVerified reports whether the primary email's verification
	// status is "verified".
	EmailVerified    bool      `json:"email_verified"`
	ExternalID       string    `json:"external_id"`
	Banned           bool      `json:"banned"`
	Locked           bool      `json:"locked"`
	TwoFactorEnabled bool      `json:"two_factor_enabled"`
	LastSignInAt     time.Time `json:"last_sign_in_at,omitzero"`
	LastActiveAt     time.Time `json:"last_active_at,omitzero"`
	// PrivateMetadata is Clerk's private_metadata: what the app's backend
	// keeps about the user and Clerk never shows the user (its Frontend
	// API does not serve it). Only auditors see it: it is in no page or
	// API answer for the user, only in the audit views (see README).
	PrivateMetadata json.RawMessage `json:"private_metadata"`
	// ErasedAt is when the user was erased (ErasureEventType); zero when
	// not. An erased user is a tombstone for good: id, deleted, erased and
	// those times, nothing else.
	ErasedAt time.Time `json:"erased_at,omitzero"`
}

// Erased reports whether the user was erased.
func (u User) Erased() bool { return !u.ErasedAt.IsZero() }

// Version is the total order the fold uses to pick the newest snapshot of a
// user, independent of delivery order: Clerk's updated_at first, then the
// envelope's timestamp, then the delivery id as a deterministic tie-break.
type Version struct {
	UpdatedAt  int64  // Clerk updated_at, ms
	OccurredAt int64  // envelope timestamp, ms
	DeliveryID string // svix-id
}

// Less reports whether v orders before w.
func (v Version) Less(w Version) bool {
	if v.UpdatedAt != w.UpdatedAt {
		return v.UpdatedAt < w.UpdatedAt
	}
	if v.OccurredAt != w.OccurredAt {
		return v.OccurredAt < w.OccurredAt
	}
	return v.DeliveryID < w.DeliveryID
}

// Name is the display name built from what exists: "First Last", one of them,
// the username, the email, or the id. Never "null null".
func (u User) Name() string {
	if n := strings.TrimSpace(strings.TrimSpace(u.FirstName) + " " + strings.TrimSpace(u.LastName)); n != "" {
		return n
	}
	if u.Username != "" {
		return u.Username
	}
	if u.Email != "" {
		return u.Email
	}
	return u.ID
}

// Exists reports whether any event has been folded into u.
func (u User) Exists() bool { return u.ID != "" }

// UserEventTypes returns the event types the fold reads: Clerk's user.*
// deliveries, the ledger's own snapshots from the Backend API and its
// erasures.
func UserEventTypes() []string {
	return []string{"user.created", "user.updated", "user.deleted", TypeUserSnapshot, TypeUserSnapshotDeleted, ErasureEventType}
}

// IsUserEvent reports whether the fold reads events of this type.
func IsUserEvent(typ string) bool {
	return typ == "user.created" || typ == "user.updated" || typ == "user.deleted" || IsSnapshot(typ) || typ == ErasureEventType
}

// ErasureEventType is the type of the event the ledger appends when it
// erases a user (source "ledger"). Its body names the user and nothing
// else: {"type":"ledger.user_erased","object":"event","timestamp":ms,
// "data":{"object":"user","id":USER_ID}}.
const ErasureEventType = "ledger.user_erased"

// ErasureEventBody returns the body of the erasure event of user at.
func ErasureEventBody(user string, at time.Time) []byte {
	b, _ := json.Marshal(map[string]any{
		"type": ErasureEventType, "object": "event", "timestamp": at.UnixMilli(),
		"data": map[string]string{"object": "user", "id": user},
	})
	return b
}

// ErasedTombstone is u once erased at: its id, whether and when it was
// deleted, and when it was erased; every other field cleared (also
// created_at, which a rebuild could no longer read from the erased
// bodies, so that rebuild and live agree).
func ErasedTombstone(u User, at time.Time) User {
	t := User{
		ID: u.ID, PublicMetadata: json.RawMessage(`{}`), PrivateMetadata: json.RawMessage(`{}`),
		Deleted: u.Deleted, DeletedAt: u.DeletedAt, UpdatedAt: at.UTC(), ErasedAt: at.UTC(),
	}
	if u.Erased() && u.ErasedAt.Before(t.ErasedAt) {
		t.UpdatedAt, t.ErasedAt = u.ErasedAt, u.ErasedAt
	}
	return t
}

// userData is the part of Clerk's user object the fold reads.
type userData struct {
	ID                    string  `json:"id"`
	Deleted               bool    `json:"deleted"`
	PrimaryEmailAddressID *string `json:"primary_email_address_id"`
	EmailAddresses        []struct {
		ID           string `json:"id"`
		EmailAddress string `json:"email_address"`
		Verification *struct {
			Status string `json:"status"`
		} `json:"verification"`
	} `json:"email_addresses"`
	FirstName      *string         `json:"first_name"`
	LastName       *string         `json:"last_name"`
	Username       *string         `json:"username"`
	ImageURL       *string         `json:"image_url"`
	PublicMetadata json.RawMessage `json:"public_metadata"`
	CreatedAt      int64           `json:"created_at"`
	UpdatedAt      int64           `json:"updated_at"`

	PrimaryPhoneNumberID *string         `json:"primary_phone_number_id"`
	PhoneNumbers         []phoneNumber   `json:"phone_numbers"`
	ExternalID           *string         `json:"external_id"`
	Banned               bool            `json:"banned"`
	Locked               bool            `json:"locked"`
	TwoFactorEnabled     bool            `json:"two_factor_enabled"`
	LastSignInAt         *int64          `json:"last_sign_in_at"`
	LastActiveAt         *int64          `json:"last_active_at"`
	PrivateMetadata      json.RawMessage `json:"private_metadata"`
}

// phoneNumber is the part of a phone number object the fold reads.
type phoneNumber = struct {
	ID          string `json:"id"`
	PhoneNumber string `json:"phone_number"`
}

func int64p(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// metadataOrEmpty is raw, or {} when raw is absent or null.
func metadataOrEmpty(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return json.RawMessage(`{}`)
	}
	return raw
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// Apply folds one ledger event into u and returns the new state. Events of
// types the fold does not read, or about another user, return u unchanged.
//
// The fold is order-insensitive and idempotent: applying any permutation of a
// set of events, with any duplicates, gives the same User. The snapshot with
// the greatest Version wins; user.deleted is a tombstone that clears personal
// fields and that no later or earlier snapshot resurrects. A user.snapshot
// (the Backend API's object) is a snapshot like any user.created/updated,
// ordered by its updated_at; a user.snapshot_deleted is a tombstone.
//
// Text fields and public metadata are kept in their storable form (see
// StorableText and StorableJSON: NUL and unpaired surrogates become U+FFFD);
// the ledger keeps the exact bytes.
//
// Apply returns an EINVALID error (and u unchanged) for a user event whose
// data cannot be decoded, names no user, has a NUL in the user id, or names
// another user than the event's user_id column: a poison event. Every
// consumer (projector, rebuild, check, point-in-time, timeline) folds with
// Apply (or DecodeUserEvent and UserEvent.Apply, the same steps apart), so
// they agree on what is poison.
func Apply(u User, e Event) (User, error) {
	next, _, err := ApplyUserEvent(u, e)
	return next, err
}

// ApplyUserEvent is Apply that also returns e decoded (the zero UserEvent
// for an event that is no user event, or that does not decode), for a
// caller that reads more of it, such as the addresses it names.
func ApplyUserEvent(u User, e Event) (User, UserEvent, error) {
	if !IsUserEvent(e.Type) {
		return u, UserEvent{}, nil
	}
	d, err := DecodeUserEvent(e)
	if err != nil {
		return u, UserEvent{}, err
	}
	next, _ := d.Apply(u)
	return next, d, nil
}

// Outcome is what folding one event did to a user's state.
type Outcome string

// The outcomes of a fold step (UserEvent.Apply, Step).
const (
	// OutcomeNotUserEvent: a type the fold does not read (session.*, ...).
	OutcomeNotUserEvent Outcome = "not_user_event"
	// OutcomeOtherUser: the event is about another user than the state.
	OutcomeOtherUser Outcome = "other_user"
	// OutcomeApplied: the event's snapshot is now the state (it may
	// still change no field: a resent snapshot).
	OutcomeApplied Outcome = "applied"
	// OutcomeOlder: ignored, the state already had a newer snapshot (a
	// late delivery of an older change).
	OutcomeOlder Outcome = "older"
	// OutcomeDeleted: the tombstone (user.deleted, or data.deleted).
	OutcomeDeleted Outcome = "deleted"
	// OutcomeAfterDeletion: ignored, the user is deleted and a snapshot
	// never resurrects them (it may only tell an earlier created_at).
	OutcomeAfterDeletion Outcome = "after_deletion"
	// OutcomePoison: the event does not decode (Apply's error); skipped.
	OutcomePoison Outcome = "poison"
	// OutcomeErased: the user's erasure (ErasureEventType): the state is
	// ErasedTombstone.
	OutcomeErased Outcome = "erased"
	// OutcomeContentErased: the event's body is erased: only its metadata
	// counts (a user.deleted or user.snapshot_deleted still deletes); nothing else changes.
	OutcomeContentErased Outcome = "content_erased"
)

// UserEvent is a user event decoded for the fold: DecodeUserEvent once,
// then Apply to any number of states (a view that folds several subsets of
// a history decodes each body once). It refers to the event's body.
type UserEvent struct {
	e   Event
	env userEnvelope
	// erased: e.Erased, the body is gone (only e's metadata is read).
	erased bool
}

// DecodeUserEvent decodes e, a user event, for the fold. It returns Apply's
// EINVALID error for a poison event (data that does not decode, no id, a
// NUL in the id, data naming another user than the user_id column).
//
// A snapshot's body (TypeUserSnapshot, TypeUserSnapshotDeleted) is the user
// object itself, not an envelope. An erased event (e.Erased) decodes
// without its body when it names its user in the user_id column: its fold
// is "content unavailable" (OutcomeContentErased).
func DecodeUserEvent(e Event) (UserEvent, error) {
	if e.Erased {
		if e.UserID == "" {
			return UserEvent{}, Errorf(EINVALID, "event %d (%s): erased and stored for no user", e.Position, e.Type)
		}
		return UserEvent{e: e, erased: true}, nil
	}
	var env userEnvelope
	var err error
	if IsSnapshot(e.Type) {
		env.Data, err = decodeUserObject(e.Body)
	} else {
		env, err = decodeUserEnvelope(e.Body)
	}
	if err != nil {
		return UserEvent{}, Errorf(EINVALID, "event %d (%s): user data does not decode: %v", e.Position, e.Type, err)
	}
	d := env.Data
	if d.ID == "" {
		return UserEvent{}, Errorf(EINVALID, "event %d (%s): user data has no id", e.Position, e.Type)
	}
	if strings.IndexByte(d.ID, 0) >= 0 {
		// Not replaced like other text (see StorableText): the id is the
		// user's key, and a replaced id could name another user.
		return UserEvent{}, Errorf(EINVALID, "event %d (%s): user id contains a NUL character", e.Position, e.Type)
	}
	if e.UserID != "" && e.UserID != d.ID {
		// Never written by ingest (the column is derived from the data); a
		// row like it would put one user's data in another's record.
		return UserEvent{}, Errorf(EINVALID, "event %d (%s) is stored for user %s but its data names %s", e.Position, e.Type, e.UserID, d.ID)
	}
	return UserEvent{e: e, env: env}, nil
}

// ChangedAt is when the change happened in Clerk: the user object's
// updated_at, else (user.deleted carries none) the event's occurred_at.
// Timelines sort by it.
func (d UserEvent) ChangedAt() time.Time {
	if d.erased {
		return d.e.OccurredAt.UTC()
	}
	if t := msTime(d.env.Data.UpdatedAt); !t.IsZero() {
		return t
	}
	return d.e.OccurredAt.UTC()
}

// Apply folds the event into u (Apply's rules) and says what it did.
func (d UserEvent) Apply(u User) (User, Outcome) {
	e, dt := d.e, d.env.Data
	if d.erased {
		dt.ID = e.UserID
	}
	if u.ID != "" && u.ID != dt.ID {
		return u, OutcomeOtherUser
	}
	if e.Type == ErasureEventType {
		u.ID = dt.ID
		return ErasedTombstone(u, e.OccurredAt), OutcomeErased
	}
	if d.erased {
		u.ID = dt.ID
		// The type is metadata: a user.deleted, or the tombstone snapshot
		// reconcile stores when Clerk no longer has the user, still deletes
		// with its body gone.
		if e.Type == "user.deleted" || e.Type == TypeUserSnapshotDeleted {
			at := e.OccurredAt.UTC()
			if !u.Deleted || at.Before(u.DeletedAt) {
				u.DeletedAt = at
			}
			u.Deleted = true
			if !u.Erased() {
				u = tombstone(u)
			}
		}
		return u, OutcomeContentErased
	}
	if u.Erased() {
		// Erased for good: a body still readable (a legacy clear one)
		// never brings anything back.
		if e.Type == "user.deleted" || dt.Deleted {
			at := e.OccurredAt.UTC()
			if !u.Deleted || at.Before(u.DeletedAt) {
				u.DeletedAt = at
			}
			u.Deleted = true
		}
		return u, OutcomeAfterDeletion
	}
	// The event's time as ingest stored it (domain.OccurredAt's rule), so the
	// fold and the occurred_at column agree.
	occurred := e.OccurredAt.UnixMilli()
	u.ID = dt.ID

	if e.Type == "user.deleted" || e.Type == TypeUserSnapshotDeleted || dt.Deleted {
		at := time.UnixMilli(occurred).UTC()
		if !u.Deleted || at.Before(u.DeletedAt) {
			u.DeletedAt = at
		}
		return tombstone(u), OutcomeDeleted
	}
	if u.Deleted {
		// A snapshot never resurrects a tombstone; it may only tell when the
		// account was created (see earliestCreated).
		u.CreatedAt = earliestCreated(u.CreatedAt, dt.CreatedAt)
		return u, OutcomeAfterDeletion
	}
	v := Version{UpdatedAt: dt.UpdatedAt, OccurredAt: occurred, DeliveryID: e.DeliveryID}
	if u.Version != (Version{}) && !u.Version.Less(v) {
		u.CreatedAt = earliestCreated(u.CreatedAt, dt.CreatedAt)
		return u, OutcomeOlder
	}
	email, verified := "", false
	if dt.PrimaryEmailAddressID != nil {
		for _, a := range dt.EmailAddresses {
			if a.ID == *dt.PrimaryEmailAddressID {
				email = a.EmailAddress
				verified = a.Verification != nil && a.Verification.Status == "verified"
				break
			}
		}
	}
	phone := ""
	if dt.PrimaryPhoneNumberID != nil {
		for _, p := range dt.PhoneNumbers {
			if p.ID == *dt.PrimaryPhoneNumberID {
				phone = p.PhoneNumber
				break
			}
		}
	}
	meta := dt.PublicMetadata
	if len(meta) == 0 || string(meta) == "null" {
		meta = json.RawMessage(`{}`)
	}
	// Text is kept in its storable form (see StorableText): the same in the
	// projection, a rebuild, check and the point-in-time view.
	return User{
		ID:             dt.ID,
		Email:          StorableText(email),
		FirstName:      StorableText(str(dt.FirstName)),
		LastName:       StorableText(str(dt.LastName)),
		Username:       StorableText(str(dt.Username)),
		ImageURL:       StorableText(str(dt.ImageURL)),
		PublicMetadata: append(json.RawMessage(nil), StorableJSON(meta)...),
		CreatedAt:      earliestCreated(u.CreatedAt, dt.CreatedAt),
		UpdatedAt:      msTime(dt.UpdatedAt),
		Version:        v,

		Phone:            StorableText(phone),
		EmailVerified:    verified,
		ExternalID:       StorableText(str(dt.ExternalID)),
		Banned:           dt.Banned,
		Locked:           dt.Locked,
		TwoFactorEnabled: dt.TwoFactorEnabled,
		LastSignInAt:     msTime(int64p(dt.LastSignInAt)),
		LastActiveAt:     msTime(int64p(dt.LastActiveAt)),
		PrivateMetadata:  append(json.RawMessage(nil), StorableJSON(metadataOrEmpty(dt.PrivateMetadata))...),
	}, OutcomeApplied
}

// tombstone clears every personal field of u and marks it deleted. CreatedAt
// is kept (it says when the account existed, not who it was); UpdatedAt
// becomes the deletion time.
func tombstone(u User) User {
	return User{
		ID:             u.ID,
		PublicMetadata: json.RawMessage(`{}`),
		CreatedAt:      u.CreatedAt,
		UpdatedAt:      u.DeletedAt,
		Deleted:        true,
		DeletedAt:      u.DeletedAt,
		Version:        Version{},

		PrivateMetadata: json.RawMessage(`{}`),
	}
}

// earliestCreated is the earlier of at and the created_at ms of a snapshot
// (0: the snapshot tells none). A user's created_at is the earliest any of
// its snapshots tells, whichever snapshot wins and whether the user is
// deleted: a tombstone cannot tell which snapshot was newest, so the
// newest snapshot's created_at would depend on the order of delivery.
func earliestCreated(at time.Time, ms int64) time.Time {
	if c := msTime(ms); !c.IsZero() && (at.IsZero() || c.Before(at)) {
		return c
	}
	return at
}

// msTime is the Clerk time ms (milliseconds since the epoch), 0 being no
// time. A time outside the years 0000 to 9999 is no time either: Clerk
// sends none, and RFC 3339 and JSON cannot write one, so a delivery
// carrying one (in last_sign_in_at, say) must not make every answer that
// shows the read model fail to encode. Every fold reads times through it,
// so projector, rebuild, check and point-in-time agree.
func msTime(ms int64) time.Time {
	if ms == 0 || ms < minClerkMillis || ms > maxClerkMillis {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// The first and last milliseconds of the years 0000 to 9999 (UTC) since
// the epoch: time.Date(0, 1, 1, ...) and time.Date(9999, 12, 31, 23, 59,
// 59, 999e6, time.UTC) as UnixMilli.
const (
	minClerkMillis = -62167219200000
	maxClerkMillis = 253402300799999
)

// UserKey returns the id of the user a user event is about: its user_id
// column, or for an event stored without one, the id in its data. It
// returns Apply's error for a poison event that names no user.
func UserKey(e Event) (string, error) {
	if e.UserID != "" {
		return e.UserID, nil
	}
	u, err := Apply(User{}, e)
	if err != nil {
		return "", err
	}
	return u.ID, nil
}

// Fold applies events in order to the zero User and returns the result and
// the events that failed to apply (poison events), which are skipped.
func Fold(events []Event) (User, []error) {
	var u User
	var errs []error
	for _, e := range events {
		next, err := Apply(u, e)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		u = next
	}
	return u, errs
}

// EmailAddresses returns every email address the event's user object
// lists (primary or not), in their storable form, in the order it lists
// them. A user.deleted lists none.
func (d UserEvent) EmailAddresses() []string {
	if d.erased || d.e.Type == ErasureEventType {
		return nil
	}
	var out []string
	for _, a := range d.env.Data.EmailAddresses {
		if a.EmailAddress != "" {
			out = append(out, StorableText(a.EmailAddress))
		}
	}
	return out
}

// UserID is the id of the user the event is about (its data's id).
func (d UserEvent) UserID() string {
	if d.erased {
		return d.e.UserID
	}
	return d.env.Data.ID
}
