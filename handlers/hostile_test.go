package handlers

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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

// TestStoredTimePastYear9999IsNoTime: a stored, signed user.created whose
// last_sign_in_at is in the year 10000 (JSON and RFC 3339 cannot write it)
// folds with that time unknown, so the user's audit view and the users
// row still answer, as valid JSON, and name no such time.
func TestStoredTimePastYear9999IsNoTime(t *testing.T) {
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
	if res.StatusCode != http.StatusOK || !json.Valid(b) || strings.Contains(string(b), "10000") {
		t.Errorf("view of a user with a time past 9999: %d %q, want 200 and valid JSON without it", res.StatusCode, b)
	}
}

// TestAnswerThatCannotEncodeIsNotAnEmpty200: writeAnswer encodes before it
// sends the status, so a value JSON cannot hold is a JSON error (500),
// not a 200 with an empty body.
func TestAnswerThatCannotEncodeIsNotAnEmpty200(t *testing.T) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/api/audit/users/user_f", nil)
	writeAnswer(rec, req, slog.New(slog.DiscardHandler), struct{ At time.Time }{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)})
	var eb errorBody
	if rec.Code != http.StatusInternalServerError || json.Unmarshal(rec.Body.Bytes(), &eb) != nil || eb.Error.Code == "" {
		t.Errorf("an answer JSON cannot hold: %d %q, want a JSON 500", rec.Code, rec.Body.Bytes())
	}
}
