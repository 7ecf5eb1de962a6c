package handlers

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// Timeline limits: the page reads at most timelineReadCap of a user's events
// (in pages of timelinePage) and shows the newest timelineShown.
const (
	timelinePage    = 500
	timelineReadCap = 5000
	timelineShown   = 100
)

// homePage is the data of home.html (the signed-in page).
type homePage struct {
	User      domain.User
	Name      string
	Synced    bool   // the users projection has a row for this person
	Avatar    string // image URL the CSP allows, or ""
	Timeline  []timelineEntry
	Total     int  // events read
	Capped    bool // stopped reading at timelineReadCap
	SessionID string
}

// timelineEntry is one event as the timeline shows it.
type timelineEntry struct {
	At       time.Time
	Type     string
	Kind     string // account, session, email, organization, other: styles the marker
	Summary  string
	Current  bool // this browser's session
	Position int64
}

// handleHome serves GET /: the signed-out page with Clerk's sign-in, the
// refresh page when ClerkJS must renew the session cookie, or the signed-in
// person's own record and event timeline. It reads only the session
// subject's rows: never another user's.
func handleHome(log *slog.Logger, pg *pages, db *sqlx.DB, avatarHosts []string) http.HandlerFunc {
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
		page, err := loadHome(r.Context(), db, s)
		if err != nil {
			pg.renderError(w, r, err)
			return
		}
		page.Avatar = allowedImage(page.User.ImageURL, avatarHosts)
		pg.render(w, r, http.StatusOK, "home.html", page)
	}
}

// loadHome reads s's projected record and ledger events.
func loadHome(ctx context.Context, db schema.Queryer, s Session) (homePage, error) {
	page := homePage{SessionID: s.SessionID}
	u, err := schema.GetUser(ctx, db, s.UserID)
	switch {
	case err == nil:
		page.User, page.Synced = u, true
	case domain.ErrorCode(err) == domain.ENOTFOUND:
		page.User = domain.User{ID: s.UserID}
	default:
		return homePage{}, err
	}
	page.Name = page.User.Name()

	var events []domain.Event
	f := schema.EventFilter{UserID: s.UserID, Limit: timelinePage}
	for {
		batch, err := schema.QueryEvents(ctx, db, f)
		if err != nil {
			return homePage{}, err
		}
		events = append(events, batch...)
		if len(batch) < f.Limit {
			break
		}
		if len(events) >= timelineReadCap {
			page.Capped = true
			break
		}
		f.After = schema.After(batch[len(batch)-1])
	}
	page.Total = len(events)
	page.Timeline = timeline(events, s.SessionID, timelineShown)
	return page, nil
}

// timeline summarizes events (in ledger order) newest first, at most max.
// Profile changes are described against the user as folded from the events
// before each one.
func timeline(events []domain.Event, sessionID string, max int) []timelineEntry {
	out := make([]timelineEntry, 0, min(len(events), max))
	var folded domain.User
	all := make([]timelineEntry, len(events))
	for i, e := range events {
		next, err := domain.Apply(folded, e)
		if err != nil {
			next = folded
		}
		all[i] = summarize(e, folded, next, sessionID)
		folded = next
	}
	for i := len(all) - 1; i >= 0 && len(out) < max; i-- {
		out = append(out, all[i])
	}
	return out
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
