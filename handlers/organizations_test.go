package handlers

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
)

// seedOrganizations delivers, for Ada and Bob: Acme (Ada admin, Bob
// member, renamed Acme Corp at t0+2h), Beta (Ada member, deleted at
// t0+3h), Gamma (Ada left at t0+1h), and Bob's own Secret Org; then
// projects them. It returns t0.
func (e *webEnv) seedOrganizations(t *testing.T, ada, bob clerkgen.User) time.Time {
	t.Helper()
	t0 := time.Now().Add(-50 * time.Minute).Truncate(time.Second)
	acme := clerkgen.Organization{ID: "org_acme_web", Name: "Acme", Slug: "acme", CreatedAt: t0, UpdatedAt: t0}
	beta := clerkgen.Organization{ID: "org_beta_web", Name: "Beta", CreatedAt: t0, UpdatedAt: t0}
	gamma := clerkgen.Organization{ID: "org_gamma_web", Name: "Gamma", CreatedAt: t0, UpdatedAt: t0}
	secret := clerkgen.Organization{ID: "org_secret_web", Name: "Secret Org", CreatedAt: t0, UpdatedAt: t0}
	send := func(b []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		e.deliverBody(t, b)
	}
	for _, o := range []clerkgen.Organization{acme, beta, gamma, secret} {
		send(clerkgen.OrganizationEvent("organization.created", o, t0))
	}
	send(clerkgen.MembershipEvent("organizationMembership.created", clerkgen.Membership{ID: "orgmem_ada_acme", Organization: acme, User: ada, Role: "org:admin", CreatedAt: t0, UpdatedAt: t0}, t0))
	send(clerkgen.MembershipEvent("organizationMembership.created", clerkgen.Membership{ID: "orgmem_bob_acme", Organization: acme, User: bob, Role: "org:member", CreatedAt: t0, UpdatedAt: t0}, t0))
	send(clerkgen.MembershipEvent("organizationMembership.created", clerkgen.Membership{ID: "orgmem_ada_beta", Organization: beta, User: ada, Role: "org:member", CreatedAt: t0, UpdatedAt: t0}, t0))
	gm := clerkgen.Membership{ID: "orgmem_ada_gamma", Organization: gamma, User: ada, Role: "org:member", CreatedAt: t0, UpdatedAt: t0}
	send(clerkgen.MembershipEvent("organizationMembership.created", gm, t0))
	gm.UpdatedAt = t0.Add(time.Hour)
	send(clerkgen.MembershipEvent("organizationMembership.deleted", gm, t0.Add(10*time.Minute)))
	send(clerkgen.MembershipEvent("organizationMembership.created", clerkgen.Membership{ID: "orgmem_bob_secret", Organization: secret, User: bob, Role: "org:admin", CreatedAt: t0, UpdatedAt: t0}, t0))
	acme.Name, acme.UpdatedAt = "Acme Corp", t0.Add(20*time.Minute)
	send(clerkgen.OrganizationEvent("organization.updated", acme, t0.Add(20*time.Minute)))
	send(clerkgen.OrganizationEvent("organization.deleted", beta, t0.Add(30*time.Minute)))
	projectOrganizations(t, e.db)
	return t0
}

// The signed-in page and /api/me list the organizations the person is in
// now, with their role: not the ones left or deleted, not anyone else's.
func TestSignedInPageListsOrganizations(t *testing.T) {
	e := newWebEnv(t, webOptions{})
	ada, bob := e.seedAdaAndBob(t)
	e.seedOrganizations(t, ada, bob)
	res, html := e.get(t, "/", map[string]string{sessionCookie: e.token(t, ada.ID)}, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %s", res.Status)
	}
	mustContain(t, html, `id="organizations"`)
	section := html[strings.Index(html, `id="organizations"`):]
	section = section[:strings.Index(section, "</section>")]
	mustContain(t, section, "<bdi>Acme Corp</bdi>", `<span class="badge">admin</span>`)
	mustNotContain(t, section, "Beta", "Gamma")
	mustNotContain(t, html, "Secret Org", "bob@example.com")
	// Ada's timeline tells her about her organizations too.
	mustContain(t, html, "Joined \u2068Acme\u2069 (\u2068admin\u2069)", "Left \u2068Gamma\u2069")

	res, body := e.get(t, "/api/me", nil, bearer(e.token(t, ada.ID)))
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/api/me: %s %s", res.Status, body)
	}
	var me meJSON
	if err := json.Unmarshal([]byte(body), &me); err != nil {
		t.Fatal(err)
	}
	if len(me.Organizations) != 1 || me.Organizations[0].Name != "Acme Corp" || me.Organizations[0].Role != "org:admin" ||
		me.Organizations[0].JoinedAt == nil || len(me.Organizations[0].Permissions) == 0 {
		t.Fatalf("/api/me organizations: %+v", me.Organizations)
	}
	_, body = e.get(t, "/api/me", nil, bearer(e.token(t, bob.ID)))
	if !strings.Contains(body, "Secret Org") || strings.Contains(body, "Beta") {
		t.Fatalf("bob's /api/me: %s", body)
	}
}

