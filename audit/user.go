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
// events about them, each with the change it made.
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
	// Order is the order of the events: OrderTime (when each change
	// happened in Clerk) or OrderLedger (arrival).
	Order string `json:"order"`
	// Total is how many events the pages list in all (those that occurred
	// by At, or every one with UserPage.Later); Offset how many come before
	// this page; Count how many are on it. NextCursor continues after it
	// ("" at the end).
	Total      int64          `json:"total"`
	Offset     int64          `json:"offset"`
	Count      int            `json:"count"`
	Events     []HistoryEvent `json:"events"`
	NextCursor string         `json:"next_cursor"`
	// Projection is the users table row (only without At); Matches says
	// whether the fold equals it (nil when there is no row yet).
	Projection *domain.User `json:"projection,omitempty"`
	Matches    *bool        `json:"matches_projection,omitempty"`
}

// HistoryEvent is one event of a user's history in audit answers: the
// event, when its change happened, how it arrived, and what it changed in
// the folded state (the projection's fold, stepped in the page's order).
type HistoryEvent struct {
	EventJSON
	// ChangedAt is when the change happened in Clerk: the user object's
	// updated_at, else the event's timestamp (occurred_at).
	ChangedAt time.Time `json:"changed_at"`
	// OutOfOrder: it arrived after an event that happened later. Late: it
	// arrived more than a minute after it happened (DelaySeconds).
	OutOfOrder   bool    `json:"out_of_order"`
	Late         bool    `json:"late"`
	DelaySeconds float64 `json:"delay_seconds"`
	// AfterAt: it occurred after the view's instant (listed, not folded).
	AfterAt bool `json:"after_at,omitempty"`
	// Outcome is how the fold took it (domain.Outcome): applied, older
	// (ignored: the ledger had a newer snapshot), deleted, after_deletion,
	// not_user_event, other_user or poison (Poison says why).
	Outcome domain.Outcome  `json:"outcome"`
	Changes []domain.Change `json:"changes"`
	Poison  string          `json:"poison,omitempty"`
	// Request is who made the change where the event says
	// (event_attributes.http_request).
	Request *domain.HTTPRequest `json:"http_request,omitempty"`
}

// NewHistoryEvent returns te in its JSON shape.
func NewHistoryEvent(te TimelineEvent) HistoryEvent {
	h := HistoryEvent{EventJSON: NewEventJSON(te.Event), ChangedAt: te.ChangedAt, OutOfOrder: te.OutOfOrder,
		Late: te.Late, DelaySeconds: te.Delay.Seconds(), AfterAt: te.After, Outcome: te.Step.Outcome,
		Changes: te.Step.Changes}
	if h.Changes == nil {
		h.Changes = []domain.Change{}
	}
	if te.Step.Err != nil {
		h.Poison = domain.ErrorMessage(te.Step.Err)
	}
	if te.Request != (domain.HTTPRequest{}) {
		r := te.Request
		h.Request = &r
	}
	return h
}

// UserPage says which page of a user's events User lists.
type UserPage struct {
	// Order is OrderTime (default) or OrderLedger; After (from NextCursor)
	// is a place in it.
	Order    string
	After    Cursor
	Limit    int   // events on the page, default DefaultAuditLimit
	MaxBytes int64 // end the page once its bodies reach this; default MaxPageBytes
	// Later lists the events that occurred after `at` too (the audit page's
	// timeline shows them greyed); the fold never reads them.
	Later bool
}

// maxPoison is how many skipped events a UserHistory describes.
const maxPoison = 100

// User folds the user's state as of `at` (zero: now) with domain.Apply, the
// users projection's own fold, from every one of that user's events whose
// occurred_at is at or before `at`: the time Clerk says the change happened,
// not when the ledger received it. An event that arrives late but occurred
// before `at` therefore changes the answer for `at` once it is stored (the
// answer is "what Clerk reports had happened by then, as the ledger knows it
// now"). It lists one page of the events (page) into UserHistory.Events in
// time order (or ledger order), oldest first, each with the change it made
// (ReadTimeline: one pass over the history, so memory does not grow with
// it), counts them all, and without `at` also reads the users projection's
// row and says whether the fold equals it. Everything comes from one
// snapshot, within an audit slot. The access is recorded (user id, at,
// order, cursor, and the events on the page as its row count) before User
// returns. Errors: EINVALID for a bad id, order or cursor; EUNAVAILABLE
// when the audit reads' connections are all busy.
func (s *Service) User(ctx context.Context, a Actor, userID string, at time.Time, page UserPage) (UserHistory, error) {
	events := []HistoryEvent{}
	h, err := s.EachUserEvent(ctx, a, userID, at, page, func(te TimelineEvent) {
		events = append(events, NewHistoryEvent(te))
	})
	h.Events = events
	return h, err
}

// EachUserEvent is User handing each event of the page to fn as it arrives
// (te.Event.Body is valid only during the call) instead of keeping them:
// for answers encoded as the rows arrive. After an error, what fn built
// must not be shown.
func (s *Service) EachUserEvent(ctx context.Context, a Actor, userID string, at time.Time, page UserPage, fn func(TimelineEvent)) (UserHistory, error) {
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
	if h.Order != OrderTime {
		f["order"] = h.Order
	}
	if !page.After.IsZero() {
		f["cursor"] = page.After.String()
	}
	if err := s.record(ctx, a, schema.ActionUser, f, int64(h.Count)); err != nil {
		return h, err
	}
	return h, nil
}

// userView reads what EachUserEvent answers, without slot or record.
func userView(ctx context.Context, db *sqlx.DB, userID string, at time.Time, page UserPage, fn func(TimelineEvent)) (UserHistory, error) {
	h := UserHistory{UserID: userID, Order: page.Order}
	if h.Order == "" {
		h.Order = OrderTime
	}
	if !at.IsZero() {
		at = at.UTC()
		h.At = &at
	}
	if page.MaxBytes <= 0 {
		page.MaxBytes = MaxPageBytes
	}
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return h, fmt.Errorf("read user %s: %w", userID, schema.Classify(err))
	}
	defer tx.Rollback()
	tp, err := ReadTimeline(ctx, tx, TimelineQuery{UserID: userID, Order: h.Order, After: page.After, Limit: page.Limit,
		MaxBytes: page.MaxBytes, At: at, Later: page.Later, Changes: true}, fn)
	if err != nil {
		return h, fmt.Errorf("read user %s: %w", userID, err)
	}
	h.State, h.Exists, h.Poison, h.PoisonCount = tp.State, tp.Exists, tp.Poison, tp.PoisonCount
	h.Total, h.Offset, h.Count = tp.Total, tp.Offset, tp.Count
	if tp.More {
		h.NextCursor = EncodeTimelineCursor(tp.Next)
	}
	if at.IsZero() {
		pu, err := schema.GetUser(ctx, tx, userID)
		switch {
		case domain.ErrorCode(err) == domain.ENOTFOUND:
		case err != nil:
			return h, err
		default:
			h.Projection = &pu
			same := SameUser(tp.State, pu)
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
		a.Version == b.Version
}
