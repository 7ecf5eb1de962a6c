package clerkapi

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// checkAgainstEncodingJSON parses body as a page and checks the result
// against encoding/json: an error exactly when the body is not valid JSON
// (or not a list), the same elements byte for byte, and for every user the
// id and times json.Unmarshal reads from its bytes (the ledger's fold reads
// user objects with encoding/json), which must be UTF-8.
func checkAgainstEncodingJSON(t *testing.T, body []byte) {
	t.Helper()
	var p Page
	p.TotalCount = -1
	err := parsePage(body, &p)
	if !json.Valid(body) {
		if err == nil {
			t.Fatalf("parsePage accepted invalid JSON %q", body)
		}
		return
	}
	var elems []json.RawMessage
	switch trimmed := bytes.TrimSpace(body); trimmed[0] {
	case '[':
		if err != nil {
			t.Fatalf("parsePage(%q): %v", body, err)
		}
		if e := json.Unmarshal(body, &elems); e != nil {
			t.Fatalf("encoding/json: %v", e)
		}
	case '{':
		if err != nil {
			return // an object that is not an unambiguous envelope
		}
		var env struct {
			Data       []json.RawMessage `json:"data"`
			TotalCount json.RawMessage   `json:"total_count"`
		}
		if e := json.Unmarshal(body, &env); e != nil || env.Data == nil {
			t.Fatalf("parsePage accepted %q as an envelope; encoding/json: %v", body, e)
		}
		var total int64
		if p.TotalCount >= 0 && (json.Unmarshal(env.TotalCount, &total) != nil || total != p.TotalCount) {
			t.Fatalf("%q: total %d, encoding/json reads %s", body, p.TotalCount, env.TotalCount)
		}
		elems = env.Data
	default:
		if err == nil {
			t.Fatalf("parsePage accepted %q", body)
		}
		return
	}
	if p.Count != len(elems) || len(p.Users)+len(p.Failures) != len(elems) {
		t.Fatalf("%q: count %d, %d users + %d failures, encoding/json sees %d elements", body, p.Count, len(p.Users), len(p.Failures), len(elems))
	}
	ui, fi := 0, 0
	for i, e := range elems {
		if fi < len(p.Failures) && p.Failures[fi].Index == i {
			if !bytes.Equal(p.Failures[fi].Raw, e) {
				t.Fatalf("element %d: failure bytes %q, want %q", i, p.Failures[fi].Raw, e)
			}
			fi++
			continue
		}
		u := p.Users[ui]
		ui++
		if !bytes.Equal(u.Raw, e) || !utf8.Valid(u.Raw) {
			t.Fatalf("element %d: bytes %q, want %q (UTF-8)", i, u.Raw, e)
		}
		var v struct {
			ID        string `json:"id"`
			Object    string `json:"object"`
			CreatedAt int64  `json:"created_at"`
			UpdatedAt int64  `json:"updated_at"`
		}
		if err := json.Unmarshal(e, &v); err != nil {
			t.Fatalf("element %d %q accepted as a user; encoding/json: %v", i, e, err)
		}
		if v.ID != u.ID || v.CreatedAt != u.CreatedAt || v.UpdatedAt != u.UpdatedAt || (v.Object != "" && v.Object != "user") {
			t.Fatalf("element %d %q read as %s %d %d; encoding/json reads %+v", i, e, u.ID, u.CreatedAt, u.UpdatedAt, v)
		}
	}
}

