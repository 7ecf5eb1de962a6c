package handlers

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/clerksession"
	"github.com/clerk-ledger/clerk-ledger/domain"
)

// TestSessionTokens sends one token per case to /api/me (as a Bearer token)
// and to / (as the __session cookie): only genuine, current tokens issued to
// this origin by the instance's key sign anyone in; every other token gets
// 401 JSON and the signed-out page, never data. (A token without azp:
// TestTokenWithoutAZP.)
func TestSessionTokens(t *testing.T) {
	e := newWebEnv(t, webOptions{})
	ada, bob := e.seedAdaAndBob(t)
	rs := map[string]any{"alg": "RS256", "typ": "JWT", "kid": "ins_test"}
	now := time.Now()
	with := func(change func(c map[string]any)) map[string]any {
		c := sessionClaims(ada.ID, e.srv.URL)
		change(c)
		return c
	}
	header := func(change func(h map[string]any)) map[string]any {
		h := maps.Clone(rs)
		change(h)
		return h
	}
	cases := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid", mintJWT(t, rs, sessionClaims(ada.ID, e.srv.URL), testClerkKey(), nil), true},
		{"expired within the 10 s leeway", mintJWT(t, rs, with(func(c map[string]any) { c["exp"] = now.Add(-5 * time.Second).Unix() }), testClerkKey(), nil), true},
		{"expired", mintJWT(t, rs, with(func(c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = now.Add(-2*time.Minute).Unix(), now.Add(-2*time.Minute).Unix(), now.Add(-time.Minute).Unix()
		}), testClerkKey(), nil), false},
		{"not yet valid (nbf)", mintJWT(t, rs, with(func(c map[string]any) { c["nbf"] = now.Add(time.Minute).Unix() }), testClerkKey(), nil), false},
		{"issued in the future (iat)", mintJWT(t, rs, with(func(c map[string]any) { c["iat"] = now.Add(time.Minute).Unix() }), testClerkKey(), nil), false},
		{"wrong key", mintJWT(t, rs, sessionClaims(ada.ID, e.srv.URL), testOtherKey(), nil), false},
		{"alg none", mintJWT(t, header(func(h map[string]any) { h["alg"] = "none" }), sessionClaims(ada.ID, e.srv.URL), nil, nil), false},
		{"HS256 keyed with the public key", mintJWT(t, header(func(h map[string]any) { h["alg"] = "HS256" }), sessionClaims(ada.ID, e.srv.URL), nil, []byte(publicPEM(t, testClerkKey()))), false},
		{"no exp", mintJWT(t, rs, with(func(c map[string]any) { delete(c, "exp") }), testClerkKey(), nil), false},
		{"wrong azp", mintJWT(t, rs, with(func(c map[string]any) { c["azp"] = "https://evil.example" }), testClerkKey(), nil), false},
		{"azp of another origin on this host", mintJWT(t, rs, with(func(c map[string]any) { c["azp"] = e.srv.URL + "0" }), testClerkKey(), nil), false},
		{"other Clerk instance (iss)", mintJWT(t, rs, with(func(c map[string]any) { c["iss"] = "https://clerk.other.test" }), testClerkKey(), nil), false},
		{"no sub", mintJWT(t, rs, with(func(c map[string]any) { delete(c, "sub") }), testClerkKey(), nil), false},
		{"signature of another token", func() string {
			a := strings.Split(mintJWT(t, rs, sessionClaims(bob.ID, e.srv.URL), testClerkKey(), nil), ".")
			b := strings.Split(mintJWT(t, rs, sessionClaims(ada.ID, e.srv.URL), testClerkKey(), nil), ".")
			return b[0] + "." + b[1] + "." + a[2]
		}(), false},
		{"pending session (sts)", mintJWT(t, rs, with(func(c map[string]any) { c["sts"] = "pending" }), testClerkKey(), nil), false},
		{"active session (sts)", mintJWT(t, rs, with(func(c map[string]any) { c["sts"] = "active" }), testClerkKey(), nil), true},
		{"garbage", "not.a.token", false},
		{"four parts", "a.b.c.d", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, body := e.get(t, "/api/me", nil, bearer(tc.token))
			page, html := e.get(t, "/", map[string]string{sessionCookie: tc.token}, nil)
			if tc.ok {
				if res.StatusCode != http.StatusOK {
					t.Fatalf("/api/me: %s %s", res.Status, body)
				}
				var me meJSON
				if err := json.Unmarshal([]byte(body), &me); err != nil {
					t.Fatal(err)
				}
				if me.ID != ada.ID || me.Email != "ada@example.com" || me.Name != "Ada Lovelace" {
					t.Errorf("/api/me = %+v", me)
				}
				mustContain(t, html, "Ada Lovelace", "ada@example.com")
				return
			}
			if res.StatusCode != http.StatusUnauthorized {
				t.Errorf("/api/me: %s, want 401", res.Status)
			}
			var eb errorBody
			if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Error.Code != domain.EUNAUTHORIZED {
				t.Errorf("/api/me body %q is not a 401 JSON error", body)
			}
			if page.StatusCode != http.StatusOK {
				t.Errorf("/: %s", page.Status)
			}
			mustContain(t, html, `id="sign-in"`)
			mustNotContain(t, html, "Ada", "ada@example.com", ada.ID, "Bob", bob.ID)
		})
	}
	if logs := e.logs.String(); strings.Contains(logs, "eyJ") {
		t.Errorf("the log holds a token:\n%s", logs)
	}
}

