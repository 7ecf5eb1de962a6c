package clerkapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkapi"
	"github.com/clerk-ledger/clerk-ledger/clerkapi/clerkapitest"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"golang.org/x/time/rate"
)

// otherKey is well formed but not the fake's.
const otherKey = "sk_test_0123456789abcdefghijABCDEFGHIJ"

// newPair starts a fake and a client for it: no client-side rate limit and
// millisecond backoffs unless cfg says otherwise.
func newPair(t testing.TB, o clerkapitest.Options, cfg clerkapi.Config) (*clerkapitest.Server, *clerkapi.Client) {
	t.Helper()
	s := clerkapitest.New(o)
	t.Cleanup(s.Close)
	if cfg.SecretKey == "" {
		cfg.SecretKey = s.SecretKey()
	}
	cfg.BaseURL = s.URL()
	if cfg.RateLimit == 0 {
		cfg.RateLimit = rate.Inf
	}
	if cfg.BaseBackoff == 0 {
		cfg.BaseBackoff, cfg.MaxBackoff = time.Millisecond, 20*time.Millisecond
	}
	c, err := clerkapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

// listAll pages through every user with limit.
func listAll(t *testing.T, c *clerkapi.Client, limit int) []clerkapi.User {
	t.Helper()
	var all []clerkapi.User
	for off := 0; ; {
		p, err := c.ListUsers(context.Background(), off, limit)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range p.Failures {
			t.Errorf("failure: %v", f.Err)
		}
		all = append(all, p.Users...)
		if p.Last() {
			return all
		}
		off = p.Next()
	}
}

func TestListUsersPagesEveryUserOnceWithExactBytes(t *testing.T) {
	s, c := newPair(t, clerkapitest.Options{Users: 2345, Seed: 1}, clerkapi.Config{})
	want := s.List()
	got := listAll(t, c, 500)
	if len(got) != len(want) {
		t.Fatalf("listed %d users, want %d", len(got), len(want))
	}
	seen := map[string]bool{}
	for i, u := range got {
		if seen[u.ID] {
			t.Fatalf("user %s listed twice", u.ID)
		}
		seen[u.ID] = true
		w := want[i]
		if u.ID != w.ID || u.CreatedAt != w.CreatedAt || u.UpdatedAt != w.UpdatedAt {
			t.Fatalf("user %d is %s %d %d, want %s %d %d", i, u.ID, u.CreatedAt, u.UpdatedAt, w.ID, w.CreatedAt, w.UpdatedAt)
		}
		if !bytes.Equal(u.Raw, w.Raw) {
			t.Fatalf("user %s: bytes differ from what the API sent:\n got %s\nwant %s", u.ID, u.Raw, w.Raw)
		}
	}
	reqs := s.Requests()
	if len(reqs) != 5 {
		t.Fatalf("%d requests for 2,345 users at 500 a page, want 5", len(reqs))
	}
	for i, r := range reqs {
		q, _ := url.ParseQuery(r.RawQuery)
		if r.Path != "/v1/users" || q.Get("order_by") != "+created_at" || q.Get("limit") != "500" || q.Get("offset") != []string{"0", "500", "1000", "1500", "2000"}[i] {
			t.Errorf("request %d: %s?%s", i, r.Path, r.RawQuery)
		}
	}
}

func TestListUsersIntoReusesPagesSafely(t *testing.T) {
	s, c := newPair(t, clerkapitest.Options{Users: 1234, Seed: 2}, clerkapi.Config{})
	want := s.List()
	var pages [2]clerkapi.Page
	var got [][]byte
	for n, off := 0, 0; ; n++ {
		p := &pages[n%2]
		if err := c.ListUsersInto(context.Background(), p, off, 100); err != nil {
			t.Fatal(err)
		}
		for _, u := range p.Users {
			got = append(got, bytes.Clone(u.Raw))
		}
		if p.Last() {
			break
		}
		off = p.Next()
	}
	if len(got) != len(want) {
		t.Fatalf("listed %d, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i].Raw) {
			t.Fatalf("user %d differs", i)
		}
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	for _, c := range []struct {
		name       string
		retryAfter func() string
		cap        time.Duration
		atLeast    time.Duration
	}{
		{"seconds", func() string { return "1" }, 0, time.Second},
		// Measured from the response's Date (whole seconds): at least 1 s.
		{"http date", func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }, 0, time.Second},
		{"capped", func() string { return "3600" }, 1500 * time.Millisecond, 1500 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, client := newPair(t, clerkapitest.Options{Users: 30}, clerkapi.Config{MaxRetryAfter: c.cap})
			s.Inject(1, clerkapitest.Fault{Status: http.StatusTooManyRequests, RetryAfter: c.retryAfter()})
			p, err := client.ListUsers(context.Background(), 0, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Users) != 10 {
				t.Fatalf("%d users", len(p.Users))
			}
			reqs := s.Requests()
			if len(reqs) != 2 || reqs[0].Status != 429 || reqs[1].Status != 200 {
				t.Fatalf("requests %+v", reqs)
			}
			// Generous bounds: at least what the server asked for (or the
			// cap), far less than an uncapped 3600 s.
			if gap := reqs[1].At.Sub(reqs[0].At); gap < c.atLeast || gap > 30*time.Second {
				t.Errorf("retried %v after the 429, want at least %v", gap, c.atLeast)
			}
		})
	}
}

