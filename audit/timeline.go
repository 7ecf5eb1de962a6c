package audit

import (
	"container/heap"
	"context"
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// Orders of a timeline.
const (
	// OrderTime sorts by when the change happened in Clerk
	// (domain.ChangedAt: the user object's updated_at, else the event's
	// timestamp), then by ledger position.
	OrderTime = "time"
	// OrderLedger is ledger order: the order the events arrived in.
	OrderLedger = "ledger"
)

// Timeline paging cursors: a place in one order, after (oldest first) or
// before (newest first) which the next page starts.
type Cursor struct {
	Order string // OrderTime or OrderLedger
	// Time places (OrderTime); Ledger places (OrderLedger).
	Time   domain.TimeKey
	Ledger schema.Cursor
}

// IsZero reports whether c is no place (the first page).
func (c Cursor) IsZero() bool { return c == Cursor{} }

// String is c as the access log records it.
func (c Cursor) String() string {
	if c.Order == OrderLedger {
		return c.Ledger.String()
	}
	return "t" + strconv.FormatInt(c.Time.At, 10) + ":" + strconv.FormatInt(c.Time.Position, 10)
}

// EncodeTimelineCursor makes the opaque cursor of c: in ledger order the
// same as EncodeCursor, so a ledger cursor of the history API works here.
func EncodeTimelineCursor(c Cursor) string {
	if c.Order == OrderLedger {
		return EncodeCursor(c.Ledger)
	}
	return base64.RawURLEncoding.EncodeToString([]byte("t1:" + strconv.FormatInt(c.Time.At, 10) + ":" + strconv.FormatInt(c.Time.Position, 10)))
}

// DecodeTimelineCursor reads a cursor EncodeTimelineCursor made. Errors:
// EINVALID for anything else.
func DecodeTimelineCursor(s string) (Cursor, error) {
	if c, err := DecodeCursor(s); err == nil {
		return Cursor{Order: OrderLedger, Ledger: c}, nil
	}
	bad := domain.Errorf(domain.EINVALID, "cursor is not one this service issued")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, bad
	}
	rest, ok := strings.CutPrefix(string(b), "t1:")
	if !ok {
		return Cursor{}, bad
	}
	at, pos, ok := strings.Cut(rest, ":")
	if !ok {
		return Cursor{}, bad
	}
	var c Cursor
	c.Order = OrderTime
	if c.Time.At, err = strconv.ParseInt(at, 10, 64); err != nil {
		return Cursor{}, bad
	}
	if c.Time.Position, err = strconv.ParseInt(pos, 10, 64); err != nil || c.Time.Position < 0 {
		return Cursor{}, bad
	}
	return c, nil
}

// TimelineQuery says which page of a user's timeline ReadTimeline reads.
type TimelineQuery struct {
	UserID string
	// Order is OrderTime (default) or OrderLedger.
	Order string
	// NewestFirst pages from the newest event back; the default starts
	// with the oldest.
	NewestFirst bool
	// After is where the page starts (zero: at the first, or the newest);
	// its Order must be the query's.
	After Cursor
	// Limit is the most events on the page (default DefaultAuditLimit);
	// MaxBytes ends it early once its bodies reach that many bytes (it
	// always holds its first event; 0: no bound).
	Limit    int
	MaxBytes int64
	// At is the instant of the state (zero: now): the state is folded from
	// the events that occurred (occurred_at) at or before it. The pages
	// list those events only, or with Later every event (those after At
	// marked After).
	At    time.Time
	Later bool
	// Changes computes each event's change list (domain.Step: the details
	// of every snapshot are decoded); without it only the states before
	// and after each event (domain.User) are given.
	Changes bool
}

// TimelineEvent is one event of a timeline page, with what it did.
type TimelineEvent struct {
	// Event is the stored event; its Body is valid only during the call.
	Event schema.AuditEvent
	// ChangedAt is when the change happened in Clerk (domain.ChangedAt).
	ChangedAt time.Time
	// OutOfOrder: the event arrived after one that happened later (in
	// ledger order, an event with a later ChangedAt came before it).
	OutOfOrder bool
	// Delay is how long after it happened the event arrived (ReceivedAt -
	// ChangedAt); Late says it is more than domain.LateAfter.
	Delay time.Duration
	Late  bool
	// After: it occurred after the query's At (listed with Later).
	After bool
	// Prev and Next are the user before and after the event, folded from
	// the events before it in the timeline's order; Step says how the fold
	// took it and, with TimelineQuery.Changes, what it changed (with the
	// details in PrevState and NextState).
	Prev, Next           domain.User
	PrevState, NextState domain.UserState
	Step                 domain.StepResult
	// Request is who made the change where the event says
	// (event_attributes.http_request): personal data, for auditors.
	Request domain.HTTPRequest
}