// TestTokenWithoutAZP: Clerk leaves azp out of tokens made for requests
// without an Origin (native iOS, Android and Expo apps), and its SDKs check
// azp only when present. Such a token signs in as a Bearer token; in the
// __session cookie (a browser's, whose tokens always carry azp) it does
// not; a present azp must be an authorized party either way.
func TestTokenWithoutAZP(t *testing.T) {
	e := newWebEnv(t, webOptions{})
	ada, _ := e.seedAdaAndBob(t)
	rs := map[string]any{"alg": "RS256", "typ": "JWT", "kid": "ins_test"}
	with := func(change func(c map[string]any)) string {
		c := sessionClaims(ada.ID, e.srv.URL)
		change(c)
		return mintJWT(t, rs, c, testClerkKey(), nil)
	}
	for name, tok := range map[string]string{
		"no azp":    with(func(c map[string]any) { delete(c, "azp") }),
		"empty azp": with(func(c map[string]any) { c["azp"] = "" }),
	} {
		res, body := e.get(t, "/api/me", nil, bearer(tok))
		if res.StatusCode != http.StatusOK || !strings.Contains(body, ada.ID) {
			t.Errorf("%s as Bearer: %s %s, want 200 with Ada's record", name, res.Status, body)
		}
		_, html := e.get(t, "/", map[string]string{sessionCookie: tok}, nil)
		mustContain(t, html, `id="sign-in"`)
		mustNotContain(t, html, "ada@example.com", ada.ID)
	}
	for _, azp := range []string{"https://evil.example", e.srv.URL + "0", "null"} {
		tok := with(func(c map[string]any) { c["azp"] = azp })
		if res, body := e.get(t, "/api/me", nil, bearer(tok)); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("azp %q as Bearer: %s %s, want 401", azp, res.Status, body)
		}
	}
	if !strings.Contains(e.logs.String(), `is not an authorized party`) {
		t.Errorf("the refused azp is not logged as the reason")
	}
}

