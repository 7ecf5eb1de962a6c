package domain_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// snap is a Clerk user object for the change-list tests.
type snap struct {
	id, first, last, username, image, external string
	primary                                    string   // the primary email (must be in emails, or "")
	emails, phones                             []string // phones[0] is primary
	banned, locked                             bool
	public, private                            map[string]any
	created, updated                           int64 // ms
}

func (s snap) event(pos int64, typ string, occurred int64) domain.Event {
	var data map[string]any
	if typ == "user.deleted" {
		data = map[string]any{"id": s.id, "object": "user", "deleted": true}
	} else {
		nullable := func(v string) any {
			if v == "" {
				return nil
			}
			return v
		}
		emails := []any{}
		var primary any
		for i, e := range s.emails {
			id := fmt.Sprintf("idn_e%d", i)
			if e == s.primary {
				primary = id
			}
			emails = append(emails, map[string]any{"id": id, "email_address": e})
		}
		phones := []any{}
		var primaryPhone any
		for i, p := range s.phones {
			id := fmt.Sprintf("idn_p%d", i)
			if i == 0 {
				primaryPhone = id
			}
			phones = append(phones, map[string]any{"id": id, "phone_number": p})
		}
		public := s.public
		if public == nil {
			public = map[string]any{}
		}
		data = map[string]any{
			"id": s.id, "object": "user", "first_name": nullable(s.first), "last_name": nullable(s.last),
			"username": nullable(s.username), "image_url": s.image, "external_id": nullable(s.external),
			"primary_email_address_id": primary, "email_addresses": emails,
			"primary_phone_number_id": primaryPhone, "phone_numbers": phones,
			"banned": s.banned, "locked": s.locked,
			"public_metadata": public, "private_metadata": s.private, "unsafe_metadata": map[string]any{},
			"created_at": s.created, "updated_at": s.updated,
		}
	}
	body, _ := json.Marshal(map[string]any{"type": typ, "object": "event", "timestamp": occurred, "data": data,
		"event_attributes": map[string]any{"http_request": map[string]any{"client_ip": "192.0.2.7", "user_agent": "test-agent/1"}}})
	return domain.Event{Position: pos, DeliveryID: fmt.Sprintf("msg_%06d", pos), Type: typ, UserID: s.id, Body: body,
		OccurredAt: time.UnixMilli(occurred).UTC()}
}

func changesText(cs []domain.Change) string {
	var parts []string
	for _, c := range cs {
		parts = append(parts, c.Field+": "+c.Old+" -> "+c.New)
	}
	return strings.Join(parts, "; ")
}

