package domain_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// orgBody is the data of an organization snapshot as Clerk sends it.
func orgBody(id, name string, updatedAt int64) map[string]any {
	return map[string]any{"id": id, "object": "organization", "name": name, "slug": strings.ToLower(name),
		"image_url": "https://img.clerk.com/x", "public_metadata": map[string]any{"n": updatedAt},
		"created_at": 1000, "updated_at": updatedAt}
}

// orgEvent builds a ledger event at position pos of typ with data.
func orgEvent(pos int64, typ string, data map[string]any) domain.Event {
	body, _ := json.Marshal(map[string]any{"type": typ, "object": "event", "timestamp": 5000 + pos, "data": data})
	user := ""
	if pud, ok := data["public_user_data"].(map[string]any); ok {
		user, _ = pud["user_id"].(string)
	}
	return domain.Event{Position: pos, DeliveryID: fmt.Sprintf("msg_%d", pos), Type: typ, UserID: user, Body: body,
		OccurredAt: time.UnixMilli(5000 + pos).UTC()}
}

func organizationEvent(pos int64, typ, id, name string, updatedAt int64) domain.Event {
	if typ == "organization.deleted" {
		return orgEvent(pos, typ, map[string]any{"id": id, "object": "organization", "deleted": true})
	}
	return orgEvent(pos, typ, orgBody(id, name, updatedAt))
}

func membershipEvent(pos int64, typ, id, org, orgName string, orgUpdated int64, user, role string, updatedAt int64) domain.Event {
	return orgEvent(pos, typ, map[string]any{
		"id": id, "object": "organization_membership", "organization": orgBody(org, orgName, orgUpdated),
		"public_user_data": map[string]any{"user_id": user, "identifier": user + "@example.com"},
		"role":             role, "permissions": []string{"org:sys_memberships:read", role},
		"created_at": 2000, "updated_at": updatedAt,
	})
}

func foldOrgs(t *testing.T, events []domain.Event) *domain.OrganizationFold {
	t.Helper()
	f, errs := domain.FoldOrganizations(events)
	if len(errs) > 0 {
		t.Fatalf("poison: %v", errs)
	}
	return f
}

func TestOrganizationFoldPicksNewestSnapshot(t *testing.T) {
	f := foldOrgs(t, []domain.Event{
		organizationEvent(1, "organization.created", "org_1", "Acme", 1000),
		organizationEvent(2, "organization.updated", "org_1", "Acme Corp", 3000),
		organizationEvent(3, "organization.updated", "org_1", "Old", 2000), // late, older
	})
	o := f.Organizations["org_1"]
	if o.Name != "Acme Corp" || o.Slug != "acme corp" || o.Deleted || !o.UpdatedAt.Equal(time.UnixMilli(3000)) {
		t.Fatalf("folded %+v", o)
	}
	if string(o.PublicMetadata) != `{"n":3000}` {
		t.Fatalf("metadata %s", o.PublicMetadata)
	}
}

// An organization whose own events never arrived is known from the
// organization object its memberships carry; a newer organization.updated
// still wins over it, and a membership's older copy does not undo it.
func TestOrganizationKnownFromItsMemberships(t *testing.T) {
	f := foldOrgs(t, []domain.Event{membershipEvent(1, "organizationMembership.created", "orgmem_1", "org_1", "Acme", 1500, "user_1", "org:admin", 2000)})
	if o := f.Organizations["org_1"]; o.Name != "Acme" || !o.Exists() {
		t.Fatalf("org from membership: %+v", o)
	}
	f = foldOrgs(t, []domain.Event{
		organizationEvent(2, "organization.updated", "org_1", "Acme Corp", 3000),
		membershipEvent(1, "organizationMembership.created", "orgmem_1", "org_1", "Acme", 1500, "user_1", "org:admin", 2000),
	})
	if o := f.Organizations["org_1"]; o.Name != "Acme Corp" {
		t.Fatalf("older embedded copy won: %+v", o)
	}
	// An embedded organization without updated_at is no snapshot.
	e := orgEvent(3, "organizationMembership.created", map[string]any{"id": "orgmem_2", "organization": map[string]any{"id": "org_2"},
		"public_user_data": map[string]any{"user_id": "user_1"}, "role": "org:member", "updated_at": 10})
	f = foldOrgs(t, []domain.Event{e})
	if _, ok := f.Organizations["org_2"]; ok {
		t.Fatalf("an organization without updated_at was folded: %+v", f.Organizations)
	}
	if m := f.Memberships["orgmem_2"]; m.OrganizationID != "org_2" || m.UserID != "user_1" || m.Role != "org:member" {
		t.Fatalf("membership %+v", m)
	}
}