func TestServerAndNetworkErrorsAreRetried(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	s, c := newPair(t, clerkapitest.Options{Users: 30, Seed: 3}, clerkapi.Config{MaxAttempts: 5, Log: log})
	s.Inject(2, clerkapitest.Fault{Status: http.StatusServiceUnavailable})
	s.Inject(1, clerkapitest.Fault{Status: http.StatusBadGateway}) // a proxy's HTML page
	s.Inject(1, clerkapitest.Fault{Truncate: true})                // the body breaks off
	p, err := c.ListUsers(context.Background(), 0, 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Users) != 20 || !bytes.Equal(p.Users[0].Raw, s.List()[0].Raw) {
		t.Fatalf("page after retries: %d users", len(p.Users))
	}
	if n := s.RequestCount(); n != 5 {
		t.Errorf("%d requests, want 4 failures and 1 success", n)
	}
	// One warning per retry, snake_case keys, no key and no user data.
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], `"op":"list_users"`) || !strings.Contains(lines[0], `"status":503`) ||
		!strings.Contains(lines[0], `"wait_ms":`) || !strings.Contains(lines[3], "EOF") {
		t.Errorf("logs:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), s.SecretKey()[8:]) || strings.Contains(logs.String(), "@") {
		t.Errorf("logs show the key or user data:\n%s", logs.String())
	}
}

func TestSlowPageTimesOutAndIsRetried(t *testing.T) {
	s, c := newPair(t, clerkapitest.Options{Users: 30}, clerkapi.Config{HTTPClient: &http.Client{Timeout: 100 * time.Millisecond}})
	s.SetDelay(2 * time.Second)
	s.OnList(func(offset, limit int) { s.SetDelay(0) }) // from the next page on
	p, err := c.ListUsers(context.Background(), 0, 30)
	if err != nil || len(p.Users) != 30 {
		t.Fatalf("%v", err)
	}
	if n := s.RequestCount(); n != 2 {
		t.Errorf("%d requests, want a timed-out one and its retry", n)
	}
}

func TestGzippedPages(t *testing.T) {
	s, c := newPair(t, clerkapitest.Options{Users: 1234, Seed: 10, Gzip: true}, clerkapi.Config{})
	want := s.List()
	got := listAll(t, c, 500)
	if len(got) != len(want) {
		t.Fatalf("listed %d, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i].Raw, want[i].Raw) {
			t.Fatalf("user %d differs", i)
		}
	}
	if u, err := c.GetUser(context.Background(), want[7].ID); err != nil || !bytes.Equal(u.Raw, want[7].Raw) {
		t.Errorf("get: %v", err)
	}
}

