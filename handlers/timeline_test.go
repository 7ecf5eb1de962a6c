package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// shuffledHistory stores, in a random arrival order, a history of user
// "user_shuffle": created, then renamed 29 times a minute apart (first name
// Name1…Name29), with sessions between. Some envelopes carry a timestamp
// hours after the change (a delivery without one gets the svix-timestamp),
// so time order must follow the user object's updated_at. It returns the
// time of each change by delivery id.
func shuffledHistory(t *testing.T, e *auditEnv) map[string]time.Time {
	t.Helper()
	type item struct {
		typ     string
		u       clerkgen.User
		changed time.Time
		stamp   time.Time
	}
	var items []item
	u := clerkgen.User{ID: "user_shuffle", Email: "s@example.com", FirstName: "Name0", CreatedAt: tBase, UpdatedAt: tBase}
	for i := 0; i < 30; i++ {
		u.FirstName, u.UpdatedAt = fmt.Sprintf("Name%d", i), tBase.Add(time.Duration(i)*time.Minute)
		typ := "user.updated"
		if i == 0 {
			typ = "user.created"
		}
		stamp := u.UpdatedAt
		if i%7 == 3 {
			stamp = stamp.Add(3 * time.Hour)
		}
		items = append(items, item{typ, u, u.UpdatedAt, stamp})
		if i%3 == 1 {
			at := u.UpdatedAt.Add(30 * time.Second)
			items = append(items, item{"session.created", u, at, at})
		}
	}
	r := rand.New(rand.NewPCG(11, 5))
	r.Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
	changed := map[string]time.Time{}
	schematest.CopyEvents(t, e.db, len(items), func(i int) domain.Delivery {
		it := items[i]
		body, err := clerkgen.Event(it.typ, it.u, it.stamp)
		if err != nil {
			t.Fatal(err)
		}
		d, err := domain.NewDelivery(fmt.Sprintf("msg_shuffle_%03d", i), it.stamp.Unix(), "v1,x", body)
		if err != nil {
			t.Fatal(err)
		}
		changed[d.ID] = it.changed
		return d
	})
	e.visible(t, int64(len(items)))
	return changed
}

// TestTimelineOrderOfAShuffledHistory: whatever order a history arrived
// in, the audit API lists it by when each change happened (updated_at, else
// the timestamp) across pages, marks exactly the events that arrived after
// a later change, and gives each rename as Name(i-1) -> Name(i); in ledger
// order it lists arrival order and says which snapshots the fold ignored as
// older. The user's own page lists the same time order, newest first.
func TestTimelineOrderOfAShuffledHistory(t *testing.T) {
	e := newAuditEnv(t)
	changed := shuffledHistory(t, e)
	read := func(order string) []audit.HistoryEvent {
		t.Helper()
		var all []audit.HistoryEvent
		q := "?limit=7&order=" + order
		for pages := 0; ; pages++ {
			if pages > 10 {
				t.Fatal("paging does not end")
			}
			res, body := e.get(t, listedAuditor, "/api/audit/users/user_shuffle"+q)
			if res.StatusCode != 200 {
				t.Fatalf("%s: %d %s", q, res.StatusCode, body)
			}
			var h audit.UserHistory
			if err := json.Unmarshal(body, &h); err != nil {
				t.Fatal(err)
			}
			if h.Total != int64(len(changed)) || h.Offset != int64(len(all)) || h.Order != order || h.State.FirstName != "Name29" {
				t.Fatalf("%s: total %d offset %d order %q state %q", q, h.Total, h.Offset, h.Order, h.State.FirstName)
			}
			all = append(all, h.Events...)
			if h.NextCursor == "" {
				break
			}
			q = "?limit=7&order=" + order + "&cursor=" + url.QueryEscape(h.NextCursor)
		}
		if len(all) != len(changed) {
			t.Fatalf("%s order: %d events, want %d", order, len(all), len(changed))
		}
		return all
	}

	byTime := read(audit.OrderTime)
	name := ""
	for i, ev := range byTime {
		if !ev.ChangedAt.Equal(changed[ev.DeliveryID]) {
			t.Errorf("%s: changed_at %s, want %s", ev.DeliveryID, ev.ChangedAt, changed[ev.DeliveryID])
		}
		if i > 0 && ev.ChangedAt.Before(byTime[i-1].ChangedAt) {
			t.Errorf("event %d (%s) changed at %s, before the one listed before it", i, ev.DeliveryID, ev.ChangedAt)
		}
		// Out of order: some event that arrived earlier happened later.
		want := false
		for _, o := range byTime {
			if o.Position < ev.Position && o.ChangedAt.After(ev.ChangedAt) {
				want = true
			}
		}
		if ev.OutOfOrder != want {
			t.Errorf("%s (position %d): out_of_order %v, want %v", ev.DeliveryID, ev.Position, ev.OutOfOrder, want)
		}
		if ev.Type == "session.created" {
			if ev.Outcome != domain.OutcomeNotUserEvent || len(ev.Changes) != 0 {
				t.Errorf("session %s: %s %v", ev.DeliveryID, ev.Outcome, ev.Changes)
			}
			continue
		}
		var first *domain.Change
		for _, c := range ev.Changes {
			if c.Field == "first_name" {
				first = &c
			}
		}
		if ev.Outcome != domain.OutcomeApplied || first == nil || first.Old != name || first.New == name {
			t.Fatalf("%s in time order: %s %v, want first_name from %q", ev.DeliveryID, ev.Outcome, ev.Changes, name)
		}
		name = first.New
		if ev.Request == nil || ev.Request.ClientIP != "192.0.2.10" {
			t.Errorf("%s: http_request %+v", ev.DeliveryID, ev.Request)
		}
	}
	if name != "Name29" {
		t.Errorf("the renames end at %q", name)
	}

	byArrival := read(audit.OrderLedger)
	var newest time.Time
	older := 0
	for i, ev := range byArrival {
		if i > 0 && ev.Position <= byArrival[i-1].Position {
			t.Fatalf("ledger order: position %d after %d", ev.Position, byArrival[i-1].Position)
		}
		if ev.Type == "session.created" {
			continue
		}
		wantOlder := ev.ChangedAt.Before(newest)
		if wantOlder != (ev.Outcome == domain.OutcomeOlder) || (wantOlder && len(ev.Changes) != 0) {
			t.Errorf("ledger order %s: %s %v, want older %v", ev.DeliveryID, ev.Outcome, ev.Changes, wantOlder)
		}
		if wantOlder {
			older++
		}
		if ev.ChangedAt.After(newest) {
			newest = ev.ChangedAt
		}
	}
	if older == 0 {
		t.Error("the shuffle made no snapshot arrive after a newer one")
	}

	// The user's own page: the same time order, newest first.
	res, body := e.get(t, "user_shuffle", "/")
	if res.StatusCode != 200 {
		t.Fatalf("/: %d", res.StatusCode)
	}
	var names []string
	for _, m := range regexp.MustCompile(`Changed name to \x{2068}(Name\d+)\x{2069}`).FindAllStringSubmatch(string(body), -1) {
		names = append(names, m[1])
	}
	want := []string{}
	for i := 29; i >= 1; i-- {
		want = append(want, fmt.Sprintf("Name%d", i))
	}
	if !slices.Equal(names, want) {
		t.Errorf("own timeline renames %v, want %v", names, want)
	}
	if !strings.Contains(string(body), "arrived out of order") {
		t.Error("the own timeline marks nothing out of order")
	}
	for _, bad := range []string{"?order=ledger&limit=0", "?order=arrival", "?order=ledger&cursor=" + url.QueryEscape(byTime[0].DeliveryID)} {
		if res, _ := e.get(t, listedAuditor, "/api/audit/users/user_shuffle"+bad); res.StatusCode != 400 {
			t.Errorf("%s: %d, want 400", bad, res.StatusCode)
		}
	}
}

