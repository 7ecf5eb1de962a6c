package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// TestDevRefusesRebindingHosts: a page on rebind.attacker.example whose
// name was re-pointed at 127.0.0.1 (DNS rebinding) reaches the dev server
// with its own host name in Host and Origin. It gets 403 everywhere: no
// session cookie, no picker, no /api/me. Loopback names are served; the
// signed webhook is exempt (a tunnel delivers it under a public name); a
// server with real Clerk keys serves any host.
func TestDevRefusesRebindingHosts(t *testing.T) {
	e := newWebEnv(t, webOptions{dev: true})
	ada, _ := e.seedAdaAndBob(t)
	_, port, _ := strings.Cut(e.srv.Listener.Addr().String(), ":")
	rebind := "rebind.attacker.example:" + port
	request := func(method, path, host, origin string, body string, cookie string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie})
		}
		return do(t, req)
	}
	tok, _, err := e.dev.Mint(ada.ID, "http://127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}

	res, body := request(http.MethodPost, "/dev/sign-in", rebind, "http://"+rebind, "user_id="+ada.ID, "")
	if res.StatusCode != http.StatusForbidden || len(res.Cookies()) != 0 {
		t.Errorf("rebound POST /dev/sign-in: %s, cookies %v, want 403 and none", res.Status, res.Cookies())
	}
	mustContain(t, body, "only answers to localhost")
	for _, path := range []string{"/dev/sign-in", "/api/me", "/", "/healthz"} {
		res, body := request(http.MethodGet, path, rebind, "", "", tok)
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("rebound GET %s: %s, want 403", path, res.Status)
		}
		mustNotContain(t, body, "ada@example.com", "bob@example.com", ada.ID)
	}
	// A loopback Host with a foreign Origin (a fetch from another site).
	if res, body := request(http.MethodGet, "/api/me", "localhost:"+port, "http://"+rebind, "", tok); res.StatusCode != http.StatusForbidden {
		t.Errorf("GET /api/me with Origin %s: %s %s, want 403", rebind, res.Status, body)
	}
	// Every loopback spelling is served.
	for _, host := range []string{"localhost:" + port, "LOCALHOST:" + port, "app.localhost:" + port, "127.0.0.1:" + port, "127.1.2.3:" + port, "[::1]:" + port} {
		res, body := request(http.MethodGet, "/dev/sign-in", host, "", "", "")
		if res.StatusCode != http.StatusOK || !strings.Contains(body, "ada@example.com") {
			t.Errorf("GET /dev/sign-in with Host %s: %s, want the picker", host, res.Status)
		}
	}
	res, _ = request(http.MethodPost, "/dev/sign-in", "localhost:"+port, "http://localhost:"+port, "user_id="+ada.ID, "")
	if res.StatusCode != http.StatusSeeOther || len(res.Cookies()) != 1 {
		t.Errorf("POST /dev/sign-in on localhost: %s, want 303 with the cookie", res.Status)
	}
	// The webhook is judged by its signature alone, whatever the host.
	ev, err := clerkgen.Event("user.created", clerkgen.User{ID: clerkgen.NewID("user"), Email: "hook@example.org"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+webhookPath, bytes.NewReader(ev))
	req.Header = e.signer.Headers(clerkgen.NewID("msg"), time.Now(), ev)
	req.Host = "hooks.tunnel.example"
	if res, body := do(t, req); res.StatusCode != http.StatusOK {
		t.Errorf("webhook through a tunnel host: %s %s", res.Status, body)
	}
	if !strings.Contains(e.logs.String(), "non-loopback host refused") {
		t.Error("refusals are not logged")
	}

	// `ledger serve` (real Clerk keys, no dev sign-in) serves its public name.
	srv := newWebEnv(t, webOptions{})
	req, _ = http.NewRequest(http.MethodGet, srv.srv.URL+"/healthz", nil)
	req.Host = "ledger.example.com"
	if res, _ := do(t, req); res.StatusCode != http.StatusOK {
		t.Errorf("serve with a public Host: %s", res.Status)
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "localhost:4321": true, "LocalHost:1": true, "a.b.localhost:4321": true,
		"127.0.0.1:4321": true, "127.255.0.9": true, "[::1]:4321": true, "[::1]": true, "::1": true, "[::ffff:127.0.0.1]:80": true,
		"": false, ".localhost": false, "localhost.attacker.example": false, "localhostx:1": false, "127.0.0.1.nip.io:4321": false,
		"0.0.0.0:4321": false, "[::]:4321": false, "192.168.1.2:4321": false, "[fe80::1%lo]:4321": false, "rebind.attacker.example:4321": false,
	} {
		if got := isLoopbackHost(host); got != want {
			t.Errorf("isLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

// TestAuditorRoleExactKey: the auditor role is the value of the key spelled
// exactly "role", a JSON string equal to "auditor"; other spellings grant
// nothing, whatever the key order; with duplicate keys the last one counts,
// in the users projection's jsonb and in metadataRole alike.
func TestAuditorRoleExactKey(t *testing.T) {
	e := newAuditEnv(t)
	ctx := context.Background()
	a := audit.New(audit.Config{DB: e.db})
	for i, tc := range []struct {
		meta string
		want bool
	}{
		{`{"role":"auditor"}`, true},
		{`{"ROLE":"auditor"}`, false},
		{`{"Role":"auditor"}`, false},
		{`{"rOLE":"auditor"}`, false},
		{`{"Role":"auditor","role":"user"}`, false},
		{`{"role":"user","Role":"auditor"}`, false},
		{`{"ROLE":"auditor","role":"member"}`, false},
		{`{"Role":"user","role":"auditor"}`, true}, // the exact key says auditor: "Role" is another key
		{`{"role":"auditor","Role":"user"}`, true},
		{`{"role":"user","role":"auditor"}`, true}, // duplicates: the last counts
		{`{"role":"auditor","role":"user"}`, false},
		{`{"role":"Auditor"}`, false},
		{`{"role":"auditor "}`, false},
		{`{"role":["auditor"]}`, false},
		{`{"role":null}`, false},
		{`{"roles":"auditor"}`, false},
		{`{"rol\u0065":"auditor"}`, true}, // the same key, escaped
		{`["auditor"]`, false},
	} {
		id := fmt.Sprintf("user_role_%d", i)
		putUser(t, e.db, domain.User{ID: id, PublicMetadata: json.RawMessage(tc.meta)})
		got, err := a.IsAuditor(ctx, id)
		if err != nil || got != tc.want {
			t.Errorf("public_metadata %s: auditor %v (%v), want %v", tc.meta, got, err, tc.want)
		}
		// One rule: the raw bytes, the stored jsonb and PostgreSQL's own
		// reading of the key agree.
		var sqlRole *string
		if err := e.db.Get(&sqlRole, `SELECT CASE WHEN jsonb_typeof($1::jsonb -> 'role') = 'string' THEN $1::jsonb ->> 'role' END`, tc.meta); err != nil {
			t.Fatal(err)
		}
		if raw := audit.MetadataRole(json.RawMessage(tc.meta)); (sqlRole == nil && raw != "") || (sqlRole != nil && *sqlRole != raw) {
			t.Errorf("%s: metadataRole %q, PostgreSQL %q", tc.meta, raw, deref(sqlRole))
		}
		res, _ := e.get(t, id, "/audit/log")
		if want := map[bool]int{true: 200, false: 403}[tc.want]; res.StatusCode != want {
			t.Errorf("%s: /audit/log %d, want %d", tc.meta, res.StatusCode, want)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "(none)"
	}
	return *s
}

// TestBadParametersAre400: NUL, control characters and invalid UTF-8 in a
// query parameter, form field or path id, malformed %-escapes, ';'
// separators and more parameters than the service reads are refused with
// 400 naming what is wrong, before anything runs or is recorded. (Before,
// NUL and invalid UTF-8 reached PostgreSQL and gave 500, and what Go's
// query parser skips, up to every parameter past 10,000 of them, made a
// filtered audit query an unfiltered one.)
func TestBadParametersAre400(t *testing.T) {
	e := newAuditEnv(t)
	e.append(t, "msg_a", "user.created", clerkgen.User{ID: "user_a", Email: "a@example.com"}, tBase)
	e.append(t, "msg_b", "user.created", clerkgen.User{ID: "user_b", Email: "b@example.com"}, tBase)
	e.visible(t, 2)
	many := "user_id=user_a" + strings.Repeat("&type=user.%2A", 10_001)
	for _, tc := range []struct{ path, name string }{
		{"/api/audit/events?user_id=%00", `"user_id"`},
		{"/api/audit/events?user_id=user_a%00", `"user_id"`},
		{"/api/audit/events?user_id=%ff%fe", `"user_id"`},
		{"/api/audit/events?user_id=user_a%0a", `"user_id"`},
		{"/api/audit/events?type=user.%00", `"type"`},
		{"/api/audit/events?cursor=%00", `"cursor"`},
		{"/api/audit/events?user%00id=user_a", `"user\x00id" (its name)`},
		{"/api/audit/events?user_id=%zz", `"user_id"`},
		{"/api/audit/events?user_id=user_a;type=x", `"user_id"`},
		{"/api/audit/events?user_id=" + strings.Repeat("u", 3000), `"user_id"`},
		{"/api/audit/events?" + many, "10002 parameters"},
		{"/api/audit/events?user_id=user_a" + strings.Repeat("&type=user.%2A", 1000), "more than 1000"},
		{"/api/audit/users/%00", "user id"},
		{"/api/audit/users/user_a%ff", "user id"},
		{"/api/audit/users/user_a?at=%00", `"at"`},
		{"/audit?user_id=%00", `"user_id"`},
		{"/audit?" + many, "10002 parameters"},
		{"/audit/users/%00", "user id"},
		{"/audit/users/user_a%ff", "user id"},
		{"/audit/log?before=%00", `"before"`},
		{"/audit/chain?digest=%00", `"digest"`},
		{"/?x=%00", `"x"`},
	} {
		res, body := e.get(t, listedAuditor, tc.path)
		msg := html.UnescapeString(string(body))
		if strings.HasPrefix(tc.path, "/api/") {
			var eb errorBody
			if json.Unmarshal(body, &eb) != nil || eb.Error.Code != domain.EINVALID {
				t.Errorf("%.80s: not a JSON invalid error: %.200s", tc.path, body)
			}
			msg = eb.Error.Message
		}
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(msg, tc.name) {
			t.Errorf("%.80s: %d %.300s, want 400 naming %s", tc.path, res.StatusCode, msg, tc.name)
		}
		if bytes.Contains(body, []byte("b@example.com")) {
			t.Errorf("%.80s: answered unfiltered", tc.path)
		}
	}
	for _, form := range []string{"digest=%00", "signatures=true%00", "digest=%zz"} {
		if res, body := e.post(t, listedAuditor, "/api/audit/verify", form); res.StatusCode != http.StatusBadRequest {
			t.Errorf("verify form %s: %d %s, want 400", form, res.StatusCode, body)
		}
	}
	if list, _ := schema.ListAccess(context.Background(), e.db, 0, 10); len(list) != 0 {
		t.Errorf("refused requests were recorded: %+v", list)
	}
	if _, err := schema.LastVerification(context.Background(), e.db); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Errorf("a refused verification ran: %v", err)
	}
	// Up to the bound, a filtered query stays filtered.
	res, body := e.get(t, listedAuditor, "/api/audit/events?user_id=user_a"+strings.Repeat("&type=user.%2A", 999))
	if res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("a@example.com")) || bytes.Contains(body, []byte("b@example.com")) {
		t.Errorf("1000 parameters: %d %.300s", res.StatusCode, body)
	}
}

// TestDevSignInFormIsChecked: a NUL or invalid UTF-8 user_id is a 400, not
// a database error.
func TestDevSignInFormIsChecked(t *testing.T) {
	e := newWebEnv(t, webOptions{dev: true})
	for _, form := range []string{"user_id=%00", "user_id=user_%ff", "user_id=" + strings.Repeat("u", 300)} {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/dev/sign-in", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", e.srv.URL)
		if res, body := do(t, req); res.StatusCode != http.StatusBadRequest || len(res.Cookies()) != 0 {
			t.Errorf("POST /dev/sign-in %.40s: %s %.200s, want 400", form, res.Status, body)
		}
	}
}

// TestAuditSideEffectsNeedOwnPages: a link or redirect on another site (a
// Lax cookie rides a top-level navigation) can neither start a verification
// nor make the auditor's browser run a recorded read: verification is a
// POST behind the Origin check, and a recorded read runs only when the
// browser says the workspace's own pages asked (Sec-Fetch-Site:
// same-origin, or a Referer on this origin from a browser without Fetch
// Metadata). Pages then show the filled-in form and a notice; the API
// answers 403.
func TestAuditSideEffectsNeedOwnPages(t *testing.T) {
	e := newAuditEnv(t)
	ctx := context.Background()
	e.append(t, "msg_1", "user.created", clerkgen.User{ID: "user_x", Email: "x@example.com"}, tBase)
	e.visible(t, 1)
	e.sealer.SealAll(t, e.db, 1)
	from := func(h ...string) http.Header {
		out := http.Header{}
		for i := 0; i+1 < len(h); i += 2 {
			out.Set(h[i], h[i+1])
		}
		return out
	}
	nothingRecorded := func(what string) {
		t.Helper()
		if list, _ := schema.ListAccess(ctx, e.db, 0, 10); len(list) != 0 {
			t.Errorf("%s: recorded %+v", what, list)
		}
		if v, err := schema.LastVerification(ctx, e.db); domain.ErrorCode(err) != domain.ENOTFOUND {
			t.Errorf("%s: a verification ran: %+v %v", what, v, err)
		}
	}
	foreign := []http.Header{
		from("Sec-Fetch-Site", "cross-site"),
		from("Sec-Fetch-Site", "same-site"),
		from("Sec-Fetch-Site", "none"),
		from("Sec-Fetch-Site", "cross-site", "Referer", "http://example.com/audit"),
		from("Referer", "https://evil.example/page"),
		from("Referer", "http://example.com.evil.example/audit"),
		{}, // no Fetch Metadata, no Referer
	}
	for _, h := range foreign {
		res, body := e.serve(t, http.MethodGet, listedAuditor, "/audit/chain?verify=1&signatures=true", "", h)
		if res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("Not run")) {
			t.Errorf("GET /audit/chain?verify=1 %v: %d", h, res.StatusCode)
		}
		res, body = e.serve(t, http.MethodGet, listedAuditor, "/audit/search?user_id=user_x", "", h)
		if res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("Not run yet")) || !bytes.Contains(body, []byte(`value="user_x"`)) || bytes.Contains(body, []byte("x@example.com")) {
			t.Errorf("GET /audit?user_id=user_x %v: %d %.200s", h, res.StatusCode, body)
		}
		res, body = e.serve(t, http.MethodGet, listedAuditor, "/audit/users/user_x", "", h)
		if res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("Not run yet")) || bytes.Contains(body, []byte("x@example.com")) {
			t.Errorf("GET /audit/users/user_x %v: %d %.200s", h, res.StatusCode, body)
		}
		for _, p := range []string{"/api/audit/events?user_id=user_x", "/api/audit/events?format=csv", "/api/audit/users/user_x"} {
			if res, body := e.serve(t, http.MethodGet, listedAuditor, p, "", h); res.StatusCode != http.StatusForbidden || bytes.Contains(body, []byte("x@example.com")) {
				t.Errorf("GET %s %v: %d %.200s, want 403", p, h, res.StatusCode, body)
			}
		}
	}
	// A verification never runs on GET, and a POST from another origin is refused.
	for _, p := range []string{"/api/audit/verify", "/api/audit/verify?signatures=true"} {
		if res, _ := e.get(t, listedAuditor, p); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, res.StatusCode)
		}
	}
	for _, p := range []string{"/audit/chain", "/api/audit/verify"} {
		for _, origin := range []string{"", "https://evil.example", "null"} {
			h := from("Content-Type", "application/x-www-form-urlencoded", "Sec-Fetch-Site", "cross-site")
			if origin != "" {
				h.Set("Origin", origin)
			}
			if res, _ := e.serve(t, http.MethodPost, listedAuditor, p, "signatures=true", h); res.StatusCode != http.StatusForbidden {
				t.Errorf("POST %s from Origin %q: %d, want 403", p, origin, res.StatusCode)
			}
		}
	}
	nothingRecorded("requests from elsewhere")

	// From the workspace's own pages everything runs and is recorded.
	own := []http.Header{from("Sec-Fetch-Site", "same-origin"), from("Referer", "http://example.com/audit")}
	for _, h := range own {
		res, body := e.serve(t, http.MethodGet, listedAuditor, "/audit/search?user_id=user_x", "", h)
		if res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("x@example.com")) {
			t.Errorf("own search %v: %d", h, res.StatusCode)
		}
		if res, body := e.serve(t, http.MethodGet, listedAuditor, "/audit/users/user_x", "", h); res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("x@example.com")) {
			t.Errorf("own user page %v: %d", h, res.StatusCode)
		}
		if res, _ := e.serve(t, http.MethodGet, listedAuditor, "/api/audit/events?user_id=user_x", "", h); res.StatusCode != http.StatusOK {
			t.Errorf("own API read %v: %d", h, res.StatusCode)
		}
	}
	if list, _ := schema.ListAccess(ctx, e.db, 0, 10); len(list) != 6 {
		t.Errorf("own reads recorded %d times, want 6", len(list))
	}
	res, body := e.post(t, listedAuditor, "/audit/chain", "signatures=true")
	if res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("1 signatures valid")) {
		t.Errorf("POST /audit/chain: %d %.300s", res.StatusCode, body)
	}
	if v, err := schema.LastVerification(ctx, e.db); err != nil || v.Actor != listedAuditor || v.SignaturesChecked != 1 {
		t.Errorf("the verification was not recorded: %+v %v", v, err)
	}
}

