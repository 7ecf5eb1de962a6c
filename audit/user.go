package audit

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// UserHistory is one user's state at a point in time and one page of the
// events about them.
type UserHistory struct {
	UserID string     `json:"user_id"`
	At     *time.Time `json:"at"` // nil: now
	// Exists is false when no user.* event about the user occurred by At.
	Exists bool        `json:"exists"`
	State  domain.User `json:"state"`
	// Poison describes the first maxPoison events the fold skipped because
	// they do not decode; PoisonCount counts them all.
	Poison      []string `json:"poison,omitempty"`
	PoisonCount int      `json:"poison_count,omitempty"`
	// Total is how many events the pages list in all (those that occurred
	// by At, or every one with UserPage.Later); Offset how many come before
	// this page; Count how many are on it. NextCursor continues after it
	// ("" at the end).
	Total      int64       `json:"total"`
	Offset     int64       `json:"offset"`
	Count      int         `json:"count"`
	Events     []EventJSON `json:"events"`
	NextCursor string      `json:"next_cursor"`
	// Projection is the users table row (only without At); Matches says
	// whether the fold equals it (nil when there is no row yet).
	Projection *domain.User `json:"projection,omitempty"`
	Matches    *bool        `json:"matches_projection,omitempty"`
}

// UserPage says which page of a user's events User lists.
type UserPage struct {
	After    schema.Cursor // continue after this place (from NextCursor)
	Limit    int           // events on the page, default DefaultAuditLimit
	MaxBytes int64         // end the page once its bodies reach this; default MaxPageBytes
	// Later lists the events that occurred after `at` too (the audit page's
	// timeline shows them greyed); the fold never reads them.
	Later bool
}

// maxPoison is how many skipped events a UserHistory describes.
const maxPoison = 100

// occurredBy is the EventFilter.Until that keeps events whose occurred_at
// is at or before at (zero: no bound). occurred_at has microsecond
// precision: <= at is < at's next microsecond.
func occurredBy(at time.Time) time.Time {
	if at.IsZero() {
		return time.Time{}
	}
	return at.UTC().Truncate(time.Microsecond).Add(time.Microsecond)
}

// User folds the user's state as of `at` (zero: now) with domain.Apply, the
// users projection's own fold, from every one of that user's events whose
// occurred_at is at or before `at`: the time Clerk says the change happened,
// not when the ledger received it. An event that arrives late but occurred
// before `at` therefore changes the answer for `at` once it is stored (the
// answer is "what Clerk reports had happened by then, as the ledger knows it
// now"). The fold streams the events one at a time, so memory does not grow
// with the user's history. It lists one page of the events (page) into
// UserHistory.Events, counts them all, and without `at` also reads the users
// projection's row and says whether the fold equals it. Everything comes
// from one snapshot, within an audit slot. The access is recorded (user id,
// at, cursor, and the events on the page as its row count) before User
// returns. Errors: EINVALID for a bad id; EUNAVAILABLE when the audit reads'
// connections are all busy.
func (s *Service) User(ctx context.Context, a Actor, userID string, at time.Time, page UserPage) (UserHistory, error) {
	events := []EventJSON{}
	h, err := s.EachUserEvent(ctx, a, userID, at, page, func(e schema.AuditEvent) {
		events = append(events, NewEventJSON(e))
	})
	h.Events = events
	return h, err
}

// EachUserEvent is User handing each event of the page to fn as it arrives
// (e.Body is valid only during the call) instead of keeping them: for
// answers encoded as the rows arrive. After an error, what fn built must
// not be shown.
func (s *Service) EachUserEvent(ctx context.Context, a Actor, userID string, at time.Time, page UserPage, fn func(schema.AuditEvent)) (UserHistory, error) {
	if userID == "" || len(userID) > 200 {
		return UserHistory{}, domain.Errorf(domain.EINVALID, "user id must be 1 to 200 characters")
	}
	release, err := s.slots.acquire(ctx, 1)
	if err != nil {
		return UserHistory{}, err
	}
	h, err := userView(ctx, s.db, userID, at, page, fn)
	release()
	if err != nil {
		return h, err
	}
	f := map[string]string{"user_id": userID}
	if !at.IsZero() {
		f["at"] = at.UTC().Format(time.RFC3339Nano)
	}
	if page.After != (schema.Cursor{}) {
		f["cursor"] = page.After.String()
	}
	if err := s.record(ctx, a, schema.ActionUser, f, int64(h.Count)); err != nil {
		return h, err
	}
	return h, nil
}

