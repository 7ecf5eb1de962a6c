package audit_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
)

var t0 = time.Date(2024, 5, 28, 9, 0, 0, 0, time.UTC)

func at(h float64) time.Time { return t0.Add(time.Duration(h * float64(time.Hour))) }

// orgScenario stores, in a shuffled order, this history (hours after t0):
//
//	0    Acme and Beta created
//	0.5  Ada joins Beta as member (m4)
//	1    Ada joins Acme as admin (m1), Bob as member (m2); a poison membership event of Acme
//	2    Acme renamed Acme Corp
//	2.5  Beta deleted
//	3    Ada's role in Acme becomes member
//	4    Ada leaves Acme (m1 deleted)
//	5    Ada joins Acme again as admin (m3)
//
// plus Carol's unrelated organization, and returns the number of events.
func orgScenario(t *testing.T, db *sqlx.DB) int {
	t.Helper()
	ada := clerkgen.User{ID: "user_ada", Email: "ada@example.com"}
	bob := clerkgen.User{ID: "user_bob", Email: "bob@example.com"}
	carol := clerkgen.User{ID: "user_carol"}
	acme := clerkgen.Organization{ID: "org_acme", Name: "Acme", Slug: "acme", CreatedAt: at(0), UpdatedAt: at(0)}
	beta := clerkgen.Organization{ID: "org_beta", Name: "Beta", Slug: "beta", CreatedAt: at(0), UpdatedAt: at(0)}
	other := clerkgen.Organization{ID: "org_other", Name: "Other", CreatedAt: at(0), UpdatedAt: at(0)}
	acmeCorp := acme
	acmeCorp.Name, acmeCorp.UpdatedAt = "Acme Corp", at(2)
	type ev struct {
		body []byte
		err  error
		at   time.Time
	}
	mem := func(typ, id string, o clerkgen.Organization, u clerkgen.User, role string, when time.Time) ev {
		b, err := clerkgen.MembershipEvent(typ, clerkgen.Membership{ID: id, Organization: o, User: u, Role: role, CreatedAt: when, UpdatedAt: when}, when)
		return ev{b, err, when}
	}
	org := func(typ string, o clerkgen.Organization, when time.Time) ev {
		b, err := clerkgen.OrganizationEvent(typ, o, when)
		return ev{b, err, when}
	}
	m1 := clerkgen.Membership{ID: "orgmem_1", Organization: acme, User: ada, Role: "org:admin", CreatedAt: at(1), UpdatedAt: at(1)}
	m1Member := m1
	m1Member.Organization, m1Member.Role, m1Member.UpdatedAt = acmeCorp, "org:member", at(3)
	m1Left := m1Member
	m1Left.UpdatedAt = at(4)
	b3, err3 := clerkgen.MembershipEvent("organizationMembership.updated", m1Member, at(3))
	b4, err4 := clerkgen.MembershipEvent("organizationMembership.deleted", m1Left, at(4))
	events := []ev{
		org("organization.created", acme, at(0)),
		org("organization.created", beta, at(0)),
		org("organization.created", other, at(0)),
		mem("organizationMembership.created", "orgmem_4", beta, ada, "org:member", at(0.5)),
		mem("organizationMembership.created", "orgmem_1", acme, ada, "org:admin", at(1)),
		mem("organizationMembership.created", "orgmem_2", acme, bob, "org:member", at(1)),
		mem("organizationMembership.created", "orgmem_9", other, carol, "org:admin", at(1)),
		{[]byte(`{"type":"organizationMembership.created","object":"event","timestamp":` + fmt.Sprint(at(1).UnixMilli()) +
			`,"data":{"id":"orgmem_bad","organization":{"id":"org_acme"},"role":"org:admin"}}`), nil, at(1)},
		org("organization.updated", acmeCorp, at(2)),
		org("organization.deleted", beta, at(2.5)),
		{b3, err3, at(3)},
		{b4, err4, at(4)},
		mem("organizationMembership.created", "orgmem_3", acmeCorp, ada, "org:admin", at(5)),
	}
	b, err := clerkgen.InvitationEvent("organizationInvitation.created", clerkgen.Invitation{Organization: acme, Email: "dan@example.com"}, at(1.5))
	events = append(events, ev{b, err, at(1.5)})
	rand.New(rand.NewPCG(5, 6)).Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
	store := schema.NewStore(db)
	for i, e := range events {
		if e.err != nil {
			t.Fatal(e.err)
		}
		d, err := domain.NewDelivery(fmt.Sprintf("msg_org_%d", i), e.at.Unix(), "v1,test", e.body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Append(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	schematest.WaitReadable(t, db, int64(len(events)))
	return len(events)
}

// roles renders the organizations of a user as "Name:role" (member) or
// "Name:-" (no longer), in the order given.
func roles(res audit.UserOrganizations) string {
	var out []string
	for _, o := range res.Organizations {
		r := "-"
		if o.Member {
			r = o.Membership.Role
		}
		out = append(out, o.Organization.DisplayName()+":"+r)
	}
	return strings.Join(out, " ")
}

// TestUserOrganizationsAtPointsInTime: which organizations Ada was in,
// with which role, at each instant, against the hand-computed history;
// the events arrived shuffled.
func TestUserOrganizationsAtPointsInTime(t *testing.T) {
	db := schematest.NewDB(t)
	orgScenario(t, db)
	svc := audit.New(audit.Config{DB: db})
	a := audit.Actor{ID: "user_auditor", Channel: schema.ChannelAPI}
	cases := []struct {
		h    float64 // hours after t0; -1: now
		want string
	}{
		{-0.5, ""},
		{0.75, "Beta:org:member"},
		{1.5, "Acme:org:admin Beta:org:member"},
		{2.75, "Acme Corp:org:admin org_beta:-"}, // Beta deleted: a tombstone keeps only the id
		{3.5, "Acme Corp:org:member org_beta:-"},
		{4.5, "Acme Corp:- org_beta:-"},
		{-1, "Acme Corp:- Acme Corp:org:admin org_beta:-"},
	}
	for _, c := range cases {
		var when time.Time
		if c.h != -1 {
			when = at(c.h)
		}
		res, err := svc.UserOrganizations(context.Background(), a, "user_ada", when)
		if err != nil {
			t.Fatal(err)
		}
		if got := roles(res); got != c.want {
			t.Errorf("at %v: %q, want %q", when, got, c.want)
		}
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM audit_access WHERE action = $1 AND filters->>'user_id' = 'user_ada'`, schema.ActionUserOrganizations); err != nil || n != len(cases) {
		t.Fatalf("%d accesses recorded (%v), want %d", n, err, len(cases))
	}
	// Bob's view does not see Ada's memberships, nor Carol's organization.
	res, err := svc.UserOrganizations(context.Background(), a, "user_bob", time.Time{})
	if err != nil || roles(res) != "Acme Corp:org:member" {
		t.Fatalf("bob: %q, %v", roles(res), err)
	}
	if _, err := svc.UserOrganizations(context.Background(), a, "", time.Time{}); domain.ErrorCode(err) != domain.EINVALID {
		t.Fatalf("empty id: %v", err)
	}
}

// TestOrganizationAtPointsInTime: Acme's state, members and history at
// instants, the poison event named, and the projection matching now.
func TestOrganizationAtPointsInTime(t *testing.T) {
	db := schematest.NewDB(t)
	orgScenario(t, db)
	svc := audit.New(audit.Config{DB: db})
	a := audit.Actor{ID: "user_auditor", Channel: schema.ChannelPage}
	members := func(h audit.OrganizationHistory) string {
		var out []string
		for _, m := range h.Memberships {
			r := m.Role
			if m.Deleted {
				r = "left"
			}
			out = append(out, m.UserID+":"+r)
		}
		return strings.Join(out, " ")
	}
	h, err := svc.Organization(context.Background(), a, "org_acme", at(1.5), audit.OrganizationPage{})
	if err != nil {
		t.Fatal(err)
	}
	if h.State.Name != "Acme" || h.MembersCount != 2 || members(h) != "user_ada:org:admin user_bob:org:member" {
		t.Fatalf("at 1.5 h: %+v members %s", h.State, members(h))
	}
	// The history lists what occurred by then: created, 2 joins, the invitation.
	if h.Total != 4 || h.Count != 4 || h.PoisonCount != 1 || !strings.Contains(h.Poison[0], "no membership user") {
		t.Fatalf("at 1.5 h: total %d, count %d, poison %v", h.Total, h.Count, h.Poison)
	}
	h, err = svc.Organization(context.Background(), a, "org_acme", at(4.5), audit.OrganizationPage{})
	if err != nil {
		t.Fatal(err)
	}
	if h.State.Name != "Acme Corp" || h.MembersCount != 1 || members(h) != "user_ada:left user_bob:org:member" {
		t.Fatalf("at 4.5 h: %+v members %s", h.State, members(h))
	}
	if h.Projection != nil || h.Matches != nil {
		t.Fatal("a point-in-time view compared itself with the projection")
	}
	h, err = svc.Organization(context.Background(), a, "org_beta", time.Time{}, audit.OrganizationPage{})
	if err != nil || !h.State.Deleted || h.MembersCount != 0 || members(h) != "user_ada:org:member" {
		t.Fatalf("beta now: %+v %s %v", h.State, members(h), err)
	}

	// Now, paged two at a time, against the projection.
	if err := projections.NewRunner(db, nil, projections.NewOrganizations()).CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	var listed []string
	page := audit.OrganizationPage{Limit: 2}
	for {
		h, err = svc.Organization(context.Background(), a, "org_acme", time.Time{}, page)
		if err != nil {
			t.Fatal(err)
		}
		if h.Matches == nil || !*h.Matches || h.Projection.MembersCount != 2 {
			t.Fatalf("the fold does not match the projection: %+v\n%+v", h.State, h.Projection)
		}
		if h.Offset != int64(len(listed)) {
			t.Fatalf("offset %d after %d events", h.Offset, len(listed))
		}
		for _, e := range h.Events {
			listed = append(listed, e.Type)
		}
		if h.NextCursor == "" {
			break
		}
		if page.After, err = audit.DecodeCursor(h.NextCursor); err != nil {
			t.Fatal(err)
		}
	}
	// Every event about Acme (not the poison one: it names no user, and
	// so is not counted as Acme's), in ledger order, none twice.
	if len(listed) != 8 || int64(len(listed)) != h.Total {
		t.Fatalf("listed %d events (%v), total %d", len(listed), listed, h.Total)
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM audit_access WHERE action = $1 AND filters->>'organization_id' = 'org_acme'`, schema.ActionOrganization); err != nil || n != 2+4 {
		t.Fatalf("%d accesses recorded (%v)", n, err)
	}
	h, err = svc.Organization(context.Background(), a, "org_none", time.Time{}, audit.OrganizationPage{})
	if err != nil || h.Exists || h.Total != 0 {
		t.Fatalf("unknown organization: %+v %v", h, err)
	}
}
