package projections

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
)

// runToHead runs r's projectors until each has passed every committed
// event. The xid8 gate is cluster-wide: transactions of tests running in
// parallel on other databases hold it back for a moment.
func runToHead(t testing.TB, r *Runner) {
	t.Helper()
	waitVisible(t, r.db)
	if err := r.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Property: any permutation of a history, with any duplicates, read in
// batches of any size, gives the users table that in-order application
// gives; so does a rebuild, and check finds the live table clean.
func TestUsersOrderAndDuplicatesDoNotMatter(t *testing.T) {
	t.Parallel()
	inOrder, shuffled := schematest.NewDB(t), schematest.NewDB(t)
	r := rand.New(rand.NewPCG(7, 7))
	ra, rb := NewRunner(inOrder, nil, NewUsers()), NewRunner(shuffled, nil, NewUsers())
	for iter := range 6 {
		ds := history(t, uint64(100+iter), 40, 300)
		load(t, inOrder, ds)
		runToHead(t, ra)
		// In several transactions, read in small batches: a user's events
		// are split over batches and the stored row is folded further.
		loadShuffled(t, r, shuffled, ds, 60)
		rb.BatchSize = 1 + r.IntN(40)
		runToHead(t, rb)
		if a, b := visibleUsers(t, inOrder), visibleUsers(t, shuffled); a != b {
			t.Fatalf("iteration %d: permuted history gives another users table:\nin order:\n%s\n\npermuted:\n%s", iter, a, b)
		}
	}
	before := visibleUsers(t, shuffled)
	if !strings.Contains(before, "|t|") {
		t.Fatal("the histories delete no user: the tombstone is not exercised")
	}
	res, err := Check(context.Background(), shuffled, NewUsers(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Differences) != 0 || res.Users == 0 {
		t.Fatalf("check of the live table: %d users, differences %+v", res.Users, res.Differences)
	}
	if _, err := Rebuild(context.Background(), shuffled, NewUsers(), nil); err != nil {
		t.Fatal(err)
	}
	if after := visibleUsers(t, shuffled); after != before {
		t.Fatalf("rebuild gives another users table:\nlive:\n%s\n\nrebuilt:\n%s", before, after)
	}
}

func TestPoisonEventRecordedAndSkipped(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	ds := history(t, 1, 3, 30)
	poison := []domain.Delivery{
		{ID: "msg_poison_decode", Type: "user.updated", UserID: "user_bad", OccurredAt: time.Now(),
			Body: []byte(`{"type":"user.updated","object":"event","timestamp":1,"data":{"id":"user_bad","email_addresses":"not a list"}}`)},
		{ID: "msg_poison_noid", Type: "user.created", OccurredAt: time.Now(),
			Body: []byte(`{"type":"user.created","object":"event","timestamp":1,"data":{"object":"user"}}`)},
	}
	load(t, db, ds[:10])
	load(t, db, poison)
	load(t, db, ds[10:])
	r := NewRunner(db, nil, NewUsers())
	r.BatchSize = 7
	runToHead(t, r)

	var fails []struct {
		Position   int64  `db:"position"`
		DeliveryID string `db:"delivery_id"`
		Error      string `db:"error"`
	}
	if err := db.Select(&fails, `SELECT position, delivery_id, error FROM projection_failures WHERE projector = 'users' ORDER BY position`); err != nil {
		t.Fatal(err)
	}
	if len(fails) != 2 || fails[0].DeliveryID != "msg_poison_decode" || fails[1].DeliveryID != "msg_poison_noid" ||
		!strings.Contains(fails[0].Error, "does not decode") || !strings.Contains(fails[1].Error, "no id") {
		t.Fatalf("failures recorded: %+v", fails)
	}
	cp, applied, failed := checkpointOf(t, db, UsersName)
	head, _ := schema.GateHead(context.Background(), db)
	if cp != head || failed != 2 || applied != countUserEvents(t, db)-2 {
		t.Fatalf("checkpoint %s (head %s), applied %d, failed %d", cp, head, applied, failed)
	}
	if _, err := schema.GetUser(context.Background(), db, "user_bad"); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Fatalf("poison event made a user: %v", err)
	}
	var users int
	db.Get(&users, `SELECT count(*) FROM users`)
	if users != 3 {
		t.Fatalf("%d users, want the 3 of the history", users)
	}
	st, err := ReadStatus(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if st[0].LastFailure == nil || st[0].LastFailure.DeliveryID != "msg_poison_noid" || st[0].Failed != 2 {
		t.Fatalf("status does not show the poison events: %+v", st[0])
	}
	// A rebuild finds the same poison events and keeps the same table.
	before := visibleUsers(t, db)
	res, err := Rebuild(context.Background(), db, NewUsers(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, failed := checkpointOf(t, db, UsersName); res.Failures != 2 || failed != 2 || visibleUsers(t, db) != before {
		t.Fatalf("rebuild: %+v, failed %d", res, failed)
	}
}

// killer applies its projector's batch, then makes the transaction die
// before the commit: its connection terminated, or its context cancelled.
type killer struct {
	Projector
	how    string
	cancel context.CancelFunc
	kills  atomic.Int32
}

func (k *killer) Apply(ctx context.Context, tx *sqlx.Tx, events []domain.Event) ([]Failure, error) {
	fs, err := k.Projector.Apply(ctx, tx, events)
	if err != nil || len(events) == 0 {
		return fs, err
	}
	k.kills.Add(1)
	switch k.how {
	case "terminate":
		_, err := tx.ExecContext(ctx, `SELECT pg_terminate_backend(pg_backend_pid())`)
		return fs, err
	default:
		k.cancel()
		return fs, nil
	}
}

func TestKilledMidBatchAppliesNothingTwice(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"terminate", "cancel"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			db := schematest.NewDB(t)
			createAppliedLog(t, db)
			ds := history(t, 3, 20, 400)
			load(t, db, ds[:200])
			good := NewRunner(db, nil, logProjector{"log"}, NewUsers(), NewTree())
			good.BatchSize = 50
			runToHead(t, good) // some batches committed before the crash
			load(t, db, ds[200:])
			for _, p := range []Projector{logProjector{"log"}, NewUsers(), NewTree()} {
				ctx, cancel := context.WithCancel(context.Background())
				k := &killer{Projector: p, how: how, cancel: cancel}
				crash := NewRunner(db, nil, k)
				crash.BatchSize = 50
				waitVisible(t, db)
				_, err := crash.Step(ctx, k)
				cancel()
				if err == nil || k.kills.Load() != 1 {
					t.Fatalf("%s: the killed batch did not fail: %v (kills %d)", p.Name(), err, k.kills.Load())
				}
			}
			runToHead(t, good)
			assertAppliedOnce(t, db, "log")
			if _, applied, _ := checkpointOf(t, db, UsersName); applied != countUserEvents(t, db) {
				t.Fatalf("users applied %d, want %d", applied, countUserEvents(t, db))
			}
			if n := verifyTree(t, db); n != len(ds) {
				t.Fatalf("tree has %d leaves, want %d", n, len(ds))
			}
		})
	}
}

func TestTwoRunnersNeverDoubleApply(t *testing.T) {
	t.Parallel()
	url := schematest.NewURL(t)
	db1 := schematest.Open(t, url)
	if _, err := schema.Migrate(context.Background(), db1.DB); err != nil {
		t.Fatal(err)
	}
	db2 := schematest.Open(t, url)
	createAppliedLog(t, db1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, db := range []*sqlx.DB{db1, db2} {
		r := NewRunner(db, nil, logProjector{"log"}, NewUsers(), NewTree())
		r.BatchSize, r.Idle = 37, 5*time.Millisecond
		wg.Go(func() { r.Run(ctx) })
	}
	ds := history(t, 5, 30, 900)
	for len(ds) > 0 {
		n := min(len(ds), 60)
		load(t, db1, ds[:n])
		ds = ds[n:]
		time.Sleep(5 * time.Millisecond)
	}
	waitVisible(t, db1)
	head, _ := schema.GateHead(ctx, db1)
	for _, name := range []string{"log", UsersName, TreeName} {
		waitFor(t, name+" to catch up", func() bool {
			var c schema.Cursor
			var tx string
			if err := db1.QueryRow(`SELECT transaction_id::text, position FROM projection_checkpoints WHERE name = $1`, name).Scan(&tx, &c.Position); err != nil {
				return false
			}
			fmt.Sscan(tx, &c.TxID)
			return !c.Less(head)
		})
	}
	cancel()
	wg.Wait()
	assertAppliedOnce(t, db1, "log")
	if n := verifyTree(t, db1); n != 900 {
		t.Fatalf("tree has %d leaves, want 900", n)
	}
	res, err := Check(context.Background(), db1, NewUsers(), nil)
	if err != nil || len(res.Differences) != 0 {
		t.Fatalf("check: %v %+v", err, res.Differences)
	}
}

func TestStatusNumbers(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	ctx := context.Background()
	ds := history(t, 9, 5, 50) // 5 of them are session/email events
	load(t, db, ds[:40])
	waitVisible(t, db)
	st, err := ReadStatus(ctx, db, UsersName, TreeName)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[1].Name != UsersName || st[1].Started || st[0].LagEvents != 40 || st[1].LagEvents != 40 {
		t.Fatalf("before any run: %+v", st)
	}
	r := NewRunner(db, nil, NewUsers(), NewTree())
	runToHead(t, r)
	st, err = ReadStatus(ctx, db, UsersName, TreeName)
	if err != nil {
		t.Fatal(err)
	}
	var userEvents int64
	for _, d := range ds[:40] {
		if domain.IsUserEvent(d.Type) {
			userEvents++
		}
	}
	head, _ := schema.GateHead(ctx, db)
	for _, s := range st {
		want := userEvents
		if s.Name == TreeName {
			want = 40
		}
		if !s.Started || s.Checkpoint != head || s.Head != head || s.LagEvents != 0 || s.LagSeconds != 0 || s.Applied != want || s.Failed != 0 {
			t.Fatalf("caught up: %+v (head %s, want applied %d)", s, head, want)
		}
	}
	// Ten events waiting for 5 s.
	bd := make([]schema.Backdated, 0, 10)
	for _, d := range ds[40:] {
		d.Signature = "v1,test"
		bd = append(bd, schema.Backdated{Delivery: d, ReceivedAt: time.Now().Add(-5 * time.Second)})
	}
	tx, _ := db.Beginx()
	if err := schema.CopyDeliveries(ctx, tx, bd); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	waitVisible(t, db)
	st, err = ReadStatus(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.LagEvents != 10 || s.LagSeconds < 5 || s.LagSeconds > 60 || s.Rebuild != nil {
			t.Fatalf("behind: %+v", s)
		}
	}
}

func TestRebuildWhileIngestAndLiveProjectorRun(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load(t, db, history(t, 11, 300, 4000))
	waitVisible(t, db)
	live := NewRunner(db, nil, NewUsers())
	live.Idle = 10 * time.Millisecond
	var wg sync.WaitGroup
	wg.Go(func() { live.Run(ctx) })

	// Deliveries keep arriving through the webhook store while we rebuild:
	// new users, and updates and deletes of users the rebuild has folded.
	store := schema.NewStore(db)
	ingestCtx, stopIngest := context.WithCancel(ctx)
	var sent atomic.Int64
	old := history(t, 11, 300, 4000)
	wg.Go(func() {
		for i := 0; ingestCtx.Err() == nil; i++ {
			typ := []string{"user.created", "user.updated", "user.deleted"}[i%3]
			var body []byte
			if i%2 == 0 {
				body = old[i%len(old)].Body // a redelivery of content under a new svix-id
				typ = old[i%len(old)].Type
			} else {
				// Clerk's created_at is the same in every snapshot of a user.
				created := time.Date(2026, 1, 1, 0, 0, i%26, 0, time.UTC)
				body, _ = clerkgen.Event(typ, clerkgen.User{ID: "user_new" + string(rune('a'+i%26)), Email: "n@example.com", FirstName: "N", CreatedAt: created}, time.Now())
			}
			d, err := domain.NewDelivery(clerkgen.NewID("msg"), time.Now().Unix(), "v1,test", body)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := store.Append(ingestCtx, d); err != nil && ingestCtx.Err() == nil {
				t.Error(err)
				return
			}
			sent.Add(1)
		}
	})

	var sawRunning atomic.Bool
	progress := func(phase string, done, total int64) {
		if phase == "fold" && !sawRunning.Load() && done > 0 {
			st, err := ReadStatus(ctx, db)
			if err == nil && st[0].Rebuild != nil && st[0].Rebuild.Phase != "" {
				sawRunning.Store(true)
			}
			// A second rebuild of the same projection is refused.
			if _, err := Rebuild(ctx, db, NewUsers(), nil); domain.ErrorCode(err) != domain.ECONFLICT ||
				!strings.Contains(err.Error(), "already running") {
				t.Errorf("second rebuild: %v", err)
			}
		}
	}
	time.Sleep(50 * time.Millisecond)
	res, err := Rebuild(ctx, db, NewUsers(), progress)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // ingest and the live projector go on after the swap
	stopIngest()
	if !sawRunning.Load() {
		t.Error("status never showed the rebuild running")
	}
	if sent.Load() == 0 || res.Users < 300 {
		t.Fatalf("sent %d during the rebuild; rebuilt %+v", sent.Load(), res)
	}
	waitFor(t, "the live projector to catch up", func() bool {
		st, err := ReadStatus(ctx, db)
		return err == nil && st[0].LagEvents == 0
	})
	cancel()
	wg.Wait()
	chk, err := Check(context.Background(), db, NewUsers(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(chk.Differences) != 0 {
		t.Fatalf("check after rebuild: %+v", chk.Differences)
	}
	if st, _ := ReadStatus(context.Background(), db); st[0].Rebuild != nil {
		t.Fatalf("status shows a rebuild after it ended: %+v", st[0].Rebuild)
	}
	var idx []string
	db.Select(&idx, `SELECT indexname FROM pg_indexes WHERE tablename = 'users' ORDER BY 1`)
	if strings.Join(idx, ",") != "users_external_id_idx,users_pkey" {
		t.Fatalf("indexes after the swap: %v", idx)
	}
}

func TestRebuildInterruptedLeavesLiveTableUntouched(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	load(t, db, history(t, 13, 200, 3000))
	runToHead(t, NewRunner(db, nil, NewUsers()))
	if _, err := db.Exec(`UPDATE users SET first_name = 'Tampered' WHERE id = (SELECT min(id) FROM users)`); err != nil {
		t.Fatal(err)
	}
	before := visibleUsers(t, db)
	cpBefore, _, _ := checkpointOf(t, db, UsersName)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Rebuild(ctx, db, NewUsers(), func(phase string, done, total int64) {
		if phase == "fold" && done > 0 {
			cancel() // Ctrl-C
		}
	})
	if err == nil {
		t.Fatal("interrupted rebuild reported success")
	}
	cpAfter, _, _ := checkpointOf(t, db, UsersName)
	if visibleUsers(t, db) != before || cpAfter != cpBefore {
		t.Fatal("interrupted rebuild changed the live table or checkpoint")
	}
	var aside int
	db.Get(&aside, `SELECT count(*) FROM pg_tables WHERE tablename = 'users_rebuild'`)
	if aside != 0 {
		t.Fatal("the table aside was left behind")
	}
	// check sees the tampering; a rebuild (lock released) repairs it.
	chk, err := Check(context.Background(), db, NewUsers(), nil)
	if err != nil || len(chk.Differences) != 1 || chk.Differences[0].Columns[0].Column != "first_name" {
		t.Fatalf("check of the tampered table: %v %+v", err, chk.Differences)
	}
	if _, err := Rebuild(context.Background(), db, NewUsers(), nil); err != nil {
		t.Fatal(err)
	}
	if chk, err := Check(context.Background(), db, NewUsers(), nil); err != nil || len(chk.Differences) != 0 {
		t.Fatalf("check after the rebuild: %v %+v", err, chk.Differences)
	}
}

func TestCheckReportsMissingAndExtraRows(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	load(t, db, history(t, 17, 10, 100))
	runToHead(t, NewRunner(db, nil, NewUsers()))
	if _, err := db.Exec(`DELETE FROM users WHERE id = (SELECT min(id) FROM users)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO users (id) VALUES ('user_ghost')`); err != nil {
		t.Fatal(err)
	}
	chk, err := Check(context.Background(), db, NewUsers(), nil)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, d := range chk.Differences {
		kinds[d.ID] = d.Kind
	}
	if len(chk.Differences) != 2 || kinds["user_ghost"] != "missing_rebuilt" {
		t.Fatalf("differences: %+v", chk.Differences)
	}
}

func TestTreeCannotBeRebuilt(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	_, err := Rebuild(context.Background(), db, NewTree(), nil)
	if domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), "cannot be rebuilt") {
		t.Fatalf("rebuild tree: %v", err)
	}
	if _, err := Check(context.Background(), db, NewTree(), nil); err == nil {
		t.Fatal("check tree: no error")
	}
	if errors.Is(err, context.Canceled) {
		t.Fatal("unexpected")
	}
}
