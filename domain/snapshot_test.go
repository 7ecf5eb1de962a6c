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

// snapshotEvent is the stored form of a user.snapshot of the user object
// userEvent would deliver.
func snapshotEvent(t testing.TB, pos int64, id string, updatedAt int64, first, last, email string) domain.Event {
	t.Helper()
	e := userEvent(pos, "user.updated", id, updatedAt, first, last, email)
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(e.Body, &env); err != nil {
		t.Fatal(err)
	}
	d, err := domain.NewSnapshot(id, updatedAt, env.Data)
	if err != nil {
		t.Fatal(err)
	}
	return stored(pos, d)
}

func stored(pos int64, d domain.Delivery) domain.Event {
	return domain.Event{Position: pos, DeliveryID: d.ID, Type: d.Type, UserID: d.UserID, Body: d.Body, OccurredAt: d.OccurredAt, Source: d.Source}
}

func goneEvent(t testing.TB, pos int64, id string, at int64) domain.Event {
	t.Helper()
	d, err := domain.NewSnapshotDeleted(id, time.UnixMilli(at), "not listed; GET answered 404")
	if err != nil {
		t.Fatal(err)
	}
	return stored(pos, d)
}

func TestSnapshotFoldsLikeTheUserObject(t *testing.T) {
	s := snapshotEvent(t, 1, "user_1", 2000, "Ada", "Lovelace", "ada@example.com")
	if s.DeliveryID != "clerk_api:user_1:2000" || s.Source != "clerk_api" || !s.OccurredAt.Equal(time.UnixMilli(2000)) {
		t.Fatalf("snapshot %+v", s)
	}
	got, err := domain.Apply(domain.User{}, s)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := domain.Apply(domain.User{}, userEvent(1, "user.updated", "user_1", 2000, "Ada", "Lovelace", "ada@example.com"))
	want.Version, got.Version = domain.Version{}, domain.Version{}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshot folds to\n%+v\nthe delivery of the same object to\n%+v", got, want)
	}
	// The change list reads its details too.
	_, r := domain.Step(domain.UserState{}, s)
	if r.Outcome != domain.OutcomeApplied || r.Err != nil || !r.ChangedAt.Equal(time.UnixMilli(2000)) {
		t.Fatalf("step %+v", r)
	}
	var f domain.Folder
	d, _ := domain.DecodeUserEvent(s)
	f.Add(d)
	if st := f.State(); len(st.Detail.Emails) != 2 {
		t.Fatalf("details of a snapshot: %+v", st.Detail)
	}
}

func TestOlderSnapshotNeverOverwritesNewerWebhook(t *testing.T) {
	hook := userEvent(1, "user.updated", "user_1", 3000, "New", "Name", "new@example.com")
	snap := snapshotEvent(t, 2, "user_1", 2000, "Old", "Name", "old@example.com")
	for _, order := range [][]domain.Event{{hook, snap}, {snap, hook}} {
		u, errs := domain.Fold(order)
		if len(errs) != 0 || u.FirstName != "New" {
			t.Fatalf("%v: folded %+v", errs, u)
		}
	}
	newer := snapshotEvent(t, 3, "user_1", 4000, "Newest", "Name", "n@example.com")
	if u, _ := domain.Fold([]domain.Event{newer, hook, snap}); u.FirstName != "Newest" {
		t.Fatalf("a newer snapshot lost: %+v", u)
	}
}

func TestSnapshotNeverRevivesDeletedUser(t *testing.T) {
	del := userEvent(1, "user.deleted", "user_1", 0, "", "", "")
	snap := snapshotEvent(t, 2, "user_1", 9000, "Zombie", "", "z@example.com")
	for _, order := range [][]domain.Event{{del, snap}, {snap, del}} {
		if u, _ := domain.Fold(order); !u.Deleted || u.FirstName != "" || u.Email != "" {
			t.Fatalf("snapshot revived %+v", u)
		}
	}
}

