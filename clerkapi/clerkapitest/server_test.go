package clerkapitest_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkapi/clerkapitest"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk/clerk-sdk-go/v2"
)

func get(t *testing.T, s *clerkapitest.Server, path, key string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL()+path, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

func TestUsersHaveTheShapeOfClerkUsers(t *testing.T) {
	s := clerkapitest.New(clerkapitest.Options{Users: 400, Seed: 7})
	defer s.Close()
	var keys []string
	typ := reflect.TypeFor[clerk.User]()
	for i := range typ.NumField() {
		if tag := strings.Split(typ.Field(i).Tag.Get("json"), ",")[0]; tag != "" && tag != "-" {
			keys = append(keys, tag)
		}
	}
	var phoneOnly, nullNames, google, mfa, meta int
	for _, e := range s.List() {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(e.Raw, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range append(keys, "passkeys", "enterprise_accounts", "mfa_enabled_at", "profile_image_url") {
			if _, ok := m[k]; !ok {
				t.Fatalf("user %s has no %q", e.ID, k)
			}
		}
		var u clerk.User
		if err := json.Unmarshal(e.Raw, &u); err != nil || u.ID != e.ID || u.Object != "user" || u.UpdatedAt != e.UpdatedAt || u.CreatedAt != e.CreatedAt || u.UpdatedAt < u.CreatedAt {
			t.Fatalf("user %s does not decode into clerk.User: %v", e.ID, err)
		}
		if u.PrimaryEmailAddressID == nil {
			phoneOnly++
			if u.PrimaryPhoneNumberID == nil || len(u.PhoneNumbers) == 0 {
				t.Fatalf("user %s has neither email nor phone", e.ID)
			}
		} else if u.EmailAddresses[0].ID != *u.PrimaryEmailAddressID || u.EmailAddresses[0].Verification.Status != "verified" {
			t.Fatalf("user %s: primary email is not its verified address", e.ID)
		}
		if u.FirstName == nil {
			nullNames++
		}
		if len(u.ExternalAccounts) > 0 {
			google++
		}
		if u.TwoFactorEnabled {
			mfa++
		}
		if string(u.PublicMetadata) != "{}" {
			meta++
		}
	}
	if phoneOnly == 0 || nullNames == 0 || google == 0 || mfa == 0 || meta == 0 {
		t.Errorf("no variety: %d phone-only, %d unnamed, %d google, %d mfa, %d with metadata", phoneOnly, nullNames, google, mfa, meta)
	}

	again := clerkapitest.New(clerkapitest.Options{Users: 400, Seed: 7})
	defer again.Close()
	if a, b := s.List(), again.List(); !reflect.DeepEqual(a, b) {
		t.Errorf("same seed, different users")
	}
}

func TestUserFromClerkgen(t *testing.T) {
	g := clerkgen.User{ID: clerkgen.NewID("user"), Email: "ada@example.com", FirstName: "Ada",
		PublicMetadata: map[string]any{"role": "auditor"}, CreatedAt: time.UnixMilli(1000), UpdatedAt: time.UnixMilli(5000)}
	u := clerkapitest.UserFrom(g)
	raw, err := u.Render()
	if err != nil {
		t.Fatal(err)
	}
	var got clerk.User
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != g.ID || got.EmailAddresses[0].EmailAddress != g.Email || *got.PrimaryEmailAddressID != got.EmailAddresses[0].ID ||
		*got.FirstName != "Ada" || got.LastName != nil || string(got.PublicMetadata) != `{"role":"auditor"}` || got.CreatedAt != 1000 || got.UpdatedAt != 5000 {
		t.Errorf("got %s", raw)
	}
}

func TestEndpointsSpeakClerkJSON(t *testing.T) {
	s := clerkapitest.New(clerkapitest.Options{Users: 25, Seed: 8})
	defer s.Close()
	list := s.List()
	key := s.SecretKey()

	status, _, body := get(t, s, "/v1/users?limit=5&offset=3&order_by=%2Bcreated_at", key)
	var page []json.RawMessage
	if status != 200 || json.Unmarshal(body, &page) != nil || len(page) != 5 || !bytes.Equal(page[0], list[3].Raw) {
		t.Errorf("+created_at page: %d %s", status, body)
	}
	_, _, body = get(t, s, "/v1/users", key) // Clerk's defaults: 10, newest first
	if json.Unmarshal(body, &page) != nil || len(page) != 10 || !bytes.Equal(page[0], list[24].Raw) {
		t.Errorf("default page: %s", body)
	}
	_, _, body = get(t, s, "/v1/users?order_by=updated_at&limit=500", key)
	json.Unmarshal(body, &page)
	var last int64
	for _, raw := range page {
		var u struct {
			UpdatedAt int64 `json:"updated_at"`
		}
		json.Unmarshal(raw, &u)
		if u.UpdatedAt < last {
			t.Errorf("updated_at order broken")
		}
		last = u.UpdatedAt
	}
	if len(page) != 25 {
		t.Errorf("%d users", len(page))
	}
	if status, _, body = get(t, s, "/v1/users/count", key); status != 200 || string(body) != `{"object":"total_count","total_count":25}` {
		t.Errorf("count: %d %s", status, body)
	}
	if status, _, body = get(t, s, "/v1/users/"+list[7].ID, key); status != 200 || !bytes.Equal(body, list[7].Raw) {
		t.Errorf("get: %d", status)
	}

	for _, c := range []struct {
		path, key string
		status    int
		code      string
	}{
		{"/v1/users/user_nope", key, 404, "resource_not_found"},
		{"/v1/users", "", 401, "authentication_invalid"},
		{"/v1/users", "sk_test_wrong", 401, "authentication_invalid"},
		{"/v1/users?limit=501", key, 422, "form_param_value_invalid"},
		{"/v1/users?offset=-1", key, 422, "form_param_value_invalid"},
		{"/v1/users?order_by=username", key, 422, "form_param_value_invalid"},
	} {
		status, h, body := get(t, s, c.path, c.key)
		var e clerk.APIErrorResponse
		if status != c.status || h.Get("Content-Type") != "application/json" || json.Unmarshal(body, &e) != nil ||
			len(e.Errors) != 1 || e.Errors[0].Code != c.code || e.Errors[0].Message == "" || e.Errors[0].LongMessage == "" || e.TraceID == "" {
			t.Errorf("%s: %d %s", c.path, status, body)
		}
	}
}

func TestEnvelope(t *testing.T) {
	s := clerkapitest.New(clerkapitest.Options{Users: 12, Envelope: true})
	defer s.Close()
	_, _, body := get(t, s, "/v1/users?limit=5&offset=10", s.SecretKey())
	var l clerk.UserList
	if err := json.Unmarshal(body, &l); err != nil || l.TotalCount != 12 || len(l.Users) != 2 {
		t.Errorf("%v %s", err, body)
	}
}

func TestFaultsAndRecords(t *testing.T) {
	s := clerkapitest.New(clerkapitest.Options{Users: 3})
	defer s.Close()
	s.Inject(1, clerkapitest.Fault{Status: 429, RetryAfter: "7"})
	s.Inject(1, clerkapitest.Fault{Status: 502})
	s.Inject(1, clerkapitest.Fault{Status: 503, Delay: 50 * time.Millisecond})
	status, h, body := get(t, s, "/v1/users", "") // faults come before authentication
	var e clerk.APIErrorResponse
	if status != 429 || h.Get("Retry-After") != "7" || json.Unmarshal(body, &e) != nil || e.Errors[0].Code != "too_many_requests" {
		t.Errorf("429: %d %v %s", status, h, body)
	}
	if status, h, body = get(t, s, "/v1/users", ""); status != 502 || !strings.Contains(h.Get("Content-Type"), "text/html") || !bytes.Contains(body, []byte("502 Bad Gateway")) {
		t.Errorf("502: %d %s", status, body)
	}
	start := time.Now()
	if status, _, _ = get(t, s, "/v1/users", ""); status != 503 || time.Since(start) < 50*time.Millisecond {
		t.Errorf("503: %d", status)
	}
	if status, _, _ = get(t, s, "/v1/users", ""); status != 401 {
		t.Errorf("after the faults: %d", status)
	}
	s.Inject(1, clerkapitest.Fault{Drop: true})
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} // see Fault.Drop
	req, _ := http.NewRequest(http.MethodGet, s.URL()+"/v1/users", nil)
	if resp, err := fresh.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("dropped connection answered %d", resp.StatusCode)
	}
	s.Inject(1, clerkapitest.Fault{Truncate: true})
	req, _ = http.NewRequest(http.MethodGet, s.URL()+"/v1/users", nil)
	if resp, err := s.Client().Do(req); err != nil {
		t.Errorf("truncated: %v", err)
	} else {
		_, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || err == nil {
			t.Errorf("truncated body read whole: %d %v", resp.StatusCode, err)
		}
	}
	reqs := s.Requests()
	if len(reqs) != 6 || s.RequestCount() != 6 {
		t.Fatalf("%d requests recorded", len(reqs))
	}
	for i, want := range []struct {
		status int
		fault  bool
	}{{429, true}, {502, true}, {503, true}, {401, false}, {0, true}, {0, true}} {
		if r := reqs[i]; r.Status != want.status || r.Fault != want.fault || r.Path != "/v1/users" || r.Authorized || r.At.IsZero() {
			t.Errorf("request %d: %+v", i, r)
		}
	}
}

