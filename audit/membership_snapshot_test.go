package audit_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// TestUserOrganizationsReadMembershipSnapshots: a membership known only
// from the Backend API (clerksync's organizationMembership.snapshot, stored
// for its user) is in the organizations projection, so the user's
// organizations view, which folds the same events, lists it too.
func TestUserOrganizationsReadMembershipSnapshots(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	store := schema.NewStore(db)
	raw := func(v map[string]any) []byte { b, _ := json.Marshal(v); return b }
	org := map[string]any{"object": "organization", "id": "org_snap", "name": "Snap", "slug": "snap",
		"created_at": at(0).UnixMilli(), "updated_at": at(0).UnixMilli()}
	mem := func(id string, updated time.Time) domain.Delivery {
		d, err := domain.NewMembershipSnapshot(id, updated.UnixMilli(), raw(map[string]any{
			"object": "organization_membership", "id": id, "organization": org,
			"public_user_data": map[string]any{"user_id": "user_snap"}, "role": "org:admin", "permissions": []string{},
			"created_at": at(0).UnixMilli(), "updated_at": updated.UnixMilli()}))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if _, err := store.Append(ctx, mem("orgmem_snap", at(1))); err != nil {
		t.Fatal(err)
	}
	schematest.WaitReadable(t, db, 1)
	if err := projections.NewRunner(db, nil, projections.NewOrganizations()).CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	var projected string
	if err := db.Get(&projected, `SELECT role FROM organization_memberships WHERE id = 'orgmem_snap' AND user_id = 'user_snap' AND NOT deleted`); err != nil {
		t.Fatalf("the projection has no membership from the snapshot: %v", err)
	}
	svc := audit.New(audit.Config{DB: db})
	res, err := svc.UserOrganizations(ctx, audit.Actor{ID: "user_auditor", Channel: schema.ChannelAPI}, "user_snap", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got := roles(res); got != "Snap:"+projected {
		t.Fatalf("the user's organizations: %q; the projection has Snap:%s", got, projected)
	}
}
