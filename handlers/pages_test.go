package handlers

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/clerksession"
	"github.com/clerk-ledger/clerk-ledger/domain"
)

func TestTemplatesParse(t *testing.T) {
	pg, err := parsePages(slog.New(slog.DiscardHandler), clerkJS{}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"home.html", "signed_out.html", "refresh.html", "error.html", "dev_sign_in.html"} {
		if pg.byName[name] == nil {
			t.Errorf("no template %s", name)
		}
	}
}

// TestSignedOutPage: what this is, the ClerkJS scripts from the Frontend API
// host in the publishable key, and the sign-in mount point.
func TestSignedOutPage(t *testing.T) {
	e := newWebEnv(t, webOptions{})
	res, html := e.get(t, "/", nil, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %s", res.Status)
	}
	mustContain(t, html,
		`id="sign-in"`,
		`src="https://clerk.example.test/npm/@clerk/ui@1/dist/ui.browser.js"`,
		`src="https://clerk.example.test/npm/@clerk/clerk-js@6/dist/clerk.browser.js"`,
		`data-clerk-publishable-key="`+testPublishableKey+`"`,
		`<script defer src="/static/app.js"></script>`,
		"append-only ledger",
		`data-signed-in="false"`,
	)
	mustNotContain(t, html, "Development sign-in", "<script>")
	for _, p := range []string{"/static/style.css", "/static/app.js"} {
		res, body := e.get(t, p, nil, nil)
		if res.StatusCode != http.StatusOK || len(body) < 100 {
			t.Errorf("%s: %s (%d bytes)", p, res.Status, len(body))
		}
	}
	if res, _ := e.get(t, "/static/", nil, nil); res.StatusCode != http.StatusNotFound {
		t.Errorf("/static/ lists the directory: %s", res.Status)
	}
}

// TestSignedInPage: the own record and a readable timeline, newest first.
func TestSignedInPage(t *testing.T) {
	e := newWebEnv(t, webOptions{})
	ada, _ := e.seedAdaAndBob(t)
	res, html := e.get(t, "/", map[string]string{sessionCookie: e.token(t, ada.ID)}, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %s", res.Status)
	}
	mustContain(t, html, `id="profile"`, "Ada Lovelace", "ada@example.com", ada.ID,
		`id="user-button"`, `data-signed-in="true"`,
		// Values inside a summary sentence are isolated (U+2068 … U+2069).
		"Account created as \u2068Ada Byron\u2069", "Changed name to \u2068Ada Lovelace\u2069", "Signed in", "Clerk sent you an email: \u2068verification code\u2069",
		"4 event(s)")
	mustNotContain(t, html, "424242", "Your verification code") // no email bodies or subjects
	created := strings.Index(html, "Account created")
	email := strings.Index(html, "Clerk sent you an email")
	if created < 0 || email < 0 || email > created {
		t.Errorf("timeline is not newest first")
	}
	if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	// The avatar is Clerk's image host, which the CSP allows.
	mustContain(t, html, `<img src="https://img.clerk.com/`)
}

func TestSecurityHeaders(t *testing.T) {
	e := newWebEnv(t, webOptions{})
	for _, p := range []string{"/", "/api/me", "/nope", "/static/style.css", "/healthz"} {
		res, _ := e.get(t, p, nil, nil)
		h := res.Header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self' https://clerk.example.test;",
			"connect-src 'self' https://clerk.example.test;", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", p, csp, want)
			}
		}
		for _, d := range strings.Split(csp, ";") {
			d = strings.TrimSpace(d)
			if strings.HasPrefix(d, "script-src") && (strings.Contains(d, "unsafe") || strings.Count(d, " ") != 2) {
				t.Errorf("script-src allows more than our origin and the Frontend API: %q", d)
			}
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") == "" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", p, h)
		}
	}
	// Without ClerkJS (dev) nothing but our origin.
	csp := contentSecurityPolicy("")
	if strings.Contains(csp, "https:") || strings.Contains(csp, "unsafe") || strings.Contains(csp, "blob:") {
		t.Errorf("CSP without Clerk: %q", csp)
	}
}

// TestOriginCheck: state-changing requests need an Origin naming this site;
// the signed webhook is exempt.
func TestOriginCheck(t *testing.T) {
	e := newWebEnv(t, webOptions{dev: true})
	post := func(path, origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader("user_id=user_x"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		res, _ := do(t, req)
		return res
	}
	for _, o := range []string{"", "https://evil.example", "null", "http://127.0.0.1.evil.example"} {
		if res := post("/dev/sign-in", o); res.StatusCode != http.StatusForbidden {
			t.Errorf("POST /dev/sign-in with Origin %q: %s, want 403", o, res.Status)
		}
		if res := post("/", o); res.StatusCode != http.StatusForbidden {
			t.Errorf("POST / with Origin %q: %s, want 403", o, res.Status)
		}
	}
	// Same origin passes the check (and then fails for the unknown user: 404).
	if res := post("/dev/sign-in", e.srv.URL); res.StatusCode != http.StatusNotFound {
		t.Errorf("same-origin POST: %s, want 404 (user not projected)", res.Status)
	}
	// The webhook has no Origin and is judged by its signature alone.
	if res := post(webhookPath, ""); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned webhook: %s, want 401", res.Status)
	}
}