func TestMutationsAndConcurrentUse(t *testing.T) {
	s := clerkapitest.New(clerkapitest.Options{Users: 200, Seed: 9})
	defer s.Close()
	key := s.SecretKey()
	ids := s.Generate(5)
	if s.Len() != 205 || s.List()[204].ID != ids[4] {
		t.Fatalf("generated users are not the newest")
	}
	if err := s.Update(ids[0], func(u *clerkapitest.User) { u.FirstName = nil }); err != nil {
		t.Fatal(err)
	}
	u, _ := s.Get(ids[0])
	if u.FirstName != nil || u.UpdatedAt <= s.List()[200].CreatedAt {
		t.Errorf("update: %+v", u)
	}
	if !s.Delete(ids[1]) || s.Delete(ids[1]) || s.Len() != 204 {
		t.Errorf("delete")
	}
	if err := s.PutRaw(ids[2], []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	if _, _, body := get(t, s, "/v1/users/"+ids[2], key); string(body) != "not json" {
		t.Errorf("raw: %s", body)
	}
	if s.Update(ids[2], func(*clerkapitest.User) {}) == nil || s.PutRaw("user_nope", nil) == nil || s.Put(clerkapitest.User{}) == nil {
		t.Errorf("bad mutations accepted")
	}

	// Lists, gets and mutations at once (run with -race).
	var hooked sync.WaitGroup
	s.OnList(func(offset, limit int) {
		hooked.Add(1)
		defer hooked.Done()
		s.Generate(1)
	})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 20 {
				switch (g + i) % 3 {
				case 0:
					get(t, s, "/v1/users?limit=50&offset=100", key)
				case 1:
					s.Update(s.List()[i].ID, func(u *clerkapitest.User) { u.Banned = !u.Banned })
				case 2:
					s.Delete(s.List()[i].ID)
					s.Inject(1, clerkapitest.Fault{Status: 500})
					get(t, s, "/v1/users/count", key)
				}
			}
		})
	}
	wg.Wait()
	hooked.Wait()
	list := s.List()
	for i := 1; i < len(list); i++ {
		if a, b := list[i-1], list[i]; a.CreatedAt > b.CreatedAt || a.CreatedAt == b.CreatedAt && a.ID >= b.ID {
			t.Fatalf("list out of order at %d", i)
		}
	}
}

func TestGzip(t *testing.T) {
	s := clerkapitest.New(clerkapitest.Options{Users: 50, Gzip: true})
	defer s.Close()
	raw := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	req, _ := http.NewRequest(http.MethodGet, s.URL()+"/v1/users?limit=50", nil)
	req.Header.Set("Authorization", "Bearer "+s.SecretKey())
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := raw.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	zr, err := gzip.NewReader(resp.Body)
	if err != nil || resp.Header.Get("Content-Encoding") != "gzip" || resp.ContentLength != -1 {
		t.Fatalf("not gzipped: %v %v", err, resp.Header)
	}
	body, err := io.ReadAll(zr)
	var page []json.RawMessage
	if err != nil || json.Unmarshal(body, &page) != nil || len(page) != 50 {
		t.Errorf("gzipped page: %v", err)
	}
}
