package domain_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

func userEvent(pos int64, typ, id string, updatedAt int64, first, last, email string) domain.Event {
	var data map[string]any
	if typ == "user.deleted" {
		data = map[string]any{"id": id, "object": "user", "deleted": true}
	} else {
		var primary any
		emails := []any{}
		if email != "" {
			primary = "idn_1"
			emails = append(emails, map[string]any{"id": "idn_1", "email_address": email})
		}
		nullable := func(s string) any {
			if s == "" {
				return nil
			}
			return s
		}
		data = map[string]any{
			"id": id, "object": "user", "first_name": nullable(first), "last_name": nullable(last),
			"primary_email_address_id": primary, "email_addresses": append([]any{map[string]any{"id": "idn_0", "email_address": "other@example.com"}}, emails...),
			"created_at": 1000, "updated_at": updatedAt, "public_metadata": map[string]any{"n": updatedAt},
		}
	}
	body, _ := json.Marshal(map[string]any{"type": typ, "object": "event", "timestamp": 5000 + pos, "data": data})
	return domain.Event{Position: pos, DeliveryID: fmt.Sprintf("msg_%d", pos), Type: typ, UserID: id, Body: body,
		OccurredAt: time.UnixMilli(5000 + pos)}
}

func TestFoldPicksNewestAndUsesPrimaryEmail(t *testing.T) {
	events := []domain.Event{
		userEvent(1, "user.created", "user_1", 1000, "Ada", "", "ada@example.com"),
		userEvent(2, "user.updated", "user_1", 3000, "Ada", "Lovelace", "ada@lovelace.org"),
		userEvent(3, "user.updated", "user_1", 2000, "Old", "Name", "old@example.com"), // late, older
	}
	u, errs := domain.Fold(events)
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	if u.FirstName != "Ada" || u.LastName != "Lovelace" || u.Email != "ada@lovelace.org" || u.Name() != "Ada Lovelace" {
		t.Errorf("folded %+v", u)
	}
	if !u.UpdatedAt.Equal(time.UnixMilli(3000)) || !u.CreatedAt.Equal(time.UnixMilli(1000)) {
		t.Errorf("times %v %v", u.CreatedAt, u.UpdatedAt)
	}
}

func TestFoldNamesWithoutNulls(t *testing.T) {
	for _, c := range []struct{ first, last, email, want string }{
		{"", "", "", "user_1"},
		{"Ada", "", "", "Ada"},
		{"", "Lovelace", "", "Lovelace"},
		{"", "", "a@example.com", "a@example.com"},
	} {
		u, _ := domain.Fold([]domain.Event{userEvent(1, "user.created", "user_1", 1, c.first, c.last, c.email)})
		if u.Name() != c.want {
			t.Errorf("%+v: name %q, want %q", c, u.Name(), c.want)
		}
	}
	phoneOnly, _ := domain.Fold([]domain.Event{userEvent(1, "user.created", "user_p", 1, "", "", "")})
	if phoneOnly.Email != "" {
		t.Errorf("phone-only user got email %q (email_addresses[0] is not primary)", phoneOnly.Email)
	}
}

func TestFoldTombstoneIsAbsorbing(t *testing.T) {
	created := userEvent(1, "user.created", "user_1", 1000, "Ada", "L", "a@example.com")
	deleted := userEvent(2, "user.deleted", "user_1", 0, "", "", "")
	lateUpdate := userEvent(3, "user.updated", "user_1", 9000, "Zombie", "", "z@example.com")
	u, _ := domain.Fold([]domain.Event{created, deleted, lateUpdate})
	if !u.Deleted || u.Email != "" || u.FirstName != "" || u.Name() != "user_1" {
		t.Errorf("tombstone %+v", u)
	}
}