// TestConcurrentUse shares one client between goroutines while the API
// throttles and fails now and then (run with -race).
func TestConcurrentUse(t *testing.T) {
	s, c := newPair(t, clerkapitest.Options{Users: 300, Seed: 11}, clerkapi.Config{MaxAttempts: 10})
	list := s.List()
	s.Inject(3, clerkapitest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "0"})
	s.Inject(3, clerkapitest.Fault{Status: http.StatusServiceUnavailable})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < len(list); i += 8 {
				u, err := c.GetUser(context.Background(), list[i].ID)
				if err != nil || !bytes.Equal(u.Raw, list[i].Raw) {
					errs <- fmt.Errorf("user %d: %v", i, err)
					return
				}
			}
			if p, err := c.ListUsers(context.Background(), g*10, 10); err != nil || p.Users[0].ID != list[g*10].ID {
				errs <- fmt.Errorf("page %d: %v", g, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRetriesAreBounded(t *testing.T) {
	t.Run("5xx", func(t *testing.T) {
		s, c := newPair(t, clerkapitest.Options{Users: 5}, clerkapi.Config{MaxAttempts: 3})
		s.Inject(10, clerkapitest.Fault{Status: http.StatusInternalServerError})
		_, err := c.ListUsers(context.Background(), 0, 5)
		if domain.ErrorCode(err) != domain.EUNAVAILABLE || !strings.Contains(err.Error(), "HTTP 500 after 3 attempts") {
			t.Errorf("got %v (%s)", err, domain.ErrorCode(err))
		}
		if n := s.RequestCount(); n != 3 {
			t.Errorf("%d requests, want 3", n)
		}
	})
	t.Run("429", func(t *testing.T) {
		s, c := newPair(t, clerkapitest.Options{Users: 5}, clerkapi.Config{MaxAttempts: 2})
		s.Inject(10, clerkapitest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "0"})
		_, err := c.ListUsers(context.Background(), 0, 5)
		if domain.ErrorCode(err) != domain.ERATELIMIT {
			t.Errorf("got %v (%s)", err, domain.ErrorCode(err))
		}
		if n := s.RequestCount(); n != 2 {
			t.Errorf("%d requests, want 2", n)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		s, c := newPair(t, clerkapitest.Options{Users: 5}, clerkapi.Config{MaxAttempts: 2})
		s.Close()
		_, err := c.GetUser(context.Background(), "user_2abc")
		if domain.ErrorCode(err) != domain.EUNAVAILABLE || !strings.Contains(err.Error(), "unreachable after 2 attempts") {
			t.Errorf("got %v (%s)", err, domain.ErrorCode(err))
		}
	})
}

func TestRefusedKeyIsAClearErrorAndNotRetried(t *testing.T) {
	s, c := newPair(t, clerkapitest.Options{Users: 5}, clerkapi.Config{SecretKey: otherKey})
	_, err := c.ListUsers(context.Background(), 0, 5)
	if domain.ErrorCode(err) != domain.EUNAUTHORIZED || !strings.Contains(domain.ErrorMessage(err), "CLERK_SECRET_KEY was refused") ||
		!strings.Contains(err.Error(), "HTTP 401 authentication_invalid") {
		t.Errorf("got %v (%s)", err, domain.ErrorCode(err))
	}
	if strings.Contains(err.Error(), otherKey[8:]) {
		t.Errorf("the error shows the key: %v", err)
	}
	if n := s.RequestCount(); n != 1 {
		t.Errorf("%d requests, want 1 (a 401 is not retried)", n)
	}

	s, c = newPair(t, clerkapitest.Options{Users: 5}, clerkapi.Config{})
	s.Inject(1, clerkapitest.Fault{Status: http.StatusForbidden})
	if _, err := c.GetUser(context.Background(), "user_x"); domain.ErrorCode(err) != domain.EUNAUTHORIZED {
		t.Errorf("403: %v", err)
	}
	s.Inject(1, clerkapitest.Fault{Status: http.StatusBadRequest})
	if _, err := c.GetUser(context.Background(), "user_x"); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("400: %v", err)
	}
	if n := s.RequestCount(); n != 2 {
		t.Errorf("%d requests, want 2 (4xx are not retried)", n)
	}
}

func TestMalformedUsersAreReportedNotDropped(t *testing.T) {
	s, c := newPair(t, clerkapitest.Options{Users: 20, Seed: 4}, clerkapi.Config{})
	list := s.List()
	bad := map[int]string{
		3:  `"oops"`,
		7:  `{"object":"user","created_at":1,"updated_at":2}`,
		11: `{"id":42,"object":"user","created_at":1,"updated_at":2}`,
		15: `{"id":"` + list[15].ID + `","object":"user","created_at":1,"updated_at":"yesterday"}`,
	}
	for i, raw := range bad {
		if err := s.PutRaw(list[i].ID, []byte(raw)); err != nil {
			t.Fatal(err)
		}
	}
	p, err := c.ListUsers(context.Background(), 0, 20)
	if err != nil {
		t.Fatal(err)
	}
	if p.Count != 20 || len(p.Users) != 16 || len(p.Failures) != 4 {
		t.Fatalf("count %d, %d users, %d failures", p.Count, len(p.Users), len(p.Failures))
	}
	for k, f := range p.Failures {
		i := []int{3, 7, 11, 15}[k]
		wantID := ""
		if i == 15 {
			wantID = list[15].ID
		}
		if f.Index != i || f.Position != i || f.ID != wantID || string(f.Raw) != bad[i] || domain.ErrorCode(f.Err) != domain.EINVALID {
			t.Errorf("failure %d: %+v", k, f)
		}
		if !strings.Contains(f.Err.Error(), "position "+strconv.Itoa(i)) || (wantID != "" && !strings.Contains(f.Err.Error(), wantID)) {
			t.Errorf("failure %d: %v", k, f.Err)
		}
	}
	j := 0
	for i, e := range list {
		if _, isBad := bad[i]; isBad {
			continue
		}
		if p.Users[j].ID != e.ID || !bytes.Equal(p.Users[j].Raw, e.Raw) {
			t.Errorf("user %d is %s, want %s", j, p.Users[j].ID, e.ID)
		}
		j++
	}

	// GetUser of a malformed user is an error, not a half-parsed user.
	if _, err := c.GetUser(context.Background(), list[15].ID); domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), "updated_at") {
		t.Errorf("get malformed: %v", err)
	}
}

