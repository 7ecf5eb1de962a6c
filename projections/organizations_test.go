package projections

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
)

// orgDelivery is a delivery of body (a Clerk event) that occurred at `at`.
func orgDelivery(t testing.TB, body []byte, at time.Time) domain.Delivery {
	t.Helper()
	d, err := domain.NewDelivery(clerkgen.NewID("msg"), at.Unix(), "v1,test", body)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// orgHistory returns the deliveries of a synthetic history of orgs
// organizations and users users, in the order things happened: created and
// renamed organizations (a few deleted), members joining with a role,
// changing role, leaving and joining again; and events the organizations
// projector does not read (invitations, sessions) in between.
func orgHistory(t testing.TB, seed uint64, orgs, users, steps int) []domain.Delivery {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 99))
	t0 := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	type org struct {
		o       clerkgen.Organization
		deleted bool
	}
	type mem struct {
		m    clerkgen.Membership
		left bool
	}
	var os []*org
	var ms []*mem
	people := make([]clerkgen.User, users)
	for i := range people {
		people[i] = clerkgen.User{ID: fmt.Sprintf("user_%02d_%d", i, seed), Email: fmt.Sprintf("u%d@example.com", i), FirstName: fmt.Sprint("U", i)}
	}
	var out []domain.Delivery
	add := func(body []byte, err error, at time.Time) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, orgDelivery(t, body, at))
	}
	live := func() []*org {
		var l []*org
		for _, o := range os {
			if !o.deleted {
				l = append(l, o)
			}
		}
		return l
	}
	for i := range steps {
		at := t0.Add(time.Duration(i) * time.Minute)
		lo := live()
		switch k := r.IntN(20); {
		case len(os) < orgs && (k < 3 || len(lo) == 0):
			o := &org{o: clerkgen.Organization{ID: fmt.Sprintf("org_%02d_%d", len(os), seed), Name: fmt.Sprint("Org ", len(os)),
				Slug: fmt.Sprint("org-", len(os)), CreatedBy: people[0].ID, CreatedAt: at, UpdatedAt: at}}
			os = append(os, o)
			b, err := clerkgen.OrganizationEvent("organization.created", o.o, at)
			add(b, err, at)
		case len(lo) == 0:
		case k < 5:
			o := lo[r.IntN(len(lo))]
			o.o.Name, o.o.UpdatedAt = fmt.Sprintf("Org %s renamed %d", o.o.ID, i), at
			o.o.PublicMetadata = map[string]any{"plan": []string{"free", "pro"}[r.IntN(2)]}
			b, err := clerkgen.OrganizationEvent("organization.updated", o.o, at)
			add(b, err, at)
		case k == 5 && r.IntN(3) == 0:
			o := lo[r.IntN(len(lo))]
			o.deleted = true
			b, err := clerkgen.OrganizationEvent("organization.deleted", o.o, at)
			add(b, err, at)
		case k < 11:
			o := lo[r.IntN(len(lo))]
			u := people[r.IntN(len(people))]
			member := false
			for _, m := range ms {
				member = member || (!m.left && m.m.Organization.ID == o.o.ID && m.m.User.ID == u.ID)
			}
			if member {
				continue
			}
			m := &mem{m: clerkgen.Membership{ID: fmt.Sprintf("orgmem_%03d_%d", len(ms), seed), Organization: o.o, User: u,
				Role: []string{"org:admin", "org:member"}[r.IntN(2)], CreatedAt: at, UpdatedAt: at}}
			ms = append(ms, m)
			b, err := clerkgen.MembershipEvent("organizationMembership.created", m.m, at)
			add(b, err, at)
		case k < 16:
			var cur []*mem
			for _, m := range ms {
				if !m.left {
					cur = append(cur, m)
				}
			}
			if len(cur) == 0 {
				continue
			}
			m := cur[r.IntN(len(cur))]
			for _, o := range os {
				if o.o.ID == m.m.Organization.ID {
					m.m.Organization = o.o // the organization as it is now
				}
			}
			m.m.UpdatedAt = at
			typ := "organizationMembership.updated"
			if r.IntN(3) == 0 {
				typ, m.left = "organizationMembership.deleted", true
			} else {
				m.m.Role, m.m.Permissions = []string{"org:admin", "org:member", "org:billing"}[r.IntN(3)], nil
			}
			b, err := clerkgen.MembershipEvent(typ, m.m, at)
			add(b, err, at)
		case k < 18:
			o := lo[r.IntN(len(lo))]
			b, err := clerkgen.InvitationEvent("organizationInvitation.created", clerkgen.Invitation{Organization: o.o, Email: "new@example.com"}, at)
			add(b, err, at)
		default:
			b, err := clerkgen.Event("session.created", people[r.IntN(len(people))], at)
			add(b, err, at)
		}
	}
	return out
}