// Any permutation of any multiset of a history folds to the same user.
func TestFoldIsOrderInsensitiveAndIdempotent(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 300 {
		var hist []domain.Event
		n := 1 + r.IntN(8)
		for i := range n {
			typ := "user.updated"
			switch {
			case i == 0:
				typ = "user.created"
			case r.IntN(10) == 0:
				typ = "user.deleted"
			}
			// Repeated updated_at values exercise the tie-break.
			hist = append(hist, userEvent(int64(i+1), typ, "user_1", int64(1000+r.IntN(4)*1000), fmt.Sprint("F", i), "L", fmt.Sprintf("e%d@example.com", i)))
		}
		want, _ := domain.Fold(hist)
		for range 10 {
			shuffled := append([]domain.Event(nil), hist...)
			for range r.IntN(4) {
				shuffled = append(shuffled, hist[r.IntN(len(hist))])
			}
			r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			got, _ := domain.Fold(shuffled)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("trial %d: permutation folds to\n%+v\nwant\n%+v", trial, got, want)
			}
		}
	}
}

func TestApplyPoisonAndOtherTypes(t *testing.T) {
	u := domain.User{ID: "user_1", FirstName: "Ada"}
	for _, body := range []string{`{"type":"user.updated","data":[]}`, `{"type":"user.updated","data":{"id":""}}`, `not json`} {
		got, err := domain.Apply(u, domain.Event{Type: "user.updated", Body: []byte(body)})
		if domain.ErrorCode(err) != domain.EINVALID || !reflect.DeepEqual(got, u) {
			t.Errorf("%s: %v, %+v", body, err, got)
		}
	}
	got, err := domain.Apply(u, domain.Event{Type: "session.created", Body: []byte(`garbage`)})
	if err != nil || !reflect.DeepEqual(got, u) {
		t.Errorf("session event changed the user: %v", err)
	}
}

func TestParseEnvelopeAndSubject(t *testing.T) {
	cases := []struct {
		body, subject string
		ok            bool
	}{
		{`{"type":"user.created","data":{"id":"user_1"}}`, "user_1", true},
		{`{"type":"session.created","data":{"id":"sess_1","user_id":"user_2"}}`, "user_2", true},
		{`{"type":"organizationMembership.created","data":{"id":"m","public_user_data":{"user_id":"user_3"}}}`, "user_3", true},
		{`{"type":"organization.created","data":{"id":"org_1","created_by":"user_4"}}`, "", true},
		// A subject field of another type is skipped, not the subject.
		{`{"type":"session.created","data":{"id":"sess_1","user_id":"user_5","public_user_data":"n/a"}}`, "user_5", true},
		{`{"type":"user.updated","data":{"id":"user_6","user_id":6,"payer":[1]}}`, "user_6", true},
		{`{"type":"session.created","data":{"id":"sess_1","user_id":7,"public_user_data":{"user_id":"user_7"}}}`, "user_7", true},
		{`{"type":"user.created"}`, "", false},
		{`{"data":{}}`, "", false},
		{`{"type":"user.created","data":null}`, "", false},
		{`{"type":"user.created","data":{},"timestamp":-1}`, "", false},
		{`[]`, "", false},
		{"\xff", "", false},
	}
	for _, c := range cases {
		env, err := domain.ParseEnvelope([]byte(c.body))
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v", c.body, err)
			continue
		}
		if err != nil {
			if domain.ErrorCode(err) != domain.EINVALID {
				t.Errorf("%s: code %s", c.body, domain.ErrorCode(err))
			}
			continue
		}
		if s := env.SubjectUserID(); s != c.subject {
			t.Errorf("%s: subject %q, want %q", c.body, s, c.subject)
		}
	}
}

func TestChainHashAndDigest(t *testing.T) {
	e := userEvent(1, "user.created", "user_1", 1, "A", "B", "c@example.com")
	h1 := domain.ChainHash(nil, e)
	if h1 != domain.ChainHash(make([]byte, 32), e) {
		t.Error("nil and zero prev differ")
	}
	e2 := e
	e2.Body = append([]byte(nil), e.Body...)
	e2.Body[len(e2.Body)-2] ^= 1
	if domain.ChainHash(nil, e2) == h1 {
		t.Error("changing one body byte kept the hash")
	}
	if domain.ChainHash(h1[:], e) == h1 {
		t.Error("prev hash not covered")
	}
	d := domain.Digest{Position: 42, Hash: h1}
	back, err := domain.ParseDigest(d.String())
	if err != nil || back != d {
		t.Errorf("round trip: %v %v", back, err)
	}
	for _, bad := range []string{"", "42", "x:ab", "0:" + fmt.Sprintf("%x", h1), "42:zz", "42:abcd"} {
		if _, err := domain.ParseDigest(bad); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("ParseDigest(%q) = %v", bad, err)
		}
	}
}

