package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// copyHistory loads n events about u with COPY: gen says the type and the
// user as of each event (occurring a minute apart from tBase).
func copyHistory(t *testing.T, e *auditEnv, n int, gen func(i int) (string, clerkgen.User)) {
	t.Helper()
	schematest.CopyEvents(t, e.db, n, func(i int) domain.Delivery {
		typ, u := gen(i)
		at := tBase.Add(time.Duration(i) * time.Minute)
		body, err := clerkgen.Event(typ, u, at)
		if err != nil {
			t.Fatal(err)
		}
		d, err := domain.NewDelivery(fmt.Sprintf("msg_%s_%04d", u.ID, i), at.Unix(), "v1,x", body)
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}

// TestAuditUserPaging: the API's user view lists its events a page at a
// time (limit, cursor) with total and offset, each page recorded; the state
// is folded from every event whatever the page.
func TestAuditUserPaging(t *testing.T) {
	e := newAuditEnv(t)
	ada := clerkgen.User{ID: "user_pages", Email: "ada@example.com", FirstName: "Ada", CreatedAt: tBase, UpdatedAt: tBase}
	copyHistory(t, e, 7, func(i int) (string, clerkgen.User) {
		u := ada
		u.FirstName, u.UpdatedAt = fmt.Sprintf("Ada%d", i), tBase.Add(time.Duration(i)*time.Minute)
		if i == 0 {
			return "user.created", u
		}
		if i%2 == 0 {
			return "session.created", u
		}
		return "user.updated", u
	})
	e.visible(t, 7)
	get := func(query string) audit.UserHistory {
		t.Helper()
		res, body := e.get(t, listedAuditor, "/api/audit/users/user_pages"+query)
		if res.StatusCode != 200 {
			t.Fatalf("%s: %d %s", query, res.StatusCode, body)
		}
		var h audit.UserHistory
		if err := json.Unmarshal(body, &h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	var ids []string
	var offsets []int64
	q := "?limit=3"
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		h := get(q)
		if h.Total != 7 || h.Count != len(h.Events) || h.State.FirstName != "Ada5" {
			t.Fatalf("%s: total %d, count %d of %d events, state %q: want 7 and the fold of all (Ada5)", q, h.Total, h.Count, len(h.Events), h.State.FirstName)
		}
		offsets = append(offsets, h.Offset)
		for _, ev := range h.Events {
			ids = append(ids, ev.DeliveryID)
		}
		if h.NextCursor == "" {
			break
		}
		q = "?limit=3&cursor=" + url.QueryEscape(h.NextCursor)
	}
	if fmt.Sprint(offsets) != "[0 3 6]" || len(ids) != 7 || ids[0] != "msg_user_pages_0000" || ids[6] != "msg_user_pages_0006" {
		t.Errorf("pages at offsets %v gave %v", offsets, ids)
	}
	// Point in time and paging: total counts what occurred by then.
	if h := get("?limit=2&at=" + url.QueryEscape(tBase.Add(3*time.Minute).Format(time.RFC3339))); h.Total != 4 || h.Count != 2 || h.State.FirstName != "Ada3" || h.NextCursor == "" {
		t.Errorf("at +3m: total %d, count %d, state %q, next %q", h.Total, h.Count, h.State.FirstName, h.NextCursor)
	}
	// Every page is recorded with its own row count.
	list, err := schema.ListAccess(context.Background(), e.db, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var counts []int64
	for _, a := range list {
		counts = append(counts, a.RowCount)
	}
	if fmt.Sprint(counts) != "[2 1 3 3]" || list[1].Filters["cursor"] == "" {
		t.Errorf("access log row counts %v (newest first), entries %+v", counts, list)
	}
	for _, bad := range []string{"?limit=0", "?limit=1001", "?limit=x", "?cursor=nope", "?limit=1&limit=2", "?page=2"} {
		if res, body := e.get(t, listedAuditor, "/api/audit/users/user_pages"+bad); res.StatusCode != 400 {
			t.Errorf("%s: %d %s, want 400", bad, res.StatusCode, body)
		}
	}
}

var rangeRE = regexp.MustCompile(`id="timeline-range">\(events (\d+)–(\d+) of (\d+)`)

// TestAuditUserPagePaging: the audit user page shows a page of the timeline,
// "events N–M of T", and links to the next page and back to the first,
// keeping the chosen instant.
func TestAuditUserPagePaging(t *testing.T) {
	e := newAuditEnv(t)
	u := clerkgen.User{ID: "user_long", Email: "long@example.com", FirstName: "Long", CreatedAt: tBase, UpdatedAt: tBase}
	copyHistory(t, e, 150, func(i int) (string, clerkgen.User) {
		if i == 0 {
			return "user.created", u
		}
		return "session.created", u
	})
	e.visible(t, 150)
	path := "/audit/users/user_long?at=2024-05-28T13:00:00"
	var ranges []string
	var next string
	for pages := 0; ; pages++ {
		if pages > 4 {
			t.Fatal("paging does not end")
		}
		res, body := e.get(t, listedAuditor, path)
		page := string(body)
		m := rangeRE.FindStringSubmatch(page)
		if res.StatusCode != 200 || m == nil {
			t.Fatalf("%s: %d, no range\n%.3000s", path, res.StatusCode, page)
		}
		ranges = append(ranges, m[1]+"-"+m[2]+"/"+m[3])
		if n := strings.Count(page, `<code class="id" title="msg_user_long_`); n != mustAtoi(t, m[2])-mustAtoi(t, m[1])+1 {
			t.Errorf("%s: %d rows for range %s", path, n, ranges[len(ranges)-1])
		}
		if pages > 0 && !strings.Contains(page, `href="/audit/users/user_long?at=2024-05-28T13%3A00%3A00Z">« First page`) {
			t.Errorf("page %d has no first-page link keeping at: %s", pages+1, regexp.MustCompile(`<p class="pager">.*`).FindString(page))
		}
		// 50 events a page, a minute apart from 12:00: the later ones
		// (after 13:00) are on the second page on, greyed.
		if !strings.Contains(page, "Long") || (pages > 0) != strings.Contains(page, `class="change after`) {
			t.Errorf("page %d: no state as of 13:00 or no greyed later events", pages+1)
		}
		nm := regexp.MustCompile(`<a href="([^"]+)" rel="next">`).FindStringSubmatch(page)
		if nm == nil {
			if !strings.Contains(page, "End of the timeline.") {
				t.Errorf("last page does not say so")
			}
			break
		}
		next = html.UnescapeString(nm[1])
		if !strings.Contains(next, "at=2024-05-28T13%3A00%3A00Z") {
			t.Errorf("next link %q drops at", next)
		}
		path = next
	}
	if fmt.Sprint(ranges) != "[1-50/150 51-100/150 101-150/150]" {
		t.Errorf("ranges %v", ranges)
	}
	if res, _ := e.get(t, listedAuditor, "/audit/users/user_long?cursor=bad"); res.StatusCode != 400 {
		t.Errorf("bad cursor: %d", res.StatusCode)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

var homeRangeRE = regexp.MustCompile(`Events (\d+)–(\d+) of (\d+)`)

// TestHomeTimelinePages: the signed-in page shows 50 events at a time,
// newest first, "Events N–M of T" and an Older link; a profile change on an
// older page is still described against everything before it.
func TestHomeTimelinePages(t *testing.T) {
	e := newAuditEnv(t)
	ada := clerkgen.User{ID: "user_home", Email: "ada@example.com", FirstName: "Ada", CreatedAt: tBase, UpdatedAt: tBase}
	copyHistory(t, e, 120, func(i int) (string, clerkgen.User) {
		switch i {
		case 0:
			return "user.created", ada
		case 60: // on the second page; what it changed depends on event 0, on the third
			u := ada
			u.LastName, u.UpdatedAt = "Byron", tBase.Add(60*time.Minute)
			return "user.updated", u
		}
		return "session.created", ada
	})
	e.visible(t, 120)
	path := "/"
	var ranges []string
	var pages []string
	for n := 0; ; n++ {
		if n > 4 {
			t.Fatal("paging does not end")
		}
		res, body := e.get(t, "user_home", path)
		page := string(body)
		m := homeRangeRE.FindStringSubmatch(page)
		if res.StatusCode != 200 || m == nil {
			t.Fatalf("%s: %d, no range\n%.3000s", path, res.StatusCode, page)
		}
		ranges = append(ranges, m[1]+"-"+m[2]+"/"+m[3])
		pages = append(pages, page)
		if n > 0 && !strings.Contains(page, `href="/">« Newest`) {
			t.Errorf("page %d has no link to the newest", n+1)
		}
		nm := regexp.MustCompile(`<a href="([^"]+)" rel="next">Older`).FindStringSubmatch(page)
		if nm == nil {
			break
		}
		path = html.UnescapeString(nm[1])
	}
	if fmt.Sprint(ranges) != "[1-50/120 51-100/120 101-120/120]" {
		t.Fatalf("ranges %v", ranges)
	}
	if c := strings.Count(pages[1], `<li class="event`); c != 50 {
		t.Errorf("second page has %d entries", c)
	}
	if !strings.Contains(pages[1], "<p class=\"summary\"><bdi>Changed name to \u2068Ada Byron\u2069</bdi></p>") {
		t.Errorf("the rename on page 2 is not described against the fold before it")
	}
	if !strings.Contains(pages[2], "Account created as \u2068Ada") || strings.Contains(pages[0], "Account created") {
		t.Errorf("the creation is not (only) on the last page")
	}
	if res, _ := e.get(t, "user_home", "/?older=bad"); res.StatusCode != 400 {
		t.Errorf("bad cursor: %d", res.StatusCode)
	}
}