// TimelinePage is what ReadTimeline read besides the page's events.
type TimelinePage struct {
	// State is the user as of the query's At, folded from every event that
	// occurred by then; Exists is false when no user event had.
	State  domain.User
	Exists bool
	// Poison describes the first maxPoison events the fold skipped;
	// PoisonCount counts them all.
	Poison      []string
	PoisonCount int
	// Total is how many events the pages list in all; Offset how many come
	// before this page (in its direction); Count how many are on it. Next
	// continues after it (zero at the end).
	Total  int64
	Offset int64
	Count  int
	Next   Cursor
	More   bool
}

// pageKey is a place in the query's order, compared as a domain.TimeKey:
// in time order (microseconds, position), in ledger order (transaction
// id, position).
type pageKey = domain.TimeKey

// candidate is an event that may be on the page.
type candidate struct {
	key        pageKey
	position   int64
	bytes      int64
	changedAt  time.Time
	outOfOrder bool
}

// candidates keeps the best n candidates seen: the smallest keys (oldest
// first) or the largest (newest first). It is a heap with the worst kept
// candidate on top.
type candidates struct {
	list        []candidate
	n           int
	newestFirst bool
}

func (c *candidates) Len() int { return len(c.list) }
func (c *candidates) Less(i, j int) bool {
	d := c.list[i].key.Compare(c.list[j].key)
	if c.newestFirst {
		return d < 0 // the smallest is the worst
	}
	return d > 0
}
func (c *candidates) Swap(i, j int) { c.list[i], c.list[j] = c.list[j], c.list[i] }
func (c *candidates) Push(x any)    { c.list = append(c.list, x.(candidate)) }
func (c *candidates) Pop() any {
	x := c.list[len(c.list)-1]
	c.list = c.list[:len(c.list)-1]
	return x
}

// better reports whether a belongs before b in the page's direction.
func (c *candidates) better(a, b pageKey) bool {
	if c.newestFirst {
		return a.Compare(b) > 0
	}
	return a.Compare(b) < 0
}

func (c *candidates) offer(x candidate) {
	if len(c.list) < c.n {
		heap.Push(c, x)
		return
	}
	if c.better(x.key, c.list[0].key) {
		c.list[0] = x
		heap.Fix(c, 0)
	}
}

// sorted returns the kept candidates in the page's direction.
func (c *candidates) sorted() []candidate {
	out := slices.Clone(c.list)
	slices.SortFunc(out, func(a, b candidate) int {
		if c.newestFirst {
			return b.key.Compare(a.key)
		}
		return a.key.Compare(b.key)
	})
	return out
}