// TestAPIMeOnlyOwnRecord: each token gets its own subject's record and
// nothing else, whatever the request says; 401 without a session; 404 for
// a signed-in person the projection does not know yet.
func TestAPIMeOnlyOwnRecord(t *testing.T) {
	e := newWebEnv(t, webOptions{})
	ada, bob := e.seedAdaAndBob(t)

	for _, u := range []clerkgen.User{ada, bob} {
		res, body := e.get(t, "/api/me?user_id="+ada.ID+"&id="+ada.ID, nil, bearer(e.token(t, u.ID)))
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s %s", u.ID, res.Status, body)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatal(err)
		}
		if got["id"] != u.ID || got["email"] != u.Email {
			t.Errorf("token of %s got %v", u.ID, got)
		}
		want := []string{"id", "email", "first_name", "last_name", "name", "username", "image_url", "created_at", "updated_at", "deleted",
			"phone_number", "email_verified", "external_id", "banned", "locked", "two_factor_enabled", "last_sign_in_at", "last_active_at",
			"organizations"}
		for _, k := range want {
			if _, ok := got[k]; !ok {
				t.Errorf("/api/me lacks %q", k)
			}
		}
		if len(got) != len(want) {
			t.Errorf("/api/me has %d fields, want %d: %v", len(got), len(want), got)
		}
	}
	// Bob's page shows Bob's record and timeline, nothing of Ada's.
	_, html := e.get(t, "/", map[string]string{sessionCookie: e.token(t, bob.ID)}, nil)
	mustContain(t, html, "Bob Secretperson", "bob@example.com")
	mustNotContain(t, html, "Ada", "ada@example.com", ada.ID, "Lovelace")

	res, body := e.get(t, "/api/me", nil, nil)
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"code":"unauthorized"`) {
		t.Errorf("no session: %s %s", res.Status, body)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("401 Content-Type %q", ct)
	}

	nobody := clerkgen.NewID("user")
	res, body = e.get(t, "/api/me", nil, bearer(e.token(t, nobody)))
	if res.StatusCode != http.StatusNotFound || !strings.Contains(body, `"code":"not_found"`) {
		t.Errorf("unprojected user: %s %s", res.Status, body)
	}
	res, html = e.get(t, "/", map[string]string{sessionCookie: e.token(t, nobody)}, nil)
	if res.StatusCode != http.StatusOK {
		t.Errorf("not synced page: %s", res.Status)
	}
	mustContain(t, html, "Not synced yet", nobody, "No event about you has arrived yet")
	mustNotContain(t, html, "Ada", "Bob")
}

// TestExpiredCookieRefresh: an expired cookie token while __client_uat says
// the browser's Clerk client is signed in gets the refresh page (200, no
// data), not the signed-out page or an error; without __client_uat (or as a
// Bearer token) it is simply not signed in.
func TestExpiredCookieRefresh(t *testing.T) {
	e := newWebEnv(t, webOptions{})
	ada, _ := e.seedAdaAndBob(t)
	c := sessionClaims(ada.ID, e.srv.URL)
	old := time.Now().Add(-5 * time.Minute)
	c["iat"], c["nbf"], c["exp"] = old.Unix(), old.Unix(), old.Add(time.Minute).Unix()
	expired := mintJWT(t, map[string]any{"alg": "RS256", "kid": "ins_test"}, c, testClerkKey(), nil)
	forged := mintJWT(t, map[string]any{"alg": "RS256", "kid": "ins_test"}, sessionClaims(ada.ID, e.srv.URL), testOtherKey(), nil)

	cases := []struct {
		name    string
		cookies map[string]string
		header  http.Header
		want    string
	}{
		{"expired + client_uat", map[string]string{sessionCookie: expired, clientUATCookie: "1716883200"}, nil, `id="refresh"`},
		{"no token + client_uat", map[string]string{clientUATCookie: "1716883200"}, nil, `id="refresh"`},
		{"expired + client_uat 0", map[string]string{sessionCookie: expired, clientUATCookie: "0"}, nil, `id="sign-in"`},
		{"expired, no client_uat", map[string]string{sessionCookie: expired}, nil, `id="sign-in"`},
		{"forged + client_uat", map[string]string{sessionCookie: forged, clientUATCookie: "1716883200"}, nil, `id="sign-in"`},
		{"expired Bearer + client_uat", map[string]string{clientUATCookie: "1716883200"}, bearer(expired), `id="sign-in"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, html := e.get(t, "/", tc.cookies, tc.header)
			if res.StatusCode != http.StatusOK {
				t.Errorf("status %s", res.Status)
			}
			mustContain(t, html, tc.want)
			mustNotContain(t, html, "Ada", "ada@example.com", ada.ID)
		})
	}
	res, body := e.get(t, "/api/me", map[string]string{sessionCookie: expired, clientUATCookie: "1716883200"}, nil)
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "expired") {
		t.Errorf("/api/me with expired cookie: %s %s", res.Status, body)
	}
}

