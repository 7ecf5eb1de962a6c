package projections

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
)

// Progress is told how a rebuild or check advances: phase "fold" (reading
// the ledger into memory), "load" (writing the table aside), "catch-up"
// (applying what arrived meanwhile) and "swap"; done and total count events
// (total may grow during catch-up). It is called from one goroutine.
type Progress func(phase string, done, total int64)

// RebuildResult is what a rebuild did.
type RebuildResult struct {
	Events     int64         // user events folded
	Users      int           // rows in the new table
	Failures   int           // poison events skipped
	Checkpoint schema.Cursor // where the live projector goes on from
	Duration   time.Duration
}

// rebuildable returns p as a projector that can be built aside, or an
// EINVALID error saying why not.
func rebuildable(p Projector) (*Users, error) {
	switch p := p.(type) {
	case *Users:
		return p, nil
	case *Tree:
		return nil, domain.Errorf(domain.EINVALID, "projection %s cannot be rebuilt: its leaves are tamper evidence sealed once, in ledger order, when each event is first seen; re-sealing would vouch for whatever the ledger holds now", p.Name())
	default:
		return nil, domain.Errorf(domain.EINVALID, "projection %s cannot be rebuilt", p.Name())
	}
}

// Rebuild rebuilds p's read model from the first event while ingest and the
// live projector keep running, and swaps it in atomically with the
// checkpoint. Readers never see an empty or half-built table:
//
//  1. take the rebuild lock of p (session advisory lock; a second rebuild of
//     the same projection is refused with ECONFLICT);
//  2. fold every event up to the gate head in memory (one sequential scan,
//     parallel decoding) and COPY the result into a new table aside (a row
//     PostgreSQL refuses isolates its events as the live projector does:
//     see Users.loadFolded);
//  3. catch up the table aside batch by batch with what arrived meanwhile
//     (with applyIsolated, as the live projector);
//  4. in one transaction holding the live projector's lock: apply the last
//     events, swap the tables (renames), keep the live table's index names,
//     set the checkpoint, commit.
//
// When ctx ends before the swap commits, the table aside is dropped and the
// live table and checkpoint are untouched. The process holds all users in
// memory during step 2 (about 0.5 KB each).
func Rebuild(ctx context.Context, db *sqlx.DB, p Projector, progress Progress) (RebuildResult, error) {
	start := time.Now()
	users, err := rebuildable(p)
	if err != nil {
		return RebuildResult{}, err
	}
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	name, live := p.Name(), users.Table()
	lock, err := schema.LockRebuild(ctx, db, name)
	if err != nil {
		return RebuildResult{}, err
	}
	defer lock.Release()
	if err := EnsureCheckpoint(ctx, db, name); err != nil {
		return RebuildResult{}, err
	}
	var saved time.Time
	var savedPhase string
	report := func(phase string, done, total int64) {
		progress(phase, done, total)
		// For status, at most once a second (and on each new phase).
		if phase != savedPhase || time.Since(saved) >= time.Second {
			saved, savedPhase = time.Now(), phase
			lock.Progress(ctx, db, phase, done, total)
		}
	}

	aside := users.aside(live.Name() + "_rebuild")
	cleanup := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = aside.table.Drop(cctx, db)
	}
	cleanup() // left over by a crashed rebuild: we hold the lock, it is ours
	defer cleanup()
	if err := aside.table.CreateLike(ctx, db, live, false); err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild %s: %w", name, err)
	}

	res, cur, err := buildAside(ctx, db, aside, report)
	if err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild %s: %w", name, err)
	}
	if err := aside.table.Analyze(ctx, db); err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild %s: %w", name, err)
	}

	// Catch up outside the live projector's lock until one batch from the head.
	total := res.Events
	for {
		n, next, full, err := catchUp(ctx, db, aside, cur)
		if err != nil {
			return RebuildResult{}, fmt.Errorf("rebuild %s: catch up: %w", name, err)
		}
		res.Events += int64(n.read)
		res.Failures += n.failed
		total += int64(n.read)
		cur = next
		report("catch-up", res.Events, total)
		if !full {
			break
		}
	}

	report("swap", res.Events, total)
	if err := swap(ctx, db, name, live, aside, &res, &cur); err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild %s: swap: %w", name, err)
	}
	res.Checkpoint = cur
	res.Duration = time.Since(start)
	return res, nil
}

