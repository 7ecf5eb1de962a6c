package handlers

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// userViewTarget is the bound on rendering a user view with 1,000
// events, server-side.
const userViewTarget = 50 * time.Millisecond

// thousandEvents stores a user with 1,000 events (a third of them profile
// updates, the rest sessions and emails, a tenth arriving out of order) and
// returns the user id.
func thousandEvents(tb testing.TB, e *auditEnv) string {
	const id = "user_thousand"
	u := clerkgen.User{ID: id, Email: "t@example.com", FirstName: "T", LastName: "Housand", Username: "thousand",
		PublicMetadata: map[string]any{"plan": "pro", "seats": 3}, CreatedAt: tBase, UpdatedAt: tBase}
	schematest.CopyEvents(tb, e.db, 1000, func(i int) domain.Delivery {
		j := i
		if i%10 == 9 { // arrives after the next one
			j = i + 1
		} else if i%10 == 0 && i > 0 {
			j = i - 1
		}
		at := tBase.Add(time.Duration(j) * time.Minute)
		typ := []string{"user.updated", "session.created", "email.created"}[j%3]
		if j == 0 {
			typ = "user.created"
		}
		v := u
		v.FirstName, v.UpdatedAt = fmt.Sprintf("T%d", j), at
		body, err := clerkgen.Event(typ, v, at)
		if err != nil {
			tb.Fatal(err)
		}
		d, err := domain.NewDelivery(fmt.Sprintf("msg_thousand_%04d", i), at.Unix(), "v1,x", body)
		if err != nil {
			tb.Fatal(err)
		}
		return d
	})
	e.visible(tb, 1000)
	return id
}

// serveUserView renders path as the listed auditor, from the workspace's
// own pages, and returns the status and body.
func serveUserView(e *auditEnv, path string) (int, string) {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.Header.Set("X-Test-Session", listedAuditor)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// TestUserViewOfAThousandEventsIsPaged: the audit user view of a user with
// 1,000 events shows one page of 50 (time order, with its change lists),
// says so, and links the next.
func TestUserViewOfAThousandEventsIsPaged(t *testing.T) {
	e := newAuditEnv(t)
	id := thousandEvents(t, e)
	status, body := serveUserView(e, "/audit/users/"+id)
	if status != 200 || !strings.Contains(body, `id="timeline-range">(events 1–50 of 1000, time order)`) || strings.Count(body, `<li class="change`) != 50 ||
		!strings.Contains(body, `rel="next"`) || !strings.Contains(body, "arrived out of order") || !strings.Contains(body, "<code>first_name</code>") {
		t.Errorf("user view: %d, %d entries\n%.2000s", status, strings.Count(body, `<li class="change`), body)
	}
}

// BenchmarkUserView renders the audit user view (HTML, the first page of
// 50 events with their change lists, and the state folded from all 1,000)
// and the JSON API's view of a user with 1,000 events, in-process
// (server-side: routing, session, the audit slot, the one-snapshot read,
// the access-log commit and the rendering), with the collector at GOGC 400
// as serve runs it. It reports p50 and p99 and fails when the median view
// is over 50 ms.
//
// Run: go test ./handlers -run '^$' -bench UserView -benchtime 200x
func BenchmarkUserView(b *testing.B) {
	e := newAuditEnv(b)
	id := thousandEvents(b, e)
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	for _, c := range []struct{ name, path string }{
		{"page", "/audit/users/" + id},
		{"page_ledger_order", "/audit/users/" + id + "?order=ledger"},
		{"api", "/api/audit/users/" + id},
	} {
		b.Run(c.name, func(b *testing.B) {
			var lat []time.Duration
			for b.Loop() {
				start := time.Now()
				status, body := serveUserView(e, c.path)
				lat = append(lat, time.Since(start))
				if status != 200 || !strings.Contains(body, "1000") {
					b.Fatalf("%s: %d %.300s", c.path, status, body)
				}
			}
			reportLatency(b, lat)
			if p50 := lat[len(lat)/2]; p50 > userViewTarget {
				b.Errorf("%s: median %s, over %s", c.path, p50, userViewTarget)
			}
		})
	}
}