var scanSeeds = []string{
	`[]`,
	` [ ] `,
	`[{"id":"user_1","object":"user","created_at":1,"updated_at":2}]`,
	`[{"id":"user_1","object":"user","created_at":1,"updated_at":2} , {"id":"user_2","created_at":3,"updated_at":4}]`,
	// values that look like structure inside strings, escapes, nested ids
	`[{"first_name":"a\"]},{","id":"user_1","meta":{"id":"nested","x":[{"id":1}]},"created_at":1,"updated_at":2,"s":"\\"}]`,
	`[{"id":"user_\u0031","created_at":1,"updated_at":2}]`,
	`[{"\u0069d":"user_1","created_at":1,"updated_at":2}]`,
	// malformed users
	`["oops",1,null,true,[],{}]`,
	`[{"id":42,"created_at":1,"updated_at":2}]`,
	`[{"id":"user_1","id":"user_2","created_at":1,"updated_at":2}]`,
	`[{"id":"user_1","ID":"user_2","created_at":1,"updated_at":2}]`,
	`[{"ID":"user_2","created_at":1,"updated_at":2}]`,
	`[{"id":"user_1","created_at":1,"Updated_At":5,"updated_at":2}]`,
	`[{"id":"user_1","created_at":1.5,"updated_at":2}]`,
	`[{"id":"user_1","created_at":1e3,"updated_at":2}]`,
	`[{"id":"user_1","created_at":null,"updated_at":2}]`,
	`[{"id":"user_1","created_at":1}]`,
	`[{"id":"user_1","object":"organization","created_at":1,"updated_at":2}]`,
	`[{"id":"","created_at":1,"updated_at":2}]`,
	`[{"id":"user/../x","created_at":1,"updated_at":2}]`,
	`[{"id":"user_\u0000","created_at":1,"updated_at":2}]`,
	`[{"id":"user_1","created_at":99999999999999999999,"updated_at":2}]`,
	`[{"id":"user_1","created_at":-5,"updated_at":-0}]`,
	// envelopes and non-lists
	`{"data":[{"id":"user_1","created_at":1,"updated_at":2}],"total_count":7}`,
	`{"total_count":7}`,
	`{"errors":[]}`,
	`{"data":[{"id":"user_1","created_at":1,"updated_at":2}],"DATA":[]}`,
	`{"data":[],"data":[{"id":"user_1","created_at":1,"updated_at":2}]}`,
	`{"data":null,"total_count":1}`,
	`{"data":[1],"total_count":1.5}`,
	"[{\"id\":\"user_1\",\"first_name\":\"\xff\",\"created_at\":1,\"updated_at\":2}]",
	"[{\"id\":\"user_1\",\"first_name\":\"Zo\xc3\xab\",\"created_at\":1,\"updated_at\":2}]",
	// not lists, not JSON
	`"x"`,
	`null`,
	`12`,
	``,
	`[{"id":"user_1"`,
	`[1,]`,
	`[1 2]`,
	`[01]`,
	`[1.]`,
	`[-]`,
	`[1e]`,
	`["\x"]`,
	`["\u12G4"]`,
	"[\"tab\there\"]",
	`[tru]`,
	`[{"a" 1}]`,
	`[{"a":1,}]`,
	`[{1:2}]`,
	`[] []`,
	`[{"a":[}]`,
}

func TestParsePageAgreesWithEncodingJSON(t *testing.T) {
	for _, s := range scanSeeds {
		checkAgainstEncodingJSON(t, []byte(s))
	}
	// encoding/json's nesting limit: 10,000 containers.
	for _, n := range []int{9999, 10000, 10001} {
		checkAgainstEncodingJSON(t, []byte(strings.Repeat("[", n)+strings.Repeat("]", n)))
	}
	var p Page
	if err := parsePage([]byte("[{\"id\":\"user_1\",\"first_name\":\"\xff\",\"created_at\":1,\"updated_at\":2}]"), &p); err != nil ||
		len(p.Failures) != 1 || p.Failures[0].ID != "user_1" || !strings.Contains(p.Failures[0].Err.Error(), "not valid UTF-8") {
		t.Errorf("invalid UTF-8: %v %+v", err, p.Failures)
	}
}

func FuzzParsePage(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkAgainstEncodingJSON(t, body) })
}