func TestNotFoundAndErrorPages(t *testing.T) {
	e := newWebEnv(t, webOptions{})
	ada, _ := e.seedAdaAndBob(t)

	res, html := e.get(t, "/no/such/page", nil, nil)
	if res.StatusCode != http.StatusNotFound || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Errorf("404: %s %s", res.Status, res.Header.Get("Content-Type"))
	}
	mustContain(t, html, "Page not found", `href="/static/style.css"`, `href="/"`)

	res, body := e.get(t, "/api/nope", nil, nil)
	if res.StatusCode != http.StatusNotFound || !strings.Contains(body, `"code":"not_found"`) {
		t.Errorf("/api/ 404: %s %s", res.Status, body)
	}

	// The database goes away: a styled error page without internals.
	e.db.Close()
	res, html = e.get(t, "/", map[string]string{sessionCookie: e.token(t, ada.ID)}, nil)
	if res.StatusCode < 500 {
		t.Errorf("database closed: %s", res.Status)
	}
	mustContain(t, html, `id="error"`, `href="/static/style.css"`)
	mustNotContain(t, html, "sql", "pq:", "database is closed", ".go:", "goroutine", "Ada")
	res, body = e.get(t, "/api/me", nil, bearer(e.token(t, ada.ID)))
	if res.StatusCode < 500 || strings.Contains(body, "sql") {
		t.Errorf("/api/me with the database closed: %s %s", res.Status, body)
	}
}

// TestDevSignIn: the bannered picker lists projected users; picking one sets
// a short-lived session cookie verified by the same SessionVerifier; the dev
// tokens mean nothing to a server with a real Clerk key.
func TestDevSignIn(t *testing.T) {
	e := newWebEnv(t, webOptions{dev: true})
	ada, bob := e.seedAdaAndBob(t)

	res, html := e.get(t, "/", nil, nil)
	mustContain(t, html, "Development sign-in", `href="/dev/sign-in"`)
	mustNotContain(t, html, "clerk.browser.js")
	res, html = e.get(t, "/dev/sign-in", nil, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("picker: %s", res.Status)
	}
	mustContain(t, html, "Development sign-in", "Ada Lovelace", "Bob Secretperson", ada.ID, bob.ID)

	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/dev/sign-in", strings.NewReader(url.Values{"user_id": {ada.ID}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.srv.URL)
	res, _ = do(t, req)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" {
		t.Fatalf("sign in: %s %v", res.Status, res.Header)
	}
	var cookie *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == sessionCookie {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode || cookie.MaxAge <= 0 || cookie.MaxAge > 900 {
		t.Fatalf("session cookie %+v", cookie)
	}
	res, html = e.get(t, "/", map[string]string{sessionCookie: cookie.Value}, nil)
	mustContain(t, html, "Ada Lovelace", "ada@example.com", "Development sign-in", `action="/dev/sign-out"`)
	mustNotContain(t, html, "Bob")
	res, body := e.get(t, "/api/me", nil, bearer(cookie.Value))
	if res.StatusCode != http.StatusOK || !strings.Contains(body, ada.ID) {
		t.Errorf("/api/me with the dev token: %s %s", res.Status, body)
	}

	// A server with the real Clerk key refuses the dev token.
	real, err := clerksession.NewVerifier(clerksession.Config{JWTKey: publicPEM(t, testClerkKey()), AuthorizedParties: e.dev.Config().AuthorizedParties})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := real.Verify(t.Context(), cookie.Value); err == nil {
		t.Error("a real-Clerk verifier accepted a dev token")
	}
}