// TestBearerAuditAPI: an API client with a Bearer token (no browser, no
// Fetch Metadata, no Origin) reads and verifies; the same requests with the
// session cookie from another site are refused.
func TestBearerAuditAPI(t *testing.T) {
	e := newWebEnv(t, webOptions{auditors: []string{"user_api_auditor"}})
	ada, _ := e.seedAdaAndBob(t)
	tok := e.token(t, "user_api_auditor")
	res, body := e.get(t, "/api/audit/events?user_id="+ada.ID, nil, bearer(tok))
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "ada@example.com") {
		t.Errorf("Bearer history: %s %.200s", res.Status, body)
	}
	post := func(h http.Header, cookie string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/audit/verify", nil)
		for k, v := range h {
			req.Header[k] = v
		}
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie})
		}
		res, _ := do(t, req)
		return res
	}
	if res := post(bearer(tok), ""); res.StatusCode != http.StatusOK {
		t.Errorf("Bearer POST /api/audit/verify without Origin: %s", res.Status)
	}
	if res := post(nil, tok); res.StatusCode != http.StatusForbidden {
		t.Errorf("cookie POST /api/audit/verify without Origin: %s, want 403", res.Status)
	}
	// Any other Authorization scheme does not lift the Origin check (and
	// the cookie is then not read at all).
	if res := post(http.Header{"Authorization": {"Basic eDp5"}}, tok); res.StatusCode != http.StatusForbidden {
		t.Errorf("Basic + cookie POST without Origin: %s, want 403", res.Status)
	}
	res, body = e.get(t, "/api/audit/events?user_id="+ada.ID, map[string]string{sessionCookie: tok}, http.Header{"Sec-Fetch-Site": {"cross-site"}})
	if res.StatusCode != http.StatusForbidden || strings.Contains(body, "ada@example.com") {
		t.Errorf("cross-site cookie history: %s %.200s", res.Status, body)
	}
	var n int
	if err := e.db.Get(&n, `SELECT count(*) FROM audit_verifications`); err != nil || n != 1 {
		t.Errorf("%d verifications, want 1: %v", n, err)
	}
}