func TestSnapshotDeletedIsATombstone(t *testing.T) {
	snap := snapshotEvent(t, 1, "user_1", 2000, "Ada", "", "a@example.com")
	gone := goneEvent(t, 2, "user_1", 7000)
	if gone.DeliveryID != "clerk_api:user_1:gone" || gone.Type != "user.snapshot_deleted" {
		t.Fatalf("gone %+v", gone)
	}
	u, errs := domain.Fold([]domain.Event{gone, snap})
	if len(errs) != 0 || !u.Deleted || !u.DeletedAt.Equal(time.UnixMilli(7000)) || u.Email != "" || !u.CreatedAt.Equal(time.UnixMilli(1000)) {
		t.Fatalf("folded %v %+v", errs, u)
	}
	// A real user.deleted that happened earlier tells the earlier time.
	del := userEvent(3, "user.deleted", "user_1", 0, "", "", "")
	if u, _ := domain.Fold([]domain.Event{gone, del, snap}); !u.DeletedAt.Equal(del.OccurredAt.UTC()) {
		t.Fatalf("deleted at %v, want %v", u.DeletedAt, del.OccurredAt)
	}
}

// Bad input from the API is refused with a reason, never half stored.
func TestNewSnapshotRefusesWhatTheFoldCannotRead(t *testing.T) {
	for name, c := range map[string]struct {
		id  string
		at  int64
		raw string
	}{
		"not an object":      {"user_1", 1, `[1]`},
		"not json":           {"user_1", 1, `{"id":"user_1",`},
		"another id":         {"user_1", 1, `{"id":"user_2","updated_at":1}`},
		"another updated_at": {"user_1", 1, `{"id":"user_1","updated_at":2}`},
		"deleted":            {"user_1", 1, `{"id":"user_1","updated_at":1,"deleted":true}`},
		"nul":                {"user_1", 1, "{\"id\":\"user_1\",\"updated_at\":1,\"x\":\"\x00\"}"},
		"control in id":      {"user_\n", 1, `{"id":"user_\n","updated_at":1}`},
	} {
		if _, err := domain.NewSnapshot(c.id, c.at, []byte(c.raw)); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("%s: %v, want EINVALID", name, err)
		}
	}
	if _, err := domain.NewSnapshotDeleted("", time.Now(), "x"); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("empty id: %v", err)
	}
	d, err := domain.NewSnapshot("user_1", 5, []byte(` {"updated_at":5, "id":"user_1"} `))
	if err != nil || string(d.Body) != ` {"updated_at":5, "id":"user_1"} ` {
		t.Fatalf("exact bytes not kept: %q %v", d.Body, err)
	}
}

// Snapshots, deliveries and gone-observations in any order, with any
// duplicates, fold to the same user (the property of
// TestFoldIsOrderInsensitiveAndIdempotent, extended to the Backend API's
// events).
func TestFoldWithSnapshotsIsOrderInsensitiveAndIdempotent(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 400 {
		var hist []domain.Event
		// A delivery id is stored once: one snapshot per updated_at, one
		// gone-observation per user (a repeat is a duplicate).
		snaps := map[int64]domain.Event{}
		var gone *domain.Event
		n := 1 + r.IntN(10)
		for i := range n {
			pos := int64(i + 1)
			at := int64(1000 + r.IntN(5)*1000) // repeated updated_at values: ties between snapshot and delivery
			first := fmt.Sprint("F", i)
			email := fmt.Sprintf("e%d@example.com", i)
			switch k := r.IntN(20); {
			case k < 7:
				if _, ok := snaps[at]; !ok {
					snaps[at] = snapshotEvent(t, pos, "user_1", at, first, "L", email)
				}
				hist = append(hist, snaps[at])
			case k < 8:
				if gone == nil {
					g := goneEvent(t, pos, "user_1", 5000+int64(r.IntN(3))*1000)
					gone = &g
				}
				hist = append(hist, *gone)
			case k < 9:
				hist = append(hist, userEvent(pos, "user.deleted", "user_1", 0, "", "", ""))
			case k < 12:
				hist = append(hist, userEvent(pos, "user.created", "user_1", at, first, "L", email))
			default:
				hist = append(hist, userEvent(pos, "user.updated", "user_1", at, first, "L", email))
			}
		}
		want, errs := domain.Fold(hist)
		if len(errs) != 0 {
			t.Fatal(errs)
		}
		wantState := stateOf(hist)
		for range 10 {
			shuffled := append([]domain.Event(nil), hist...)
			for range r.IntN(4) {
				shuffled = append(shuffled, hist[r.IntN(len(hist))])
			}
			r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			got, _ := domain.Fold(shuffled)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("trial %d: permutation folds to\n%+v\nwant\n%+v", trial, got, want)
			}
			if s := stateOf(shuffled); !reflect.DeepEqual(s, wantState) {
				t.Fatalf("trial %d: details differ:\n%+v\nwant\n%+v", trial, s, wantState)
			}
		}
		// The newest snapshot wins whatever its source.
		if !want.Deleted {
			var newest domain.Version
			for _, e := range hist {
				d, _ := domain.DecodeUserEvent(e)
				u, _ := d.Apply(domain.User{})
				if newest.Less(u.Version) {
					newest = u.Version
				}
			}
			if want.Version != newest {
				t.Fatalf("trial %d: version %+v, want the greatest %+v", trial, want.Version, newest)
			}
		} else if strings.Contains(want.Email, "@") {
			t.Fatalf("trial %d: a deleted user keeps an email", trial)
		}
	}
}

