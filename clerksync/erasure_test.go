package clerksync_test

import (
	"context"
	"strings"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/clerkapi/clerkapitest"
	"github.com/clerk-ledger/clerk-ledger/clerksync"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// newSealedEnv is newEnv with a master key: every append seals, every read
// opens with it.
func newSealedEnv(t *testing.T, users int) *env {
	t.Helper()
	e := newEnv(t, users)
	k := schematest.NewKeyring(t)
	e.ctx = schema.WithKeyring(context.Background(), k)
	e.store.Keys = k
	return e
}

// An erased user whom Clerk still lists, and changes, is never brought
// back: a new import stores their newer snapshot with its body discarded,
// reconcile reports them as deleted here (no drift, nothing repaired, run
// after run), first sign-in neither fetches nor shows them, nothing of
// theirs is in the database in plaintext, and rebuild/check keep the
// tombstone. Once Clerk deletes them, reconcile records it once and then
// finds nothing more.
func TestErasedUserStaysErasedThroughImportReconcileAndFirstSignIn(t *testing.T) {
	e := newSealedEnv(t, 30)
	ctx := e.ctx
	victim := e.api.List()[7].ID
	pii := []string{"zenobia.quixotica@example.org", "Quixotica", "zq-secret-handle"}
	if err := e.api.Update(victim, func(u *clerkapitest.User) {
		u.FirstName, u.LastName, u.Username = ptr("Zenobia"), ptr("Quixotica"), ptr("zq-secret-handle")
		u.EmailAddresses[0].EmailAddress = pii[0]
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sync.ImportUsers(ctx, clerksync.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	e.project()
	if u := e.user(victim); u.Email != pii[0] || u.LastName != "Quixotica" {
		t.Fatalf("imported %+v", u)
	}
	if n := e.count(`SELECT count(*) FROM events WHERE source = 'clerk_api' AND (body <> '' OR body_sealed IS NULL)`); n != 0 {
		t.Fatalf("%d snapshots stored in clear with a master key", n)
	}
	if found := schematest.PlaintextLeft(t, e.db, e.dsn, pii[:1]); len(found) == 0 {
		t.Fatal("the scan finds nothing before the erasure: it cannot fail")
	}

	svc := audit.New(audit.Config{DB: e.db})
	actor := audit.Actor{ID: "user_auditor", Channel: schema.ChannelCLI}
	if _, err := svc.Erase(ctx, actor, audit.EraseInput{UserID: victim, Reason: "DSR-1"}); err != nil {
		t.Fatal(err)
	}
	// Clerk still has them, changed after the erasure (newer updated_at).
	again := []string{"zenobia.again@example.org", "Resurrecta"}
	if err := e.api.Update(victim, func(u *clerkapitest.User) {
		u.FirstName = ptr(again[1])
		u.EmailAddresses[0].EmailAddress = again[0]
	}); err != nil {
		t.Fatal(err)
	}
	raw, _ := e.api.Raw(victim)
	newer, err := e.api.Get(victim)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := e.sync.ImportUsers(ctx, clerksync.ImportOptions{Restart: true})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Imported != 1 {
		t.Fatalf("second import stored %d snapshots, want the erased user's newer one: %+v", sum.Imported, sum)
	}
	snap, err := domain.NewSnapshot(victim, newer.UpdatedAt, raw)
	if err != nil {
		t.Fatal(err)
	}
	var body string
	var sealed []byte
	if err := e.db.QueryRowx(`SELECT body, body_sealed FROM events WHERE delivery_id = $1`, snap.ID).Scan(&body, &sealed); err != nil {
		t.Fatalf("the newer snapshot %s: %v", snap.ID, err)
	}
	if body != "" || string(sealed) != "\x00" {
		t.Fatalf("the snapshot of an erased user is stored with body %q, body_sealed %x: want '' and the discarded marker", body, sealed)
	}
	e.project()

	for i := range 2 {
		run, err := e.sync.Reconcile(ctx, clerksync.ReconcileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if run.Missing != 0 || run.Stale != 0 || run.Gone != 0 || run.Repaired != 0 || run.DeletedHere != 1 || run.Same != 29 {
			t.Fatalf("reconcile %d with the erased user still in Clerk: %+v (want them counted deleted here, nothing repaired)", i+1, run)
		}
		if run.LedgerUsers != 29 {
			t.Fatalf("reconcile %d counts %d live users here, want 29 (the erased one is not live)", i+1, run.LedgerUsers)
		}
		e.project()
	}

	before := e.api.RequestCount()
	fs := clerksync.NewFirstSignIn(e.db, e.cl, nil)
	if u, err := fs.FetchUser(ctx, victim); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Fatalf("first sign-in of an erased user: %+v, %v; want ENOTFOUND", u, err)
	}
	if n := e.api.RequestCount() - before; n != 0 {
		t.Fatalf("first sign-in of an erased user asked Clerk %d times", n)
	}

	// Every projector (organizations, the workspace's email index, the
	// tree) has read the snapshots stored after the erasure too.
	schematest.WaitVisible(t, e.db)
	if err := projections.NewRunner(e.db, nil, projections.Default()...).CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	u := e.user(victim)
	if !u.Erased() || u.Email != "" || u.FirstName != "" || u.LastName != "" || u.Username != "" {
		t.Fatalf("the erased user's row is %+v, want the tombstone", u)
	}
	e.checkProjection()
	if found := schematest.PlaintextLeft(t, e.db, e.dsn, append(pii, again...)); len(found) > 0 {
		t.Errorf("plaintext of the erased user:\n%s", strings.Join(found, "\n"))
	}

	// Deleted in Clerk now (the runbook's step 2, late): recorded once.
	e.api.Delete(victim)
	run, err := e.sync.Reconcile(ctx, clerksync.ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if run.Gone != 1 || run.Repaired != 1 {
		t.Fatalf("reconcile after Clerk deleted the erased user: %+v", run)
	}
	e.project()
	if u := e.user(victim); !u.Deleted || !u.Erased() || u.Email != "" {
		t.Fatalf("after the user.snapshot_deleted: %+v, want an erased, deleted tombstone", u)
	}
	run, err = e.sync.Reconcile(ctx, clerksync.ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if run.Gone != 0 || run.Repaired != 0 || run.Missing != 0 || run.Stale != 0 {
		t.Fatalf("reconcile keeps finding the erased, deleted user: %+v", run)
	}
	e.checkProjection()
	if found := schematest.PlaintextLeft(t, e.db, e.dsn, append(pii, again...)); len(found) > 0 {
		t.Errorf("plaintext of the erased user:\n%s", strings.Join(found, "\n"))
	}
}