func TestNewDevSignInRefuses(t *testing.T) {
	cases := []struct {
		c    clerksession.DevConfig
		want string
	}{
		{clerksession.DevConfig{Addr: "localhost:4321", ClerkSecretKey: "sk_test_x"}, "real Clerk keys"},
		{clerksession.DevConfig{Addr: "localhost:4321", ClerkJWTKey: "-----BEGIN PUBLIC KEY-----"}, "real Clerk keys"},
		{clerksession.DevConfig{Addr: "localhost:4321", PublishableKey: testPublishableKey}, "real Clerk keys"},
		{clerksession.DevConfig{Addr: ":4321"}, "loopback"},
		{clerksession.DevConfig{Addr: "0.0.0.0:4321"}, "loopback"},
		{clerksession.DevConfig{Addr: "[::]:4321"}, "loopback"},
		{clerksession.DevConfig{Addr: "192.168.1.10:4321"}, "loopback"},
		{clerksession.DevConfig{Addr: "ledger.example.com:4321"}, "loopback"},
	}
	for _, tc := range cases {
		d, err := clerksession.NewDev(tc.c)
		if d != nil || domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("clerksession.NewDev(%+v) = %v, want EINVALID about %s", tc.c, err, tc.want)
		}
	}
	for _, addr := range []string{"localhost:4321", "127.0.0.1:0", "[::1]:4321"} {
		if _, err := clerksession.NewDev(clerksession.DevConfig{Addr: addr}); err != nil {
			t.Errorf("clerksession.NewDev(%s): %v", addr, err)
		}
	}
}

func TestDefaultAuthorizedParties(t *testing.T) {
	got, err := clerksession.DefaultAuthorizedParties("localhost:4321")
	if err != nil || strings.Join(got, " ") != "http://localhost:4321 http://127.0.0.1:4321 http://[::1]:4321" {
		t.Errorf("localhost: %v %v", got, err)
	}
	got, err = clerksession.DefaultAuthorizedParties("ledger.example.com:8080")
	if err != nil || strings.Join(got, " ") != "http://ledger.example.com:8080" {
		t.Errorf("named host: %v %v", got, err)
	}
	for _, addr := range []string{":4321", "0.0.0.0:80", "nonsense"} {
		if _, err := clerksession.DefaultAuthorizedParties(addr); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("%s: %v, want EINVALID", addr, err)
		}
	}
}

// timeline summarizes events (in ledger order) as the signed-in page does,
// newest first, at most max.
func timeline(events []domain.Event, sessionID string, max int) []timelineEntry {
	var folded domain.User
	var out []timelineEntry
	for _, e := range events {
		next, err := domain.Apply(folded, e)
		if err != nil {
			next = folded
		}
		out = append(out, summarize(e, folded, next, sessionID))
		folded = next
	}
	slices.Reverse(out)
	return out[:min(len(out), max)]
}

// TestTimelineSummaries covers the readable summaries event by event.
func TestTimelineSummaries(t *testing.T) {
	at := time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
	u := clerkgen.User{ID: "user_2x", Email: "a@example.com", FirstName: "Ada", CreatedAt: at, UpdatedAt: at}
	ev := func(pos int64, typ string, u clerkgen.User, at time.Time) domain.Event {
		b, err := clerkgen.Event(typ, u, at)
		if err != nil {
			t.Fatal(err)
		}
		d, err := domain.NewDelivery(clerkgen.NewID("msg"), at.Unix(), "v1,x", b)
		if err != nil {
			t.Fatal(err)
		}
		return domain.Event{Position: pos, DeliveryID: d.ID, Type: d.Type, UserID: d.UserID, OccurredAt: d.OccurredAt, Body: b}
	}
	renamed := u
	renamed.LastName, renamed.Email, renamed.UpdatedAt = "Lovelace", "ada@example.com", at.Add(time.Hour)
	stale := u
	stale.UpdatedAt = at.Add(30 * time.Minute)
	events := []domain.Event{
		ev(1, "user.created", u, at),
		ev(2, "user.updated", renamed, renamed.UpdatedAt),
		ev(3, "user.updated", stale, stale.UpdatedAt), // arrives late, older than what we have
		ev(4, "session.created", u, at.Add(2*time.Hour)),
		ev(5, "organization.created", u, at.Add(3*time.Hour)),
		ev(6, "user.deleted", u, at.Add(4*time.Hour)),
	}
	var sess struct {
		Data struct{ ID string } `json:"data"`
	}
	_ = json.Unmarshal(events[3].Body, &sess)
	got := timeline(events, sess.Data.ID, 10)
	want := []string{
		"Account deleted",
		"Created the organization \u2068Acme Inc\u2069",
		"Signed in (this session)",
		"Profile update older than what the ledger already had (no change)",
		"Changed name to \u2068Ada Lovelace\u2069, primary email to \u2068ada@example.com\u2069",
		"Account created as \u2068Ada\u2069",
	}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i].Summary, w) {
			t.Errorf("entry %d (%s): %q, want %q", i, got[i].Type, got[i].Summary, w)
		}
	}
	if !got[2].Current {
		t.Error("this session is not marked")
	}
	if n := len(timeline(events, "", 2)); n != 2 {
		t.Errorf("timeline max 2 gave %d", n)
	}
}
