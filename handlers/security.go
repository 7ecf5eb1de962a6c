package handlers

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// clerkImageHost serves Clerk's user avatars (user.image_url).
const clerkImageHost = "img.clerk.com"

// contentSecurityPolicy returns the CSP for every response. Scripts and
// connections may go only to our origin and, when ClerkJS is configured, the
// instance's Frontend API host. ClerkJS additionally needs inline styles
// (runtime CSS-in-JS), blob: workers and avatars from img.clerk.com, so
// those are allowed only when it is on. Nothing may frame our pages.
func contentSecurityPolicy(frontendAPI string) string {
	clerk, img, style, worker := "", "", "", ""
	if frontendAPI != "" {
		clerk = " https://" + frontendAPI
		img = " https://" + clerkImageHost
		style = " 'unsafe-inline'"
		worker = " blob:"
	}
	return strings.Join([]string{
		"default-src 'self'",
		"script-src 'self'" + clerk,
		"connect-src 'self'" + clerk,
		"img-src 'self' data:" + clerk + img,
		"style-src 'self'" + style,
		"font-src 'self'" + clerk,
		"worker-src 'self'" + worker,
		"frame-src 'self'" + clerk,
		"object-src 'none'",
		"base-uri 'none'",
		"form-action 'self'",
		"frame-ancestors 'none'",
	}, "; ")
}

// securityHeaders returns middleware that sets the security headers on every
// response: the CSP, no framing, no MIME sniffing, and a referrer policy
// that sends other sites at most our origin.
func securityHeaders(frontendAPI string) func(http.Handler) http.Handler {
	csp := contentSecurityPolicy(frontendAPI)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("Content-Security-Policy", csp)
			h.Set("X-Frame-Options", "DENY")
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Referrer-Policy", "strict-origin-when-cross-origin")
			h.Set("Cross-Origin-Opener-Policy", "same-origin-allow-popups")
			next.ServeHTTP(w, r)
		})
	}
}

// safeMethod reports whether m does not change state.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// origins tells this site's own origins: the request's own (scheme and
// Host) and the authorized parties (the public origins behind a proxy).
type origins struct {
	trusted map[string]bool
}

func newOrigins(trusted []string) origins {
	ok := map[string]bool{}
	for _, o := range trusted {
		ok[strings.ToLower(strings.TrimRight(o, "/"))] = true
	}
	return origins{trusted: ok}
}

// own reports whether origin (scheme://host[:port], any case) is r's own
// origin or an authorized party.
func (o origins) own(r *http.Request, origin string) bool {
	origin = strings.ToLower(origin)
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return origin != "" && (origin == scheme+"://"+strings.ToLower(r.Host) || o.trusted[origin])
}

// fromOwnPages reports whether r was sent by this site's own pages (a link
// followed, a form submitted or a fetch made on one of them). The browser
// says so in Sec-Fetch-Site: only "same-origin" counts; "cross-site",
// "same-site" (a sibling subdomain) and "none" (a typed or bookmarked URL,
// or a link opened from another application) do not. A browser that sends
// no Fetch Metadata must send a Referer on one of our origins (the pages'
// referrer policy sends it on same-origin requests); without either the
// answer is no.
func (o origins) fromOwnPages(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		return site == "same-origin"
	}
	ref, err := url.Parse(r.Header.Get("Referer"))
	if err != nil || ref.Host == "" || (ref.Scheme != "http" && ref.Scheme != "https") {
		return false
	}
	return o.own(r, ref.Scheme+"://"+ref.Host)
}

// crossSiteRead is the refusal of a recorded read that did not come from
// this site's own pages.
var crossSiteRead = domain.Errorf(domain.EFORBIDDEN, "this request did not come from the audit workspace's own pages (Sec-Fetch-Site), and audit reads are recorded in the access log in your name: open it from the workspace, or call the API with Authorization: Bearer")

