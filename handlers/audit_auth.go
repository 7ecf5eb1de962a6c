package handlers

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// Auditors decides who may use the audit routes and pages: a signed-in user
// whose id is listed in LEDGER_AUDITORS, or whose projected (not deleted)
// users.public_metadata.role is "auditor". It is safe for concurrent use.
type Auditors struct {
	ids map[string]bool
	db  *sqlx.DB // the users projection; nil: the list only
}

// NewAuditors returns Auditors for the listed user ids, looking roles up in
// the users projection on db (which may be nil: then only the list counts).
func NewAuditors(ids []string, db *sqlx.DB) *Auditors {
	a := &Auditors{ids: map[string]bool{}, db: db}
	for _, id := range ids {
		if id = strings.TrimSpace(id); id != "" {
			a.ids[id] = true
		}
	}
	return a
}

// IsAuditor reports whether the user with that id is an auditor. Errors only
// when the role cannot be looked up (EUNAVAILABLE when the database is down).
func (a *Auditors) IsAuditor(ctx context.Context, userID string) (bool, error) {
	if userID == "" {
		return false, nil
	}
	if a.ids[userID] {
		return true, nil
	}
	if a.db == nil {
		return false, nil
	}
	u, err := schema.GetUser(ctx, a.db, userID)
	if domain.ErrorCode(err) == domain.ENOTFOUND {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if u.Deleted {
		return false, nil
	}
	var meta struct {
		Role any `json:"role"`
	}
	if json.Unmarshal(u.PublicMetadata, &meta) != nil {
		return false, nil
	}
	return meta.Role == "auditor", nil
}

// requireAuditor lets a request through only when its session (sessionFrom)
// is an auditor's: no session is 401, any other user 403, a failed role
// lookup 503. API answers are JSON (writeError); pages get the HTML error page.
func requireAuditor(log *slog.Logger, auditors *Auditors, page bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail := func(err error) {
			if page {
				writePageError(w, r, log, err)
				return
			}
			writeError(w, r, log, err)
		}
		s, ok := sessionFrom(r.Context())
		if !ok {
			fail(domain.Errorf(domain.EUNAUTHORIZED, "sign in to use the audit workspace"))
			return
		}
		yes, err := auditors.IsAuditor(r.Context(), s.UserID)
		if err != nil {
			fail(err)
			return
		}
		if !yes {
			fail(domain.Errorf(domain.EFORBIDDEN, "only auditors may use the audit workspace"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
