package handlers

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/clerksession"
	"github.com/clerk-ledger/clerk-ledger/domain"
)

// Session is the signed-in person behind a request, from a verified Clerk
// session token.
type Session struct {
	UserID    string // sub
	SessionID string // sid
	// Bearer is true when the token came from the Authorization header,
	// which browsers never send on their own (cross-site requests carry
	// only the cookie).
	Bearer bool
}

type sessionKey struct{}

// withSession returns ctx carrying s.
func withSession(ctx context.Context, s Session) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

// sessionFrom returns the request's verified session, if any.
func sessionFrom(ctx context.Context) (Session, bool) {
	s, ok := ctx.Value(sessionKey{}).(Session)
	return s, ok && s.UserID != ""
}

type refreshKey struct{}

// needsRefresh reports whether the request has no valid session but the
// browser has a Clerk client that can mint a fresh token: the session
// cookie's token expired (they live 60 s) or is missing while __client_uat
// says someone is signed in. Pages answer it with the refresh page, which
// lets ClerkJS renew the cookie and reload; never with data, an error or the
// signed-out page.
func needsRefresh(ctx context.Context) bool {
	v, _ := ctx.Value(refreshKey{}).(bool)
	return v
}

// The cookies ClerkJS keeps on the app's domain.
const (
	sessionCookie   = "__session"    // the session token (a JWT)
	clientUATCookie = "__client_uat" // unix seconds of the client's last sign-in change; 0 when signed out
)

// sessionToken returns the request's session token: from the Authorization
// header ("Bearer <token>") when there is one, else from the __session
// cookie. fromCookie tells which.
func sessionToken(r *http.Request) (token string, fromCookie bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, t, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", false
		}
		return strings.TrimSpace(t), false
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		return c.Value, true
	}
	return "", true
}

// clientSignedIn reports whether __client_uat says the browser's Clerk
// client has a signed-in session.
func clientSignedIn(r *http.Request) bool {
	c, err := r.Cookie(clientUATCookie)
	if err != nil {
		return false
	}
	n, err := strconv.ParseInt(c.Value, 10, 64)
	return err == nil && n > 0
}

// authenticate returns middleware that verifies the request's session token
// with sessions and puts the Session in the request context (sessionFrom).
// A missing or invalid token is not an error here: the request goes on
// without a session and the handler decides (signed-out page, 401). With
// clerkJS (ClerkJS can refresh the cookie), an expired or missing cookie
// token plus __client_uat > 0 marks the request needsRefresh instead.
// A nil sessions means nobody can sign in. Responses vary by Cookie and
// Authorization and are never stored by caches.
func authenticate(log *slog.Logger, sessions *clerksession.Verifier, clerkJS bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("Vary", "Cookie, Authorization")
			w.Header().Set("Cache-Control", "no-store")
			if sessions == nil {
				next.ServeHTTP(w, r)
				return
			}
			token, fromCookie := sessionToken(r)
			verify := sessions.VerifyBearer
			if fromCookie {
				verify = sessions.Verify
			}
			cs, err := verify(r.Context(), token)
			s := Session{UserID: cs.UserID, SessionID: cs.SessionID, Bearer: !fromCookie}
			ctx := r.Context()
			switch {
			case err == nil:
				ctx = withSession(ctx, s)
			case clerkJS && fromCookie && (err == clerksession.ErrNoToken || err == clerksession.ErrExpired) && clientSignedIn(r):
				ctx = context.WithValue(ctx, refreshKey{}, true)
			case err == clerksession.ErrNoToken:
			case err == clerksession.ErrExpired:
				log.DebugContext(ctx, "session token expired", "path", r.URL.Path)
			case domain.ErrorCode(err) == domain.EUNAVAILABLE:
				log.WarnContext(ctx, "session not verified", "path", r.URL.Path, "err", err)
			default:
				log.InfoContext(ctx, "session token rejected", "path", r.URL.Path, "from_cookie", fromCookie, "reason", err)
			}
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// requireAPISession wraps an API handler: without a verified session it
// answers 401 JSON and next is not called.
func requireAPISession(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := sessionFrom(r.Context()); !ok {
			msg := "sign in first: no valid session token (__session cookie or Authorization: Bearer)"
			if needsRefresh(r.Context()) {
				msg = "session token has expired: get a fresh one from ClerkJS (Clerk.session.getToken())"
			}
			writeError(w, r, log, domain.Errorf(domain.EUNAUTHORIZED, "%s", msg))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requirePageSession wraps a page handler that only signed-in people may
// see: needsRefresh gets the refresh page, no session the sign-in page (401);
// next runs only with a verified session.
func requirePageSession(pg *pages, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := sessionFrom(r.Context()); ok {
			next.ServeHTTP(w, r)
			return
		}
		if needsRefresh(r.Context()) {
			pg.refresh(w, r)
			return
		}
		pg.signIn(w, r, http.StatusUnauthorized)
	})
}
