package handlers

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// TestProofOfHugeTreeSizeIs404: a size past PostgreSQL's integer range on
// an event's inclusion proof is a tree size no checkpoint has, 404 as for
// any other unkept size. (Before, the statement compared the parameter
// with 0 first, so PostgreSQL typed it integer and refused 2^31 and up
// with 22003: a 500.)
func TestProofOfHugeTreeSizeIs404(t *testing.T) {
	e := newAuditEnv(t)
	e.append(t, "msg_a", "user.created", clerkgen.User{ID: "user_a", Email: "a@example.com"}, tBase)
	e.sealer.SealAll(t, e.db, 1)
	signer, _ := schematest.NewLogKey(t, "clerk-ledger/handlers")
	schematest.SignCheckpoint(t, e.db, signer, "clerk-ledger/handlers")
	for _, size := range []string{"2147483647", "2147483648", "4294967296", "9223372036854775807"} {
		res, body := e.get(t, listedAuditor, "/api/audit/events/1/proof?size="+size)
		var eb errorBody
		if res.StatusCode != http.StatusNotFound || json.Unmarshal(body, &eb) != nil || eb.Error.Code != domain.ENOTFOUND {
			t.Errorf("size=%s: %d %s, want 404", size, res.StatusCode, body)
		}
	}
	if res, body := e.get(t, listedAuditor, "/api/audit/events/1/proof?size=1"); res.StatusCode != http.StatusOK {
		t.Errorf("size=1 (the kept checkpoint): %d %s", res.StatusCode, body)
	}
}

// TestViewAtOutsideJSONYearsIs400: an `at` whose instant in UTC falls
// outside the years 0000 to 9999 (RFC 3339 allows 9999-12-31T23:59:59-23:59,
// which is in the year 10000 in UTC) is a 400 naming it. (Before, the view
// ran and its answer, which gives `at` in UTC, failed to encode after the
// 200 was sent: an empty 200.)
func TestViewAtOutsideJSONYearsIs400(t *testing.T) {
	e := newAuditEnv(t)
	e.append(t, "msg_a", "user.created", clerkgen.User{ID: "user_a", Email: "a@example.com"}, tBase)
	e.visible(t, 1)
	for _, at := range []string{"9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00%2B00:01"} {
		for _, path := range []string{"/api/audit/users/user_a", "/api/audit/users/user_a/organizations", "/api/audit/organizations/org_a", "/api/audit/events"} {
			param := "at"
			if path == "/api/audit/events" {
				param = "until"
			}
			res, body := e.get(t, listedAuditor, path+"?"+param+"="+at)
			var eb errorBody
			if res.StatusCode != http.StatusBadRequest || json.Unmarshal(body, &eb) != nil || eb.Error.Code != domain.EINVALID || !strings.Contains(eb.Error.Message, param) {
				t.Errorf("%s?%s=%s: %d %q, want 400 naming %s", path, param, at, res.StatusCode, body, param)
			}
		}
	}
	// The last instant of 9999 in UTC is still a view.
	if res, body := e.get(t, listedAuditor, "/api/audit/users/user_a?at=9999-12-31T23:59:59Z"); res.StatusCode != http.StatusOK || !json.Valid(body) {
		t.Errorf("at the end of 9999: %d %q", res.StatusCode, body)
	}
}

// TestAnswerThatCannotEncodeIsNotAnEmpty200: a stored, signed user.created
// whose last_sign_in_at is in the year 10000 folds into a state JSON cannot
// hold. The user's audit view must then say it failed, as a JSON error,
// rather than send 200 and an empty body. (Still an error: see the
// review's report; the view of such a user is not served.)
func TestAnswerThatCannotEncodeIsNotAnEmpty200(t *testing.T) {
	e := newAuditEnv(t)
	body := []byte(`{"type":"user.created","object":"event","timestamp":1716897600000,"data":{"id":"user_f","object":"user",` +
		`"created_at":1716897600000,"updated_at":1716897600000,"last_sign_in_at":253402300800000,"email_addresses":[]}}`)
	d, err := domain.NewDelivery("msg_f", tBase.Unix(), e.signer.Headers("msg_f", tBase, body).Get("svix-signature"), body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Append(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	e.visible(t, 1)
	res, b := e.get(t, listedAuditor, "/api/audit/users/user_f")
	var eb errorBody
	if res.StatusCode == http.StatusOK || json.Unmarshal(b, &eb) != nil || eb.Error.Code == "" {
		t.Errorf("view of a state JSON cannot hold: %d %q, want a JSON error", res.StatusCode, b)
	}
}