// bidiOutside returns what of html is not isolated: html without <bdi>
// elements, FSI…PDI runs, and inputs with dir="auto".
func bidiOutside(html string) string {
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile("\u2068[^\u2068\u2069]*\u2069"),
		regexp.MustCompile(`<bdi>[^<]*</bdi>`),
		regexp.MustCompile(`<input [^>]*dir="auto"[^>]*>`),
	} {
		for {
			next := re.ReplaceAllString(html, "")
			if next == html {
				break
			}
			html = next
		}
	}
	return html
}

// TestBidiControlsAreIsolated: a user whose name, email and username hold
// U+202E (RIGHT-TO-LEFT OVERRIDE) cannot reverse the text around them: on
// the home page, the dev picker and the audit pages every occurrence is
// inside a <bdi> element, an isolate (U+2068…U+2069, in <title> and in
// summary sentences) or a dir="auto" input, and the payloads shown to
// auditors spell the control as \u202e.
func TestBidiControlsAreIsolated(t *testing.T) {
	const rlo = "\u202e"
	e := newWebEnv(t, webOptions{dev: true, auditors: []string{"user_bidi_auditor"}})
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	mallory := clerkgen.User{ID: clerkgen.NewID("user"), Email: rlo + "moc.elpmaxe@yrollam", FirstName: rlo + "yrollaM", LastName: "Evil" + rlo,
		Username: "m" + rlo + "x", PublicMetadata: map[string]any{"note": rlo + "txet"}, CreatedAt: t0, UpdatedAt: t0}
	e.deliver(t, "user.created", mallory, t0)
	renamed := mallory
	renamed.FirstName, renamed.Email, renamed.UpdatedAt = rlo+"nimdA", rlo+"moc.elpmaxe@nimda", t0.Add(time.Minute)
	e.deliver(t, "user.updated", renamed, renamed.UpdatedAt)
	e.deliver(t, "user.created", clerkgen.User{ID: "user_bidi_auditor", Email: "auditor@example.com", FirstName: "Audrey", CreatedAt: t0, UpdatedAt: t0}, t0)
	projectUsers(t, e.db)
	origin := e.srv.URL
	page := func(path, user string) string {
		t.Helper()
		tok, _, err := e.dev.Mint(user, origin)
		if err != nil {
			t.Fatal(err)
		}
		res, body := e.get(t, path, map[string]string{sessionCookie: tok}, http.Header{"Sec-Fetch-Site": {"same-origin"}})
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", path, res.Status)
		}
		return body
	}
	pages := map[string]string{
		"home":                 page("/", mallory.ID),
		"dev picker":           page("/dev/sign-in", mallory.ID),
		"audit user":           page("/audit/users/"+mallory.ID, "user_bidi_auditor"),
		"audit search":         page("/audit/search?user_id="+url.QueryEscape(rlo+mallory.ID), "user_bidi_auditor"),
		"audit search results": page("/audit/search?user_id="+mallory.ID, "user_bidi_auditor"),
		"audit log":            page("/audit/log", "user_bidi_auditor"),
	}
	for name, html := range pages {
		if !strings.Contains(html, rlo) && name != "audit search results" {
			t.Errorf("%s: the test's U+202E is not on the page at all", name)
		}
		if out := bidiOutside(html); strings.Contains(out, rlo) {
			i := strings.Index(out, rlo)
			t.Errorf("%s: U+202E outside an isolate: …%s…", name, out[max(0, i-120):min(len(out), i+60)])
		}
	}
	mustContain(t, pages["home"], "<title>\u2068"+rlo+"nimdA Evil"+rlo+"\u2069 · clerk-ledger</title>", `<h1 id="profile-name"><bdi>`+rlo+"nimdA Evil"+rlo+"</bdi></h1>",
		"Changed name to \u2068"+rlo+"nimdA Evil"+rlo+"\u2069, primary email to \u2068"+rlo+"moc.elpmaxe@nimda\u2069")
	mustContain(t, pages["dev picker"], `<span class="pick-name"><bdi>`+rlo+"nimdA Evil"+rlo+"</bdi></span>")
	// The payloads and metadata an auditor reads name the control.
	mustContain(t, pages["audit user"], `\u202enimdA`, `\u202etxet`)
	mustContain(t, pages["audit search results"], `\u202emoc.elpmaxe@nimda`)
	mustContain(t, pages["audit search"], `name="user_id" value="`+rlo+mallory.ID+`" placeholder="user_…" dir="auto"`)
	mustContain(t, pages["audit log"], "<bdi>"+rlo+mallory.ID+"</bdi>")
	// Initials never start with a control.
	mustNotContain(t, pages["home"], "<span>"+rlo)
}