// buildAside folds the ledger up to the gate head in memory and COPYs it
// into the (empty) table aside, recording the poison events found. It
// returns the cursor it built up to.
func buildAside(ctx context.Context, db *sqlx.DB, aside *Users, report Progress) (RebuildResult, schema.Cursor, error) {
	head, err := schema.GateHead(ctx, db)
	if err != nil {
		return RebuildResult{}, schema.Cursor{}, err
	}
	total, err := schema.CountEvents(ctx, db, schema.Cursor{}, head, domain.UserEventTypes())
	if err != nil {
		return RebuildResult{}, schema.Cursor{}, err
	}
	report("fold", 0, total)
	bf, err := aside.fold(ctx, db, schema.Cursor{}, head, func(n int64) { report("fold", n, total) })
	if err != nil {
		return RebuildResult{}, schema.Cursor{}, err
	}
	res := RebuildResult{Events: bf.read, Users: bf.users(), Failures: len(bf.failures)}
	report("load", bf.read, total)
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return RebuildResult{}, schema.Cursor{}, fmt.Errorf("begin: %w", schema.Classify(err))
	}
	defer tx.Rollback()
	failures, err := aside.loadFolded(ctx, tx, bf, schema.Cursor{}, head)
	if err != nil {
		return RebuildResult{}, schema.Cursor{}, err
	}
	bf.shards = nil // let the users go before catch-up
	res.Failures = len(failures)
	if err := recordFailures(ctx, tx, UsersName, failures); err != nil {
		return RebuildResult{}, schema.Cursor{}, err
	}
	if err := tx.Commit(); err != nil {
		return RebuildResult{}, schema.Cursor{}, fmt.Errorf("commit: %w", schema.Classify(err))
	}
	return res, head, nil
}

type catchUpCount struct{ read, failed int }

// catchUp applies one batch after cur to the table aside in its own
// transaction (no projector lock: the table aside is the rebuild's alone).
func catchUp(ctx context.Context, db *sqlx.DB, aside *Users, cur schema.Cursor) (catchUpCount, schema.Cursor, bool, error) {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return catchUpCount{}, cur, false, fmt.Errorf("begin: %w", schema.Classify(err))
	}
	defer tx.Rollback()
	n, next, full, err := applyBatch(ctx, tx, aside, cur)
	if err != nil {
		return catchUpCount{}, cur, false, err
	}
	if err := tx.Commit(); err != nil {
		return catchUpCount{}, cur, false, fmt.Errorf("commit: %w", schema.Classify(err))
	}
	return n, next, full, nil
}

const catchUpBatch = 5000

func applyBatch(ctx context.Context, tx *sqlx.Tx, p *Users, cur schema.Cursor) (catchUpCount, schema.Cursor, bool, error) {
	b, err := schema.ReadBatch(ctx, tx, cur, domain.UserEventTypes(), catchUpBatch)
	if err != nil {
		return catchUpCount{}, cur, false, err
	}
	fs, err := applyIsolated(ctx, tx, p, b.Events)
	if err != nil {
		return catchUpCount{}, cur, false, err
	}
	if err := recordFailures(ctx, tx, UsersName, fs); err != nil {
		return catchUpCount{}, cur, false, err
	}
	return catchUpCount{read: len(b.Events), failed: len(fs)}, b.Next, b.Full, nil
}