// visibleOrgs returns both organization tables as text, one line per row,
// with what readers see (not last_position or the tie-break delivery id,
// which depend on which copy of an event came last).
func visibleOrgs(t testing.TB, db *sqlx.DB) string {
	t.Helper()
	var orgs, mems []string
	if err := db.Select(&orgs, `SELECT concat_ws('|', id, name, slug, image_url, members_count, public_metadata::text,
    created_at, updated_at, deleted, deleted_at, version_updated_at, version_occurred_at) FROM organizations ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	if err := db.Select(&mems, `SELECT concat_ws('|', id, organization_id, user_id, role, permissions::text,
    created_at, updated_at, deleted, deleted_at, version_updated_at, version_occurred_at) FROM organization_memberships ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	return strings.Join(orgs, "\n") + "\n--\n" + strings.Join(mems, "\n")
}

// expectedOrgs folds ds with the domain fold alone and returns, per
// organization, name and members count, as the tables should hold them.
func expectedOrgs(t testing.TB, ds []domain.Delivery) map[string]string {
	t.Helper()
	var events []domain.Event
	for i, d := range ds {
		events = append(events, domain.Event{Position: int64(i + 1), DeliveryID: d.ID, Type: d.Type, UserID: d.UserID, OccurredAt: d.OccurredAt, Body: d.Body})
	}
	f, errs := domain.FoldOrganizations(events)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	out := map[string]string{}
	for id, o := range f.Organizations {
		n := 0
		for _, m := range f.Memberships {
			if m.OrganizationID == id && !m.Deleted && !o.Deleted {
				n++
			}
		}
		out[id] = fmt.Sprintf("%s|%d|%t", o.Name, n, o.Deleted)
	}
	return out
}

func storedOrgs(t testing.TB, db *sqlx.DB) map[string]string {
	t.Helper()
	var rows []struct {
		ID, Name string
		N        int
		Deleted  bool
	}
	if err := db.Select(&rows, `SELECT id, name, members_count AS n, deleted FROM organizations`); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range rows {
		out[r.ID] = fmt.Sprintf("%s|%d|%t", r.Name, r.N, r.Deleted)
	}
	return out
}

// Property: any permutation of a history of organizations and memberships,
// with any duplicates, read in batches of any size, gives the tables that
// in-order application gives, and the ones the domain fold alone gives;
// so does a rebuild, and check finds the live tables clean.
func TestOrganizationsOrderAndDuplicatesDoNotMatter(t *testing.T) {
	t.Parallel()
	inOrder, shuffled := schematest.NewDB(t), schematest.NewDB(t)
	r := rand.New(rand.NewPCG(11, 12))
	ra, rb := NewRunner(inOrder, nil, NewOrganizations()), NewRunner(shuffled, nil, NewOrganizations())
	var all []domain.Delivery
	for iter := range 5 {
		ds := orgHistory(t, uint64(200+iter), 4, 6, 120)
		all = append(all, ds...)
		load(t, inOrder, ds)
		runToHead(t, ra)
		loadShuffled(t, r, shuffled, ds, 40)
		rb.BatchSize = 1 + r.IntN(25)
		runToHead(t, rb)
		if a, b := visibleOrgs(t, inOrder), visibleOrgs(t, shuffled); a != b {
			t.Fatalf("iteration %d: permuted history gives other tables:\nin order:\n%s\n\npermuted:\n%s", iter, a, b)
		}
	}
	if want, got := expectedOrgs(t, all), storedOrgs(t, shuffled); fmt.Sprint(want) != fmt.Sprint(got) {
		t.Fatalf("tables differ from the domain fold:\nwant %v\n got %v", want, got)
	}
	before := visibleOrgs(t, shuffled)
	for _, want := range []string{"|t|", "org:admin", "--\norgmem_"} {
		if !strings.Contains(before, want) {
			t.Fatalf("the histories lack %q: not every rule is exercised\n%s", want, before)
		}
	}
	res, err := Check(context.Background(), shuffled, NewOrganizations(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Differences) != 0 || res.Users == 0 {
		t.Fatalf("check of the live tables: %d organizations, differences %+v", res.Users, res.Differences)
	}
	if _, err := Rebuild(context.Background(), shuffled, NewOrganizations(), nil); err != nil {
		t.Fatal(err)
	}
	if after := visibleOrgs(t, shuffled); after != before {
		t.Fatalf("rebuild gives other tables:\nlive:\n%s\n\nrebuilt:\n%s", before, after)
	}
	var idx []string
	if err := shuffled.Select(&idx, `SELECT indexname FROM pg_indexes WHERE tablename IN ('organizations', 'organization_memberships') ORDER BY 1`); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(idx, ","); got != "organization_memberships_organization_idx,organization_memberships_pkey,organization_memberships_user_idx,organizations_pkey,organizations_slug_idx" {
		t.Fatalf("indexes after the swap: %s", got)
	}
	// Check sees a change made behind the projector's back, in either table.
	if _, err := shuffled.Exec(`UPDATE organization_memberships SET role = 'org:owner' WHERE id = (SELECT min(id) FROM organization_memberships)`); err != nil {
		t.Fatal(err)
	}
	if _, err := shuffled.Exec(`UPDATE organizations SET members_count = members_count + 1 WHERE id = (SELECT min(id) FROM organizations)`); err != nil {
		t.Fatal(err)
	}
	res, err = Check(context.Background(), shuffled, NewOrganizations(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tables := map[string]string{}
	for _, d := range res.Differences {
		for _, c := range d.Columns {
			tables[d.Table] = c.Column + " " + c.Live + "/" + c.Rebuilt
		}
	}
	if len(res.Differences) != 2 || !strings.HasPrefix(tables["organization_memberships"], "role org:owner/") ||
		!strings.HasPrefix(tables["organizations"], "members_count ") {
		t.Fatalf("check found %+v", res.Differences)
	}
}

// loggedOrgs is the organizations projector that also records every event
// it applies in applied_log, so that an event applied twice shows (the
// fold itself is idempotent and would hide it).
type loggedOrgs struct{ *Organizations }

func (p loggedOrgs) Apply(ctx context.Context, tx *sqlx.Tx, events []domain.Event) ([]Failure, error) {
	fs, err := p.Organizations.Apply(ctx, tx, events)
	if err != nil {
		return nil, err
	}
	return fs, logProjector{name: OrganizationsName}.logApplied(ctx, tx, events)
}

// Exactly once: two runners (two processes) project the same ledger while
// deliveries arrive, one of them stopped and started again midway; every
// event is applied once, the checkpoint counts each once, and the tables
// are the domain fold's.
func TestOrganizationsAppliedExactlyOnce(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	createAppliedLog(t, db)
	ds := orgHistory(t, 7, 5, 8, 600)
	var orgOnly []domain.Delivery
	for _, d := range ds {
		if domain.IsOrganizationEvent(d.Type) {
			orgOnly = append(orgOnly, d) // applied_log is checked against every event
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	run := func(ctx context.Context, batch int) {
		r := NewRunner(db, nil, loggedOrgs{NewOrganizations()})
		r.BatchSize, r.Idle = batch, 5*time.Millisecond
		r.Run(ctx)
	}
	wg.Go(func() { run(ctx, 7) })
	first, stopFirst := context.WithCancel(ctx)
	defer stopFirst()
	wg.Go(func() { run(first, 13) })
	for i := 0; i < len(orgOnly); i += 50 {
		load(t, db, orgOnly[i:min(i+50, len(orgOnly))])
		if i == 250 {
			stopFirst()
			wg.Go(func() { run(ctx, 3) })
		}
		time.Sleep(2 * time.Millisecond)
	}
	waitVisible(t, db)
	head, err := schema.GateHead(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the projectors to reach the head", func() bool {
		cp, _, _ := checkpointOf(t, db, OrganizationsName)
		return cp == head
	})
	cancel()
	wg.Wait()
	assertAppliedOnce(t, db, OrganizationsName)
	if _, applied, failed := checkpointOf(t, db, OrganizationsName); applied != int64(len(orgOnly)) || failed != 0 {
		t.Fatalf("checkpoint counts %d applied, %d failed, for %d events", applied, failed, len(orgOnly))
	}
	if want, got := expectedOrgs(t, orgOnly), storedOrgs(t, db); fmt.Sprint(want) != fmt.Sprint(got) {
		t.Fatalf("tables differ from the domain fold:\nwant %v\n got %v", want, got)
	}
}

// orgPoisonCase is a delivery the organizations projector must skip as
// poison, or keep in storable form.
type orgPoisonCase struct {
	name    string
	body    string // the event's body; %s is the organization id, UPD a newer updated_at
	refused string // the SQLSTATE of a row PostgreSQL refuses; "" for a fold error
	kept    bool   // not poison: kept in storable form
}

func orgPoisonCases() []orgPoisonCase {
	big := strings.Trim(bigEmail(), `"`) // beyond a btree index row (organizations_slug_idx), incompressible
	return []orgPoisonCase{
		{name: "organization data of another type", body: `{"type":"organization.updated","data":{"id":"%s","name":["x"],"updated_at":UPD}}`},
		{name: "membership naming no user", body: `{"type":"organizationMembership.created","data":{"id":"orgmem_p","organization":{"id":"%s","updated_at":UPD},"role":"org:admin"}}`},
		{name: "NUL in a name is kept", kept: true, body: `{"type":"organization.updated","data":{"id":"%s","name":"A\u0000B","updated_at":UPD}}`},
		{name: "slug too large for its index", refused: "54000", body: `{"type":"organization.updated","data":{"id":"%s","name":"Big","slug":"` + big + `","updated_at":UPD}}`},
		// A created_at past the year 9999 folds as no time (domain.msTime):
		// not refused any more.
		// The membership's own row is fine, its organization copy's is
		// refused: the event is poison as a whole, so the membership must
		// not be projected either (rebuild and check find it the same way).
		{name: "membership whose organization copy is refused", refused: "54000",
			body: `{"type":"organizationMembership.created","data":{"id":"orgmem_p","organization":{"id":"%s","slug":"` + big + `","updated_at":UPD},"public_user_data":{"user_id":"user_p"},"role":"org:admin","updated_at":UPD}}`},
	}
}

// TestOrganizationsPoisonIsIsolated: each poison delivery is recorded and
// skipped while every other event around it is applied, by the live
// projector in batches, by a rebuild and by check alike.
func TestOrganizationsPoisonIsIsolated(t *testing.T) {
	t.Parallel()
	for _, c := range orgPoisonCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			db := schematest.NewDB(t)
			t0 := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
			org := clerkgen.Organization{ID: "org_poison", Name: "Before", CreatedAt: t0, UpdatedAt: t0}
			created, _ := clerkgen.OrganizationEvent("organization.created", org, t0)
			other := clerkgen.Organization{ID: "org_other", Name: "Other", CreatedAt: t0, UpdatedAt: t0}
			mem, _ := clerkgen.MembershipEvent("organizationMembership.created", clerkgen.Membership{ID: "orgmem_ok", Organization: other, User: clerkgen.User{ID: "user_ok"}}, t0)
			body := strings.ReplaceAll(fmt.Sprintf(c.body, org.ID), "UPD", fmt.Sprint(t0.Add(time.Minute).UnixMilli()))
			poison := orgDelivery(t, []byte(body), t0.Add(time.Minute))
			canary, _ := clerkgen.MembershipEvent("organizationMembership.created", clerkgen.Membership{ID: "orgmem_canary", Organization: org, User: clerkgen.User{ID: "user_canary"}}, t0)
			load(t, db, []domain.Delivery{orgDelivery(t, created, t0), orgDelivery(t, mem, t0), poison, orgDelivery(t, canary, t0.Add(2*time.Minute))})
			r := NewRunner(db, nil, NewOrganizations())
			r.BatchSize = 4 // the poison shares its batch
			runToHead(t, r)

			var fails []failureRow
			if err := db.Select(&fails, `SELECT position, delivery_id, error, failed_at FROM projection_failures WHERE projector = 'organizations'`); err != nil {
				t.Fatal(err)
			}
			_, applied, failed := checkpointOf(t, db, OrganizationsName)
			o, err := schema.GetOrganization(context.Background(), db, org.ID)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.kept:
				if len(fails) != 0 || o.Organization.Name != "A\uFFFDB" {
					t.Fatalf("kept value: failures %+v, organization %+v", fails, o)
				}
			default:
				if len(fails) != 1 || fails[0].DeliveryID != poison.ID || failed != 1 || applied != 3 ||
					(c.refused != "" && !strings.Contains(fails[0].Error, "("+c.refused+")")) {
					t.Fatalf("failures %+v, applied %d, failed %d (want the poison %s, SQLSTATE %q)", fails, applied, failed, poison.ID, c.refused)
				}
				if o.Organization.Name != "Before" {
					t.Fatalf("the poison changed the organization: %+v", o)
				}
				if n, _ := schema.LiveMemberships().Load(context.Background(), db, []string{"orgmem_p"}); len(n) != 0 {
					t.Fatalf("the poison event's membership was projected: %+v", n)
				}
			}
			if o.MembersCount != 1 {
				t.Fatalf("members of %s: %d, want the canary", org.ID, o.MembersCount)
			}
			if got, _ := schema.UserOrganizations(context.Background(), db, "user_ok", 10); len(got) != 1 || got[0].Organization.Name != "Other" {
				t.Fatalf("the innocent membership: %+v", got)
			}

			rebuildAgrees(t, db, NewOrganizations(), visibleOrgs, failed)
			if st := statusOf(t, db, OrganizationsName); st.LastError != "" {
				t.Fatalf("a batch failed and was retried: %s", st.LastError)
			}
		})
	}
}

// The organizations projection is listed, rebuildable and checkable by
// name, as every registered projector.
func TestOrganizationsRegistered(t *testing.T) {
	names := []string{}
	for _, p := range Default() {
		names = append(names, p.Name())
		if p.Name() == OrganizationsName {
			if _, err := asRebuildable(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !slices.Contains(names, OrganizationsName) {
		t.Fatalf("Default() = %v", names)
	}
	if _, err := asRebuildable(NewTree()); domain.ErrorCode(err) != domain.EINVALID {
		t.Fatalf("the tree is rebuildable: %v", err)
	}
}