// TestBrowserAuditCrossSite drives headless Chromium with an auditor's
// session cookie (SameSite Lax, as ClerkJS sets it): a link on another site
// (http://127.0.0.2, cross-site to http://127.0.0.1) opens the search with
// the filters filled in but runs and records nothing, and the Search button
// runs it; a form on that site that POSTs a verification is refused; the
// chain page's own Verify button runs one. Chromium's own Sec-Fetch-Site
// and Origin headers decide, nothing the test sets.
func TestBrowserAuditCrossSite(t *testing.T) {
	ctx := newBrowser(t)
	const auditor = "user_browser_auditor"
	e := newWebEnv(t, webOptions{auditors: []string{auditor}})
	ada, _ := e.seedAdaAndBob(t)
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	evil := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><a id="go" href="%[1]s/audit?user_id=%[2]s">look</a>
<form id="f" method="post" action="%[1]s/audit/chain"><input name="signatures" value="true"></form>`, e.srv.URL, ada.ID)
	})}
	go evil.Serve(ln)
	t.Cleanup(func() { evil.Close() })
	evilURL := "http://" + ln.Addr().String() + "/"

	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{Name: sessionCookie, Value: e.token(t, auditor), URL: e.srv.URL, Path: "/",
		SameSite: network.CookieSameSiteLax}); err != nil {
		t.Fatal(err)
	}
	waitFor := func(js string) {
		t.Helper()
		// false while the next page is still loading (no body yet)
		safe := `(() => { try { return !!(` + js + `) } catch (e) { return false } })()`
		for deadline := time.Now().Add(20 * time.Second); !evalBool(t, ctx, safe); {
			if time.Now().After(deadline) {
				text, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body.innerText"))
				t.Fatalf("waited for %s; the page says:\n%.1000s", js, text)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	recorded := func() (access, verifications int) {
		t.Helper()
		if err := e.db.Get(&access, `SELECT count(*) FROM audit_access`); err != nil {
			t.Fatal(err)
		}
		if err := e.db.Get(&verifications, `SELECT count(*) FROM audit_verifications`); err != nil {
			t.Fatal(err)
		}
		return access, verifications
	}

	// The link from the other site (an old-style /audit?user_id= link, sent
	// on to the search): the filled-in form and a notice.
	if err := chromedp.Do(ctx, chromedp.Navigate(evilURL), chromedp.Click("#go")); err != nil {
		t.Fatal(err)
	}
	waitFor(`location.pathname === "/audit/search" && !!document.querySelector("main form[role=search]")`)
	mustContain(t, evalText(t, ctx), "Not run yet")
	if evalBool(t, ctx, `document.body.textContent.includes("ada@example.com")`) {
		t.Error("the cross-site link shows Ada's events")
	}
	if !evalBool(t, ctx, `document.querySelector("input[name=user_id]").value === "`+ada.ID+`"`) {
		t.Error("the search form is not filled in from the link")
	}
	if a, v := recorded(); a != 0 || v != 0 {
		t.Errorf("the cross-site link recorded %d reads, %d verifications", a, v)
	}
	// The workspace's own Search button runs it.
	if err := chromedp.Do(ctx, chromedp.Click(`main form[role=search] button[type=submit]`)); err != nil {
		t.Fatal(err)
	}
	waitFor(`!!document.querySelector("#results-range")`)
	if !evalBool(t, ctx, `document.querySelector("main").textContent.includes("ada@example.com")`) { // in the collapsed payloads
		t.Error("the search from the workspace shows no result")
	}
	if a, _ := recorded(); a != 1 {
		t.Errorf("the search from the workspace recorded %d reads, want 1", a)
	}

	// A form on the other site POSTing a verification: refused.
	if err := chromedp.Do(ctx, chromedp.Navigate(evilURL), chromedp.WaitVisible("#f")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`document.getElementById("f").submit()`)); err != nil {
		t.Fatal(err)
	}
	waitFor(`location.pathname === "/audit/chain" && document.body.innerText.includes("cross-origin request refused")`)
	if _, v := recorded(); v != 0 {
		t.Errorf("the cross-site form ran %d verifications", v)
	}
	// The chain page's own button runs one.
	if err := chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/audit/chain"), chromedp.Click(`main form.form button[type=submit]`)); err != nil {
		t.Fatal(err)
	}
	waitFor(`document.body.innerText.includes("Result")`)
	if _, v := recorded(); v != 1 {
		t.Errorf("the Verify button ran %d verifications, want 1", v)
	}
}

func evalText(t *testing.T, ctx context.Context) string {
	t.Helper()
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body.innerText"))
	if err != nil {
		t.Fatal(err)
	}
	return text
}