// swap applies the last events to the table aside and puts it in place of
// the live table, with the checkpoint, in one transaction that holds the
// live projector's lock (waiting for its batch in flight to end).
func swap(ctx context.Context, db *sqlx.DB, name string, live schema.UsersTable, aside *Users, res *RebuildResult, cur *schema.Cursor) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", schema.Classify(err))
	}
	defer tx.Rollback()
	// Readers of the live table hold it briefly; do not queue them behind
	// us for long if one does not let go.
	if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = '15s'`); err != nil {
		return fmt.Errorf("set lock timeout: %w", schema.Classify(err))
	}
	if err := schema.WaitProjectorLock(ctx, tx, name); err != nil {
		return err
	}
	for {
		n, next, full, err := applyBatch(ctx, tx, aside, *cur)
		if err != nil {
			return err
		}
		res.Events += int64(n.read)
		res.Failures += n.failed
		*cur = next
		if !full {
			break
		}
	}
	if err := live.ReplaceWith(ctx, tx, aside.table); err != nil {
		return err
	}
	if res.Users, err = live.Count(ctx, tx); err != nil {
		return err
	}
	failed, err := schema.CountFailures(ctx, tx, name)
	if err != nil {
		return err
	}
	if err := schema.SetCheckpoint(ctx, tx, name, *cur, res.Events-int64(res.Failures), failed); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", schema.Classify(err))
	}
	return nil
}

// Difference is one user whose live row differs from the row rebuilt from
// the events (schema.UserDiff).
type Difference = schema.UserDiff

// ColumnDiff is one differing column (schema.ColumnDiff).
type ColumnDiff = schema.ColumnDiff

// CheckResult is the outcome of Check.
type CheckResult struct {
	Checkpoint  schema.Cursor `json:"checkpoint"`
	Events      int64         `json:"events"`
	Users       int           `json:"users"`
	Differences []Difference  `json:"differences"`
}

// Check builds p's read model from the events aside (in memory and a
// temporary table, refusing and isolating rows as the live projector does)
// exactly up to the live checkpoint and compares it with the live table,
// column by column. It reads the checkpoint and the live table in one
// REPEATABLE READ snapshot, so it is exact while ingest and the live
// projector run. It changes nothing.
func Check(ctx context.Context, db *sqlx.DB, p Projector, progress Progress) (CheckResult, error) {
	users, err := rebuildable(p)
	if err != nil {
		return CheckResult{}, err
	}
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	if err != nil {
		return CheckResult{}, fmt.Errorf("check %s: begin: %w", p.Name(), schema.Classify(err))
	}
	defer tx.Rollback()
	var res CheckResult
	if err := checkpointOrStart(ctx, tx, p.Name(), &res.Checkpoint); err != nil {
		return CheckResult{}, err
	}
	total, err := schema.CountEvents(ctx, tx, schema.Cursor{}, res.Checkpoint, domain.UserEventTypes())
	if err != nil {
		return CheckResult{}, err
	}
	aside := users.aside("check_" + users.Table().Name())
	bf, err := aside.fold(ctx, tx, schema.Cursor{}, res.Checkpoint, func(n int64) { progress("fold", n, total) })
	if err != nil {
		return CheckResult{}, fmt.Errorf("check %s: %w", p.Name(), err)
	}
	res.Events, res.Users = bf.read, bf.users()
	progress("compare", bf.read, total)
	// With the live table's indexes and constraints (INCLUDING ALL), so
	// PostgreSQL refuses the same rows as there (an index row too large,
	// say) and loadFolded isolates the same poison events as the live
	// projector; the failures themselves are not recorded (check changes
	// nothing).
	if err := aside.table.CreateLike(ctx, tx, users.Table(), true); err != nil {
		return CheckResult{}, fmt.Errorf("check %s: %w", p.Name(), err)
	}
	if _, err := aside.loadFolded(ctx, tx, bf, schema.Cursor{}, res.Checkpoint); err != nil {
		return CheckResult{}, fmt.Errorf("check %s: %w", p.Name(), err)
	}
	bf.shards = nil
	if res.Differences, err = users.Table().Diff(ctx, tx, aside.table); err != nil {
		return CheckResult{}, fmt.Errorf("check %s: %w", p.Name(), err)
	}
	return res, nil
}

// checkpointOrStart reads name's checkpoint into c; a projector that never
// ran is at the start of the ledger.
func checkpointOrStart(ctx context.Context, q schema.Queryer, name string, c *schema.Cursor) error {
	cp, _, err := schema.ReadCheckpoint(ctx, q, name)
	if err != nil {
		return err
	}
	*c = cp
	return nil
}