// TestAuditSearchByPastEmail: the search finds a user by an email address
// they no longer have (from the workspace projection of their events),
// case-insensitively or by prefix, lists their events "N–M of T" with
// links to the user view at each event's instant, and records the email.
func TestAuditSearchByPastEmail(t *testing.T) {
	e := newAuditEnv(t)
	u := clerkgen.User{ID: "user_moved", Email: "old@example.com", FirstName: "Mo", CreatedAt: tBase, UpdatedAt: tBase}
	e.append(t, "msg_m0", "user.created", u, tBase)
	u.Email, u.UpdatedAt = "new@example.com", tBase.Add(time.Minute)
	e.append(t, "msg_m1", "user.updated", u, u.UpdatedAt)
	e.append(t, "msg_m2", "session.created", u, tBase.Add(2*time.Minute))
	e.append(t, "msg_o", "user.created", clerkgen.User{ID: "user_other", Email: "other@example.com"}, tBase)
	e.visible(t, 4)
	if err := projections.NewRunner(e.db, nil, projections.NewUsers(), projections.NewWorkspace()).CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"email=OLD%40example.com", "email=old%40*", "email=old%40example.com&limit=2"} {
		res, body := e.get(t, listedAuditor, "/audit/search?"+q)
		s := string(body)
		want := "Events 1–3 of 3"
		if strings.Contains(q, "limit=2") {
			want = "Events 1–2 of 3"
		}
		if res.StatusCode != 200 || !strings.Contains(s, want) || !strings.Contains(s, `href="/audit/users/user_moved?at=2024-05-28T12%3A01%3A00Z"`) ||
			strings.Contains(s, "user_other") || !strings.Contains(s, "Users whose events named") {
			t.Errorf("%s: %d\n%.4000s", q, res.StatusCode, s)
		}
	}
	res, body := e.get(t, listedAuditor, "/audit/search?email=nobody%40example.com")
	if res.StatusCode != 200 || !strings.Contains(string(body), "No matching events") {
		t.Errorf("unknown email: %d", res.StatusCode)
	}
	list, _ := schema.ListAccess(context.Background(), e.db, 0, 1)
	if len(list) != 1 || list[0].Filters["email"] != "nobody@example.com" || list[0].RowCount != 0 {
		t.Errorf("the email search is not recorded: %+v", list)
	}
}