func clerkgenUser(createdAt int64) clerkgen.User {
	return clerkgen.User{ID: clerkgen.NewID("user"), Email: "backdated@example.com", FirstName: "Back", LastName: "Dated",
		CreatedAt: time.UnixMilli(createdAt), UpdatedAt: time.UnixMilli(createdAt)}
}

func TestGetUser(t *testing.T) {
	s, c := newPair(t, clerkapitest.Options{Users: 10, Seed: 5}, clerkapi.Config{})
	e := s.List()[4]
	u, err := c.GetUser(context.Background(), e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if u.ID != e.ID || u.UpdatedAt != e.UpdatedAt || u.CreatedAt != e.CreatedAt || !bytes.Equal(u.Raw, e.Raw) {
		t.Errorf("got %s %d %s", u.ID, u.UpdatedAt, u.Raw)
	}

	s.Delete(e.ID)
	_, err = c.GetUser(context.Background(), e.ID)
	if domain.ErrorCode(err) != domain.ENOTFOUND || !strings.Contains(domain.ErrorMessage(err), e.ID) {
		t.Errorf("deleted user: %v (%s)", err, domain.ErrorCode(err))
	}
	if _, err := c.GetUser(context.Background(), "user_neverexisted"); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Errorf("unknown user: %v", err)
	}

	before := s.RequestCount()
	for _, id := range []string{"", "../users", "user_1?x=1", "user_1/ban", strings.Repeat("a", 200)} {
		if _, err := c.GetUser(context.Background(), id); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("id %q: %v", id, err)
		}
	}
	if s.RequestCount() != before {
		t.Errorf("malformed ids reached the API")
	}
}