// TestChangeListEveryField: each kind of change shows as its field, old ->
// new, and nothing else changes (updated_at aside).
func TestChangeListEveryField(t *testing.T) {
	base := snap{id: "user_1", first: "Ada", last: "Byron", emails: []string{"ada@example.com"}, primary: "ada@example.com",
		image: "https://img.clerk.com/a", public: map[string]any{"plan": "free"}, created: 1000, updated: 1000}
	var s domain.UserState
	step := func(n int64, typ string, sn snap) domain.StepResult {
		t.Helper()
		var r domain.StepResult
		s, r = domain.Step(s, sn.event(n, typ, sn.updated))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return r
	}
	r := step(1, "user.created", base)
	if r.Outcome != domain.OutcomeApplied || changesText(r.Changes) != "id:  -> user_1; first_name:  -> Ada; last_name:  -> Byron; email:  -> ada@example.com; "+
		"email_addresses:  -> ada@example.com; image_url:  -> https://img.clerk.com/a; created_at:  -> 1970-01-01T00:00:01.000Z; "+
		"updated_at:  -> 1970-01-01T00:00:01.000Z; public_metadata.plan:  -> \"free\"" {
		t.Errorf("creation: %s %s", r.Outcome, changesText(r.Changes))
	}
	cases := []struct {
		name   string
		change func(*snap)
		want   string
	}{
		{"name", func(u *snap) { u.last = "Lovelace" }, "last_name: Byron -> Lovelace"},
		{"first name removed", func(u *snap) { u.first = "" }, "first_name: Ada -> "},
		{"email added", func(u *snap) { u.emails = []string{"ada@example.com", "a@lovelace.org"} }, "email_addresses: ada@example.com -> a@lovelace.org, ada@example.com"},
		{"primary email", func(u *snap) { u.primary = "a@lovelace.org" }, "email: ada@example.com -> a@lovelace.org"},
		{"email removed", func(u *snap) { u.emails = []string{"a@lovelace.org"} }, "email_addresses: a@lovelace.org, ada@example.com -> a@lovelace.org"},
		{"phone", func(u *snap) { u.phones = []string{"+15550100"} }, "phone_numbers:  -> +15550100; primary_phone:  -> +15550100"},
		{"username", func(u *snap) { u.username = "ada" }, "username:  -> ada"},
		{"image", func(u *snap) { u.image = "https://img.clerk.com/b" }, "image_url: https://img.clerk.com/a -> https://img.clerk.com/b"},
		{"metadata key added", func(u *snap) { u.public = map[string]any{"plan": "free", "role": "auditor"} }, `public_metadata.role:  -> "auditor"`},
		{"metadata key changed", func(u *snap) { u.public = map[string]any{"plan": "pro", "role": "auditor"} }, `public_metadata.plan: "free" -> "pro"`},
		{"metadata key removed", func(u *snap) { u.public = map[string]any{"plan": "pro"} }, `public_metadata.role: "auditor" -> `},
		{"private metadata", func(u *snap) { u.private = map[string]any{"stripe": map[string]any{"id": "cus_1"}} }, `private_metadata.stripe:  -> {"id":"cus_1"}`},
		{"banned", func(u *snap) { u.banned = true }, "banned:  -> true"},
		{"locked", func(u *snap) { u.locked = true }, "locked:  -> true"},
		{"unbanned and unlocked", func(u *snap) { u.banned, u.locked = false, false }, "banned: true -> ; locked: true -> "},
		{"external id", func(u *snap) { u.external = "crm-7" }, "external_id:  -> crm-7"},
	}
	cur := base
	for i, c := range cases {
		c.change(&cur)
		cur.updated = int64(2000 + i*1000)
		r := step(int64(2+i), "user.updated", cur)
		got := changesText(r.Changes)
		wantUpdated := fmt.Sprintf("updated_at: %s -> %s", time.UnixMilli(int64(1000+i*1000)).UTC().Format("2006-01-02T15:04:05.000Z"),
			time.UnixMilli(cur.updated).UTC().Format("2006-01-02T15:04:05.000Z"))
		if i == 0 {
			wantUpdated = "updated_at: 1970-01-01T00:00:01.000Z -> 1970-01-01T00:00:02.000Z"
		}
		if r.Outcome != domain.OutcomeApplied || !strings.Contains(got, c.want) || len(r.Changes) != strings.Count(c.want, "; ")+2 || !strings.Contains(got, wantUpdated) {
			t.Errorf("%s: %s %q, want %q and %q only", c.name, r.Outcome, got, c.want, wantUpdated)
		}
	}
	del := step(100, "user.deleted", snap{id: "user_1", updated: 50_000})
	got := changesText(del.Changes)
	for _, want := range []string{"deleted:  -> true", "deleted_at:  -> 1970-01-01T00:00:50.000Z", "last_name: Lovelace -> ", "email: a@lovelace.org -> ",
		"phone_numbers: +15550100 -> ", "public_metadata.plan: \"pro\" -> ", "private_metadata.stripe: {\"id\":\"cus_1\"} -> ", "external_id: crm-7 -> "} {
		if !strings.Contains(got, want) {
			t.Errorf("deletion lacks %q: %s", want, got)
		}
	}
	if del.Outcome != domain.OutcomeDeleted || strings.Contains(got, "created_at") {
		t.Errorf("deletion: %s %s", del.Outcome, got)
	}
}

