package handlers

import (
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/clerksession"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// devSignInPage is the data of dev_sign_in.html.
type devSignInPage struct {
	Users []domain.User
}

// remoteLoopback reports whether the request comes from this machine.
func remoteLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// devRequestOK answers a dev sign-in request that may not be served (not
// from this machine: 403; no database: 503) and reports whether it may.
func devRequestOK(w http.ResponseWriter, r *http.Request, pg *pages, db *sqlx.DB) bool {
	if !remoteLoopback(r) {
		pg.renderError(w, r, domain.Errorf(domain.EFORBIDDEN, "the dev sign-in only answers this machine"))
		return false
	}
	if db == nil {
		pg.renderError(w, r, domain.Errorf(domain.EUNAVAILABLE, "no database"))
		return false
	}
	return true
}

// handleDevSignInPage serves GET /dev/sign-in: the bannered list of
// projected users to sign in as. Only answered to loopback clients.
func handleDevSignInPage(pg *pages, db *sqlx.DB) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !devRequestOK(w, r, pg, db) {
			return
		}
		users, err := schema.ListUsers(r.Context(), db, 200)
		if err != nil {
			pg.renderError(w, r, err)
			return
		}
		pg.render(w, r, http.StatusOK, "dev_sign_in.html", devSignInPage{Users: users})
	}
}

// handleDevSignIn serves POST /dev/sign-in (form field user_id): it signs
// the browser in as that projected user with a dev session token in the
// __session cookie and redirects to /. 404 page for a user not in the
// projection, 400 for a user_id that is not text (checkValues), 413 for a
// form over formMaxBytes. Origin is checked by checkOrigin, the host name
// by loopbackOnly; only loopback clients.
func handleDevSignIn(log *slog.Logger, pg *pages, dev *clerksession.Dev, db *sqlx.DB) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !devRequestOK(w, r, pg, db) {
			return
		}
		if _, err := readForm(w, r); err != nil {
			pg.renderError(w, r, err)
			return
		}
		id := strings.TrimSpace(r.PostFormValue("user_id"))
		if id == "" {
			pg.renderError(w, r, domain.Errorf(domain.EINVALID, "pick a user to sign in as"))
			return
		}
		if len(id) > 200 {
			pg.renderError(w, r, domain.Errorf(domain.EINVALID, "user_id is longer than 200 bytes"))
			return
		}
		if _, err := schema.GetUser(r.Context(), db, id); err != nil {
			pg.renderError(w, r, err)
			return
		}
		origins := dev.Origins()
		azp := origins[0]
		for _, o := range origins {
			if strings.EqualFold(o, r.Header.Get("Origin")) {
				azp = o
			}
		}
		tok, exp, err := dev.Mint(id, azp)
		if err != nil {
			pg.renderError(w, r, err)
			return
		}
		http.SetCookie(w, &http.Cookie{
			Name: sessionCookie, Value: tok, Path: "/", Expires: exp, MaxAge: int(dev.TTL().Seconds()),
			HttpOnly: true, SameSite: http.SameSiteLaxMode,
		})
		log.InfoContext(r.Context(), "dev sign-in", "user_id", id)
		http.Redirect(w, r, "/", http.StatusSeeOther)
	}
}

// handleDevSignOut serves POST /dev/sign-out: it clears the session cookie
// and redirects to /.
func handleDevSignOut() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
		http.Redirect(w, r, "/", http.StatusSeeOther)
	}
}
