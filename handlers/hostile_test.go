package handlers

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// TestProofOfHugeTreeSizeIs404: a size past PostgreSQL's integer range on
// an event's inclusion proof is a tree size no checkpoint has, 404 as for
// any other unkept size. (Before, the statement compared the parameter
// with 0 first, so PostgreSQL typed it integer and refused 2^31 and up
// with 22003: a 500.)
func TestProofOfHugeTreeSizeIs404(t *testing.T) {
	e := newAuditEnv(t)
	e.append(t, "msg_a", "user.created", clerkgen.User{ID: "user_a", Email: "a@example.com"}, tBase)
	e.sealer.SealAll(t, e.db, 1)
	signer, _ := schematest.NewLogKey(t, "clerk-ledger/handlers")
	schematest.SignCheckpoint(t, e.db, signer, "clerk-ledger/handlers")
	for _, size := range []string{"2147483647", "2147483648", "4294967296", "9223372036854775807"} {
		res, body := e.get(t, listedAuditor, "/api/audit/events/1/proof?size="+size)
		var eb errorBody
		if res.StatusCode != http.StatusNotFound || json.Unmarshal(body, &eb) != nil || eb.Error.Code != domain.ENOTFOUND {
			t.Errorf("size=%s: %d %s, want 404", size, res.StatusCode, body)
		}
	}
	if res, body := e.get(t, listedAuditor, "/api/audit/events/1/proof?size=1"); res.StatusCode != http.StatusOK {
		t.Errorf("size=1 (the kept checkpoint): %d %s", res.StatusCode, body)
	}
}