func stateOf(events []domain.Event) domain.UserState {
	var f domain.Folder
	for _, e := range events {
		d, err := domain.DecodeUserEvent(e)
		if err == nil {
			f.Add(d)
		}
	}
	return f.State()
}

// Organization and membership snapshots from the Backend API fold like
// the deliveries carrying the same objects, ordered by updated_at, in any
// order, never reviving a deletion.
func TestOrganizationSnapshotsFoldInAnyOrder(t *testing.T) {
	raw := func(v map[string]any) []byte { b, _ := json.Marshal(v); return b }
	orgSnap, err := domain.NewOrganizationSnapshot("org_1", 1500, raw(orgBody("org_1", "Snapshot Name", 1500)))
	if err != nil {
		t.Fatal(err)
	}
	memObj := map[string]any{"id": "orgmem_1", "object": "organization_membership", "organization": orgBody("org_1", "Snapshot Name", 1500),
		"public_user_data": map[string]any{"user_id": "user_1"}, "role": "org:admin", "permissions": []string{"org:sys_memberships:read"},
		"created_at": 2000, "updated_at": 2500}
	memSnap, err := domain.NewMembershipSnapshot("orgmem_1", 2500, raw(memObj))
	if err != nil || memSnap.UserID != "user_1" || memSnap.ID != "clerk_api:orgmem_1:2500" {
		t.Fatalf("%+v %v", memSnap, err)
	}
	older := organizationEvent(1, "organization.updated", "org_1", "Older Name", 1000)
	newer := organizationEvent(2, "organization.updated", "org_1", "Newer Name", 3000)
	memOld := membershipEvent(3, "organizationMembership.created", "orgmem_1", "org_1", "Older Name", 1000, "user_1", "org:member", 2000)
	hist := []domain.Event{stored(10, orgSnap), stored(11, memSnap), older, memOld}
	r := rand.New(rand.NewPCG(5, 6))
	for range 50 {
		r.Shuffle(len(hist), func(i, j int) { hist[i], hist[j] = hist[j], hist[i] })
		f := foldOrgs(t, append(hist, hist[r.IntN(len(hist))]))
		if o := f.Organizations["org_1"]; o.Name != "Snapshot Name" {
			t.Fatalf("organization %+v, want the snapshot's (newer than the older webhook)", o)
		}
		if m := f.Memberships["orgmem_1"]; m.Role != "org:admin" || m.UserID != "user_1" {
			t.Fatalf("membership %+v, want the snapshot's role", m)
		}
		if o := foldOrgs(t, append(hist, newer)).Organizations["org_1"]; o.Name != "Newer Name" {
			t.Fatalf("an older snapshot overwrote a newer webhook: %+v", o)
		}
		if o := foldOrgs(t, append(hist, organizationEvent(4, "organization.deleted", "org_1", "", 0))).Organizations["org_1"]; !o.Deleted {
			t.Fatalf("a snapshot revived a deleted organization: %+v", o)
		}
	}
	for _, bad := range []string{`{"id":"org_2","object":"organization","updated_at":1500}`, `[1]`, `{"id":"org_1","updated_at":9}`} {
		if _, err := domain.NewOrganizationSnapshot("org_1", 1500, []byte(bad)); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("%s: %v", bad, err)
		}
	}
	if _, err := domain.NewMembershipSnapshot("orgmem_1", 2500, []byte(`{"id":"orgmem_1","updated_at":2500,"organization":{"id":"org_1"}}`)); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("a membership without a user: %v", err)
	}
}
