package domain_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/lib/pq"
)

// storableJSONCases: raw JSON, what StorableJSON makes of it, and whether
// PostgreSQL's jsonb refuses the raw form.
var storableJSONCases = []struct {
	raw, want string
	refused   bool
}{
	{`{"k":"a\u0000b"}`, `{"k":"a\ufffdb"}`, true},
	{`{"k":"\ud800"}`, `{"k":"\ufffd"}`, true},
	{`{"k":"\udc00x"}`, `{"k":"\ufffdx"}`, true},
	{`{"k\u0000":1}`, `{"k\ufffd":1}`, true},
	{`{"k":"\uD800\uD800\uDC00"}`, `{"k":"\ufffd\uD800\uDC00"}`, true}, // high, then a pair
	{`{"k":"\ud800\u0041"}`, `{"k":"\ufffd\u0041"}`, true},
	{`{"k":"\ud800"}` + "\n", `{"k":"\ufffd"}` + "\n", true},
	{`["\udbff\udfff","\ud83d\ude00"]`, `["\udbff\udfff","\ud83d\ude00"]`, false}, // pairs are kept
	{`{"k":"\\u0000"}`, `{"k":"\\u0000"}`, false},                                 // an escaped backslash, then text
	{`{"k":"\\\u0000"}`, `{"k":"\\\ufffd"}`, true},
	{`{"k":"\u0001\ufffd\uffff\"\/\n"}`, `{"k":"\u0001\ufffd\uffff\"\/\n"}`, false},
	{`{"n":1.50e3,"a":[true,null],"a":2}`, `{"n":1.50e3,"a":[true,null],"a":2}`, false},
	{`"\u0000"`, `"\ufffd"`, true},
	{`{}`, `{}`, false},
}

func TestStorableJSON(t *testing.T) {
	for _, c := range storableJSONCases {
		in := []byte(c.raw)
		got := domain.StorableJSON(in)
		if string(got) != c.want {
			t.Errorf("StorableJSON(%s) = %s, want %s", c.raw, got, c.want)
		}
		if c.raw == c.want && &got[0] != &in[0] {
			t.Errorf("StorableJSON(%s) copied a document it keeps as it is", c.raw)
		}
	}
	// Invalid UTF-8 (never in a stored body: ParseEnvelope refuses it) is
	// replaced too, so the result is always valid text.
	if got := domain.StorableJSON([]byte("{\"k\":\"a\xffb\"}")); string(got) != "{\"k\":\"a\uFFFDb\"}" {
		t.Errorf("invalid UTF-8: %q", got)
	}
}

