package clerksync_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkapi/clerkapitest"
	"github.com/clerk-ledger/clerk-ledger/clerksync"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

func TestImportIntoAnEmptyLedger(t *testing.T) {
	e := newEnv(t, 350)
	var seen []clerksync.Progress
	sum, err := e.sync.ImportUsers(context.Background(), clerksync.ImportOptions{Progress: func(p clerksync.Progress) { seen = append(seen, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Imported != 350 || sum.Unchanged != 0 || sum.Failed != 0 || !sum.Finished || sum.Total != 350 || sum.Resumed {
		t.Fatalf("summary %+v", sum)
	}
	// Reported as the place moves (pages stored out of order move it once).
	if len(seen) == 0 || len(seen) > 4 || seen[len(seen)-1].Offset != 350 {
		t.Fatalf("progress %+v", seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].Offset <= seen[i-1].Offset {
			t.Fatalf("progress went back: %+v", seen)
		}
	}
	// Each user is one user.snapshot holding the exact bytes the API sent.
	for _, en := range e.api.List() {
		ev, err := schema.EventByDeliveryID(context.Background(), e.db, domain.SnapshotDeliveryID(en.ID, en.UpdatedAt))
		if err != nil {
			t.Fatal(err)
		}
		if string(ev.Body) != string(en.Raw) || ev.Type != "user.snapshot" || ev.Source != "clerk_api" || ev.UserID != en.ID || ev.SvixSignature != "" {
			t.Fatalf("stored %+v", ev)
		}
	}
	e.project()
	if n := e.count(`SELECT count(*) FROM users WHERE NOT deleted`); n != 350 {
		t.Fatalf("%d users projected", n)
	}
	first := e.api.List()[0]
	u := e.user(first.ID)
	cu, _ := e.api.Get(first.ID)
	if u.UpdatedAt.UnixMilli() != cu.UpdatedAt || u.FirstName != deref(cu.FirstName) {
		t.Fatalf("projected %+v from %+v", u, cu)
	}
	e.checkProjection()
	// The users projector indexes the imported users' emails for search;
	// the workspace does not count the snapshots as deliveries.
	if err := projections.NewRunner(e.db, nil, projections.NewUsers(), projections.NewWorkspace()).CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	withEmail := int64(0)
	for _, en := range e.api.List() {
		if u, _ := e.api.Get(en.ID); len(u.EmailAddresses) > 0 {
			withEmail++
		}
	}
	if n := e.count(`SELECT count(DISTINCT user_id) FROM user_emails`); n != withEmail || n == 0 {
		t.Fatalf("%d users' emails indexed, want %d", n, withEmail)
	}
	if n := e.count(`SELECT count(*) FROM delivery_counts`); n != 0 {
		t.Fatalf("snapshots counted as deliveries: %d rows", n)
	}
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func TestImportTwiceStoresNothingNew(t *testing.T) {
	e := newEnv(t, 120)
	if _, err := e.sync.ImportUsers(context.Background(), clerksync.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	ids := e.api.List()
	if err := e.api.Update(ids[5].ID, func(u *clerkapitest.User) { u.FirstName = ptr("Changed") }); err != nil {
		t.Fatal(err)
	}
	sum, err := e.sync.ImportUsers(context.Background(), clerksync.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Imported != 1 || sum.Unchanged != 119 || sum.Resumed {
		t.Fatalf("second import %+v, want 1 imported (the changed user), 119 unchanged", sum)
	}
	if n := e.count(`SELECT count(*) FROM events`); n != 121 {
		t.Fatalf("%d events", n)
	}
	e.project()
	if u := e.user(ids[5].ID); u.FirstName != "Changed" {
		t.Fatalf("projected %+v", u)
	}
}

func ptr[T any](v T) *T { return &v }

// Webhooks newer than the import win; a snapshot never revives a user
// whose deletion was delivered; users without webhooks get the snapshot.
func TestImportWithNewerWebhooksLetsWebhooksWin(t *testing.T) {
	e := newEnv(t, 50)
	list := e.api.List()
	old := map[string][]byte{}
	for _, en := range list[:3] {
		old[en.ID] = en.Raw
	}
	// Users 0 and 1 change after the API page was read: simulate by taking
	// the import's view first, then updating and delivering the webhook.
	changed, deleted := list[0].ID, list[1].ID
	if err := e.api.Update(changed, func(u *clerkapitest.User) { u.LastName = ptr("Webhook") }); err != nil {
		t.Fatal(err)
	}
	e.webhook("user.updated", changed)
	e.webhook("user.deleted", deleted)
	// The API still serves the older objects for the import (a stale
	// read, or a page read before the changes).
	for id, raw := range old {
		if err := e.api.PutRaw(id, raw); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := e.sync.ImportUsers(context.Background(), clerksync.ImportOptions{})
	if err != nil || sum.Imported != 50 {
		t.Fatalf("%+v %v", sum, err)
	}
	e.project()
	if u := e.user(changed); u.LastName != "Webhook" {
		t.Fatalf("older snapshot overwrote the newer webhook: %+v", u)
	}
	if u := e.user(deleted); !u.Deleted || u.Email != "" {
		t.Fatalf("snapshot revived a deleted user: %+v", u)
	}
	if u := e.user(list[2].ID); u.Deleted || u.ID == "" {
		t.Fatalf("plain import %+v", u)
	}
	e.checkProjection()
}

// An import interrupted mid-way (its context cancelled between pages, as
// Ctrl-C does) resumes at the first page it did not store.
func TestImportResumesAfterInterruption(t *testing.T) {
	e := newEnv(t, 530)
	ctx, cancel := context.WithCancel(context.Background())
	e.api.OnList(func(offset, limit int) {
		if offset == 300 {
			cancel()
		}
	})
	sum, err := e.sync.ImportUsers(ctx, clerksync.ImportOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted import: %v", err)
	}
	// The pages fetched before the cancel are stored (the page at 200 may
	// have been fetched ahead and handed to a writer, or not).
	stopped := sum.Offset
	if (stopped != 200 && stopped != 300) || sum.Imported != int64(stopped) || sum.Finished {
		t.Fatalf("interrupted at %+v, want 200 or 300 stored", sum)
	}
	if n := e.count(`SELECT count(*) FROM events`); n != int64(stopped) {
		t.Fatalf("%d events stored, place %d", n, stopped)
	}
	e.api.OnList(nil)
	before := e.api.RequestCount()
	sum, err = e.sync.ImportUsers(context.Background(), clerksync.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Resumed || sum.FromOffset != stopped || sum.Imported != 530 || sum.Unchanged != 0 || !sum.Finished {
		t.Fatalf("resumed %+v", sum)
	}
	// The pages from where it stopped to 500, and no count: nothing stored
	// is read again.
	if n, want := e.api.RequestCount()-before, (500-stopped)/100+1; n != want {
		t.Fatalf("the resumed import made %d requests, want %d", n, want)
	}
	if n := e.count(`SELECT count(*) FROM events`); n != 530 {
		t.Fatalf("%d events", n)
	}
	// A finished pass: the next import starts over (and stores nothing).
	sum, err = e.sync.ImportUsers(context.Background(), clerksync.ImportOptions{})
	if err != nil || sum.Resumed || sum.Unchanged != 530 || sum.Imported != 0 {
		t.Fatalf("after a finished pass %+v %v", sum, err)
	}
}

// A malformed user is recorded as failed with its id and skipped; the rest
// of its page is stored. 429 with Retry-After and 5xx are retried.
func TestImportRecordsMalformedUsersAndRetries(t *testing.T) {
	e := newEnv(t, 150)
	list := e.api.List()
	bad := list[7].ID
	if err := e.api.PutRaw(bad, []byte(`{"id":"`+bad+`","object":"user","created_at":"yesterday","updated_at":1}`)); err != nil {
		t.Fatal(err)
	}
	e.api.Inject(1, clerkapitest.Fault{Status: 429, RetryAfter: "1"})
	e.api.Inject(1, clerkapitest.Fault{Status: 503})
	e.api.SetDelay(20 * time.Millisecond)
	start := time.Now()
	sum, err := e.sync.ImportUsers(context.Background(), clerksync.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Imported != 149 || sum.Failed != 1 || len(sum.Failures) != 1 || sum.Failures[0].ObjectID != bad || sum.Failures[0].Position != 7 {
		t.Fatalf("summary %+v", sum)
	}
	if time.Since(start) < time.Second {
		t.Fatalf("the 429's Retry-After (1 s) was not honoured")
	}
	if n := e.count(`SELECT count(*) FROM events WHERE user_id = $1`, bad); n != 0 {
		t.Fatalf("the malformed user was stored")
	}
	var reason string
	if err := e.db.QueryRowx(`SELECT reason FROM clerk_import_failures WHERE object_id = $1`, bad).Scan(&reason); err != nil || !strings.Contains(reason, "created_at") {
		t.Fatalf("failure recorded as %q, %v", reason, err)
	}
	st, _, _ := schema.ReadImport(context.Background(), e.db, clerksync.KindUsers)
	if st.Failed != 1 || !st.Finished {
		t.Fatalf("state %+v", st)
	}
}

func TestImportWithRefusedKey(t *testing.T) {
	e := newEnv(t, 3)
	// A well-formed key the server does not know.
	s := clerksync.New(e.db, mustClient(t, "sk_test_"+strings.Repeat("a", 32), e.api), nil)
	_, err := s.ImportUsers(context.Background(), clerksync.ImportOptions{})
	if domain.ErrorCode(err) != domain.EUNAUTHORIZED {
		t.Fatalf("refused key: %v", err)
	}
	if n := e.count(`SELECT count(*) FROM events`); n != 0 {
		t.Fatal("stored events with a refused key")
	}
}

// A user who signs in before their user.created delivery: fetched once
// however many pages ask at once, stored as a snapshot, shown at once.
func TestFirstSignInFetchesOnceAndStores(t *testing.T) {
	e := newEnv(t, 5)
	id := e.api.List()[2].ID
	f := clerksync.NewFirstSignIn(e.db, e.cl, nil)
	e.api.SetDelay(0)
	e.api.Inject(1, clerkapitest.Fault{Status: 200, Delay: time.Second, Body: string(mustRaw(t, e.api, id))})
	var wg sync.WaitGroup
	users := make([]domain.User, 8)
	errs := make([]error, 8)
	for i := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			users[i], errs[i] = f.FetchUser(context.Background(), id)
		}()
	}
	wg.Wait()
	for i := range users {
		if errs[i] != nil || users[i].ID != id || users[i].Deleted {
			t.Fatalf("caller %d: %+v %v", i, users[i], errs[i])
		}
	}
	gets := 0
	for _, r := range e.api.Requests() {
		if r.Path == "/v1/users/"+id {
			gets++
		}
	}
	if gets != 1 {
		t.Fatalf("%d GETs for 8 concurrent callers, want 1", gets)
	}
	if n := e.count(`SELECT count(*) FROM events WHERE type = 'user.snapshot' AND user_id = $1`, id); n != 1 {
		t.Fatalf("%d snapshots", n)
	}
	e.project()
	got := e.user(id)
	users[0].Version = got.Version
	if got.Email != users[0].Email || got.Name() != users[0].Name() {
		t.Fatalf("projected %+v, shown %+v", got, users[0])
	}
	// Clerk has no such user, or is down: an error, nothing stored.
	if _, err := f.FetchUser(context.Background(), "user_unknown"); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Fatalf("unknown user: %v", err)
	}
	e.api.Inject(20, clerkapitest.Fault{Status: 503})
	if _, err := f.FetchUser(context.Background(), e.api.List()[3].ID); domain.ErrorCode(err) != domain.EUNAVAILABLE {
		t.Fatalf("API down: %v", err)
	}
	if n := e.count(`SELECT count(*) FROM events`); n != 1 {
		t.Fatalf("%d events", n)
	}
}

func mustRaw(t *testing.T, s *clerkapitest.Server, id string) []byte {
	t.Helper()
	raw, ok := s.Raw(id)
	if !ok {
		t.Fatal("no user")
	}
	return raw
}
