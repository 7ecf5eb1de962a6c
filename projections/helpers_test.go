package projections

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// history returns the deliveries of a synthetic history in the order things
// happened (no duplicates).
func history(t testing.TB, seed uint64, users, events int) []domain.Delivery {
	t.Helper()
	h, err := clerkgen.NewHistory(clerkgen.HistoryOptions{Users: users, Events: events, Seed: seed, Ordered: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]domain.Delivery, h.Len())
	for i := range out {
		if out[i], err = h.Delivery(i); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// load appends ds to the ledger with COPY in one transaction.
func load(t testing.TB, db *sqlx.DB, ds []domain.Delivery) {
	t.Helper()
	loadIn(t, context.Background(), db, ds)
}

// loadIn is load with ctx: with a keyring in it (schema.WithKeyring), the
// bodies about a user are sealed.
func loadIn(t testing.TB, ctx context.Context, db *sqlx.DB, ds []domain.Delivery) {
	t.Helper()
	if len(ds) == 0 {
		return
	}
	bd := make([]schema.Backdated, len(ds))
	for i, d := range ds {
		if d.Signature == "" {
			d.Signature = "v1,test"
		}
		bd[i] = schema.Backdated{Delivery: d, ReceivedAt: time.Now()}
	}
	tx, err := db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := schema.CopyDeliveries(ctx, tx, bd); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// shuffledWithDuplicates permutes ds and repeats some of them under new
// delivery ids (same body), as Clerk and Svix may.
func shuffledWithDuplicates(r *rand.Rand, ds []domain.Delivery) []domain.Delivery {
	out := append([]domain.Delivery(nil), ds...)
	for i, d := range ds {
		for k := range r.IntN(3) {
			if r.IntN(3) == 0 {
				d.ID = fmt.Sprintf("%s_dup%d_%d", ds[i].ID, k, i)
				out = append(out, d)
			}
		}
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// loadShuffled loads ds into db permuted and with duplicates
// (shuffledWithDuplicates), in transactions of 1 to maxChunk deliveries, so
// that one object's events are split over transactions and batches.
func loadShuffled(t testing.TB, r *rand.Rand, db *sqlx.DB, ds []domain.Delivery, maxChunk int) {
	t.Helper()
	perm := shuffledWithDuplicates(r, ds)
	for len(perm) > 0 {
		n := min(len(perm), 1+r.IntN(maxChunk))
		load(t, db, perm[:n])
		perm = perm[n:]
	}
}

// rebuildAgrees checks that check finds the live tables of p (as visible
// shows them) clean, that a rebuild gives the same tables, and that it finds
// the failed (poison) events the live projector recorded.
func rebuildAgrees(t testing.TB, db *sqlx.DB, p Projector, visible func(testing.TB, *sqlx.DB) string, failed int64) {
	t.Helper()
	live := visible(t, db)
	if chk, err := Check(context.Background(), db, p, nil); err != nil || len(chk.Differences) != 0 {
		t.Fatalf("check of the live tables: %v %+v", err, chk.Differences)
	}
	res, err := Rebuild(context.Background(), db, p, nil)
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	if rebuilt := visible(t, db); rebuilt != live {
		t.Fatalf("rebuild gives other tables:\nlive:\n%s\nrebuilt:\n%s", live, rebuilt)
	}
	if _, _, f := checkpointOf(t, db, p.Name()); f != failed || int64(res.Failures) != failed {
		t.Fatalf("after the rebuild: failed %d, rebuild found %d, live %d", f, res.Failures, failed)
	}
}

// visibleUsers returns the users table as text, one line per user, with
// what readers see (not last_position or the tie-break delivery id, which
// depend on which copy of an event came last).
func visibleUsers(t testing.TB, db *sqlx.DB) string {
	t.Helper()
	var lines []string
	err := db.Select(&lines, `SELECT concat_ws('|', id, email, first_name, last_name, name, username, image_url,
    public_metadata::text, created_at, updated_at, deleted, deleted_at, version_updated_at, version_occurred_at,
    phone_number, email_verified, external_id, banned, locked, two_factor_enabled, last_sign_in_at, last_active_at,
    private_metadata::text)
FROM users ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// logProjector records every event it applies in applied_log (created on
// first use), without any uniqueness: a double application shows.
type logProjector struct{ name string }

func (p logProjector) Name() string    { return p.name }
func (p logProjector) Types() []string { return nil }
func (p logProjector) Apply(ctx context.Context, tx *sqlx.Tx, events []domain.Event) ([]Failure, error) {
	return nil, p.logApplied(ctx, tx, events)
}

// logApplied records events in applied_log under p's name.
func (p logProjector) logApplied(ctx context.Context, tx *sqlx.Tx, events []domain.Event) error {
	pos := make([]int64, len(events))
	for i, e := range events {
		pos[i] = e.Position
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO applied_log (projector, position) SELECT $1, unnest($2::bigint[])`, p.name, pq.Array(pos))
	return err
}

func createAppliedLog(t testing.TB, db *sqlx.DB) {
	t.Helper()
	if _, err := db.Exec(`CREATE TABLE applied_log (projector text NOT NULL, position bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
}

// assertAppliedOnce checks that projector applied every event of the
// ledger exactly once.
func assertAppliedOnce(t testing.TB, db *sqlx.DB, projector string) {
	t.Helper()
	var dups, missing, total int
	if err := db.Get(&dups, `SELECT count(*) FROM (SELECT position FROM applied_log WHERE projector = $1 GROUP BY position HAVING count(*) > 1) d`, projector); err != nil {
		t.Fatal(err)
	}
	if err := db.Get(&missing, `SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM applied_log a WHERE a.projector = $1 AND a.position = e.position)`, projector); err != nil {
		t.Fatal(err)
	}
	if err := db.Get(&total, `SELECT count(*) FROM applied_log WHERE projector = $1`, projector); err != nil {
		t.Fatal(err)
	}
	if dups != 0 || missing != 0 {
		t.Fatalf("projector %s: %d events applied more than once, %d never (%d applications)", projector, dups, missing, total)
	}
}

// verifyTree recomputes the Merkle tree from the events (schema.VerifyLog)
// and returns how many leaves it has, failing unless it matches the ledger.
func verifyTree(t testing.TB, db *sqlx.DB) int {
	t.Helper()
	rep, err := schema.VerifyLog(context.Background(), db, func(note []byte) (translog.Checkpoint, error) {
		return translog.ParseCheckpoint(translog.NoteBody(note))
	})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Unsealed != 0 {
		t.Fatalf("the tree does not match the ledger: %+v", rep)
	}
	return int(rep.Checked)
}

func checkpointOf(t testing.TB, db *sqlx.DB, name string) (schema.Cursor, int64, int64) {
	t.Helper()
	var c schema.Cursor
	var tx string
	var applied, failed int64
	if err := db.QueryRow(`SELECT transaction_id::text, position, applied, failed FROM projection_checkpoints WHERE name = $1`, name).Scan(&tx, &c.Position, &applied, &failed); err != nil {
		t.Fatal(err)
	}
	fmt.Sscan(tx, &c.TxID)
	return c, applied, failed
}

func countUserEvents(t testing.TB, db *sqlx.DB) int64 {
	t.Helper()
	var n int64
	if err := db.Get(&n, `SELECT count(*) FROM events WHERE type LIKE 'user.%'`); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitVisible waits until every committed event is below the xid8 gate.
func waitVisible(t testing.TB, db *sqlx.DB) {
	t.Helper()
	schematest.WaitVisible(t, db)
}
