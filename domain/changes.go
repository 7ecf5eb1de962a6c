package domain

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// UserState is a user as a change list compares it: the folded User (the
// projection's row, Apply's result) and the details of the snapshot that
// won it, which the projection does not keep (every email address and
// phone number, unsafe metadata). Detail always comes from the same
// snapshot as User: the one with the greatest Version; a tombstone clears
// it.
type UserState struct {
	User   User
	Detail UserDetail
}

// UserDetail is what a change list shows of a snapshot beyond User.
type UserDetail struct {
	Emails         []string        // every email address, sorted
	Phones         []string        // every phone number, sorted
	UnsafeMetadata json.RawMessage // unsafe_metadata
}

// detailData is the part of a user object UserDetail reads.
type detailData struct {
	EmailAddresses []struct {
		EmailAddress string `json:"email_address"`
	} `json:"email_addresses"`
	PhoneNumbers []struct {
		PhoneNumber string `json:"phone_number"`
	} `json:"phone_numbers"`
	UnsafeMetadata json.RawMessage `json:"unsafe_metadata"`
}

// decodeDetail reads the UserDetail of a user event's body. Fields of other
// types than Clerk's (a string where a list belongs) leave their part
// empty: the fold already accepted the event, and the details only describe.
func decodeDetail(typ string, body []byte) UserDetail {
	if IsSnapshot(typ) {
		// A snapshot's body is the user object: read it as an envelope's data.
		body = append(append([]byte(`{"data":`), body...), '}')
	}
	var env struct {
		Data detailData `json:"data"`
	}
	d := &env.Data
	if json.Unmarshal(body, &env) != nil {
		// One field of an unexpected type: read the others one by one.
		var raw struct {
			Data map[string]json.RawMessage `json:"data"`
		}
		_ = json.Unmarshal(body, &raw)
		*d = detailData{}
		for k, v := range raw.Data {
			one, _ := json.Marshal(map[string]json.RawMessage{k: v})
			_ = json.Unmarshal(one, d)
		}
	}
	var u UserDetail
	for _, a := range d.EmailAddresses {
		if a.EmailAddress != "" {
			u.Emails = append(u.Emails, StorableText(a.EmailAddress))
		}
	}
	for _, p := range d.PhoneNumbers {
		if p.PhoneNumber != "" {
			u.Phones = append(u.Phones, StorableText(p.PhoneNumber))
		}
	}
	slices.Sort(u.Emails)
	u.Emails = slices.Compact(u.Emails)
	slices.Sort(u.Phones)
	u.Phones = slices.Compact(u.Phones)
	u.UnsafeMetadata = keepJSON(d.UnsafeMetadata)
	return u
}

func keepJSON(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return append(json.RawMessage(nil), StorableJSON(raw)...)
}

// Field is one named value of a UserState (Fields): "" means absent.
type Field struct {
	Name, Value string
}

// Change is one field a fold step changed: Old → New ("" is absent).
type Change struct {
	Field string `json:"field"`
	Old   string `json:"old"`
	New   string `json:"new"`
}

// fieldTime formats a time field; the zero time is absent.
func fieldTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

func fieldBool(b bool) string {
	if b {
		return "true"
	}
	return ""
}

// metadataFields appends one field per top-level key of the JSON object
// raw, named prefix.key, with the key's value as compact JSON (keys
// sorted; a repeated key counts once, its last value, as jsonb keeps it).
// Metadata that is not an object is one field named prefix. An empty
// object has no field.
func metadataFields(out []Field, prefix string, raw json.RawMessage) []Field {
	if len(raw) == 0 {
		return out
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		var b bytes.Buffer
		if json.Compact(&b, raw) != nil {
			return append(out, Field{prefix, string(raw)})
		}
		if s := b.String(); s != "null" {
			out = append(out, Field{prefix, s})
		}
		return out
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		var b bytes.Buffer
		v := string(obj[k])
		if json.Compact(&b, obj[k]) == nil {
			v = b.String()
		}
		out = append(out, Field{prefix + "." + k, v})
	}
	return out
}

