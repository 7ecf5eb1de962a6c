package handlers

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// timelinePage is how many timeline entries the signed-in page shows at
// once, newest first; "Older" pages on.
const timelinePage = 50

// homePage is the data of home.html (the signed-in page).
type homePage struct {
	User     domain.User
	Name     string
	Synced   bool   // the users projection has a row for this person
	Avatar   string // image URL the CSP allows, or ""
	Timeline []timelineEntry
	// Order is the timeline's order: audit.OrderTime (when each change
	// happened in Clerk) or audit.OrderLedger (arrival).
	Order string
	// Total is how many events the ledger holds about this person; the
	// timeline shows the First-th to the Last-th newest of them.
	Total       int64
	First, Last int64
	// OlderURL continues with older events ("" at the oldest); NewestURL
	// goes back to the newest ("" on that page); TimeURL and LedgerURL are
	// the order toggle.
	OlderURL, NewestURL string
	TimeURL, LedgerURL  string
	SessionID           string
	// Organizations are the organizations the person is in now, with
	// their role (from the organizations projection).
	Organizations []schema.UserOrganization
}

// homeOrganizations is the most organizations the signed-in page lists.
const homeOrganizations = 100

// timelineEntry is one event as the timeline shows it.
type timelineEntry struct {
	At       time.Time
	Type     string
	Kind     string // account, session, email, organization, other: styles the marker
	Summary  string
	Current  bool // this browser's session
	Position int64
	// OutOfOrder: it arrived after a change that happened later; Late: it
	// arrived more than a minute after it happened (Delay).
	OutOfOrder, Late bool
	Delay            string
	ReceivedAt       time.Time
}

// handleHome serves GET /[?order=ledger][&older=CURSOR]: the signed-out page
// with Clerk's sign-in, the refresh page when ClerkJS must renew the session
// cookie, or the signed-in person's own record and one page of their event
// timeline, newest first, by when each change happened in Clerk (or in
// ledger order with order=ledger; older: the page before that place). It
// reads only the session subject's rows: never another user's.
func handleHome(log *slog.Logger, pg *pages, db *sqlx.DB, svc *audit.Service, avatarHosts []string, fetch UserFetcher) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := sessionFrom(r.Context())
		if !ok {
			if needsRefresh(r.Context()) {
				pg.refresh(w, r)
				return
			}
			pg.signIn(w, r, http.StatusOK)
			return
		}
		if db == nil {
			pg.renderError(w, r, domain.Errorf(domain.EUNAVAILABLE, "no database"))
			return
		}
		if svc != nil {
			// An auditor gets the workspace's navigation; a failed look-up
			// only leaves it out.
			if yes, err := svc.IsAuditor(r.Context(), s.UserID); err == nil && yes {
				r = withAuditor(r)
			}
		}
		q := r.URL.Query()
		order := q.Get("order")
		switch order {
		case "", audit.OrderTime:
			order = audit.OrderTime
		case audit.OrderLedger:
		default:
			pg.renderError(w, r, domain.Errorf(domain.EINVALID, "order %q is not time or ledger", order))
			return
		}
		var older audit.Cursor
		if c := q.Get("older"); c != "" {
			var err error
			if older, err = audit.DecodeTimelineCursor(c); err == nil && older.Order != order {
				err = domain.Errorf(domain.EINVALID, "older is a place in %s order: give order=%s", older.Order, older.Order)
			}
			if err != nil {
				pg.renderError(w, r, err)
				return
			}
		}
		page, err := loadHome(r.Context(), db, s, order, older)
		if err != nil {
			pg.renderError(w, r, err)
			return
		}
		if !page.Synced && fetch != nil {
			// Signed in before their user.created delivery arrived.
			if u, err := fetch.FetchUser(r.Context(), s.UserID); err == nil {
				page.User, page.Synced, page.Name = u, true, u.Name()
			} else {
				log.Warn("first sign-in: could not fetch the user from Clerk", "user_id", s.UserID, "err", err)
			}
		}
		page.Avatar = allowedImage(page.User.ImageURL, avatarHosts)
		pg.render(w, r, http.StatusOK, "home.html", page)
	}
}

