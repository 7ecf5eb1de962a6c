package handlers

import (
	"bytes"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/clerksession"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// caller is one kind of requester in the route security matrix.
type caller int

const (
	cNone    caller = iota // no credentials at all
	cSigned                // a genuine Svix signature (webhook credentials), no session
	cUser                  // ordinary signed-in user (Ada)
	cOther                 // Ada asking for Bob's data ({id} = Bob, or ?user_id=Bob)
	cListed                // auditor by LEDGER_AUDITORS
	cRole                  // auditor by public_metadata.role
	cForged                // the listed auditor's claims signed with another key (webhook: another secret)
	cExpired               // the listed auditor's token, expired a minute ago (webhook: stale svix-timestamp)
	cAZP                   // the listed auditor's token issued to another origin
	cMethod                // the listed auditor, with a method the route does not serve
	cBig                   // the listed auditor, with a body over domain.MaxBodyBytes
	cRemote                // the listed auditor, from a non-loopback address
	cCross                 // an auditor's browser sent by another site: __session cookie, Sec-Fetch-Site cross-site, Origin of that site on POSTs
	nCallers
)

var callerNames = [nCallers]string{"none", "svix-signed", "user", "other user", "auditor (list)", "auditor (role)",
	"forged token", "expired token", "wrong azp", "wrong method", "oversized body", "remote client", "cross-site"}

func (c caller) String() string { return callerNames[c] }

// na marks a cell that does not apply (a body on a route that reads none).
const na = 0

// routeRow is one route of routes.go and what every caller gets from it.
type routeRow struct {
	pattern string // exactly as addRoutes registers it
	path    string // a concrete path; {id} is replaced by the subject's user id
	kind    string // "session" (GET page or API), "webhook", "form" (dev sign-in POST), "post" (a session POST: verification)
	public  bool   // shows projected users to anyone by design (the dev sign-in list)
	want    [nCallers]int
	// wantNotDev is what callers get where the route is not registered
	// (dev-only routes on a server with real Clerk keys): nil for routes
	// served everywhere.
	notDev *[nCallers]int
}

var (
	// A cross-site request gets an audit page without running what it
	// would record (200, nothing recorded: see TestRouteSecurityMatrix),
	// and 403 from the API and from every POST.
	//                             none signed user other listed role forged expired azp method big remote cross
	audited     = [nCallers]int{401, 401, 403, 403, 200, 200, 401, 401, 401, 404, na, 200, 200}
	auditedRead = [nCallers]int{401, 401, 403, 403, 200, 200, 401, 401, 401, 404, na, 200, 403}
	auditedPost = [nCallers]int{401, 401, 403, 403, 200, 200, 401, 401, 401, 404, 413, 200, 403}
	erasePost   = [nCallers]int{401, 401, 403, 403, 400, 400, 401, 401, 401, 404, 413, 400, 403}
	overview    = [nCallers]int{401, 401, 403, 403, 200, 200, 401, 401, 401, 404, na, 200, 303}
	open        = [nCallers]int{200, 200, 200, 200, 200, 200, 200, 200, 200, 404, na, 200, 200}
	missing     = [nCallers]int{404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404}
	missingPost = [nCallers]int{404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 403} // checkOrigin answers before routing
	signedIn    = [nCallers]int{401, 401, 200, 200, 200, 200, 401, 401, 401, 404, na, 200, 200}
)

// securityRoutes is the matrix: one row per route in routes.go
// (TestRouteSecurityMatrix fails when a route has no row or a row no route).
var securityRoutes = []routeRow{
	{pattern: "POST " + webhookPath, path: webhookPath, kind: "webhook",
		want: [nCallers]int{401, 200, 401, 401, 401, 401, 401, 401, 401, 404, 413, 200, 401}},
	{pattern: "GET /healthz", path: "/healthz", kind: "session", want: open},
	{pattern: "GET /readyz", path: "/readyz", kind: "session", want: open},
	// Counts and positions only, no personal data (the leak check runs on
	// it too); kept to the private network by deployment (README).
	{pattern: "GET /metrics", path: "/metrics", kind: "session", want: open},
	// The home page answers 200 to everyone: the signed-out page, or the
	// caller's own record (the leak check makes sure it is nobody else's).
	{pattern: "GET /{$}", path: "/", kind: "session", want: open},
	{pattern: "GET /api/me", path: "/api/me", kind: "session", want: signedIn},
	{pattern: "GET /static/", path: "/static/style.css", kind: "session", want: open},
	{pattern: "GET /dev/sign-in", path: "/dev/sign-in", kind: "session", public: true, notDev: &missing,
		want: [nCallers]int{200, 200, 200, 200, 200, 200, 200, 200, 200, 404, na, 403, 200}},
	{pattern: "POST /dev/sign-in", path: "/dev/sign-in", kind: "form", notDev: &missingPost,
		want: [nCallers]int{303, 303, 303, 303, 303, 303, 303, 303, 303, 404, 413, 403, 403}},
	{pattern: "POST /dev/sign-out", path: "/dev/sign-out", kind: "form", notDev: &missingPost,
		want: [nCallers]int{303, 303, 303, 303, 303, 303, 303, 303, 303, 404, na, 303, 403}},
	{pattern: "GET /api/audit/events", path: "/api/audit/events", kind: "session", want: auditedRead},
	{pattern: "GET /api/audit/users/{id}", path: "/api/audit/users/{id}", kind: "session", want: auditedRead},
	{pattern: "GET /api/audit/users/{id}/organizations", path: "/api/audit/users/{id}/organizations", kind: "session", want: auditedRead},
	// secOrg has Ada and Bob as members (newSecurityEnv).
	{pattern: "GET /api/audit/organizations/{id}", path: "/api/audit/organizations/" + secOrg, kind: "session", want: auditedRead},
	{pattern: "POST /api/audit/verify", path: "/api/audit/verify", kind: "post", want: auditedPost},
	{pattern: "GET /api/audit/checkpoint", path: "/api/audit/checkpoint", kind: "session", want: auditedRead},
	{pattern: "GET /api/audit/consistency", path: "/api/audit/consistency?from=1", kind: "session", want: auditedRead},
	{pattern: "GET /api/audit/events/{position}/proof", path: "/api/audit/events/1/proof", kind: "session", want: auditedRead},
	{pattern: "GET /api/audit/users/{id}/proof", path: "/api/audit/users/{id}/proof", kind: "session", want: auditedRead},
	// The overview: an old search link (/audit?user_id=…, as the
	// cross-site caller sends) is redirected to the search, which then
	// runs nothing (next row).
	{pattern: "GET /audit", path: "/audit", kind: "session", want: overview},
	{pattern: "GET /audit/search", path: "/audit/search", kind: "session", want: audited},
	{pattern: "GET /audit/users/{id}", path: "/audit/users/{id}", kind: "session", want: audited},
	{pattern: "GET /audit/organizations/{id}", path: "/audit/organizations/" + secOrg, kind: "session", want: audited},
	{pattern: "GET /audit/chain", path: "/audit/chain", kind: "session", want: audited},
	{pattern: "POST /audit/chain", path: "/audit/chain", kind: "post", want: auditedPost},
	// Without the confirmation field an auditor's POST is 400, nothing erased.
	{pattern: "POST /audit/users/{id}/erase", path: "/audit/users/{id}/erase", kind: "post", want: erasePost},
	{pattern: "GET /audit/log", path: "/audit/log", kind: "session", want: audited},
	{pattern: "/", path: "/no/such/page", kind: "session",
		want: [nCallers]int{404, 404, 404, 404, 404, 404, 404, 404, 404, 404, na, 404, 404}},
}

// patternRecorder records what addRoutes registers.
type patternRecorder []string

func (p *patternRecorder) Handle(pattern string, _ http.Handler) { *p = append(*p, pattern) }

// registeredPatterns returns every pattern addRoutes registers with every
// optional feature on.
func registeredPatterns(t *testing.T) []string {
	t.Helper()
	var rec patternRecorder
	addRoutes(&rec, Deps{DevSignIn: &clerksession.Dev{}, Metrics: &Metrics{}}, nil, func(h http.Handler) http.Handler { return h }, nil)
	return rec
}

// TestRouteSecurityRowsMatchRoutes: the matrix has exactly one row per
// route addRoutes registers, so a new route cannot go untested.
func TestRouteSecurityRowsMatchRoutes(t *testing.T) {
	registered := registeredPatterns(t)
	var rows []string
	for _, r := range securityRoutes {
		rows = append(rows, r.pattern)
	}
	slices.Sort(registered)
	slices.Sort(rows)
	if d := slices.Compact(slices.Clone(rows)); len(d) != len(rows) {
		t.Errorf("duplicate rows in securityRoutes: %v", rows)
	}
	for _, p := range registered {
		if !slices.Contains(rows, p) {
			t.Errorf("route %q has no row in securityRoutes: add one with the status every caller must get", p)
		}
	}
	for _, p := range rows {
		if !slices.Contains(registered, p) {
			t.Errorf("securityRoutes row %q names no registered route", p)
		}
	}
}

// securityEnv is a webEnv plus what the matrix needs to make each caller.
type securityEnv struct {
	*webEnv
	// sign signs claims with the key the server trusts (Clerk's, or the
	// dev sign-in's own).
	sign     func(t *testing.T, claims map[string]any) string
	issuer   string
	ada, bob clerkgen.User
}

const (
	secListed = "user_listed_auditor_sec"
	secRole   = "user_role_auditor_sec"
	secCross  = "user_cross_site_auditor_sec" // listed; only the cross-site caller uses it
	secOrg    = "org_sec"                     // Ada's and Bob's organization
)

func newSecurityEnv(t *testing.T, dev bool) *securityEnv {
	e := &securityEnv{webEnv: newWebEnv(t, webOptions{dev: dev, auditors: []string{secListed, secCross}})}
	e.issuer = testIssuer
	e.sign = func(t *testing.T, c map[string]any) string {
		return mintJWT(t, map[string]any{"alg": "RS256", "typ": "JWT", "kid": "ins_test"}, c, testClerkKey(), nil)
	}
	if dev {
		e.issuer = clerksession.DevIssuer
		e.sign = func(t *testing.T, c map[string]any) string {
			tok, err := e.dev.Sign(c)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
	}
	e.ada, e.bob = e.seedAdaAndBob(t)
	org := clerkgen.Organization{ID: secOrg, Name: "Security Org"}
	for _, u := range []clerkgen.User{e.ada, e.bob} {
		body, err := clerkgen.MembershipEvent("organizationMembership.created", clerkgen.Membership{Organization: org, User: u}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		e.deliverBody(t, body)
	}
	projectOrganizations(t, e.db)
	// Sealed and signed, so that the proofs answer.
	var sealer schematest.Sealer
	sealer.SealAll(t, e.db, 6)
	logSigner, _ := schematest.NewLogKey(t, "clerk-ledger/sec")
	schematest.SignCheckpoint(t, e.db, logSigner, "clerk-ledger/sec")
	// Both auditors are projected, with emails, so that a forged token that
	// were accepted would show data the leak check catches.
	putUser(t, e.db, domain.User{ID: secListed, Email: "listed@example.com", PublicMetadata: json.RawMessage(`{}`)})
	putUser(t, e.db, domain.User{ID: secRole, Email: "role@example.com", PublicMetadata: json.RawMessage(`{"role":"auditor"}`)})
	putUser(t, e.db, domain.User{ID: secCross, Email: "cross@example.com", PublicMetadata: json.RawMessage(`{}`)})
	return e
}

// token mints a session token for sub issued to this server, changed by
// change, signed with the trusted key, or with forged when it is not nil.
func (e *securityEnv) token(t *testing.T, sub string, forged *rsa.PrivateKey, change func(c map[string]any)) string {
	c := sessionClaims(sub, e.srv.URL)
	c["iss"] = e.issuer
	if change != nil {
		change(c)
	}
	if forged != nil {
		return mintJWT(t, map[string]any{"alg": "RS256", "typ": "JWT", "kid": "ins_test"}, c, forged, nil)
	}
	return e.sign(t, c)
}

// request builds the request caller c makes to row r.
func (e *securityEnv) request(t *testing.T, r routeRow, c caller, n int) *http.Request {
	subject := e.ada.ID
	if c == cOther {
		subject = e.bob.ID
	}
	path := strings.ReplaceAll(r.path, "{id}", subject)
	if (c == cOther || c == cCross) && !strings.Contains(r.path, "{id}") && r.kind == "session" {
		path += "?user_id=" + subject
	}
	method := http.MethodGet
	if r.kind != "session" {
		method = http.MethodPost
	}
	if c == cMethod {
		method = http.MethodDelete
		if r.kind != "session" {
			method = http.MethodPut
		}
	}

	var body []byte
	header := http.Header{}
	switch r.kind {
	case "webhook":
		ev, err := clerkgen.Event("user.created", clerkgen.User{ID: clerkgen.NewID("user"), Email: "hook@example.org"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		body = ev
		if c == cBig {
			body = append(body[:len(body)-1], []byte(`,"pad":"`+strings.Repeat("x", domain.MaxBodyBytes)+`"}`)...)
		}
		id := fmt.Sprintf("msg_sec_%d", n)
		switch c {
		case cSigned, cBig, cRemote:
			header = e.signer.Headers(id, time.Now(), body)
		case cForged:
			other, err := clerkgen.NewSigner(clerkgen.NewSecret())
			if err != nil {
				t.Fatal(err)
			}
			header = other.Headers(id, time.Now(), body)
		case cExpired:
			header = e.signer.Headers(id, time.Now().Add(-10*time.Minute), body)
		}
	case "form", "post":
		header.Set("Content-Type", "application/x-www-form-urlencoded")
		form := url.Values{"user_id": {e.ada.ID}}
		if r.kind == "post" {
			form = url.Values{"signatures": {"false"}}
		}
		if c == cBig {
			form.Set("pad", strings.Repeat("x", domain.MaxBodyBytes))
		}
		body = []byte(form.Encode())
	}

	var tok string
	switch c {
	case cUser, cOther:
		tok = e.token(t, e.ada.ID, nil, nil)
	case cListed, cMethod, cBig, cRemote:
		tok = e.token(t, secListed, nil, nil)
	case cRole:
		tok = e.token(t, secRole, nil, nil)
	case cForged:
		tok = e.token(t, secListed, testOtherKey(), nil)
	case cExpired:
		tok = e.token(t, secListed, nil, func(c map[string]any) {
			old := time.Now().Add(-2 * time.Minute)
			c["iat"], c["nbf"], c["exp"] = old.Unix(), old.Unix(), old.Add(time.Minute).Unix()
		})
	case cAZP:
		tok = e.token(t, secListed, nil, func(c map[string]any) { c["azp"] = "https://evil.example" })
	case cCross:
		tok = e.token(t, secCross, nil, nil)
	}

	req := httptest.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	req.RemoteAddr = "127.0.0.1:40000"
	if c == cRemote {
		req.RemoteAddr = "203.0.113.9:40000"
	}
	switch {
	case c == cCross:
		// A link, redirect or form on another site: the browser says
		// cross-site, and names that site's Origin on a POST.
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		if method != http.MethodGet {
			req.Header.Set("Origin", "https://evil.example")
		}
	case r.kind != "webhook":
		req.Header.Set("Origin", e.srv.URL) // same-origin: past checkOrigin
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	if tok != "" {
		if strings.HasPrefix(path, "/api/") && c != cCross { // the browser only has the cookie
			req.Header.Set("Authorization", "Bearer "+tok)
		} else {
			req.AddCookie(&http.Cookie{Name: sessionCookie, Value: tok})
		}
	}
	return req
}

// mayNotSee returns the emails caller c must never be shown on row r.
func (e *securityEnv) mayNotSee(r routeRow, c caller) []string {
	all := []string{"ada@example.com", "bob@example.com", "listed@example.com", "role@example.com"}
	switch {
	case c == cListed || c == cRole || c == cRemote || c == cBig || c == cMethod || c == cCross:
		return nil // auditors see everything (the cross-site caller is shown nothing it would record: see the matrix)
	case r.public && c != cRemote:
		return nil
	case c == cUser || c == cOther:
		return all[1:] // Ada sees only her own
	}
	return all
}

// TestRouteSecurityMatrix sends every kind of caller to every route of
// routes.go, through the real middleware, token verification and
// PostgreSQL, and checks the status of each cell and that no answer shows
// anyone's data the caller may not see. It runs once with real Clerk keys
// (dev routes absent) and once as `ledger dev` (dev sign-in present).
func TestRouteSecurityMatrix(t *testing.T) {
	for _, dev := range []bool{false, true} {
		t.Run(map[bool]string{false: "clerk", true: "dev"}[dev], func(t *testing.T) {
			e := newSecurityEnv(t, dev)
			h := e.srv.Config.Handler
			n := 0
			for _, r := range securityRoutes {
				want := r.want
				if r.notDev != nil && !dev {
					want = *r.notDev
				}
				for c := range nCallers {
					if want[c] == na {
						continue
					}
					n++
					req := e.request(t, r, c, n)
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != want[c] {
						t.Errorf("%s %s as %s: %d, want %d: %.200s", req.Method, req.URL.Path, c, rec.Code, want[c], rec.Body)
					}
					for _, email := range e.mayNotSee(r, c) {
						if strings.Contains(rec.Body.String(), email) {
							t.Errorf("%s %s as %s shows %s", req.Method, req.URL.Path, c, email)
						}
					}
					if c == cOther && !r.public && strings.Contains(rec.Body.String(), e.bob.ID) {
						t.Errorf("%s %s as %s shows Bob's id", req.Method, req.URL.Path, c)
					}
				}
			}
			if logs := e.logs.String(); strings.Contains(logs, "eyJ") {
				t.Errorf("the log holds a token")
			}
			// The cross-site caller (an auditor) ran nothing that is
			// recorded in its name, while the same-site auditors did.
			for _, q := range []string{`SELECT count(*) FROM audit_access WHERE actor = $1`, `SELECT count(*) FROM audit_verifications WHERE actor = $1`} {
				var cross, listed int
				if err := e.db.Get(&cross, q, secCross); err != nil {
					t.Fatal(err)
				}
				if err := e.db.Get(&listed, q, secListed); err != nil {
					t.Fatal(err)
				}
				if cross != 0 || listed == 0 {
					t.Errorf("%s: %d rows by the cross-site caller (want 0), %d by the listed auditor (want some)", q, cross, listed)
				}
			}
		})
	}
}