// Fields returns s as named values in a fixed order, absent ones left out:
// the form Changes compares. Every field of User but Version is one of
// them (public_metadata and private_metadata one per top-level key), so
// two states with the same Fields are the same user record.
// private_metadata is for auditors only (see User.PrivateMetadata): change
// lists are shown in the audit views alone.
func (s UserState) Fields() []Field {
	u, d := s.User, s.Detail
	all := []Field{
		{"id", u.ID},
		{"first_name", u.FirstName},
		{"last_name", u.LastName},
		{"username", u.Username},
		{"email", u.Email},
		{"email_verified", fieldBool(u.EmailVerified)},
		{"email_addresses", strings.Join(d.Emails, ", ")},
		{"phone_numbers", strings.Join(d.Phones, ", ")},
		{"primary_phone", u.Phone},
		{"image_url", u.ImageURL},
		{"external_id", u.ExternalID},
		{"banned", fieldBool(u.Banned)},
		{"locked", fieldBool(u.Locked)},
		{"two_factor_enabled", fieldBool(u.TwoFactorEnabled)},
		{"last_sign_in_at", fieldTime(u.LastSignInAt)},
		{"last_active_at", fieldTime(u.LastActiveAt)},
		{"deleted", fieldBool(u.Deleted)},
		{"deleted_at", fieldTime(u.DeletedAt)},
		{"created_at", fieldTime(u.CreatedAt)},
		{"updated_at", fieldTime(u.UpdatedAt)},
	}
	out := all[:0]
	for _, f := range all {
		if f.Value != "" {
			out = append(out, f)
		}
	}
	out = metadataFields(out, "public_metadata", u.PublicMetadata)
	out = metadataFields(out, "private_metadata", u.PrivateMetadata)
	return metadataFields(out, "unsafe_metadata", d.UnsafeMetadata)
}

// fieldOrder is the rank of each fixed field in Fields; metadata fields
// come after them, by kind and then key.
var fieldOrder = map[string]int{"id": 0, "first_name": 1, "last_name": 2, "username": 3, "email": 4,
	"email_verified": 5, "email_addresses": 6, "phone_numbers": 7, "primary_phone": 8, "image_url": 9,
	"external_id": 10, "banned": 11, "locked": 12, "two_factor_enabled": 13, "last_sign_in_at": 14,
	"last_active_at": 15, "deleted": 16, "deleted_at": 17, "created_at": 18, "updated_at": 19,
	"public_metadata": 20, "private_metadata": 21, "unsafe_metadata": 22}

func compareFields(a, b string) int {
	rank := func(n string) int {
		if r, ok := fieldOrder[n]; ok {
			return r
		}
		kind, _, _ := strings.Cut(n, ".")
		return fieldOrder[kind]
	}
	if ra, rb := rank(a), rank(b); ra != rb {
		return ra - rb
	}
	return strings.Compare(a, b)
}

// Changes returns the fields that differ between prev and next, in
// Fields order.
func Changes(prev, next UserState) []Change {
	a, b := prev.Fields(), next.Fields()
	old := make(map[string]string, len(a))
	for _, f := range a {
		old[f.Name] = f.Value
	}
	var out []Change
	for _, f := range b {
		if o, ok := old[f.Name]; !ok || o != f.Value {
			out = append(out, Change{Field: f.Name, Old: o, New: f.Value})
		}
		delete(old, f.Name)
	}
	for name, v := range old {
		out = append(out, Change{Field: name, Old: v})
	}
	slices.SortFunc(out, func(x, y Change) int { return compareFields(x.Field, y.Field) })
	return out
}

// StepResult is what one event did to a user's state: how the fold took
// it, when the change happened in Clerk, and the fields it changed (none
// for an ignored event, a resent snapshot or an event of another type).
// Err is Apply's error for a poison event (Outcome OutcomePoison).
type StepResult struct {
	Outcome   Outcome
	ChangedAt time.Time
	Changes   []Change
	Err       error
}

// Step folds e into s with the projection's fold (DecodeUserEvent and
// UserEvent.Apply, which Apply is) and returns the new state and what e
// changed. Replaying the changes of a history's steps, in the order they
// were stepped, from the empty state gives the Fields of the folded state.
func Step(s UserState, e Event) (UserState, StepResult) {
	r := StepResult{Outcome: OutcomeNotUserEvent, ChangedAt: e.OccurredAt.UTC()}
	if !IsUserEvent(e.Type) {
		return s, r
	}
	d, err := DecodeUserEvent(e)
	if err != nil {
		r.Outcome, r.Err = OutcomePoison, err
		return s, r
	}
	r.ChangedAt = d.ChangedAt()
	next := s
	next.User, r.Outcome = d.Apply(s.User)
	switch r.Outcome {
	case OutcomeApplied:
		next.Detail = decodeDetail(e.Type, e.Body)
	case OutcomeDeleted:
		next.Detail = UserDetail{}
	}
	r.Changes = Changes(s, next)
	return next, r
}