func TestStorableText(t *testing.T) {
	for in, want := range map[string]string{
		"Ada":          "Ada",
		"":             "",
		"Ad\x00a":      "Ad\uFFFDa",
		"\x00\x00":     "\uFFFD\uFFFD",
		"a\xff\xfeb":   "a\uFFFD\uFFFDb",
		"Zoë \uFFFD 😀": "Zoë \uFFFD 😀",
	} {
		if got := domain.StorableText(in); got != want {
			t.Errorf("StorableText(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzStorableJSON checks, for any valid JSON document, that StorableJSON's
// result is valid JSON with the same tokens in the same order, except that
// strings (keys and values) have U+FFFD for NUL (encoding/json already
// decodes unpaired surrogates to U+FFFD); that it is its own fixed point;
// and that a UTF-8 document without \u escapes is returned byte for byte.
func FuzzStorableJSON(f *testing.F) {
	for _, c := range storableJSONCases {
		f.Add([]byte(c.raw))
	}
	f.Add([]byte(`{"a":{"b":["\u0000",{"\udfff":"\ud800\udbff\udc00"}]},"c":-0.0e-7}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		out := domain.StorableJSON(b)
		if !json.Valid(out) {
			t.Fatalf("StorableJSON(%q) = %q: not JSON", b, out)
		}
		want, got := tokens(t, b), tokens(t, out)
		if len(want) != len(got) {
			t.Fatalf("StorableJSON(%q) = %q: %d tokens, want %d", b, out, len(got), len(want))
		}
		for i := range want {
			w := want[i]
			if s, ok := w.(string); ok {
				w = strings.ReplaceAll(s, "\x00", "\uFFFD")
			}
			if got[i] != w {
				t.Fatalf("StorableJSON(%q) = %q: token %d is %#v, want %#v", b, out, i, got[i], w)
			}
		}
		if again := domain.StorableJSON(out); !bytes.Equal(again, out) {
			t.Fatalf("not a fixed point: %q -> %q -> %q", b, out, again)
		}
		if utf8.Valid(b) && !bytes.Contains(b, []byte(`\u`)) && !bytes.Equal(out, b) {
			t.Fatalf("StorableJSON(%q) = %q: changed a UTF-8 document without \\u escapes", b, out)
		}
	})
}

// tokens returns b's JSON tokens in order (numbers as written).
func tokens(t *testing.T, b []byte) []any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out []any
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("tokens of %q: %v", b, err)
		}
		out = append(out, tok)
	}
}

// userBody is a user event whose data fields are the given raw JSON texts.
func userBody(typ, id, first, username, email, meta string) []byte {
	return fmt.Appendf(nil, `{"type":%q,"object":"event","timestamp":5000,"data":{"id":%s,"object":"user",`+
		`"first_name":%s,"last_name":"L\u0000","username":%s,"image_url":"https://img.example/\u0000",`+
		`"primary_email_address_id":"idn_1","email_addresses":[{"id":"idn_1","email_address":%s}],`+
		`"public_metadata":%s,"created_at":1000,"updated_at":2000}}`, typ, id, first, username, email, meta)
}

func TestApplyKeepsStorableText(t *testing.T) {
	e := domain.Event{Position: 1, DeliveryID: "msg_1", Type: "user.created", UserID: "user_1", OccurredAt: time.UnixMilli(5000),
		Body: userBody("user.created", `"user_1"`, `"Ad\u0000a"`, `"\ud800ada"`, `"a\u0000@example.com"`, `{"k\u0000":"\udc00","ok":"\ud83d\ude00"}`)}
	u, err := domain.Apply(domain.User{}, e)
	if err != nil {
		t.Fatal(err)
	}
	want := domain.User{ID: "user_1", FirstName: "Ad\uFFFDa", LastName: "L\uFFFD", Username: "\uFFFDada", Email: "a\uFFFD@example.com",
		ImageURL: "https://img.example/\uFFFD", PublicMetadata: json.RawMessage(`{"k\ufffd":"\ufffd","ok":"\ud83d\ude00"}`)}
	if u.ID != want.ID || u.FirstName != want.FirstName || u.LastName != want.LastName || u.Username != want.Username ||
		u.Email != want.Email || u.ImageURL != want.ImageURL || string(u.PublicMetadata) != string(want.PublicMetadata) ||
		u.Name() != "Ad\uFFFDa L\uFFFD" {
		t.Fatalf("folded %+v", u)
	}
	// The point-in-time view folds with Fold: the same values.
	if f, errs := domain.Fold([]domain.Event{e}); len(errs) != 0 || f.FirstName != u.FirstName || string(f.PublicMetadata) != string(u.PublicMetadata) {
		t.Fatalf("Fold: %+v %v", f, errs)
	}

	// A NUL in the id makes the event poison: the id is a key, never rewritten.
	for _, typ := range []string{"user.created", "user.deleted"} {
		bad := e
		bad.Type, bad.UserID = typ, ""
		bad.Body = userBody(typ, `"user_\u0000x"`, `"A"`, `null`, `"a@example.com"`, `{}`)
		if got, err := domain.Apply(domain.User{}, bad); domain.ErrorCode(err) != domain.EINVALID ||
			!strings.Contains(err.Error(), "NUL") || strings.IndexByte(err.Error(), 0) >= 0 || got.Exists() {
			t.Errorf("%s with a NUL in the id: %+v, %v", typ, got, err)
		}
	}
}

// TestStorableValuesArePostgresProof runs the rule against PostgreSQL
// itself: each raw form the cases mark refused is refused by jsonb (so the
// cases are real), and every StorableJSON and StorableText result is
// accepted, as jsonb and as text.
func TestStorableValuesArePostgresProof(t *testing.T) {
	t.Parallel()
	db := schematest.Open(t, schematest.NewURL(t))
	ctx := context.Background()
	refused := func(q string, v string) error {
		var out string
		return db.QueryRowContext(ctx, q, v).Scan(&out)
	}
	for _, c := range storableJSONCases {
		err := refused(`SELECT $1::jsonb::text`, c.raw)
		var pqErr *pq.Error
		if c.refused != (err != nil) || (err != nil && (!errors.As(err, &pqErr) || pqErr.Code.Class() != "22")) {
			t.Errorf("PostgreSQL on raw %s: %v (case says refused: %v)", c.raw, err, c.refused)
		}
		if err := refused(`SELECT $1::jsonb::text`, string(domain.StorableJSON([]byte(c.raw)))); err != nil {
			t.Errorf("PostgreSQL refuses StorableJSON(%s): %v", c.raw, err)
		}
	}
	for _, s := range []string{"Ad\x00a", "\x00", "a\xffb"} {
		if err := refused(`SELECT $1::text`, s); err == nil {
			t.Errorf("PostgreSQL took %q as text: the case is not real", s)
		}
		if err := refused(`SELECT $1::text`, domain.StorableText(s)); err != nil {
			t.Errorf("PostgreSQL refuses StorableText(%q): %v", s, err)
		}
	}
}