// userView reads what EachUserEvent answers, without slot or record.
func userView(ctx context.Context, db *sqlx.DB, userID string, at time.Time, page UserPage, fn func(schema.AuditEvent)) (UserHistory, error) {
	h := UserHistory{UserID: userID}
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
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return h, fmt.Errorf("read user %s: %w", userID, schema.Classify(err))
	}
	defer tx.Rollback()
	var u domain.User
	fold := schema.EventFilter{UserID: userID, Types: domain.UserEventTypes(), Until: occurredBy(at)}
	if _, err := schema.EachEvent(ctx, tx, fold, func(e domain.Event) error {
		next, err := domain.Apply(u, e)
		if err != nil {
			if h.PoisonCount++; len(h.Poison) < maxPoison {
				h.Poison = append(h.Poison, domain.ErrorMessage(err))
			}
			return nil
		}
		u = next
		return nil
	}); err != nil {
		return h, fmt.Errorf("fold user %s: %w", userID, err)
	}
	h.State, h.Exists = u, u.Exists()

	list := schema.EventFilter{UserID: userID}
	if !page.Later {
		list.Until = occurredBy(at)
	}
	if h.Total, err = schema.CountAuditEvents(ctx, tx, list); err != nil {
		return h, err
	}
	if page.After != (schema.Cursor{}) {
		before := list
		before.UpTo = page.After
		if h.Offset, err = schema.CountAuditEvents(ctx, tx, before); err != nil {
			return h, err
		}
	}
	pf := list
	pf.After, pf.Limit, pf.MaxBytes = page.After, page.Limit, page.MaxBytes
	p, err := schema.EachAuditEvent(ctx, tx, pf, func(e schema.AuditEvent) error {
		fn(e)
		return nil
	})
	if err != nil {
		return h, err
	}
	h.Count = p.Count
	if p.More {
		h.NextCursor = EncodeCursor(p.Last)
	}
	if at.IsZero() {
		pu, err := schema.GetUser(ctx, tx, userID)
		switch {
		case domain.ErrorCode(err) == domain.ENOTFOUND:
		case err != nil:
			return h, err
		default:
			h.Projection = &pu
			same := SameUser(u, pu)
			h.Matches = &same
		}
	}
	return h, tx.Commit()
}

// SameUser reports whether a and b are the same state, comparing public
// metadata as JSON values (jsonb does not keep the bytes).
func SameUser(a, b domain.User) bool {
	var ma, mb any
	if json.Unmarshal(a.PublicMetadata, &ma) != nil || json.Unmarshal(b.PublicMetadata, &mb) != nil {
		return false
	}
	if !reflect.DeepEqual(ma, mb) {
		return false
	}
	a.PublicMetadata, b.PublicMetadata = nil, nil
	return a.ID == b.ID && a.Email == b.Email && a.FirstName == b.FirstName && a.LastName == b.LastName &&
		a.Username == b.Username && a.ImageURL == b.ImageURL && a.CreatedAt.Equal(b.CreatedAt) &&
		a.UpdatedAt.Equal(b.UpdatedAt) && a.Deleted == b.Deleted && a.DeletedAt.Equal(b.DeletedAt) &&
		a.Version == b.Version && sameCompleteUser(a, b)
}

// sameCompleteUser compares the fields of a complete user (issue 16),
// private metadata as a JSON value.
func sameCompleteUser(a, b domain.User) bool {
	return a.Phone == b.Phone && a.EmailVerified == b.EmailVerified && a.ExternalID == b.ExternalID &&
		a.Banned == b.Banned && a.Locked == b.Locked && a.TwoFactorEnabled == b.TwoFactorEnabled &&
		a.LastSignInAt.Equal(b.LastSignInAt) && a.LastActiveAt.Equal(b.LastActiveAt) &&
		sameJSON(orEmpty(a.PrivateMetadata), orEmpty(b.PrivateMetadata))
}

func orEmpty(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage(`{}`)
	}
	return raw
}