// Folder folds events into one user's state like Apply, keeping a copy of
// the body of the snapshot that won, so that State can give the details
// (UserDetail) without decoding every event's: the fold before a page of
// a timeline. The zero Folder is the empty state.
type Folder struct {
	u          User
	winner     []byte
	winnerType string
}

// Add folds d (a decoded user event) and returns how the fold took it.
func (f *Folder) Add(d UserEvent) Outcome {
	next, o := d.Apply(f.u)
	f.u = next
	switch o {
	case OutcomeApplied:
		f.winner = append(f.winner[:0], d.e.Body...)
		f.winnerType = d.e.Type
	case OutcomeDeleted:
		f.winner = f.winner[:0]
	}
	return o
}

// User is the folded user.
func (f *Folder) User() User { return f.u }

// State is the folded user with the winning snapshot's details.
func (f *Folder) State() UserState {
	s := UserState{User: f.u}
	if len(f.winner) > 0 && !f.u.Deleted {
		s.Detail = decodeDetail(f.winnerType, f.winner)
	}
	return s
}

// HTTPRequest is who made a change where the event says: Clerk's
// event_attributes.http_request (the request that caused the event).
// Personal data: shown to auditors only.
type HTTPRequest struct {
	ClientIP  string `json:"client_ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
}

// RequestOf returns the event_attributes.http_request of an event body
// (zero when it has none or does not decode).
func RequestOf(body []byte) HTTPRequest {
	var env struct {
		Attributes struct {
			HTTPRequest struct {
				ClientIP  any `json:"client_ip"`
				UserAgent any `json:"user_agent"`
			} `json:"http_request"`
		} `json:"event_attributes"`
	}
	if json.Unmarshal(body, &env) != nil {
		return HTTPRequest{}
	}
	s := func(v any) string {
		t, _ := v.(string)
		return StorableText(t)
	}
	r := env.Attributes.HTTPRequest
	return HTTPRequest{ClientIP: s(r.ClientIP), UserAgent: s(r.UserAgent)}
}

// TimeKey places an event in a timeline's time order: when the change
// happened in Clerk (ChangedAt), at microseconds, then ledger position.
type TimeKey struct {
	At       int64 // Unix microseconds
	Position int64
}

// NewTimeKey returns the key of the event at position that changed at t.
func NewTimeKey(t time.Time, position int64) TimeKey {
	return TimeKey{At: t.UnixMicro(), Position: position}
}

// Compare orders k before (-1), with (0) or after (+1) o.
func (k TimeKey) Compare(o TimeKey) int {
	switch {
	case k.At < o.At:
		return -1
	case k.At > o.At:
		return 1
	case k.Position < o.Position:
		return -1
	case k.Position > o.Position:
		return 1
	}
	return 0
}

// Time is k's instant.
func (k TimeKey) Time() time.Time { return time.UnixMicro(k.At).UTC() }

// ChangedAt returns when e's change happened in Clerk: for a user event
// that decodes, the user object's updated_at (UserEvent.ChangedAt), else
// the event's occurred_at.
func ChangedAt(e Event) time.Time {
	if IsUserEvent(e.Type) {
		if d, err := DecodeUserEvent(e); err == nil {
			return d.ChangedAt()
		}
	}
	return e.OccurredAt.UTC()
}

// LateAfter is how long after it happened an event may arrive without
// being marked late: Svix delivers at once, and retries after 5 s, 5 min,
// 30 min, ...
const LateAfter = time.Minute

// ArrivalOrder tells, for events given in ledger order, which arrived out
// of order: after an event that happened later. The zero value has seen
// nothing.
type ArrivalOrder struct {
	latest TimeKey
	seen   bool
}

// See takes the next event in ledger order, its key k, and reports whether
// it arrived after an event that happened later than it.
func (a *ArrivalOrder) See(k TimeKey) (outOfOrder bool) {
	if a.seen && k.At < a.latest.At {
		return true
	}
	if !a.seen || k.At > a.latest.At {
		a.latest, a.seen = k, true
	}
	return false
}