func TestOrganizationDeletionIsAbsorbing(t *testing.T) {
	f := foldOrgs(t, []domain.Event{
		organizationEvent(3, "organization.updated", "org_1", "Zombie", 9000), // after the deletion, newer
		organizationEvent(1, "organization.created", "org_1", "Acme", 1000),
		organizationEvent(2, "organization.deleted", "org_1", "", 0),
	})
	o := f.Organizations["org_1"]
	if !o.Deleted || o.Name != "" || o.Slug != "" || string(o.PublicMetadata) != `{}` {
		t.Fatalf("tombstone %+v", o)
	}
	if !o.DeletedAt.Equal(time.UnixMilli(5002)) || !o.UpdatedAt.Equal(o.DeletedAt) || !o.CreatedAt.Equal(time.UnixMilli(1000)) {
		t.Fatalf("tombstone times %+v", o)
	}
}

// A user who leaves and joins again has two memberships: the old one's
// deletion does not absorb the new one.
func TestMembershipRejoinAfterLeaving(t *testing.T) {
	f := foldOrgs(t, []domain.Event{
		membershipEvent(1, "organizationMembership.created", "orgmem_1", "org_1", "Acme", 1000, "user_1", "org:admin", 2000),
		membershipEvent(2, "organizationMembership.deleted", "orgmem_1", "org_1", "Acme", 1000, "user_1", "org:admin", 2500),
		membershipEvent(3, "organizationMembership.created", "orgmem_2", "org_1", "Acme", 1000, "user_1", "org:member", 3000),
	})
	old, cur := f.Memberships["orgmem_1"], f.Memberships["orgmem_2"]
	if !old.Deleted || old.Role != "" || len(old.Permissions) != 0 || old.OrganizationID != "org_1" || old.UserID != "user_1" {
		t.Fatalf("old membership %+v", old)
	}
	if cur.Deleted || cur.Role != "org:member" || !reflect.DeepEqual(cur.Permissions, []string{"org:sys_memberships:read", "org:member"}) {
		t.Fatalf("new membership %+v", cur)
	}
}

// Any permutation of any multiset of a history of several organizations
// and memberships folds to the same state.
func TestOrganizationFoldIsOrderInsensitiveAndIdempotent(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	orgs := []string{"org_a", "org_b"}
	users := []string{"user_1", "user_2", "user_3"}
	for trial := range 300 {
		var hist []domain.Event
		n := 2 + r.IntN(14)
		for i := range n {
			pos := int64(i + 1)
			org := orgs[r.IntN(len(orgs))]
			// Repeated updated_at values exercise the tie-breaks.
			upd := int64(1000 + r.IntN(4)*1000)
			switch k := r.IntN(10); {
			case k < 3:
				typ := []string{"organization.created", "organization.updated", "organization.updated"}[r.IntN(3)]
				if r.IntN(8) == 0 {
					typ = "organization.deleted"
				}
				hist = append(hist, organizationEvent(pos, typ, org, fmt.Sprint("N", i), upd))
			default:
				m := r.IntN(4) // few memberships, so they collide
				typ := []string{"organizationMembership.created", "organizationMembership.updated"}[r.IntN(2)]
				if r.IntN(6) == 0 {
					typ = "organizationMembership.deleted"
				}
				// A membership's organization and user are fixed; its
				// embedded organization copy varies.
				hist = append(hist, membershipEvent(pos, typ, fmt.Sprint("orgmem_", m), orgs[m%2], fmt.Sprint("E", i),
					int64(1000+r.IntN(4)*1000), users[m%3], []string{"org:admin", "org:member"}[r.IntN(2)], upd))
			}
		}
		want := foldOrgs(t, hist)
		for range 10 {
			shuffled := append([]domain.Event(nil), hist...)
			for range r.IntN(5) {
				shuffled = append(shuffled, hist[r.IntN(len(hist))])
			}
			r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			got := foldOrgs(t, shuffled)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("trial %d: permutation folds to\n%+v\nwant\n%+v", trial, got, want)
			}
		}
	}
}

