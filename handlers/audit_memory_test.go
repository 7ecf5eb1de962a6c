package handlers

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// liveHeap is the heap the last collection found live.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// gcTick is an object whose finalizer runs once per collection.
type gcTick struct {
	_ [64]byte
	p *byte
}

// liveHeapPeak runs fn with the collector at GOGC 10 and returns how much
// more heap than before fn was found live at the worst collection during fn
// (and after it, with what fn returned still held): the memory fn kept,
// whatever it allocated and dropped. It is sampled at every collection,
// which allocation triggers (every 10% of growth), not at moments in time:
// memory a request holds for longer than a few of its own rows cannot slip
// between samples.
func liveHeapPeak(fn func() any) (peak, allocated uint64) {
	runtime.GC()
	base := liveHeap()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	allocBefore := ms.TotalAlloc
	var mu sync.Mutex
	max := base
	sample := func() {
		mu.Lock()
		defer mu.Unlock()
		if v := liveHeap(); v > max {
			max = v
		}
	}
	done := make(chan struct{})
	var arm func()
	arm = func() {
		runtime.SetFinalizer(&gcTick{}, func(*gcTick) {
			sample()
			select {
			case <-done:
			default:
				arm()
			}
		})
	}
	old := debug.SetGCPercent(10)
	arm()
	kept := fn()
	runtime.GC()
	sample()
	runtime.KeepAlive(kept)
	close(done)
	debug.SetGCPercent(old)
	runtime.ReadMemStats(&ms)
	mu.Lock()
	defer mu.Unlock()
	return max - base, ms.TotalAlloc - allocBefore
}

// bigMetadata is a public_metadata object of about n bytes made of small
// keys: its JSON is quote-heavy, which the pages escape and indent (the
// worst case for their size).
func bigMetadata(n int) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%06d":"v"`, i)
	}
	b.WriteByte('}')
	return b.String()
}

// TestPerUserViewsBoundedMemory: every per-user view (the audit API's user
// state and its point-in-time fold, the audit user page, the history API at
// limit 300, and the user's own signed-in page) keeps under 100 MB live for
// a user with 120 events of 1 MiB each (120 MiB) and for one with 30,000
// small events (40 MB), while the fold still reads every event. Before
// paging and streaming, each of these views held the whole history (several
// times over).
func TestPerUserViewsBoundedMemory(t *testing.T) {
	e := newAuditEnv(t)
	const bigEvents, manyEvents = 120, 30_000
	loadStart := time.Now()
	meta := bigMetadata(1<<20 - 4096)
	big, many := "user_big", fmt.Sprintf("user_%027d", 0)
	// The big user: created, then updated 119 times, each carrying 1 MiB of
	// public metadata; the last update names them "Last".
	schematest.CopyEvents(t, e.db, bigEvents, func(i int) domain.Delivery {
		at := tBase.Add(time.Duration(i) * time.Minute)
		typ, name := "user.updated", fmt.Sprintf("Name%d", i)
		if i == 0 {
			typ = "user.created"
		}
		if i == bigEvents-1 {
			name = "Last"
		}
		body := fmt.Appendf(nil, `{"data":{"id":%q,"object":"user","first_name":%q,"last_name":null,"username":null,"image_url":"","primary_email_address_id":"idn_1","email_addresses":[{"id":"idn_1","email_address":"big@example.com"}],"public_metadata":%s,"created_at":%d,"updated_at":%d},"object":"event","type":%q,"timestamp":%d}`,
			big, name, meta, tBase.UnixMilli(), at.UnixMilli(), typ, at.UnixMilli())
		id := fmt.Sprintf("msg_big_%03d", i)
		return domain.Delivery{ID: id, Timestamp: at.Unix(), Signature: "v1,x", Body: body, Type: typ, UserID: big, OccurredAt: at}
	})
	schematest.CopyEvents(t, e.db, manyEvents, func(i int) domain.Delivery {
		d := synthDelivery(e.signer, i, 1)
		d.ID = fmt.Sprintf("msg_many_%06d", i)
		return d
	})
	e.visible(t, bigEvents+manyEvents)
	t.Logf("loaded in %s", time.Since(loadStart).Round(time.Millisecond))

	mid := url.QueryEscape(tBase.Add(bigEvents / 2 * time.Minute).Format(time.RFC3339))
	for _, c := range []struct {
		user, session, path, want string
	}{
		{big, listedAuditor, "/api/audit/users/" + big, `"first_name":"Last"`},
		{big, listedAuditor, "/api/audit/users/" + big + "?at=" + mid, fmt.Sprintf(`"first_name":"Name%d"`, bigEvents/2)},
		{big, listedAuditor, "/audit/users/" + big, "of " + fmt.Sprint(bigEvents)},
		{big, listedAuditor, "/api/audit/events?user_id=" + big + "&limit=300", `"next_cursor":"`},
		{big, big, "/", "of " + fmt.Sprint(bigEvents)},
		{many, listedAuditor, "/api/audit/users/" + many, fmt.Sprintf(`"total":%d`, manyEvents)},
		{many, listedAuditor, "/api/audit/users/" + many + "?at=" + url.QueryEscape(tBase.Add(time.Hour).Format(time.RFC3339)), `"first_name":"Name3599"`},
		{many, listedAuditor, "/audit/users/" + many, fmt.Sprintf("of %d", manyEvents)},
		{many, listedAuditor, "/api/audit/events?user_id=" + many + "&limit=300", `"count":300`},
		{many, many, "/", fmt.Sprintf("of %d", manyEvents)},
	} {
		var status int
		var body string
		start := time.Now()
		peak, alloc := liveHeapPeak(func() any {
			req := httptest.NewRequest(http.MethodGet, c.path, nil)
			req.Header.Set("X-Test-Session", c.session)
			req.Header.Set("Sec-Fetch-Site", "same-origin") // from the workspace's own pages
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)
			status = rec.Code
			body = rec.Body.String()
			return rec
		})
		t.Logf("%s as %s: %d in %s, %.1f MB answer, %.1f MB live at most, %.0f MB allocated", c.path, c.session, status, time.Since(start).Round(time.Millisecond), float64(len(body))/(1<<20), float64(peak)/(1<<20), float64(alloc)/(1<<20))
		if status != 200 || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d, answer lacks %q: %.300s", c.path, status, c.want, body)
		}
		if peak > 100<<20 {
			t.Errorf("%s as %s kept %d MB live (limit 100 MB)", c.path, c.session, peak>>20)
		}
	}
}
