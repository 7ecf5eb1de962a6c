package handlers

import (
	"log/slog"
	"net/http"
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

// checkOrigin returns middleware that refuses (403) every state-changing
// request (any method but GET, HEAD and OPTIONS) whose Origin header is
// missing or names neither the request's own origin nor one of trusted
// (the authorized parties). Requests to exempt paths pass unchecked: the
// Clerk webhook is server-to-server and signed, so it has no Origin.
func checkOrigin(log *slog.Logger, trusted []string, exempt ...string) func(http.Handler) http.Handler {
	ok := map[string]bool{}
	for _, o := range trusted {
		ok[strings.ToLower(strings.TrimRight(o, "/"))] = true
	}
	skip := map[string]bool{}
	for _, p := range exempt {
		skip[p] = true
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if safeMethod(r.Method) || skip[r.URL.Path] {
				next.ServeHTTP(w, r)
				return
			}
			origin := strings.ToLower(r.Header.Get("Origin"))
			scheme := "http"
			if r.TLS != nil {
				scheme = "https"
			}
			self := scheme + "://" + strings.ToLower(r.Host)
			if origin == "" || (origin != self && !ok[origin]) {
				log.InfoContext(r.Context(), "cross-origin request refused", "method", r.Method, "path", r.URL.Path, "origin", truncate(origin, 100))
				writeError(w, r, log, domain.Errorf(domain.EFORBIDDEN, "cross-origin request refused: the Origin header must name this site"))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