// The auditor's organization view: state, members and member history now
// and at an instant, the API, and the user view's organizations at D.
func TestAuditOrganizationViews(t *testing.T) {
	e := newWebEnv(t, webOptions{auditors: []string{"user_org_auditor"}})
	ada, bob := e.seedAdaAndBob(t)
	t0 := e.seedOrganizations(t, ada, bob)
	ownPages := http.Header{"Sec-Fetch-Site": {"same-origin"}}
	auditor := map[string]string{sessionCookie: e.token(t, "user_org_auditor")}

	res, html := e.get(t, "/audit/organizations/org_acme_web", auditor, ownPages)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("organization page: %s %.500s", res.Status, html)
	}
	mustContain(t, html, "<bdi>Acme Corp</bdi>", `id="org-members-count">2<`, `href="/audit/users/`+ada.ID+`"`,
		`href="/audit/users/`+bob.ID+`"`, "org:admin", `<span class="badge badge-ok">matches</span>`, "organizationMembership.created",
		"(events 1–4 of 4, ledger order)")
	mustNotContain(t, html, "Secret Org")

	// Before the rename, the old name; the rename is listed, greyed.
	when := t0.Add(10 * time.Minute).UTC().Format("2006-01-02T15:04:05")
	_, html = e.get(t, "/audit/organizations/org_acme_web?at="+when, auditor, ownPages)
	mustContain(t, html, "<bdi>Acme</bdi>", `value="`+when+`"`, `class="after"`)
	mustNotContain(t, html, "matches")

	// The user view lists Ada's organizations then: Gamma before she left.
	// It links to each organization's view at the same instant, and
	// each membership event of the change history to its organization.
	at5 := t0.Add(5 * time.Minute).UTC()
	_, html = e.get(t, "/audit/users/"+ada.ID+"?at="+at5.Format("2006-01-02T15:04:05"), auditor, ownPages)
	mustContain(t, html, `id="user-organizations"`, `href="/audit/organizations/org_gamma_web?at=`+url.QueryEscape(at5.Format(time.RFC3339Nano))+`"`,
		"<bdi>Gamma</bdi>", `<span class="badge badge-ok">member</span>`)
	_, html = e.get(t, "/audit/users/"+ada.ID, auditor, ownPages)
	mustContain(t, html, `<span class="badge badge-bad">organization deleted</span>`, `<span class="badge badge-warn">left</span>`,
		`href="/audit/organizations/org_gamma_web"`, `href="/audit/organizations/org_acme_web?at=`)

	// Search results link each organization event to its organization then.
	_, html = e.get(t, "/audit/search?type=organization.*", auditor, ownPages)
	mustContain(t, html, `href="/audit/organizations/org_acme_web?at=`, `href="/audit/organizations/org_secret_web?at=`)

	// The API, and its refusals.
	res, body := e.get(t, "/api/audit/organizations/org_acme_web?limit=2", nil, bearer(e.token(t, "user_org_auditor")))
	var h audit.OrganizationHistory
	if res.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &h) != nil {
		t.Fatalf("API: %s %s", res.Status, body)
	}
	if h.State.Name != "Acme Corp" || h.MembersCount != 2 || len(h.Memberships) != 2 || h.Count != 2 || h.NextCursor == "" || h.Matches == nil || !*h.Matches {
		t.Fatalf("API answer: %+v", h)
	}
	res, body = e.get(t, "/api/audit/users/"+ada.ID+"/organizations?at="+url.QueryEscape(t0.Add(5*time.Minute).Format(time.RFC3339)), nil, bearer(e.token(t, "user_org_auditor")))
	var uo audit.UserOrganizations
	if res.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &uo) != nil {
		t.Fatalf("user organizations API: %s %s", res.Status, body)
	}
	var names []string
	for _, o := range uo.Organizations {
		if o.Member {
			names = append(names, o.Organization.Name+"/"+o.Membership.Role)
		}
	}
	if strings.Join(names, " ") != "Acme/org:admin Beta/org:member Gamma/org:member" {
		t.Fatalf("Ada's organizations 5 minutes in: %v", names)
	}
	for path, want := range map[string]int{
		"/api/audit/organizations/org_none":                  http.StatusNotFound,
		"/api/audit/organizations/org_acme_web?at=yesterday": http.StatusBadRequest,
		"/api/audit/organizations/org_acme_web?user_id=x":    http.StatusBadRequest,
		"/api/audit/organizations/org%00":                    http.StatusBadRequest,
		"/api/audit/users/" + ada.ID + "/organizations?at=1": http.StatusBadRequest,
	} {
		if res, body := e.get(t, path, nil, bearer(e.token(t, "user_org_auditor"))); res.StatusCode != want {
			t.Errorf("%s: %s, want %d: %s", path, res.Status, want, body)
		}
	}
	// Every read is in the access log under the auditor.
	var n int
	if err := e.db.Get(&n, `SELECT count(*) FROM audit_access WHERE actor = 'user_org_auditor' AND action IN ('organization', 'user_organizations')`); err != nil || n < 6 {
		t.Fatalf("%d organization reads recorded (%v)", n, err)
	}
}
