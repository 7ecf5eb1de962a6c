package domain_test

import (
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// The rule for occurred_at (issue 11, item 14), case by case.
func TestOccurredAtRule(t *testing.T) {
	svix := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := svix.Unix()
	for _, c := range []struct {
		name            string
		envelope, svixS int64
		want            time.Time
	}{
		{"milliseconds, as documented", svix.Add(-time.Second).UnixMilli(), s, svix.Add(-time.Second)},
		{"seconds, as in Clerk's examples", 1716883200, s, time.Unix(1716883200, 0)},
		{"absent", 0, s, svix},
		{"a replay signed a week after the event", svix.Add(-7 * 24 * time.Hour).UnixMilli(), s, svix.Add(-7 * 24 * time.Hour)},
		{"less than a day ahead (clock skew)", svix.Add(23 * time.Hour).UnixMilli(), s, svix.Add(23 * time.Hour)},
		{"more than a day ahead", svix.Add(25 * time.Hour).UnixMilli(), s, svix},
		{"seconds far ahead", svix.Add(48 * time.Hour).Unix(), s, svix},
		{"year 9999", domain.MaxEnvelopeTimestamp, s, svix},
		{"no svix timestamp: the envelope's", 1716883200123, 0, time.UnixMilli(1716883200123)},
		{"neither", 0, 0, time.Time{}},
	} {
		if got := domain.OccurredAt(c.envelope, c.svixS); !got.Equal(c.want) {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

// The fold takes an event's time from its stored occurred_at, so for an
// example event with a timestamp in seconds both say 2024, not 1970.
func TestFoldUsesTheStoredOccurredAt(t *testing.T) {
	body := []byte(`{"type":"user.deleted","object":"event","timestamp":1716883200,"data":{"id":"user_sec","object":"user","deleted":true}}`)
	d, err := domain.NewDelivery("msg_sec", 1716883260, "v1,x", body)
	if err != nil {
		t.Fatal(err)
	}
	if !d.OccurredAt.Equal(time.Unix(1716883200, 0)) {
		t.Fatalf("occurred_at %s", d.OccurredAt)
	}
	u, errs := domain.Fold([]domain.Event{{Position: 1, DeliveryID: d.ID, Type: d.Type, UserID: d.UserID, Body: d.Body, OccurredAt: d.OccurredAt, SvixTimestamp: d.Timestamp}})
	if len(errs) != 0 || !u.DeletedAt.Equal(d.OccurredAt) {
		t.Errorf("deleted_at %s (errors %v), want the stored occurred_at %s", u.DeletedAt, errs, d.OccurredAt)
	}
}

func TestParseSignatureHeader(t *testing.T) {
	sig := "v1," + strings.Repeat("A", 43) + "="
	for _, c := range []struct {
		header  string
		entries int
		err     string
	}{
		{sig, 1, ""},
		{sig + " " + sig, 2, ""},
		{sig + "  v1a," + strings.Repeat("B", 86) + "==", 2, ""}, // doubled space; an ed25519 entry
		{"", 0, "no entry"},
		{"v1," + strings.Repeat("A", 44), 0, "entry 1"},    // not base64 of 32 bytes
		{sig + " v1,\xff", 0, "entry 2"},                   // the extra entry
		{sig + " v1,AAAA", 0, "entry 2"},                   // too short for v1
		{sig + " nonsense", 0, "entry 2"},                  // no comma
		{sig + " V1," + sig[3:], 0, "entry 2"},             // version case
		{sig + " v2,z\x00z", 0, "entry 2"},                 // NUL
		{strings.Repeat(sig+" ", 11), 0, "more than 10"},   // too many
		{strings.Repeat(" ", 3000), 0, "longer than 2048"}, // too long
	} {
		got, err := domain.ParseSignatureHeader(c.header)
		switch {
		case c.err == "" && (err != nil || len(got) != c.entries):
			t.Errorf("%.60q: %d entries, err %v; want %d", c.header, len(got), err, c.entries)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "svix-signature") || domain.ErrorCode(err) != domain.EINVALID):
			t.Errorf("%.60q: err %v, want EINVALID naming svix-signature and %q", c.header, err, c.err)
		}
	}
}

// Every value NewDelivery puts in a column is one PostgreSQL stores: bad
// ones are EINVALID naming the field (issue 11, item 6).
func TestNewDeliveryRefusesUnstorableValues(t *testing.T) {
	ok := `{"type":"user.created","object":"event","timestamp":1716883200000,"data":{"id":"user_1"}}`
	for _, c := range []struct {
		id, body, field string
	}{
		{"msg_\xff", ok, "svix-id"},
		{"msg_\x00", ok, "svix-id"},
		{"msg_\n", ok, "svix-id"},
		{strings.Repeat("m", 201), ok, "svix-id"},
		{"", ok, "svix-id"},
		{"msg_1", `{"type":"user.created","data":{"id":"user_` + strings.Repeat("x", 4000) + `"}}`, "data.id"},
		{"msg_1", `{"type":"session.created","data":{"user_id":"user_\u0000"}}`, "data.user_id"},
		{"msg_1", `{"type":"subscription.created","data":{"payer":{"user_id":"user_\u001b[31m"}}}`, "data.payer.user_id"},
		{"msg_1", `{"type":"organizationMembership.created","data":{"public_user_data":{"user_id":"` + strings.Repeat("u", 300) + `"}}}`, "data.public_user_data.user_id"},
		{"msg_1", `{"type":"user.\u0000created","data":{"id":"user_1"}}`, `"type"`},
		{"msg_1", `{"type":"user.created","timestamp":253402300800000,"data":{"id":"user_1"}}`, `"timestamp"`},
		{"msg_1", `{"type":"user.created","timestamp":1.5,"data":{"id":"user_1"}}`, `"timestamp"`},
		{"msg_1", `{"type":"user.created","timestamp":"1716883200000","data":{"id":"user_1"}}`, `"timestamp"`},
		{"msg_1", `{"type":7,"data":{"id":"user_1"}}`, `"type"`},
	} {
		_, err := domain.NewDelivery(c.id, 1716883200, "v1,x", []byte(c.body))
		if domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%.40q %.80s: %v, want EINVALID naming %s", c.id, c.body, err, c.field)
		}
	}
	if _, err := domain.NewDelivery("msg_1", 1716883200, "v1,x", []byte(`{"type":"user.created","timestamp":253402300799999,"data":{"id":"user_1"}}`)); err != nil {
		t.Errorf("the last millisecond of 9999: %v", err)
	}
}

// Billing events name their user in data.payer.user_id (issue 11, item 15).
func TestSubjectOfBillingEvents(t *testing.T) {
	for body, want := range map[string]string{
		`{"type":"subscription.created","data":{"id":"csub_1","payer":{"id":"cpayer_1","user_id":"user_a"}}}`:        "user_a",
		`{"type":"subscriptionItem.canceled","data":{"id":"csubi_1","payer":{"user_id":"user_b"}}}`:                  "user_b",
		`{"type":"paymentAttempt.created","data":{"id":"cpa_1","payer":{"user_id":"user_c"}}}`:                       "user_c",
		`{"type":"subscription.created","data":{"id":"csub_2","payer":{"id":"cpayer_2","organization_id":"org_1"}}}`: "",
	} {
		env, err := domain.ParseEnvelope([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if got := env.SubjectUserID(); got != want {
			t.Errorf("%s: %q, want %q", body, got, want)
		}
	}
}
