package handlers

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// meJSON is the JSON shape of GET /api/me. Times are RFC 3339 in UTC, null
// when unknown.
type meJSON struct {
	ID        string     `json:"id"`
	Email     string     `json:"email"`
	FirstName string     `json:"first_name"`
	LastName  string     `json:"last_name"`
	Name      string     `json:"name"`
	Username  string     `json:"username"`
	ImageURL  string     `json:"image_url"`
	CreatedAt *time.Time `json:"created_at"`
	UpdatedAt *time.Time `json:"updated_at"`
	Deleted   bool       `json:"deleted"`
	// The rest of the user object; never private_metadata, which Clerk
	// keeps from the user (only auditors see it).
	PhoneNumber      string     `json:"phone_number"`
	EmailVerified    bool       `json:"email_verified"`
	ExternalID       string     `json:"external_id"`
	Banned           bool       `json:"banned"`
	Locked           bool       `json:"locked"`
	TwoFactorEnabled bool       `json:"two_factor_enabled"`
	LastSignInAt     *time.Time `json:"last_sign_in_at"`
	LastActiveAt     *time.Time `json:"last_active_at"`
	// Organizations are the organizations the person is in now.
	Organizations []meOrganization `json:"organizations"`
}

// meOrganization is one organization of GET /api/me.
type meOrganization struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Slug        string     `json:"slug"`
	Role        string     `json:"role"`
	Permissions []string   `json:"permissions"`
	JoinedAt    *time.Time `json:"joined_at"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// handleMe serves GET /api/me: the signed-in person's record from the users
// projection, with the organizations they are in now. It must run behind
// requireAPISession. It reads only the session subject's rows: 404 when no webhook about them has been projected
// yet (and, with fetch, Clerk's Backend API did not return them either), 503 when the database is unreachable.
func handleMe(log *slog.Logger, db *sqlx.DB, fetch UserFetcher) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := sessionFrom(r.Context())
		if !ok {
			writeError(w, r, log, domain.Errorf(domain.EUNAUTHORIZED, "sign in first"))
			return
		}
		if db == nil {
			writeError(w, r, log, domain.Errorf(domain.EUNAVAILABLE, "no database"))
			return
		}
		u, err := schema.GetUser(r.Context(), db, s.UserID)
		if domain.ErrorCode(err) == domain.ENOTFOUND && fetch != nil {
			// Signed in before their user.created delivery arrived.
			if fu, ferr := fetch.FetchUser(r.Context(), s.UserID); ferr == nil {
				u, err = fu, nil
			} else {
				log.Warn("first sign-in: could not fetch the user from Clerk", "user_id", s.UserID, "err", ferr)
			}
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		orgs, err := schema.UserOrganizations(r.Context(), db, s.UserID, homeOrganizations)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		me := meJSON{
			ID: u.ID, Email: u.Email, FirstName: u.FirstName, LastName: u.LastName,
			Name: u.Name(), Username: u.Username, ImageURL: u.ImageURL,
			CreatedAt: timePtr(u.CreatedAt), UpdatedAt: timePtr(u.UpdatedAt), Deleted: u.Deleted,
			PhoneNumber: u.Phone, EmailVerified: u.EmailVerified, ExternalID: u.ExternalID, Banned: u.Banned, Locked: u.Locked,
			TwoFactorEnabled: u.TwoFactorEnabled, LastSignInAt: timePtr(u.LastSignInAt), LastActiveAt: timePtr(u.LastActiveAt),
			Organizations: make([]meOrganization, 0, len(orgs)),
		}
		for _, o := range orgs {
			me.Organizations = append(me.Organizations, meOrganization{ID: o.Organization.ID, Name: o.Organization.Name,
				Slug: o.Organization.Slug, Role: o.Membership.Role, Permissions: o.Membership.Permissions, JoinedAt: timePtr(o.Membership.CreatedAt)})
		}
		writeAnswer(w, r, log, me)
	}
}