// loadHome reads s's projected record and one page of the timeline: the
// timelinePage newest events before `older` (zero: the newest of all) in
// order, through audit.ReadTimeline (the auditors' timeline, without their
// details): each profile change is described against the user as folded
// from every event before it in that order, the history is read one event
// at a time (memory does not grow with it), and events that arrived out of
// order or late are marked. Everything comes from one snapshot.
func loadHome(ctx context.Context, db *sqlx.DB, s Session, order string, older audit.Cursor) (homePage, error) {
	page := homePage{SessionID: s.SessionID, Order: order, TimeURL: "/", LedgerURL: "/?order=ledger"}
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return page, fmt.Errorf("read the signed-in page: %w", schema.Classify(err))
	}
	defer tx.Rollback()
	u, err := schema.GetUser(ctx, tx, s.UserID)
	switch {
	case err == nil:
		page.User, page.Synced = u, true
	case domain.ErrorCode(err) == domain.ENOTFOUND:
		page.User = domain.User{ID: s.UserID}
	default:
		return homePage{}, err
	}
	page.Name = page.User.Name()
	if page.Organizations, err = schema.UserOrganizations(ctx, tx, s.UserID, homeOrganizations); err != nil {
		return homePage{}, err
	}

	var entries []timelineEntry
	tp, err := audit.ReadTimeline(ctx, tx, audit.TimelineQuery{UserID: s.UserID, Order: order, NewestFirst: true, After: older, Limit: timelinePage},
		func(te audit.TimelineEvent) {
			t := summarize(te.Event.Event, te.Prev, te.Next, s.SessionID)
			t.At, t.ReceivedAt = te.ChangedAt, te.Event.ReceivedAt
			t.OutOfOrder, t.Late, t.Delay = te.OutOfOrder, te.Late, humanDuration(te.Delay)
			entries = append(entries, t)
		})
	if err != nil {
		return homePage{}, err
	}
	slices.Reverse(entries) // newest first
	page.Timeline, page.Total = entries, tp.Total
	self := "/"
	if order == audit.OrderLedger {
		self = "/?order=ledger"
	}
	if !older.IsZero() {
		page.NewestURL = self
	}
	if tp.More {
		v := url.Values{"older": {audit.EncodeTimelineCursor(tp.Next)}}
		if order == audit.OrderLedger {
			v.Set("order", audit.OrderLedger)
		}
		page.OlderURL = "/?" + v.Encode()
	}
	page.First, page.Last = tp.Offset+1, tp.Offset+int64(tp.Count)
	return page, tx.Commit()
}

// eventData is the part of event bodies the summaries read.
type eventData struct {
	Data struct {
		ID           string `json:"id"`
		Slug         string `json:"slug"`
		Name         string `json:"name"`
		Role         string `json:"role"`
		Organization struct {
			Name string `json:"name"`
		} `json:"organization"`
	} `json:"data"`
}

