package projections

import (
	"context"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// TestOrganizationsCheckCleanAfterErasingAMember: the newest object of an
// organization the ledger holds is the one in a member's membership event;
// the member is erased. Check must then find the live tables equal to
// what the events give, and a rebuild must keep them.
func TestOrganizationsCheckCleanAfterErasingAMember(t *testing.T) {
	dsn := schematest.NewURL(t)
	db := schematest.Open(t, dsn)
	if _, err := schema.Migrate(context.Background(), db.DB); err != nil {
		t.Fatal(err)
	}
	k := schematest.NewKeyring(t)
	ctx := schema.WithKeyring(context.Background(), k)
	store := schema.NewStore(db)
	store.Keys = k
	t0 := time.Date(2024, 5, 28, 9, 0, 0, 0, time.UTC)
	acme := clerkgen.Organization{ID: "org_acme", Name: "Acme", Slug: "acme", CreatedAt: t0, UpdatedAt: t0}
	renamed := acme
	renamed.Name, renamed.UpdatedAt = "Acme Corp", t0.Add(time.Hour)
	orgBody, err := clerkgen.OrganizationEvent("organization.created", acme, t0)
	if err != nil {
		t.Fatal(err)
	}
	memBody, err := clerkgen.MembershipEvent("organizationMembership.created", clerkgen.Membership{ID: "orgmem_1",
		Organization: renamed, User: clerkgen.User{ID: "user_ada"}, Role: "org:admin", CreatedAt: renamed.UpdatedAt, UpdatedAt: renamed.UpdatedAt}, renamed.UpdatedAt)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range [][]byte{orgBody, memBody} {
		if _, err := store.Append(ctx, orgDelivery(t, d, t0)); err != nil {
			t.Fatal(err)
		}
	}
	schematest.WaitReadable(t, db, 2)
	r := NewRunner(db, nil, NewOrganizations())
	if err := r.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := schema.BeginErasure(ctx, db, schema.Erasure{UserID: "user_ada", At: t0.Add(2 * time.Hour), By: "test", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := schema.CompleteErasure(ctx, db, "user_ada"); err != nil {
		t.Fatal(err)
	}
	schematest.WaitReadable(t, db, 3)
	if err := r.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	chk, err := Check(ctx, db, NewOrganizations(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(chk.Differences) != 0 {
		t.Errorf("check after erasing a member: %+v", chk.Differences)
	}
	var live string
	if err := db.Get(&live, `SELECT name FROM organizations WHERE id = 'org_acme'`); err != nil {
		t.Fatal(err)
	}
	if _, err := Rebuild(ctx, db, NewOrganizations(), nil); err != nil {
		t.Fatal(err)
	}
	var rebuilt string
	if err := db.Get(&rebuilt, `SELECT name FROM organizations WHERE id = 'org_acme'`); err != nil {
		t.Fatal(err)
	}
	if rebuilt != live {
		t.Errorf("the organization's name: live %q, rebuilt %q", live, rebuilt)
	}
}
