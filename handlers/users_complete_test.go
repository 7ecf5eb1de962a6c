package handlers

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
)

// privateMarker is in the test user's private_metadata only.
const privateMarker = "cus_PRIVATE_4242"

// seedCompleteUser delivers a user with every field of a complete user
// set, private metadata included, then an update that changes only the
// private metadata and the ban, and projects them.
func (e *webEnv) seedCompleteUser(t *testing.T) clerkgen.User {
	t.Helper()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	u := clerkgen.User{ID: clerkgen.NewID("user"), Email: "grace@example.com", Phone: "+49 30 1234567", FirstName: "Grace", LastName: "Hopper",
		ExternalID: "crm-77", TwoFactorEnabled: true, LastSignInAt: t0.Add(-24 * time.Hour), CreatedAt: t0, UpdatedAt: t0,
		PrivateMetadata: map[string]any{"stripe_customer": privateMarker, "note": "owes-us-money"}}
	e.deliver(t, "user.created", u, t0)
	u.UpdatedAt, u.Banned = t0.Add(10*time.Minute), true
	u.PrivateMetadata = map[string]any{"stripe_customer": privateMarker, "note": "banned-for-chargebacks"}
	e.deliver(t, "user.updated", u, u.UpdatedAt)
	projectUsers(t, e.db)
	return u
}

// The user's own page and /api/me show the complete record, and never the
// private metadata, not even that it changed; the auditor's views show it.
func TestCompleteUserAndPrivateMetadataOnlyForAuditors(t *testing.T) {
	e := newWebEnv(t, webOptions{auditors: []string{"user_pm_auditor"}})
	u := e.seedCompleteUser(t)
	secrets := []string{privateMarker, "owes-us-money", "banned-for-chargebacks", "private_metadata", "stripe_customer"}

	res, html := e.get(t, "/", map[string]string{sessionCookie: e.token(t, u.ID)}, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("home: %s", res.Status)
	}
	mustContain(t, html, `id="fact-phone"><bdi>&#43;49 30 1234567</bdi>`, `id="fact-email-verified">(verified)`, `id="fact-two-factor">on`,
		`<span class="badge badge-deleted">banned</span>`, "crm-77", "Last signed in", "Changed account banned")
	mustNotContain(t, html, secrets...)

	res, body := e.get(t, "/api/me", nil, bearer(e.token(t, u.ID)))
	var me meJSON
	if res.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &me) != nil {
		t.Fatalf("/api/me: %s %s", res.Status, body)
	}
	if me.PhoneNumber != u.Phone || !me.EmailVerified || me.ExternalID != "crm-77" || !me.Banned || me.Locked || !me.TwoFactorEnabled ||
		me.LastSignInAt == nil || !me.LastSignInAt.Equal(u.LastSignInAt) || me.LastActiveAt == nil {
		t.Fatalf("/api/me: %+v", me)
	}
	mustNotContain(t, body, secrets...)

	// The auditor's page and API show it, escaped like every value.
	auditor := map[string]string{sessionCookie: e.token(t, "user_pm_auditor")}
	_, html = e.get(t, "/audit/users/"+u.ID, auditor, http.Header{"Sec-Fetch-Site": {"same-origin"}})
	mustContain(t, html, `id="private-metadata"`, privateMarker, "banned-for-chargebacks", "&#43;49 30 1234567", "crm-77", `<span class="badge badge-ok">matches</span>`,
		// The change history names the private metadata's change, and the ban.
		`<code>private_metadata.note</code>`, `<code>banned</code>`, `<code>two_factor_enabled</code>`, `<code>primary_phone</code>`)
	res, body = e.get(t, "/api/audit/users/"+u.ID, nil, bearer(e.token(t, "user_pm_auditor")))
	var h audit.UserHistory
	if res.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &h) != nil {
		t.Fatalf("audit API: %s %s", res.Status, body)
	}
	if !strings.Contains(string(h.State.PrivateMetadata), "banned-for-chargebacks") || !h.State.Banned || h.State.Phone != u.Phone ||
		h.Matches == nil || !*h.Matches {
		t.Fatalf("audit state %+v, matches %v", h.State, h.Matches)
	}
	changed := map[string]bool{}
	for _, e := range h.Events {
		for _, c := range e.Changes {
			changed[c.Field] = true
		}
	}
	for _, f := range []string{"private_metadata.note", "banned", "email_verified", "external_id", "last_sign_in_at", "last_active_at"} {
		if !changed[f] {
			t.Errorf("the audit API's change lists lack %s: %v", f, changed)
		}
	}
	// As of before the update: the earlier private metadata, not banned.
	res, body = e.get(t, "/api/audit/users/"+u.ID+"?at="+u.UpdatedAt.Add(-time.Minute).UTC().Format(time.RFC3339), nil, bearer(e.token(t, "user_pm_auditor")))
	if res.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &h) != nil || !strings.Contains(string(h.State.PrivateMetadata), "owes-us-money") || h.State.Banned {
		t.Fatalf("audit state before the update: %s %+v", res.Status, h.State)
	}
}