// TestStepIgnoredEvents: an older snapshot arriving late, a resent
// snapshot, a snapshot after the deletion, another user's event, another
// type and a poison event change nothing, and say why.
func TestStepIgnoredEvents(t *testing.T) {
	a := snap{id: "user_1", first: "Ada", created: 1000, updated: 5000}
	var s domain.UserState
	s, _ = domain.Step(s, a.event(1, "user.created", 5000))
	older := a
	older.first, older.updated = "Old", 3000
	resent := a
	other := snap{id: "user_2", first: "Bob", created: 1000, updated: 9000}
	session := domain.Event{Position: 9, Type: "session.created", UserID: "user_1", Body: []byte(`{"type":"session.created","data":{"id":"sess_1","user_id":"user_1"}}`), OccurredAt: time.UnixMilli(7000)}
	poison := domain.Event{Position: 10, Type: "user.updated", UserID: "user_1", Body: []byte(`{"data":"nope"}`), OccurredAt: time.UnixMilli(7000)}
	for _, c := range []struct {
		name string
		e    domain.Event
		want domain.Outcome
	}{
		{"older, arriving late", older.event(2, "user.updated", 3000), domain.OutcomeOlder},
		{"resent under a later delivery id", resent.event(3, "user.updated", 5000), domain.OutcomeApplied},
		{"resent under an earlier delivery id", func() domain.Event { e := resent.event(4, "user.updated", 5000); e.DeliveryID = "msg_0"; return e }(), domain.OutcomeOlder},
		{"another user", func() domain.Event { e := other.event(5, "user.updated", 9000); e.UserID = ""; return e }(), domain.OutcomeOtherUser},
		{"a session", session, domain.OutcomeNotUserEvent},
		{"poison", poison, domain.OutcomePoison},
	} {
		next, r := domain.Step(s, c.e)
		if r.Outcome != c.want || len(r.Changes) != 0 || !reflect.DeepEqual(next.Fields(), s.Fields()) {
			t.Errorf("%s: %s with changes %s, want %s and none", c.name, r.Outcome, changesText(r.Changes), c.want)
		}
		if (c.want == domain.OutcomePoison) != (r.Err != nil) {
			t.Errorf("%s: error %v", c.name, r.Err)
		}
		s = next
	}
	s, r := domain.Step(s, a.event(20, "user.deleted", 8000))
	if r.Outcome != domain.OutcomeDeleted {
		t.Fatalf("deletion: %s", r.Outcome)
	}
	later := a
	later.first, later.updated = "Back", 9000
	if _, r := domain.Step(s, later.event(21, "user.updated", 9000)); r.Outcome != domain.OutcomeAfterDeletion || len(r.Changes) != 0 {
		t.Errorf("after deletion: %s %s", r.Outcome, changesText(r.Changes))
	}
	if _, r := domain.Step(s, a.event(22, "user.deleted", 8500)); r.Outcome != domain.OutcomeDeleted || len(r.Changes) != 0 {
		t.Errorf("second deletion: %s %s", r.Outcome, changesText(r.Changes))
	}
	if req := domain.RequestOf(a.event(1, "user.created", 1).Body); req.ClientIP != "192.0.2.7" || req.UserAgent != "test-agent/1" {
		t.Errorf("request %+v", req)
	}
}

// randomHistory makes n events about one user with random changes, ties in
// updated_at, resent snapshots, stale snapshots and sometimes a deletion,
// in arrival (ledger) order = a random shuffle of the order they happened.
func randomHistory(r *rand.Rand, n int) []domain.Event {
	u := snap{id: "user_p", created: 1000, updated: 1000}
	var events []domain.Event
	names := []string{"", "Ada", "Bob", "Zoë", "\u202eevil"}
	mails := []string{"a@x.org", "b@x.org", "c@x.org"}
	for i := 0; i < n; i++ {
		typ := "user.updated"
		if i == 0 {
			typ = "user.created"
		}
		switch r.IntN(12) {
		case 0:
			u.first = names[r.IntN(len(names))]
		case 1:
			u.last = names[r.IntN(len(names))]
		case 2:
			u.emails = nil
			for _, m := range mails {
				if r.IntN(2) == 0 {
					u.emails = append(u.emails, m)
				}
			}
			u.primary = ""
			if len(u.emails) > 0 {
				u.primary = u.emails[r.IntN(len(u.emails))]
			}
		case 3:
			u.phones = []string{fmt.Sprintf("+1555%04d", r.IntN(3))}[:r.IntN(2)]
		case 4:
			u.banned = !u.banned
		case 5:
			u.locked = !u.locked
		case 6:
			u.public = map[string]any{}
			for _, k := range []string{"plan", "role", "n"} {
				if r.IntN(2) == 0 {
					u.public[k] = r.IntN(3)
				}
			}
		case 7:
			u.username = names[r.IntN(len(names))]
		case 8:
			u.image = fmt.Sprintf("https://img.clerk.com/%d", r.IntN(3))
		case 9:
			u.private = map[string]any{"k": r.IntN(2)}
		case 10:
			if r.IntN(4) == 0 {
				typ = "user.deleted"
			}
		}
		if r.IntN(4) != 0 { // a quarter of the snapshots tie on updated_at
			u.updated += int64(1 + r.IntN(3000))
		}
		occurred := u.updated + int64(r.IntN(5))
		events = append(events, u.event(int64(i+1), typ, occurred))
		if r.IntN(8) == 0 { // resent: the same snapshot under another delivery id
			events = append(events, u.event(int64(1000+i), typ, occurred))
		}
	}
	r.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
	for i := range events {
		events[i].Position = int64(i + 1) // arrival order
	}
	return events
}