// ReadTimeline reads one page of a user's timeline in q (give it a
// REPEATABLE READ transaction: one snapshot) and calls fn with each of its
// events, with what the event did, in the timeline's order oldest first
// (also for a NewestFirst page: its caller reverses it), keeping none of
// their bodies.
//
// The events are read in one pass over the user's history in ledger order
// (bodies of user events only: the fold needs them; see
// schema.EachTimelineRow), which folds the state as of At, counts the
// events, marks those that arrived out of order, and keeps the page's
// places (at most Limit+1 at a time, so memory does not grow with the
// history). The state before the page is folded from the events before it
// in the timeline's order: in the same pass for a page from the oldest, in
// a second pass for one from the newest (the page's last place is known
// only at the end of the first). The fold is domain's, the projection's:
// order-insensitive, so the state before an event is the fold of the
// events before it, whatever order they are read in. Then the page's
// events are read by position and stepped through in order.
func ReadTimeline(ctx context.Context, q schema.Queryer, tq TimelineQuery, fn func(TimelineEvent)) (TimelinePage, error) {
	var p TimelinePage
	if tq.Order == "" {
		tq.Order = OrderTime
	}
	if tq.Order != OrderTime && tq.Order != OrderLedger {
		return p, domain.Errorf(domain.EINVALID, "order %q is not time or ledger", tq.Order)
	}
	if !tq.After.IsZero() && tq.After.Order != tq.Order {
		return p, domain.Errorf(domain.EINVALID, "the cursor is a place in %s order, not %s order", tq.After.Order, tq.Order)
	}
	if tq.Limit <= 0 {
		tq.Limit = DefaultAuditLimit
	}
	var cut time.Time // occurred_at at or before it: by At
	if !tq.At.IsZero() {
		cut = tq.At.UTC().Truncate(time.Microsecond)
	}
	keyOf := func(r schema.TimelineRow, t domain.TimeKey) pageKey {
		if tq.Order == OrderLedger {
			return pageKey{At: int64(r.TxID), Position: r.Position}
		}
		return t
	}
	var after pageKey
	if !tq.After.IsZero() {
		if tq.Order == OrderLedger {
			after = pageKey{At: int64(tq.After.Ledger.TxID), Position: tq.After.Ledger.Position}
		} else {
			after = tq.After.Time
		}
	}
	// beyond reports whether k lies past the cursor, on the page's side.
	beyond := func(k pageKey) bool {
		if tq.After.IsZero() {
			return true
		}
		if tq.NewestFirst {
			return k.Compare(after) < 0
		}
		return k.Compare(after) > 0
	}
	var (
		state   domain.User
		before  domain.Folder // the state before the page (oldest first)
		arrival domain.ArrivalOrder
		kept    = &candidates{n: tq.Limit + 1, newestFirst: tq.NewestFirst}
	)
	pass := func(r schema.TimelineRow) (d domain.UserEvent, ok bool, t domain.TimeKey, listed bool) {
		changed := r.OccurredAt
		if domain.IsUserEvent(r.Type) {
			var err error
			if d, err = domain.DecodeUserEvent(r.Event); err == nil {
				ok, changed = true, d.ChangedAt()
			}
		}
		t = domain.NewTimeKey(changed, r.Position)
		listed = tq.Later || cut.IsZero() || !r.OccurredAt.After(cut)
		return d, ok, t, listed
	}
	_, err := schema.EachTimelineRow(ctx, q, tq.UserID, domain.UserEventTypes(), func(r schema.TimelineRow) error {
		d, ok, t, listed := pass(r)
		if domain.IsUserEvent(r.Type) && (cut.IsZero() || !r.OccurredAt.After(cut)) {
			if ok {
				state, _ = d.Apply(state)
			} else if p.PoisonCount++; len(p.Poison) < maxPoison {
				_, err := domain.DecodeUserEvent(r.Event)
				p.Poison = append(p.Poison, domain.ErrorMessage(err))
			}
		}
		late := arrival.See(t)
		if !listed {
			return nil
		}
		p.Total++
		k := keyOf(r, t)
		if !beyond(k) {
			p.Offset++
			if ok && !tq.NewestFirst {
				before.Add(d)
			}
			return nil
		}
		kept.offer(candidate{key: k, position: r.Position, bytes: r.BodyBytes, changedAt: t.Time(), outOfOrder: late})
		return nil
	})
	if err != nil {
		return p, err
	}
	p.State, p.Exists = state, state.Exists()

	// The page: the best Limit of the kept places, ended at MaxBytes.
	all := kept.sorted()
	page := all[:0:0]
	var bytes int64
	for _, c := range all {
		if len(page) == tq.Limit || (len(page) > 0 && tq.MaxBytes > 0 && bytes >= tq.MaxBytes) {
			break
		}
		page = append(page, c)
		bytes += c.bytes
	}
	p.Count, p.More = len(page), len(page) < len(all)
	if p.More {
		last := page[len(page)-1]
		p.Next = Cursor{Order: tq.Order}
		if tq.Order == OrderLedger {
			p.Next.Ledger = schema.Cursor{TxID: uint64(last.key.At), Position: last.key.Position}
		} else {
			p.Next.Time = last.key
		}
	}
	if len(page) == 0 {
		return p, nil
	}
	// In fold order: oldest first.
	if tq.NewestFirst {
		slices.Reverse(page)
		// The state before the page: every listed user event before its
		// oldest place.
		first := page[0].key
		if _, err := schema.EachTimelineRow(ctx, q, tq.UserID, domain.UserEventTypes(), func(r schema.TimelineRow) error {
			d, ok, t, listed := pass(r)
			if ok && listed && keyOf(r, t).Compare(first) < 0 {
				before.Add(d)
			}
			return nil
		}); err != nil {
			return p, err
		}
	}
	positions := make([]int64, len(page))
	byPosition := make(map[int64]candidate, len(page))
	for i, c := range page {
		positions[i] = c.position
		byPosition[c.position] = c
	}
	var prev domain.UserState
	if tq.Changes {
		prev = before.State()
	} else {
		prev.User = before.User()
	}
	err = schema.EachAuditEventAt(ctx, q, positions, func(e schema.AuditEvent) error {
		c := byPosition[e.Position]
		te := TimelineEvent{Event: e, ChangedAt: c.changedAt, OutOfOrder: c.outOfOrder,
			After: !cut.IsZero() && e.OccurredAt.After(cut)}
		if tq.Changes {
			te.Request = domain.RequestOf(e.Body)
		}
		te.Delay = e.ReceivedAt.Sub(c.changedAt)
		te.Late = te.Delay > domain.LateAfter
		next := prev
		if tq.Changes {
			next, te.Step = domain.Step(prev, e.Event)
		} else {
			te.Step = domain.StepResult{Outcome: domain.OutcomeNotUserEvent, ChangedAt: c.changedAt}
			if domain.IsUserEvent(e.Type) {
				d, err := domain.DecodeUserEvent(e.Event)
				if err != nil {
					te.Step.Outcome, te.Step.Err = domain.OutcomePoison, err
				} else {
					next.User, te.Step.Outcome = d.Apply(prev.User)
				}
			}
		}
		te.Prev, te.Next, te.PrevState, te.NextState = prev.User, next.User, prev, next
		fn(te)
		prev = next
		return nil
	})
	return p, err
}