func TestParseUserReasons(t *testing.T) {
	for raw, want := range map[string]string{
		`"oops"`: "it is a string, not an object",
		`{"id":42,"created_at":1,"updated_at":2}`:                          "id is a number, not a string",
		`{"created_at":1,"updated_at":2}`:                                  "it has no id",
		`{"id":"user_1","updated_at":2}`:                                   "it has no created_at",
		`{"id":"user_1","created_at":1}`:                                   "it has no updated_at",
		`{"id":"user_1","created_at":1,"updated_at":"2"}`:                  "updated_at is a string, not a number",
		`{"id":"user_1","created_at":1,"updated_at":2.5}`:                  "updated_at is not an integer",
		`{"id":"user_1","id":"user_1","created_at":1,"updated_at":2}`:      "it has two id keys",
		`{"id":"user_1","Id":"user_2","created_at":1,"updated_at":2}`:      `it has a key "Id" that differs only in case from a field`,
		`{"id":"user_1","object":"session","created_at":1,"updated_at":2}`: `its object is not "user"`,
		`{"id":"user 1","created_at":1,"updated_at":2}`:                    "id is not a Clerk id",
	} {
		v := validator{b: []byte(raw)}
		end, _, _, reason := parseUser(&v, 0, 0)
		if end != len(raw) {
			t.Errorf("%s: end %d", raw, end)
		}
		if reason != want {
			t.Errorf("%s: %q, want %q", raw, reason, want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	h := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	for _, c := range []struct {
		h    http.Header
		want time.Duration
		ok   bool
	}{
		{h(), 0, false},
		{h("Retry-After", "7"), 7 * time.Second, true},
		{h("Retry-After", " 0 "), 0, true},
		{h("Retry-After", "-3"), 0, false},
		{h("Retry-After", "soon"), 0, false},
		{h("Retry-After", "99999999999999"), 24 * time.Hour, true},
		{h("Retry-After", now.Add(90*time.Second).Format(http.TimeFormat)), 90 * time.Second, true},
		{h("Retry-After", now.Add(-time.Minute).Format(http.TimeFormat)), 0, true},
		// measured from the server's Date, not the local clock
		{h("Retry-After", now.Add(time.Hour+5*time.Second).Format(http.TimeFormat), "Date", now.Add(time.Hour).Format(http.TimeFormat)), 5 * time.Second, true},
	} {
		got, ok := retryAfter(c.h, now)
		if got != c.want || ok != c.ok {
			t.Errorf("%v: %v %v, want %v %v", c.h, got, ok, c.want, c.ok)
		}
	}
}

func TestBackoffGrowsWithinBounds(t *testing.T) {
	c := &Client{baseBackoff: 100 * time.Millisecond, maxBackoff: time.Second}
	for n, d := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 64: time.Second} {
		for range 50 {
			if got := c.backoff(n); got < d/2 || got > d {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, got, d/2, d)
			}
		}
	}
}

func TestDefaultRateLimits(t *testing.T) {
	for key, want := range map[string]rate.Limit{
		"sk_test_" + strings.Repeat("a", 30): 10,  // 100 per 10 s
		"sk_live_" + strings.Repeat("a", 30): 100, // 1,000 per 10 s
	} {
		c, err := New(Config{SecretKey: key})
		if err != nil {
			t.Fatal(err)
		}
		if c.limiter == nil || c.limiter.Limit() != want || c.limiter.Burst() != 1 {
			t.Errorf("%s…: limiter %v", key[:8], c.limiter)
		}
	}
	c, _ := New(Config{SecretKey: "sk_live_" + strings.Repeat("a", 30), RateLimit: rate.Inf})
	if c.limiter != nil {
		t.Errorf("rate.Inf left a limiter")
	}
}

func TestReadBodyBoundsAndReuse(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 100_000)
	buf := make([]byte, 0, 200_000)
	got, err := readBody(bytes.NewReader(body), -1, buf, 1<<20)
	if err != nil || !bytes.Equal(got, body) || &got[0] != &buf[:1][0] {
		t.Errorf("unknown length: %v, reused %v", err, err == nil && &got[0] == &buf[:1][0])
	}
	if _, err := readBody(bytes.NewReader(body), -1, nil, 50_000); err != errTooLarge {
		t.Errorf("over the limit, unknown length: %v", err)
	}
	if _, err := readBody(bytes.NewReader(body), int64(len(body)), nil, 50_000); err != errTooLarge {
		t.Errorf("over the limit, known length: %v", err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		n := r.IntN(300_000)
		b := bytes.Repeat([]byte("y"), n)
		got, err := readBody(bytes.NewReader(b), int64(n), nil, 1<<20)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("length %d: %v", n, err)
		}
	}
}

func TestFoldsTo(t *testing.T) {
	names := []string{"id", "object", "created_at", "updated_at", "data", "total_count"}
	for key, want := range map[string]bool{
		"id": true, "ID": true, "Id": true, "iD": true, "OBJECT": true, "Created_At": true, "UPDATED_AT": true,
		"DATA": true, "Total_Count": true, "ida": false, "image_url": false, "": false, "first_name": false,
		"ıd": false, "İd": false, // Turkish dotless/dotted i do not fold to i
	} {
		if got := foldsTo([]byte(key), names...); got != want {
			t.Errorf("%q: %v", key, got)
		}
	}
}
