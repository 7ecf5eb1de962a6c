package audit

import (
	"context"
	"encoding/json"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// IsAuditor reports whether the user with that id may audit: listed in
// Config.Auditors (LEDGER_AUDITORS), or projected, not deleted, with public
// metadata whose exact key "role" is the string "auditor" (MetadataRole).
// Errors only when the role cannot be looked up (EUNAVAILABLE when the
// database is down).
func (s *Service) IsAuditor(ctx context.Context, userID string) (bool, error) {
	if userID == "" {
		return false, nil
	}
	if s.auditors[userID] {
		return true, nil
	}
	if s.db == nil {
		return false, nil
	}
	u, err := schema.GetUser(ctx, s.db, userID)
	if domain.ErrorCode(err) == domain.ENOTFOUND {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if u.Deleted {
		return false, nil
	}
	return MetadataRole(u.PublicMetadata) == "auditor", nil
}

// MetadataRole returns the role a user's public metadata grants: the value
// of the key spelled exactly "role" (encoding/json would also take "ROLE"
// or "Role") when it is a JSON string, else "". The metadata is read as
// the users projection stores it, as jsonb, which keeps one value per key:
// the last, as PostgreSQL, JSON.parse and this function all do with
// duplicates, so the answer never depends on key order.
func MetadataRole(meta json.RawMessage) string {
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