// TestChangeListReplayReproducesTheFold (property): for random histories
// delivered in random order, stepping through the events in time order and
// replaying only their change lists from nothing gives exactly the Fields
// of the folded state, and the stepped User is the fold's (domain.Fold, in
// arrival order) and the Folder's.
func TestChangeListReplayReproducesTheFold(t *testing.T) {
	for seed := uint64(1); seed <= 400; seed++ {
		r := rand.New(rand.NewPCG(seed, 17))
		events := randomHistory(r, 1+r.IntN(40))
		folded, errs := domain.Fold(events)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		byTime := slices.Clone(events)
		slices.SortFunc(byTime, func(a, b domain.Event) int {
			return domain.NewTimeKey(domain.ChangedAt(a), a.Position).Compare(domain.NewTimeKey(domain.ChangedAt(b), b.Position))
		})
		var s domain.UserState
		replay := map[string]string{}
		for _, e := range byTime {
			var res domain.StepResult
			s, res = domain.Step(s, e)
			for _, c := range res.Changes {
				if replay[c.Field] != c.Old {
					t.Fatalf("seed %d: change %+v does not start from the replayed value %q", seed, c, replay[c.Field])
				}
				if c.New == "" {
					delete(replay, c.Field)
				} else {
					replay[c.Field] = c.New
				}
			}
		}
		want := map[string]string{}
		var f domain.Folder
		for _, e := range events {
			d, err := domain.DecodeUserEvent(e)
			if err != nil {
				t.Fatal(err)
			}
			f.Add(d)
		}
		for _, fl := range f.State().Fields() {
			want[fl.Name] = fl.Value
		}
		if !reflect.DeepEqual(replay, want) {
			t.Fatalf("seed %d: replayed %v\nwant %v", seed, replay, want)
		}
		if !reflect.DeepEqual(s.User, folded) || !reflect.DeepEqual(f.User(), folded) || !reflect.DeepEqual(s.Fields(), f.State().Fields()) {
			t.Fatalf("seed %d: stepped %+v, folder %+v, fold %+v", seed, s.User, f.User(), folded)
		}
	}
}

// TestTimeOrderOfAShuffledHistory: whatever order a history arrives in,
// sorting by TimeKey gives the order the changes happened (updated_at,
// else occurred_at), and ArrivalOrder marks exactly the events that arrived
// after one that happened later.
func TestTimeOrderOfAShuffledHistory(t *testing.T) {
	u := snap{id: "user_t", created: 1000}
	var happened []domain.Event
	for i := 0; i < 30; i++ {
		u.updated = int64(1000 + i*60_000)
		u.first = fmt.Sprintf("Name%d", i)
		typ := "user.updated"
		if i == 0 {
			typ = "user.created"
		}
		// The envelope timestamp is the delivery attempt's for some (no
		// timestamp: svix-timestamp), far after the change: time order
		// must follow updated_at.
		occurred := u.updated
		if i%7 == 3 {
			occurred += 3_600_000
		}
		happened = append(happened, u.event(int64(i), typ, occurred))
	}
	happened = append(happened, domain.Event{Type: "session.created", UserID: "user_t", OccurredAt: time.UnixMilli(1000 + 15*60_000 + 30_000),
		Body: []byte(`{"type":"session.created","data":{"user_id":"user_t"}}`)})
	r := rand.New(rand.NewPCG(3, 4))
	arrived := slices.Clone(happened)
	r.Shuffle(len(arrived), func(i, j int) { arrived[i], arrived[j] = arrived[j], arrived[i] })
	var ao domain.ArrivalOrder
	late := map[string]bool{}
	for i := range arrived {
		arrived[i].Position = int64(i + 1)
		k := domain.NewTimeKey(domain.ChangedAt(arrived[i]), arrived[i].Position)
		if ao.See(k) {
			late[string(arrived[i].Body)] = true
		}
		// By definition: some earlier arrival happened later.
		want := false
		for _, prev := range arrived[:i] {
			if domain.ChangedAt(prev).After(domain.ChangedAt(arrived[i])) {
				want = true
			}
		}
		if want != late[string(arrived[i].Body)] {
			t.Errorf("arrival %d: out of order %v, want %v", i, !want, want)
		}
	}
	sorted := slices.Clone(arrived)
	slices.SortFunc(sorted, func(a, b domain.Event) int {
		return domain.NewTimeKey(domain.ChangedAt(a), a.Position).Compare(domain.NewTimeKey(domain.ChangedAt(b), b.Position))
	})
	// The session happened between the 16th and 17th user change.
	want := slices.Concat(happened[:16], happened[30:], happened[16:30])
	for i := range sorted {
		if string(sorted[i].Body) != string(want[i].Body) {
			t.Fatalf("place %d in time order: %.80s, want %.80s", i, sorted[i].Body, want[i].Body)
		}
	}
	if len(late) == 0 {
		t.Error("the shuffle marked nothing out of order")
	}
}
