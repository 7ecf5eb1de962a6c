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
// users.public_metadata has the exact key "role" with the string value
// "auditor" (metadataRole). It is safe for concurrent use.
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
	return metadataRole(u.PublicMetadata) == "auditor", nil
}

// metadataRole returns the role a user's public metadata grants: the value
// of the key spelled exactly "role" (encoding/json would also take "ROLE"
// or "Role") when it is a JSON string, else "". The metadata is read as
// the users projection stores it, as jsonb, which keeps one value per key:
// the last, as PostgreSQL, JSON.parse and this function all do with
// duplicates, so the answer never depends on key order.
func metadataRole(meta json.RawMessage) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(meta, &m) != nil {
		return ""
	}
	var role string
	if json.Unmarshal(m["role"], &role) != nil {
		return ""
	}
	return role
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