func TestOrganizationPoison(t *testing.T) {
	bad := []domain.Event{
		{Position: 1, Type: "organization.updated", Body: []byte(`{"data":[]}`)},
		{Position: 2, Type: "organization.created", Body: []byte(`{"data":{"id":""}}`)},
		{Position: 3, Type: "organization.created", Body: []byte(`{"data":{"id":"org_\u0000"}}`)},
		{Position: 4, Type: "organization.created", Body: []byte(`{"data":{"id":"org_1","name":7}}`)},
		{Position: 5, Type: "organizationMembership.deleted", Body: []byte(`{"data":{"id":"orgmem_1","deleted":true}}`)},
		{Position: 6, Type: "organizationMembership.created", Body: []byte(`{"data":{"id":"orgmem_1","organization":{"id":"org_1"}}}`)},
		{Position: 7, Type: "organizationMembership.created", Body: []byte(`{"data":{"organization":{"id":"org_1"},"public_user_data":{"user_id":"user_1"}}}`)},
		{Position: 8, Type: "organizationMembership.created", Body: []byte(`{"data":{"id":"orgmem_1","organization":{"id":"org_1"},"public_user_data":{"user_id":"user_\u0000"}}}`)},
		{Position: 9, Type: "organizationMembership.created", Body: []byte(`{"data":{"id":"orgmem_1","organization":{"id":"org_1"},"public_user_data":{"user_id":"user_1"},"permissions":[1]}}`)},
		// Stored for another user than its data names.
		{Position: 10, Type: "organizationMembership.created", UserID: "user_2", Body: []byte(`{"data":{"id":"orgmem_1","organization":{"id":"org_1"},"public_user_data":{"user_id":"user_1"}}}`)},
	}
	for _, e := range bad {
		if _, err := domain.ParseOrganizationEvent(e); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("event %d %s: %v, want EINVALID", e.Position, e.Body, err)
		}
	}
	f, errs := domain.FoldOrganizations(append(bad, organizationEvent(11, "organization.created", "org_1", "Acme", 1000)))
	if len(errs) != len(bad) || len(f.Organizations) != 1 || len(f.Memberships) != 0 {
		t.Fatalf("fold kept %+v, %d errors", f, len(errs))
	}
	// Other types are about nothing, whatever their body.
	x, err := domain.ParseOrganizationEvent(domain.Event{Type: "organizationInvitation.created", Body: []byte(`garbage`)})
	if err != nil || x.OrganizationID() != "" || x.MembershipID() != "" {
		t.Fatalf("invitation: %v %+v", err, x)
	}
}

// Text PostgreSQL refuses is kept in storable form, as for users.
func TestOrganizationFoldKeepsStorableText(t *testing.T) {
	e := orgEvent(1, "organizationMembership.created", map[string]any{
		"id": "orgmem_1", "organization": map[string]any{"id": "org_1", "name": "A\u0000B", "slug": nil, "updated_at": 5, "public_metadata": nil},
		"public_user_data": map[string]any{"user_id": "user_1"}, "role": "org:\u0000x", "permissions": []string{"p\u0000"}, "updated_at": 5,
	})
	f := foldOrgs(t, []domain.Event{e})
	o, m := f.Organizations["org_1"], f.Memberships["orgmem_1"]
	if o.Name != "A\uFFFDB" || o.Slug != "" || string(o.PublicMetadata) != `{}` {
		t.Fatalf("org %+v", o)
	}
	if m.Role != "org:\uFFFDx" || m.Permissions[0] != "p\uFFFD" {
		t.Fatalf("membership %+v", m)
	}
	raw := orgEvent(2, "organization.updated", map[string]any{"id": "org_1", "updated_at": 9})
	raw.Body = []byte(`{"type":"organization.updated","data":{"id":"org_1","updated_at":9,"public_metadata":{"k":"\u0000\ud800"}}}`)
	f = foldOrgs(t, []domain.Event{raw})
	if got := string(f.Organizations["org_1"].PublicMetadata); got != `{"k":"\ufffd\ufffd"}` {
		t.Fatalf("metadata %s", got)
	}
}