// TestJWKSFixedExpiry: without CLERK_JWT_KEY the keys come from the
// instance's JWKS, fetched with the secret key, used until a fixed expiry
// that use never extends; after it a rotated-out key is refused. Unknown
// kids refetch at most once a minute.
func TestJWKSFixedExpiry(t *testing.T) {
	var fetches atomic.Int32
	type keyed struct {
		k   *rsa.PrivateKey
		kid string
	}
	var current atomic.Value // keyed: what the instance signs with now
	current.Store(keyed{testClerkKey(), "kid_a"})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/jwks" || r.Header.Get("Authorization") != "Bearer sk_test_secret" {
			http.Error(w, "wrong request", http.StatusUnauthorized)
			return
		}
		fetches.Add(1)
		k := current.Load().(keyed)
		n := k.k.PublicKey.N.Bytes()
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "kid": k.kid, "alg": "RS256", "use": "sig",
			"n": base64.RawURLEncoding.EncodeToString(n), "e": "AQAB",
		}}})
	}))
	defer api.Close()

	start := time.Now()
	clockNow := start
	now := func() time.Time { return clockNow }
	v, err := clerksession.NewVerifier(clerksession.Config{
		SecretKey: "sk_test_secret", APIURL: api.URL + "/v1", JWKSTTL: time.Hour,
		AuthorizedParties: []string{"https://app.example.test"}, Now: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	mint := func(k *rsa.PrivateKey, kid string) string {
		c := sessionClaims("user_1", "https://app.example.test")
		c["iat"], c["nbf"], c["exp"] = clockNow.Unix(), clockNow.Unix(), clockNow.Add(time.Minute).Unix()
		return mintJWT(t, map[string]any{"alg": "RS256", "kid": kid}, c, k, nil)
	}
	ctx := context.Background()
	verify := func(tok string) error { _, err := v.Verify(ctx, tok); return err }

	if err := verify(mint(testClerkKey(), "kid_a")); err != nil {
		t.Fatalf("first verify: %v", err)
	}
	// Constant use just before the expiry does not extend it.
	for _, d := range []time.Duration{10 * time.Minute, 30 * time.Minute, 59 * time.Minute} {
		clockNow = start.Add(d)
		if err := verify(mint(testClerkKey(), "kid_a")); err != nil {
			t.Fatalf("verify: %v", err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d JWKS fetches within the TTL, want 1", n)
	}
	// Unknown kids: one refetch, then none for a minute.
	for range 5 {
		if err := verify(mint(testOtherKey(), "kid_forged")); err == nil {
			t.Fatal("a token with an unknown kid verified")
		}
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d JWKS fetches after unknown kids, want 2 (rate limited)", n)
	}
	// Clerk rotates to key B. Past the fixed expiry key A is refused, B works.
	current.Store(keyed{testOtherKey(), "kid_b"})
	clockNow = clockNow.Add(2 * time.Hour)
	if err := verify(mint(testClerkKey(), "kid_a")); err == nil {
		t.Fatal("a rotated-out key still verifies after the cache expired")
	}
	if err := verify(mint(testOtherKey(), "kid_b")); err != nil {
		t.Fatalf("new key: %v", err)
	}
	// The API down after expiry: EUNAVAILABLE, never the stale keys.
	api.Close()
	clockNow = clockNow.Add(2 * time.Hour)
	err = verify(mint(testOtherKey(), "kid_b"))
	if domain.ErrorCode(err) != domain.EUNAVAILABLE {
		t.Fatalf("JWKS unreachable after expiry: %v, want EUNAVAILABLE", err)
	}
}

// TestSessionConfigErrors: bad settings are refused at start with the
// setting's name; the PEM key is accepted as pasted into an env var.
func TestSessionConfigErrors(t *testing.T) {
	pemKey := publicPEM(t, testClerkKey())
	parties := []string{"http://localhost:4321"}
	good := []clerksession.Config{
		{JWTKey: pemKey, AuthorizedParties: parties},
		{JWTKey: strings.ReplaceAll(pemKey, "\n", `\n`), AuthorizedParties: parties},
		{JWTKey: strings.Join(strings.Split(pemKey, "\n")[1:len(strings.Split(pemKey, "\n"))-2], ""), AuthorizedParties: parties},
		{SecretKey: "sk_test_x", AuthorizedParties: parties},
	}
	for i, c := range good {
		if _, err := clerksession.NewVerifier(c); err != nil {
			t.Errorf("good config %d: %v", i, err)
		}
	}
	bad := []struct {
		c    clerksession.Config
		want string
	}{
		{clerksession.Config{AuthorizedParties: parties}, "CLERK_JWT_KEY nor CLERK_SECRET_KEY"},
		{clerksession.Config{JWTKey: "not a key", AuthorizedParties: parties}, "CLERK_JWT_KEY is malformed"},
		{clerksession.Config{JWTKey: pemKey}, "CLERK_AUTHORIZED_PARTIES"},
		{clerksession.Config{JWTKey: pemKey, AuthorizedParties: []string{"localhost:4321"}}, "CLERK_AUTHORIZED_PARTIES"},
		{clerksession.Config{JWTKey: pemKey, AuthorizedParties: parties, PublishableKey: "pk_test_!!!"}, "PUBLIC_CLERK_PUBLISHABLE_KEY"},
	}
	for _, tc := range bad {
		_, err := clerksession.NewVerifier(tc.c)
		if domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("clerksession.NewVerifier(%+v) = %v, want EINVALID about %s", tc.c, err, tc.want)
		}
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestFrontendAPIHost(t *testing.T) {
	for pk, want := range map[string]string{
		testPublishableKey: testFrontendAPI,
		"pk_live_" + b64("clerk.ledger.example.com$"):        "clerk.ledger.example.com",
		"pk_test_" + b64("happy-cat-12.clerk.accounts.dev$"): "happy-cat-12.clerk.accounts.dev",
	} {
		got, err := clerksession.FrontendAPIHost(pk)
		if err != nil || got != want {
			t.Errorf("clerksession.FrontendAPIHost(%q) = %q, %v; want %q", pk, got, err, want)
		}
	}
	for _, pk := range []string{"", "sk_test_abc", "pk_test_", "pk_test_" + b64("no-dollar"),
		"pk_test_" + b64("evil.com/x\" onload=\"$"), "pk_test_" + b64("a b$")} {
		if _, err := clerksession.FrontendAPIHost(pk); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("clerksession.FrontendAPIHost(%q) = %v, want EINVALID", pk, err)
		}
	}
}

// TestRequirePageSession: the wrapper for pages only signed-in people may
// see (the audit pages) runs the page only with a session.
func TestRequirePageSession(t *testing.T) {
	pg, err := parsePages(slog.New(slog.DiscardHandler), clerkJS{}, false)
	if err != nil {
		t.Fatal(err)
	}
	h := requirePageSession(pg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := sessionFrom(r.Context())
		w.Write([]byte("secret page for " + s.UserID))
	}))
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		status int
		want   string
	}{
		{"signed in", withSession(context.Background(), Session{UserID: "user_1"}), http.StatusOK, "secret page for user_1"},
		{"needs refresh", context.WithValue(context.Background(), refreshKey{}, true), http.StatusOK, `id="refresh"`},
		{"signed out", context.Background(), http.StatusUnauthorized, `Sign in`},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/audit", nil).WithContext(tc.ctx))
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("%s: %d %q", tc.name, rec.Code, rec.Body.String())
		}
		if tc.name != "signed in" && strings.Contains(rec.Body.String(), "secret") {
			t.Errorf("%s: the page ran", tc.name)
		}
	}
}
