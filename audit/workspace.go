package audit

import (
	"context"
	"slices"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// Search limits.
const (
	// MaxSearchCount is how far a search counts its matches: past it the
	// page says "more than MaxSearchCount".
	MaxSearchCount = 10_000
	// MaxEmailUsers is the most users one email search names.
	MaxEmailUsers = 100
)

// SearchResult is what a search found besides the page's events.
type SearchResult struct {
	// Count events are on this page, after Offset others; Total counts all
	// the matches up to MaxSearchCount (TotalMore: there are more).
	Count     int
	Offset    int64
	Total     int64
	TotalMore bool
	// Next continues after the page ("" at the end).
	Next string
	// Users are the users an email search found (current or past address,
	// from the workspace projection of the events).
	Users []schema.EmailMatch
}

// Search runs one page of a history query as Events does, and also finds
// the users an email address (exact, case-insensitive, or a prefix ending
// in "*") names in any of their user events, current or past (the
// workspace projection's user_emails: an index lookup, as of its
// checkpoint), restricts the events to theirs, and counts the matches (up
// to MaxSearchCount) and those before the page. It records the search in
// the access log (with the email) before it returns. Errors: EINVALID for
// a bad query or address; EUNAVAILABLE when the audit reads' connections
// are all busy.
func (s *Service) Search(ctx context.Context, a Actor, q EventQuery, email string, maxBytes int64, fn func(i int, e schema.AuditEvent)) (SearchResult, error) {
	var res SearchResult
	if err := q.Check(); err != nil {
		return res, err
	}
	if q.Format != FormatJSON {
		return res, domain.Errorf(domain.EINVALID, "format %s is an export: use Export", q.Format)
	}
	if len(email) > 320 {
		return res, domain.Errorf(domain.EINVALID, "email is longer than 320 characters")
	}
	if maxBytes <= 0 {
		maxBytes = MaxPageBytes
	}
	release, err := s.slots.acquire(ctx, 1)
	if err != nil {
		return res, err
	}
	defer release()
	f := filters(q)
	email = schema.NormalizeEmail(email)
	if email != "" {
		f["email"] = email
		if res.Users, err = schema.UsersByEmail(ctx, s.db, email, MaxEmailUsers); err != nil {
			return res, err
		}
		var ids []string
		for _, m := range res.Users {
			if !slices.Contains(ids, m.UserID) && (q.Filter.UserID == "" || q.Filter.UserID == m.UserID) {
				ids = append(ids, m.UserID)
			}
		}
		if len(ids) == 0 {
			return res, s.record(ctx, a, schema.ActionEvents, f, 0)
		}
		q.Filter.UserIDs = ids
	}
	all := q.Filter
	all.After, all.Limit, all.MaxBytes = schema.Cursor{}, 0, 0
	if res.Total, err = schema.CountAuditEventsUpTo(ctx, s.db, all, MaxSearchCount); err != nil {
		return res, err
	}
	if res.Total > MaxSearchCount {
		res.Total, res.TotalMore = MaxSearchCount, true
	}
	if q.Filter.After != (schema.Cursor{}) {
		before := all
		before.UpTo = q.Filter.After
		if res.Offset, err = schema.CountAuditEvents(ctx, s.db, before); err != nil {
			return res, err
		}
	}
	var last domain.Event
	var bytes int64
	q.Filter.MaxBytes = maxBytes
	n, err := schema.QueryAuditEventsRecorded(ctx, s.db, q.Filter, schema.Access{Actor: a.ID, Channel: a.Channel, Action: schema.ActionEvents, Filters: f},
		func(e schema.AuditEvent) error {
			fn(res.Count, e)
			res.Count++
			bytes += int64(len(e.Body))
			last = e.Event
			return nil
		})
	if err != nil {
		return res, err
	}
	res.Count = n
	if schema.PageMore(q.Filter, n, bytes) {
		res.Next = EncodeCursor(schema.After(last))
	}
	return res, nil
}

// OverviewDays is how many days the overview's chart covers.
const OverviewDays = 30

// Overview is the ledger at a glance.
type Overview struct {
	// Days are the chart's days, oldest first (UTC midnights, the last is
	// today); Counts the deliveries stored on them by event family.
	Days   []time.Time
	Counts []schema.DeliveryCount
	// LastDelivery is when the newest webhook delivery was stored (zero:
	// none yet; the Backend API's snapshots are not deliveries); Head is
	// the newest event's position.
	LastDelivery time.Time
	Head         int64
	// Projectors is where each projector stands (lag), by name.
	Projectors []projections.Status
	// Log is the verifiable log's status: the tree's size, its latest
	// signed checkpoint and the last verification.
	Log LogStatus
	// Access are the newest audit access log entries.
	Access []schema.Access
	// Reconciles are the newest reconcile runs (ledger reconcile, or serve's
	// schedule): what drift each found and repaired.
	Reconciles []schema.ReconcileRun
}

// Overview reads the ledger at a glance as of now: deliveries per day by
// family for the last OverviewDays days (the workspace projection), the
// last delivery, every projector's lag, the log's status, the newest
// accesses and reconcile runs. It shows counts and the access log, no event, so it is not
// recorded itself.
func (s *Service) Overview(ctx context.Context, now time.Time) (Overview, error) {
	var o Overview
	today := now.UTC().Truncate(24 * time.Hour)
	for i := OverviewDays - 1; i >= 0; i-- {
		o.Days = append(o.Days, today.AddDate(0, 0, -i))
	}
	var err error
	if o.Counts, err = schema.DeliveryCounts(ctx, s.db, o.Days[0]); err != nil {
		return o, err
	}
	if _, o.Head, err = schema.LastDelivery(ctx, s.db); err != nil {
		return o, err
	}
	fams, err := schema.LastDeliveries(ctx, s.db)
	if err != nil {
		return o, err
	}
	if len(fams) > 0 {
		o.LastDelivery = fams[0].ReceivedAt
	}
	var known []string
	for _, p := range projections.Default() {
		known = append(known, p.Name())
	}
	if o.Projectors, err = projections.ReadStatus(ctx, s.db, known...); err != nil {
		return o, err
	}
	if o.Log, err = s.LogStatus(ctx); err != nil {
		return o, err
	}
	if o.Access, err = s.AccessLog(ctx, 0, 10); err != nil {
		return o, err
	}
	if o.Reconciles, err = schema.ReconcileRuns(ctx, s.db, 5); err != nil {
		return o, err
	}
	return o, nil
}
