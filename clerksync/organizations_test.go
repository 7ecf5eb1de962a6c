package clerksync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkapi/clerkapitest"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/clerksync"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// dataOf is the data object of a clerkgen event: the object as the Backend
// API returns it.
func dataOf(t *testing.T, body []byte) []byte {
	t.Helper()
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatal(err)
	}
	return env.Data
}

// putOrgs gives the fake API n organizations of members memberships each.
func putOrgs(t *testing.T, api *clerkapitest.Server, n, members int) []clerkgen.Organization {
	t.Helper()
	base := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	var orgs []clerkgen.Organization
	for i := range n {
		at := base.Add(time.Duration(i) * time.Minute)
		o := clerkgen.Organization{ID: fmt.Sprintf("org_%03d", i), Name: fmt.Sprintf("Org %d", i), Slug: fmt.Sprintf("org-%d", i), CreatedAt: at, UpdatedAt: at}
		b, err := clerkgen.OrganizationEvent("organization.updated", o, at)
		if err != nil {
			t.Fatal(err)
		}
		raw := dataOf(t, b)
		if err := api.PutOrganization(clerkapitest.Entry{ID: o.ID, CreatedAt: at.UnixMilli(), UpdatedAt: at.UnixMilli(), Raw: raw}); err != nil {
			t.Fatal(err)
		}
		for j := range members {
			m := clerkgen.Membership{ID: fmt.Sprintf("orgmem_%03d_%d", i, j), Organization: o, User: clerkgen.User{ID: fmt.Sprintf("user_%d", j)},
				Role: "org:member", CreatedAt: at.Add(time.Second), UpdatedAt: at.Add(time.Second)}
			b, err := clerkgen.MembershipEvent("organizationMembership.updated", m, at)
			if err != nil {
				t.Fatal(err)
			}
			raw := dataOf(t, b)
			if err := api.PutMembership(o.ID, clerkapitest.Entry{ID: m.ID, CreatedAt: m.CreatedAt.UnixMilli(), UpdatedAt: m.UpdatedAt.UnixMilli(), Raw: raw}); err != nil {
				t.Fatal(err)
			}
		}
		orgs = append(orgs, o)
	}
	return orgs
}

func TestImportOrganizationsAndMemberships(t *testing.T) {
	e := newEnv(t, 0)
	ctx := context.Background()
	e.sync.PageSize = 10 // several pages of organizations and of memberships
	orgs := putOrgs(t, e.api, 25, 12)
	// A newer webhook about one organization wins over its snapshot.
	newer := orgs[3]
	newer.Name, newer.UpdatedAt = "Renamed by webhook", newer.UpdatedAt.Add(time.Hour)
	body, err := clerkgen.OrganizationEvent("organization.updated", newer, newer.UpdatedAt)
	if err != nil {
		t.Fatal(err)
	}
	d, err := domain.NewDelivery("msg_org3", time.Now().Unix(), "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.AppendDelivery(ctx, d); err != nil {
		t.Fatal(err)
	}
	// A malformed membership is reported, not stored.
	if err := e.api.PutMembership(orgs[7].ID, clerkapitest.Entry{ID: "orgmem_bad", CreatedAt: 1, UpdatedAt: 1,
		Raw: []byte(`{"id":"orgmem_bad","object":"organization_membership","created_at":1,"updated_at":1}`)}); err != nil {
		t.Fatal(err)
	}
	sum, err := e.sync.ImportOrganizations(ctx, clerksync.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Imported != 25+25*12 || sum.Failed != 1 || sum.Failures[0].ObjectID != "orgmem_bad" || !sum.Finished || sum.Total != 25 {
		t.Fatalf("summary %+v", sum)
	}
	again, err := e.sync.ImportOrganizations(ctx, clerksync.ImportOptions{})
	if err != nil || again.Imported != 0 || again.Unchanged != 25+25*12 {
		t.Fatalf("again %+v %v", again, err)
	}
	schemaWait(t, e)
	r := projections.NewRunner(e.db, slog.New(slog.DiscardHandler), projections.NewOrganizations())
	if err := r.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	row, err := schema.GetOrganization(ctx, e.db, orgs[5].ID)
	if err != nil || row.Organization.Name != "Org 5" || row.MembersCount != 12 {
		t.Fatalf("organization %+v %v", row, err)
	}
	if row, err := schema.GetOrganization(ctx, e.db, orgs[3].ID); err != nil || row.Organization.Name != "Renamed by webhook" {
		t.Fatalf("the snapshot overwrote a newer webhook: %+v %v", row, err)
	}
	mine, err := schema.UserOrganizations(ctx, e.db, "user_4", 100)
	if err != nil || len(mine) != 25 {
		t.Fatalf("user_4 is in %d organizations, %v", len(mine), err)
	}
	res, err := projections.Check(ctx, e.db, projections.NewOrganizations(), nil)
	if err != nil || len(res.Differences) != 0 {
		t.Fatalf("check: %+v %v", res.Differences, err)
	}
	if n := e.count(`SELECT count(*) FROM events WHERE type = 'organizationMembership.snapshot' AND user_id = 'user_4'`); n != 25 {
		t.Fatalf("%d membership snapshots stored for user_4", n)
	}
}

func schemaWait(t *testing.T, e *env) {
	t.Helper()
	e.project() // waits for the gate too
}