// summarize describes one event in a sentence. prev and next are the user
// folded before and after it. It never shows message bodies, subjects or
// codes, only what kind of thing happened. Every value from the event
// (names, emails, slugs, roles) is isolated (isolate), so direction
// controls in it cannot reorder the rest of the sentence.
func summarize(e domain.Event, prev, next domain.User, sessionID string) timelineEntry {
	t := timelineEntry{At: e.OccurredAt, Type: e.Type, Position: e.Position, Kind: "other"}
	var d eventData
	_ = json.Unmarshal(e.Body, &d) // a body that does not decode gets the generic summary
	family, action, _ := strings.Cut(e.Type, ".")
	switch family {
	case "user":
		t.Kind = "account"
		switch action {
		case "created":
			t.Summary = "Account created"
			if snap, err := domain.Apply(domain.User{}, e); err == nil && snap.Exists() && !snap.Deleted {
				t.Summary += " as " + isolate(snap.Name())
			}
		case "updated":
			t.Summary = profileChanges(prev, next)
		case "deleted":
			t.Summary = "Account deleted; the ledger keeps the history, the projection forgets the personal details"
		case "snapshot":
			// Read from Clerk's Backend API (import, reconcile, first sign-in).
			if !prev.Exists() {
				t.Summary = "Account record read from Clerk"
			} else {
				t.Summary = profileChanges(prev, next)
			}
		case "snapshot_deleted":
			t.Summary = "Account no longer in Clerk; the ledger keeps the history, the projection forgets the personal details"
		}
	case "session":
		t.Kind = "session"
		t.Current = sessionID != "" && d.Data.ID == sessionID
		switch action {
		case "created":
			t.Summary = "Signed in"
		case "ended":
			t.Summary = "Signed out"
		case "removed":
			t.Summary = "Session removed"
		case "revoked":
			t.Summary = "Session revoked"
		case "pending":
			t.Summary = "Sign-in pending"
		}
		if t.Current {
			t.Summary += " (this session)"
		}
	case "email":
		t.Kind = "email"
		t.Summary = "Clerk sent you an email"
		if d.Data.Slug != "" {
			t.Summary += ": " + isolate(strings.ReplaceAll(d.Data.Slug, "_", " "))
		}
	case "sms":
		t.Kind = "email"
		t.Summary = "Clerk sent you a text message"
		if d.Data.Slug != "" {
			t.Summary += ": " + isolate(strings.ReplaceAll(d.Data.Slug, "_", " "))
		}
	case "organization":
		t.Kind = "organization"
		if action == "created" && d.Data.Name != "" {
			t.Summary = "Created the organization " + isolate(d.Data.Name)
		}
	case "organizationMembership":
		t.Kind = "organization"
		org := "an organization"
		if n := d.Data.Organization.Name; n != "" {
			org = isolate(n)
		}
		switch action {
		case "created":
			t.Summary = "Joined " + org
		case "updated":
			t.Summary = "Membership of " + org + " changed"
		case "deleted":
			t.Summary = "Left " + org
		}
		if d.Data.Role != "" && action != "deleted" {
			t.Summary += " (" + isolate(strings.TrimPrefix(d.Data.Role, "org:")) + ")"
		}
	}
	if t.Summary == "" {
		t.Summary = "Clerk event " + isolate(e.Type)
	}
	return t
}

// profileChanges describes what a user.updated changed between prev and next.
func profileChanges(prev, next domain.User) string {
	if next.Deleted {
		return "Profile update after the account was deleted (ignored)"
	}
	var changes []string
	if prev.Name() != next.Name() && (prev.FirstName != next.FirstName || prev.LastName != next.LastName) {
		changes = append(changes, "name to "+isolate(next.Name()))
	}
	if prev.Email != next.Email {
		if next.Email == "" {
			changes = append(changes, "removed the primary email")
		} else {
			changes = append(changes, "primary email to "+isolate(next.Email))
		}
	}
	if prev.Username != next.Username {
		changes = append(changes, "username to "+orNone(next.Username))
	}
	if prev.Phone != next.Phone {
		if next.Phone == "" {
			changes = append(changes, "removed the primary phone")
		} else {
			changes = append(changes, "primary phone to "+isolate(next.Phone))
		}
	}
	if prev.Exists() {
		// Private metadata is never described: Clerk keeps it from the user.
		for _, f := range []struct {
			was, is bool
			on, off string
		}{
			{prev.Banned, next.Banned, "account banned", "ban lifted"},
			{prev.Locked, next.Locked, "account locked", "account unlocked"},
			{prev.TwoFactorEnabled, next.TwoFactorEnabled, "two-factor turned on", "two-factor turned off"},
		} {
			switch {
			case !f.was && f.is:
				changes = append(changes, f.on)
			case f.was && !f.is:
				changes = append(changes, f.off)
			}
		}
	}
	if prev.ImageURL != next.ImageURL {
		changes = append(changes, "profile image")
	}
	if string(prev.PublicMetadata) != string(next.PublicMetadata) && prev.Exists() {
		changes = append(changes, "public metadata")
	}
	switch {
	case len(changes) > 0:
		return "Changed " + strings.Join(changes, ", ")
	case prev.Version == next.Version && prev.Exists():
		return "Profile update older than what the ledger already had (no change)"
	default:
		return "Profile updated (nothing shown here changed)"
	}
}

// orNone returns s isolated (isolate), or "none" when it is empty.
func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return isolate(s)
}

// allowedImage returns u when it is an https URL on one of hosts (the image
// hosts the Content-Security-Policy allows), else "" (the page shows
// initials instead of a broken image).
func allowedImage(u string, hosts []string) string {
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "https" || p.User != nil {
		return ""
	}
	for _, h := range hosts {
		if strings.EqualFold(p.Host, h) {
			return u
		}
	}
	return ""
}
