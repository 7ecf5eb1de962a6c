package clerksync_test

import (
	"context"
	"strings"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/clerkapi/clerkapitest"
	"github.com/clerk-ledger/clerk-ledger/clerksync"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// Every kind of drift is found, reported by a dry run without a change,
// and repaired by the real run; a second run finds none.
func TestReconcileFindsAndRepairsEachKindOfDrift(t *testing.T) {
	e := newEnv(t, 240)
	ctx := context.Background()
	if _, err := e.sync.ImportUsers(ctx, clerksync.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	list := e.api.List()
	// Deliveries lost for good: 2 users updated, 3 deleted, 4 created in
	// Clerk with no webhook reaching the ledger.
	for _, en := range list[:2] {
		if err := e.api.Update(en.ID, func(u *clerkapitest.User) { u.LastName = ptr("Updated") }); err != nil {
			t.Fatal(err)
		}
	}
	for _, en := range list[10:13] {
		e.api.Delete(en.ID)
	}
	created := e.api.Generate(4)
	// A user deleted here (a delivered user.deleted) whom Clerk still lists.
	e.webhook("user.deleted", list[20].ID)
	e.project()

	dry, err := e.sync.Reconcile(ctx, clerksync.ReconcileOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if dry.Missing != 4 || dry.Stale != 2 || dry.Gone != 3 || dry.DeletedHere != 1 || dry.Same != 240-2-3-1 || dry.Repaired != 0 || dry.Failed != 0 || dry.HeldBack != "" {
		t.Fatalf("dry run %+v", dry)
	}
	if dry.ClerkUsers != 241 || dry.LedgerUsers != 239 {
		t.Fatalf("counted %d in Clerk, %d here", dry.ClerkUsers, dry.LedgerUsers)
	}
	before := e.count(`SELECT count(*) FROM events`)
	run, err := e.sync.Reconcile(ctx, clerksync.ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if run.Missing != 4 || run.Stale != 2 || run.Gone != 3 || run.Repaired != 9 {
		t.Fatalf("run %+v", run)
	}
	if n := e.count(`SELECT count(*) FROM events`) - before; n != 9 {
		t.Fatalf("%d events appended, want 9", n)
	}
	if n := e.count(`SELECT count(*) FROM events WHERE type = 'user.deleted'`); n != 1 {
		t.Fatalf("%d user.deleted: a gone user must not be given a fabricated user.deleted", n)
	}
	e.project()
	if u := e.user(list[0].ID); u.LastName != "Updated" {
		t.Fatalf("stale user not repaired: %+v", u)
	}
	for _, en := range list[10:13] {
		if u := e.user(en.ID); !u.Deleted || u.Email != "" {
			t.Fatalf("gone user %+v", u)
		}
	}
	if u := e.user(created[3]); u.Deleted || u.ID == "" {
		t.Fatalf("missing user %+v", u)
	}
	e.checkProjection()

	again, err := e.sync.Reconcile(ctx, clerksync.ReconcileOptions{Trigger: clerksync.TriggerSchedule})
	if err != nil {
		t.Fatal(err)
	}
	if again.Missing+again.Stale+again.Gone != 0 || again.Repaired != 0 || again.Same != 241-1 {
		t.Fatalf("after repair %+v", again)
	}
	runs, err := schema.ReconcileRuns(ctx, e.db, 10)
	if err != nil || len(runs) != 3 || runs[0].Trigger != "schedule" || !runs[2].DryRun || runs[1].Repaired != 9 {
		t.Fatalf("recorded runs %+v %v", runs, err)
	}
}

// A broken answer (an empty list: a wrong instance's key, a bug) must not
// mark everyone deleted.
func TestReconcileSafetyLimitHoldsBackMassDeletion(t *testing.T) {
	e := newImportedEnv(t, 100)
	ctx := context.Background()
	for _, en := range e.api.List() {
		e.api.Delete(en.ID)
	}
	run, err := e.sync.Reconcile(ctx, clerksync.ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if run.Gone != 100 || run.Repaired != 0 || !strings.Contains(run.HeldBack, "safety limit of 10") {
		t.Fatalf("run %+v", run)
	}
	if n := e.count(`SELECT count(*) FROM events WHERE type = 'user.snapshot_deleted'`); n != 0 {
		t.Fatalf("%d users marked deleted past the safety limit", n)
	}
	// An operator who knows better lifts it.
	run, err = e.sync.Reconcile(ctx, clerksync.ReconcileOptions{MaxGone: -1})
	if err != nil || run.Gone != 100 || run.Repaired != 100 {
		t.Fatalf("without the limit: %+v %v", run, err)
	}
}

// A user the listing pass skipped (a deletion ahead shifted the pages)
// but GET still returns is not gone.
func TestReconcileConfirmsGoneWithGet(t *testing.T) {
	e := newImportedEnv(t, 30)
	ctx := context.Background()
	list := e.api.List()
	// While page 0 is read, user 0 is deleted: the page at offset 10 starts
	// one user later, so user 10 is never listed.
	e.api.OnList(func(offset, limit int) {
		if offset == 10 {
			e.api.Delete(list[0].ID)
		}
	})
	e.sync.PageSize = 10
	run, err := e.sync.Reconcile(ctx, clerksync.ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// User 0 was listed before its deletion (the next run finds it gone);
	// user 10, never listed, is confirmed present by GET.
	if run.Gone != 0 || run.Same != 30 || run.Failed != 0 {
		t.Fatalf("run %+v, want none gone", run)
	}
	gets := 0
	for _, r := range e.api.Requests() {
		if strings.HasPrefix(r.Path, "/v1/users/user_") {
			gets++
			if r.Path != "/v1/users/"+list[10].ID {
				t.Errorf("GET %s", r.Path)
			}
		}
	}
	if gets != 1 {
		t.Fatalf("%d GETs, want 1 (the user the pass skipped)", gets)
	}
	e.api.OnList(nil)
	if run, err = e.sync.Reconcile(ctx, clerksync.ReconcileOptions{}); err != nil || run.Gone != 1 || run.Same != 29 {
		t.Fatalf("next run %+v %v", run, err)
	}
	e.project()
	if u := e.user(list[10].ID); u.Deleted {
		t.Fatal("a skipped user was marked deleted")
	}
	if u := e.user(list[0].ID); !u.Deleted {
		t.Fatal("the deleted user was not marked deleted")
	}
}

// The API failing mid-pass is an error, recorded with the run.
func TestReconcileRecordsAFailedRun(t *testing.T) {
	e := newEnv(t, 30)
	e.sync.PageSize = 10
	e.api.Inject(100, clerkapitest.Fault{Status: 500})
	run, err := e.sync.Reconcile(context.Background(), clerksync.ReconcileOptions{})
	if err == nil || run.Error == "" || run.ID == 0 {
		t.Fatalf("run %+v, err %v", run, err)
	}
	runs, _ := schema.ReconcileRuns(context.Background(), e.db, 1)
	if len(runs) != 1 || runs[0].Error == "" || runs[0].Gone != 0 {
		t.Fatalf("recorded %+v", runs)
	}
}

func TestReconcileRunsOneAtATime(t *testing.T) {
	e := newEnv(t, 10)
	release, ok, err := schema.TryReconcileLock(context.Background(), e.db)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, err := e.sync.Reconcile(context.Background(), clerksync.ReconcileOptions{}); domain.ErrorCode(err) != domain.ECONFLICT {
		t.Fatalf("second reconcile: %v", err)
	}
	release()
	if _, err := e.sync.Reconcile(context.Background(), clerksync.ReconcileOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A user seen twice in one pass (a user created with a past created_at,
// as a migration does, shifted the list by one) who changed between the
// two sightings is compared with the newer sighting: the pass must not
// keep the older copy and call the user the same.
func TestReconcileSeenTwiceKeepsTheNewerSighting(t *testing.T) {
	e := newImportedEnv(t, 30)
	ctx := context.Background()
	list := e.api.List()
	moved := list[9].ID // the last user of page 0, listed again first on page 1
	e.api.OnList(func(offset, limit int) {
		if offset != 10 {
			return
		}
		e.api.OnList(nil)
		migrated, err := e.api.Get(list[0].ID)
		if err != nil {
			t.Error(err)
			return
		}
		migrated.ID, migrated.CreatedAt, migrated.UpdatedAt = "user_migrated_from_elsewhere", list[0].CreatedAt-1, 0
		if err := e.api.Put(migrated); err != nil {
			t.Error(err)
		}
		if err := e.api.Update(moved, func(u *clerkapitest.User) { u.LastName = ptr("ChangedMidPass") }); err != nil {
			t.Error(err)
		}
	})
	e.sync.PageSize = 10
	run, err := e.sync.Reconcile(ctx, clerksync.ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The migrated user lands before the offset (not listed this pass).
	if run.Stale != 1 || run.Same != 29 || run.ClerkUsers != 30 || run.Repaired != 1 {
		t.Fatalf("run %+v: want %s stale (changed between its two sightings), counted once", run, moved)
	}
	e.project()
	if u := e.user(moved); u.LastName != "ChangedMidPass" {
		t.Fatalf("user seen twice: last name %q, want the newer sighting's", u.LastName)
	}
}