// requireOwnPages wraps an API handler whose answers are recorded in the
// audit access log in the caller's name: a request signed in by the
// session cookie gets 403 unless it comes from this site's own pages
// (fromOwnPages), so a link or redirect on another site cannot make an
// auditor's browser run a recorded query (a Lax cookie rides a top-level
// navigation). Bearer requests pass: no browser sends that header on its
// own. It must run behind authenticate.
func requireOwnPages(log *slog.Logger, own origins, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s, _ := sessionFrom(r.Context()); !s.Bearer && !own.fromOwnPages(r) {
			log.InfoContext(r.Context(), "cross-site audit read refused", "path", r.URL.Path, "sec_fetch_site", truncate(r.Header.Get("Sec-Fetch-Site"), 20))
			writeError(w, r, log, crossSiteRead)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkOrigin returns middleware that refuses (403) every state-changing
// request (any method but GET, HEAD and OPTIONS) whose Origin header is
// missing or names neither the request's own origin nor one of trusted
// (the authorized parties). Requests to exempt paths pass unchecked: the
// Clerk webhook is server-to-server and signed, so it has no Origin. So do
// API requests (/api/...) with an Authorization: Bearer header: a browser
// never adds that header on its own, a cross-site page cannot add it
// without a CORS preflight this service never approves, and with it the
// session cookie is not read (sessionToken), so such a request acts only
// with the token its sender holds.
func checkOrigin(log *slog.Logger, trusted []string, exempt ...string) func(http.Handler) http.Handler {
	own := newOrigins(trusted)
	skip := map[string]bool{}
	for _, p := range exempt {
		skip[p] = true
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if safeMethod(r.Method) || skip[r.URL.Path] || bearerAPI(r) {
				next.ServeHTTP(w, r)
				return
			}
			origin := strings.ToLower(r.Header.Get("Origin"))
			if !own.own(r, origin) {
				log.InfoContext(r.Context(), "cross-origin request refused", "method", r.Method, "path", r.URL.Path, "origin", truncate(origin, 100))
				writeError(w, r, log, domain.Errorf(domain.EFORBIDDEN, "cross-origin request refused: the Origin header must name this site"))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// bearerAPI reports whether r is an API request carrying a Bearer token
// (the session then comes from that header only, never the cookie).
func bearerAPI(r *http.Request) bool {
	scheme, _, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") && strings.HasPrefix(r.URL.Path, "/api/")
}

// isLoopbackHost reports whether hostport (a Host header or the host of an
// origin, with or without a port) names this machine: localhost, a name
// under .localhost (browsers resolve those to loopback themselves), an
// address in 127.0.0.0/8 or ::1. Any other name may resolve anywhere, and
// its owner can point it at 127.0.0.1 at will (DNS rebinding).
func isLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") && len(host) > len(".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

// loopbackOnly returns the middleware of `ledger dev`: it refuses (403)
// every request whose Host is not a loopback name (isLoopbackHost), and
// every request with an Origin header that is not an http(s) origin on a
// loopback name, so that a page of another site whose host name was
// re-pointed at 127.0.0.1 (DNS rebinding) gets nothing: no dev sign-in, no
// picker, no data. Requests to exempt paths pass: the Clerk webhook is
// signed and may arrive through a tunnel under a public host name. fail
// answers the refusal (JSON or page).
func loopbackOnly(log *slog.Logger, fail func(http.ResponseWriter, *http.Request, error), exempt ...string) func(http.Handler) http.Handler {
	skip := map[string]bool{}
	for _, p := range exempt {
		skip[p] = true
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if skip[r.URL.Path] {
				next.ServeHTTP(w, r)
				return
			}
			ok := isLoopbackHost(r.Host)
			if o := r.Header.Get("Origin"); ok && o != "" {
				u, err := url.Parse(o)
				ok = err == nil && (u.Scheme == "http" || u.Scheme == "https") && isLoopbackHost(u.Host)
			}
			if !ok {
				log.InfoContext(r.Context(), "non-loopback host refused (ledger dev)", "method", r.Method, "path", r.URL.Path,
					"host", truncate(r.Host, 100), "origin", truncate(r.Header.Get("Origin"), 100))
				fail(w, r, domain.Errorf(domain.EFORBIDDEN, "this development server only answers to localhost, 127.0.0.1 or [::1]: open it as http://localhost:PORT"))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