func TestSecretKeyFormat(t *testing.T) {
	for _, c := range []struct{ key, says string }{
		{"", "is not set"},
		{"sk_test_Xq7Zp9", "too short"},
		{"pk_test_Y2xlcmsuZXhhbXBsZS5jb20k", "publishable key"},
		{"sk_test_0123456789abcdefghij\n", "line breaks"},
		{" sk_live_0123456789abcdefghij", "spaces"},
		{"sk_prod_0123456789abcdefghij", "sk_test_… (development) or sk_live_…"},
		{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "sk_test_… (development) or sk_live_…"},
		{"sk_live_0123456789abcdefghij$%", "sk_test_… (development) or sk_live_…"},
	} {
		_, err := clerkapi.New(clerkapi.Config{SecretKey: c.key})
		msg := domain.ErrorMessage(err)
		if domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(msg, "CLERK_SECRET_KEY") || !strings.Contains(msg, c.says) {
			t.Errorf("key %q: %v", c.key, err)
		}
		if strings.Contains(msg, "\n") || (c.key != "" && strings.Contains(err.Error(), strings.TrimSpace(c.key))) ||
			(len(c.key) > 12 && strings.Contains(err.Error(), strings.TrimSpace(c.key)[8:])) {
			t.Errorf("key %q: the message shows the key or spans lines: %q", c.key, err)
		}
	}
	for _, key := range []string{"sk_test_0123456789abcdefghij", "sk_live_" + strings.Repeat("Ab9", 14)} {
		if _, err := clerkapi.New(clerkapi.Config{SecretKey: key}); err != nil {
			t.Errorf("key %s…: %v", key[:8], err)
		}
	}
	for _, u := range []string{"api.clerk.com", "ftp://api.clerk.com", "https://user:pw@api.clerk.com", "https://"} {
		_, err := clerkapi.New(clerkapi.Config{SecretKey: otherKey, BaseURL: u})
		if domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), "CLERK_API_URL") || strings.Contains(err.Error(), "pw") {
			t.Errorf("base URL %q: %v", u, err)
		}
	}
}

func TestBaseURLWithV1(t *testing.T) {
	s := clerkapitest.New(clerkapitest.Options{Users: 3})
	defer s.Close()
	c, err := clerkapi.New(clerkapi.Config{SecretKey: s.SecretKey(), BaseURL: s.URL() + "/v1/", RateLimit: rate.Inf})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.CountUsers(context.Background()); err != nil || n != 3 {
		t.Errorf("count %d %v", n, err)
	}
}