// An event stored for one user whose data names another is poison in the
// fold itself, so the projector, rebuild, check and point-in-time all skip
// it alike (it never reaches another user's state).
func TestFoldRefusesEventStoredForAnotherUser(t *testing.T) {
	good := userEvent(1, "user.created", "user_1", 1000, "Ada", "", "ada@example.com")
	bad := userEvent(2, "user.updated", "user_2", 2000, "Mallory", "", "m@example.com")
	bad.UserID = "user_1" // the column says user_1, the data user_2
	u, errs := domain.Fold([]domain.Event{good, bad})
	if len(errs) != 1 || domain.ErrorCode(errs[0]) != domain.EINVALID {
		t.Fatalf("errors %v, want one EINVALID", errs)
	}
	if u.ID != "user_1" || u.FirstName != "Ada" {
		t.Fatalf("state %+v, want Ada unchanged", u)
	}
	if id, err := domain.UserKey(bad); err != nil || id != "user_1" {
		t.Fatalf("UserKey = %q, %v", id, err)
	}
	bad.UserID = ""
	if id, err := domain.UserKey(bad); err != nil || id != "user_2" {
		t.Fatalf("UserKey without a column = %q, %v, want the data's id", id, err)
	}
}

// The rest of a Clerk app's users row (issue 16): primary phone, external
// id, banned, locked, sign-in and activity times, two-factor, the primary
// email's verification, private metadata; all cleared by the tombstone.
func TestFoldKeepsTheCompleteUser(t *testing.T) {
	body := `{"type":"user.updated","timestamp":5001,"data":{"id":"user_1","updated_at":2000,"created_at":1000,
"primary_email_address_id":"e2","email_addresses":[{"id":"e1","email_address":"old@x","verification":{"status":"verified"}},
  {"id":"e2","email_address":"new@x","verification":{"status":"unverified"}}],
"primary_phone_number_id":"p2","phone_numbers":[{"id":"p1","phone_number":"+1 555"},{"id":"p2","phone_number":"+49 30\u0000"}],
"external_id":"crm-42","banned":true,"locked":true,"two_factor_enabled":true,
"last_sign_in_at":1700000000000,"last_active_at":1700000500000,
"private_metadata":{"stripe_customer":"cus_1","note":"\u0000"}}}`
	u, err := domain.Apply(domain.User{}, domain.Event{Position: 1, DeliveryID: "m1", Type: "user.updated", UserID: "user_1", Body: []byte(body), OccurredAt: time.UnixMilli(5001)})
	if err != nil {
		t.Fatal(err)
	}
	if u.Email != "new@x" || u.EmailVerified || u.Phone != "+49 30\uFFFD" || u.ExternalID != "crm-42" || !u.Banned || !u.Locked || !u.TwoFactorEnabled ||
		!u.LastSignInAt.Equal(time.UnixMilli(1700000000000)) || !u.LastActiveAt.Equal(time.UnixMilli(1700000500000)) ||
		string(u.PrivateMetadata) != `{"stripe_customer":"cus_1","note":"\ufffd"}` {
		t.Fatalf("folded %+v", u)
	}
	verified := userEvent(2, "user.updated", "user_1", 3000, "A", "B", "a@example.com")
	verified.Body = []byte(strings.Replace(string(verified.Body), `"email_address":"a@example.com"`, `"email_address":"a@example.com","verification":{"status":"verified"}`, 1))
	if u, _ = domain.Apply(u, verified); !u.EmailVerified || u.Phone != "" || u.Banned || string(u.PrivateMetadata) != `{}` || !u.LastSignInAt.IsZero() {
		t.Fatalf("a newer snapshot without those fields: %+v", u)
	}
	u, _ = domain.Fold([]domain.Event{verified, userEvent(3, "user.deleted", "user_1", 0, "", "", "")})
	if u.Phone != "" || u.EmailVerified || string(u.PrivateMetadata) != `{}` || !u.LastActiveAt.IsZero() {
		t.Fatalf("tombstone %+v", u)
	}
}