func TestCancelStopsWaits(t *testing.T) {
	for _, c := range []struct {
		name  string
		fault clerkapitest.Fault
	}{
		{"retry-after", clerkapitest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "30"}},
		{"backoff", clerkapitest.Fault{Status: http.StatusServiceUnavailable}},
		{"slow answer", clerkapitest.Fault{Status: http.StatusOK, Delay: 30 * time.Second}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, client := newPair(t, clerkapitest.Options{Users: 5}, clerkapi.Config{BaseBackoff: 30 * time.Second, MaxBackoff: 30 * time.Second})
			s.Inject(1, c.fault)
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			start := time.Now()
			_, err := client.ListUsers(ctx, 0, 5)
			if !errors.Is(err, context.Canceled) {
				t.Errorf("got %v, want context.Canceled", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("returned %v after the cancel", d)
			}
			if n := s.RequestCount(); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
}

func TestClientSideRateLimit(t *testing.T) {
	s, c := newPair(t, clerkapitest.Options{Users: 3}, clerkapi.Config{RateLimit: 20})
	id := s.List()[0].ID
	for range 11 {
		if _, err := c.GetUser(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	reqs := s.Requests()
	// 20/s with a burst of 1: the 11th request is at least 500 ms after the first.
	if span := reqs[10].At.Sub(reqs[0].At); span < 400*time.Millisecond {
		t.Errorf("11 requests in %v at 20/s", span)
	}
}

func TestArgumentsAreChecked(t *testing.T) {
	s, c := newPair(t, clerkapitest.Options{Users: 3}, clerkapi.Config{})
	for _, a := range [][2]int{{0, 0}, {0, 501}, {-1, 10}} {
		if _, err := c.ListUsers(context.Background(), a[0], a[1]); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("offset %d limit %d: %v", a[0], a[1], err)
		}
	}
	if s.RequestCount() != 0 {
		t.Errorf("bad arguments reached the API")
	}
}

func TestTotalCount(t *testing.T) {
	_, c := newPair(t, clerkapitest.Options{Users: 30}, clerkapi.Config{})
	p, err := c.ListUsers(context.Background(), 0, 10)
	if err != nil || p.TotalCount != -1 || len(p.Users) != 10 {
		t.Fatalf("bare array: %v total %d", err, p.TotalCount)
	}
	if n, err := c.CountUsers(context.Background()); err != nil || n != 30 {
		t.Errorf("count %d %v", n, err)
	}
	_, c = newPair(t, clerkapitest.Options{Users: 30, Envelope: true}, clerkapi.Config{})
	p, err = c.ListUsers(context.Background(), 20, 500)
	if err != nil || p.TotalCount != 30 || len(p.Users) != 10 || !p.Last() {
		t.Fatalf("envelope: %v total %d, %d users", err, p.TotalCount, len(p.Users))
	}
}

// TestPagingWhileUsersChange shows what ListOrder's comment says happens to
// a +created_at offset pass while users are created and deleted (the fake
// orders as Clerk does: by created_at, ties by id).
func TestPagingWhileUsersChange(t *testing.T) {
	pass := func(t *testing.T, change func(s *clerkapitest.Server, orig []clerkapitest.Entry)) (orig []clerkapitest.Entry, seen map[string]int) {
		s, c := newPair(t, clerkapitest.Options{Users: 1000, Seed: 6}, clerkapi.Config{})
		orig = s.List()
		s.OnList(func(offset, limit int) {
			if offset == 500 {
				change(s, orig)
			}
		})
		seen = map[string]int{}
		for _, u := range listAll(t, c, 500) {
			seen[u.ID]++
		}
		return orig, seen
	}
	t.Run("sign-ups", func(t *testing.T) {
		orig, seen := pass(t, func(s *clerkapitest.Server, _ []clerkapitest.Entry) { s.Generate(700) })
		for _, e := range orig {
			if seen[e.ID] != 1 {
				t.Errorf("user %s seen %d times", e.ID, seen[e.ID])
			}
		}
		if len(seen) != 1700 {
			t.Errorf("%d users seen, want the 1,000 and the 700 new ones", len(seen))
		}
	})
	t.Run("deletion behind the offset", func(t *testing.T) {
		orig, seen := pass(t, func(s *clerkapitest.Server, orig []clerkapitest.Entry) { s.Delete(orig[10].ID) })
		for i, e := range orig {
			if want := map[bool]int{true: 0, false: 1}[i == 500]; seen[e.ID] != want {
				t.Errorf("user %d seen %d times, want %d", i, seen[e.ID], want)
			}
		}
	})
	t.Run("backdated creation", func(t *testing.T) {
		var added string
		orig, seen := pass(t, func(s *clerkapitest.Server, orig []clerkapitest.Entry) {
			u := clerkapitest.UserFrom(clerkgenUser(orig[100].CreatedAt))
			added = u.ID
			if err := s.Put(u); err != nil {
				t.Fatal(err)
			}
		})
		for i, e := range orig {
			if want := map[bool]int{true: 2, false: 1}[i == 499]; seen[e.ID] != want {
				t.Errorf("user %d seen %d times, want %d", i, seen[e.ID], want)
			}
		}
		if seen[added] != 0 {
			t.Errorf("the backdated user was seen")
		}
	})
}
