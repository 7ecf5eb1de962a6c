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
	Users      int           // rows in the new (main) table: users, organizations
	Failures   int           // poison events skipped
	Checkpoint schema.Cursor // where the live projector goes on from
	Duration   time.Duration
}

// rebuildable is a projector whose read model can be built aside from the
// ledger: Rebuild and Check work with any. The users and organizations
// projectors are; the chain sealer and the relay are not.
type rebuildable interface {
	Projector
	// asideAs returns the same projector writing into tables aside: each
	// of its tables is named name(the live table's name).
	asideAs(name func(live string) string) rebuildable
	// createLike creates the projector's tables empty with the columns,
	// indexes and constraints of live's (temp: dropped at commit).
	createLike(ctx context.Context, q schema.Execer, live rebuildable, temp bool) error
	// dropTables drops the projector's tables if they exist.
	dropTables(ctx context.Context, q schema.Execer) error
	// analyzeTables updates the planner statistics of its tables.
	analyzeTables(ctx context.Context, q schema.Execer) error
	// foldRange reads the projector's events in (after, upTo] and folds
	// them in memory from the empty read model, calling progress with the
	// events read so far.
	foldRange(ctx context.Context, q schema.Queryer, after, upTo schema.Cursor, progress func(int64)) (folded, error)
	// replaceWith puts aside's tables in the place of the projector's
	// (the live ones) inside tx.
	replaceWith(ctx context.Context, tx *sqlx.Tx, aside rebuildable) error
	// countRows returns the rows of its main table (users, organizations).
	countRows(ctx context.Context, q schema.Queryer) (int, error)
	// diffWith compares the projector's tables (the live ones) with
	// aside's, column by column.
	diffWith(ctx context.Context, q schema.Queryer, aside rebuildable) ([]Difference, error)
}

// folded is a range of the ledger folded in memory (rebuildable.foldRange).
type folded interface {
	// read is the number of events read; rows the rows folded.
	read() int64
	rows() int
	// load writes the rows into the projector's tables, which must hold
	// none of them, inside tx, isolating the events whose rows PostgreSQL
	// refuses as the live projector does, and returns every poison event
	// of the range (after, upTo] that was folded. It lets the rows go.
	load(ctx context.Context, tx *sqlx.Tx, after, upTo schema.Cursor) ([]Failure, error)
}

// asRebuildable returns p as a projector that can be built aside, or an
// EINVALID error saying why not.
func asRebuildable(p Projector) (rebuildable, error) {
	switch p := p.(type) {
	case rebuildable:
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
//     see folded.load);
//  3. catch up the table aside batch by batch with what arrived meanwhile
//     (with applyIsolated, as the live projector);
//  4. in one transaction holding the live projector's lock: apply the last
//     events, swap the tables (renames), keep the live table's index names,
//     set the checkpoint, commit.
//
// When ctx ends before the swap commits, the table aside is dropped and the
// live table and checkpoint are untouched. The process holds the whole
// read model in memory during step 2 (about 0.5 KB a user).
func Rebuild(ctx context.Context, db *sqlx.DB, p Projector, progress Progress) (RebuildResult, error) {
	start := time.Now()
	live, err := asRebuildable(p)
	if err != nil {
		return RebuildResult{}, err
	}
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	name := p.Name()
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

	aside := live.asideAs(func(t string) string { return t + "_rebuild" })
	cleanup := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = aside.dropTables(cctx, db)
	}
	cleanup() // left over by a crashed rebuild: we hold the lock, it is ours
	defer cleanup()
	if err := aside.createLike(ctx, db, live, false); err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild %s: %w", name, err)
	}

	res, cur, err := buildAside(ctx, db, aside, report)
	if err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild %s: %w", name, err)
	}
	if err := aside.analyzeTables(ctx, db); err != nil {
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
func buildAside(ctx context.Context, db *sqlx.DB, aside rebuildable, report Progress) (RebuildResult, schema.Cursor, error) {
	head, err := schema.GateHead(ctx, db)
	if err != nil {
		return RebuildResult{}, schema.Cursor{}, err
	}
	total, err := schema.CountEvents(ctx, db, schema.Cursor{}, head, aside.Types())
	if err != nil {
		return RebuildResult{}, schema.Cursor{}, err
	}
	report("fold", 0, total)
	bf, err := aside.foldRange(ctx, db, schema.Cursor{}, head, func(n int64) { report("fold", n, total) })
	if err != nil {
		return RebuildResult{}, schema.Cursor{}, err
	}
	res := RebuildResult{Events: bf.read(), Users: bf.rows()}
	report("load", bf.read(), total)
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return RebuildResult{}, schema.Cursor{}, fmt.Errorf("begin: %w", schema.Classify(err))
	}
	defer tx.Rollback()
	failures, err := bf.load(ctx, tx, schema.Cursor{}, head)
	if err != nil {
		return RebuildResult{}, schema.Cursor{}, err
	}
	res.Failures = len(failures)
	if err := recordFailures(ctx, tx, aside.Name(), failures); err != nil {
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
func catchUp(ctx context.Context, db *sqlx.DB, aside rebuildable, cur schema.Cursor) (catchUpCount, schema.Cursor, bool, error) {
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

func applyBatch(ctx context.Context, tx *sqlx.Tx, p rebuildable, cur schema.Cursor) (catchUpCount, schema.Cursor, bool, error) {
	b, err := schema.ReadBatch(ctx, tx, cur, p.Types(), catchUpBatch)
	if err != nil {
		return catchUpCount{}, cur, false, err
	}
	fs, err := applyIsolated(ctx, tx, p, b.Events)
	if err != nil {
		return catchUpCount{}, cur, false, err
	}
	if err := recordFailures(ctx, tx, p.Name(), fs); err != nil {
		return catchUpCount{}, cur, false, err
	}
	return catchUpCount{read: len(b.Events), failed: len(fs)}, b.Next, b.Full, nil
}

// swap applies the last events to the table aside and puts it in place of
// the live table, with the checkpoint, in one transaction that holds the
// live projector's lock (waiting for its batch in flight to end).
func swap(ctx context.Context, db *sqlx.DB, name string, live, aside rebuildable, res *RebuildResult, cur *schema.Cursor) error {
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
	if err := live.replaceWith(ctx, tx, aside); err != nil {
		return err
	}
	if res.Users, err = live.countRows(ctx, tx); err != nil {
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

// Difference is one row whose live contents differ from the row rebuilt
// from the events (schema.RowDiff).
type Difference = schema.RowDiff

// ColumnDiff is one differing column (schema.ColumnDiff).
type ColumnDiff = schema.ColumnDiff

// CheckResult is the outcome of Check.
type CheckResult struct {
	Checkpoint  schema.Cursor `json:"checkpoint"`
	Events      int64         `json:"events"`
	Users       int           `json:"users"` // rows rebuilt in the main table (users, organizations)
	Differences []Difference  `json:"differences"`
}

// Check builds p's read model from the events aside (in memory and a
// temporary table, refusing and isolating rows as the live projector does)
// exactly up to the live checkpoint and compares it with the live table,
// column by column. It reads the checkpoint and the live table in one
// REPEATABLE READ snapshot, so it is exact while ingest and the live
// projector run. It changes nothing.
func Check(ctx context.Context, db *sqlx.DB, p Projector, progress Progress) (CheckResult, error) {
	live, err := asRebuildable(p)
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
	total, err := schema.CountEvents(ctx, tx, schema.Cursor{}, res.Checkpoint, p.Types())
	if err != nil {
		return CheckResult{}, err
	}
	aside := live.asideAs(func(t string) string { return "check_" + t })
	bf, err := aside.foldRange(ctx, tx, schema.Cursor{}, res.Checkpoint, func(n int64) { progress("fold", n, total) })
	if err != nil {
		return CheckResult{}, fmt.Errorf("check %s: %w", p.Name(), err)
	}
	res.Events, res.Users = bf.read(), bf.rows()
	progress("compare", bf.read(), total)
	// With the live tables' indexes and constraints (INCLUDING ALL), so
	// PostgreSQL refuses the same rows as there (an index row too large,
	// say) and load isolates the same poison events as the live
	// projector; the failures themselves are not recorded (check changes
	// nothing).
	if err := aside.createLike(ctx, tx, live, true); err != nil {
		return CheckResult{}, fmt.Errorf("check %s: %w", p.Name(), err)
	}
	if _, err := bf.load(ctx, tx, schema.Cursor{}, res.Checkpoint); err != nil {
		return CheckResult{}, fmt.Errorf("check %s: %w", p.Name(), err)
	}
	if res.Differences, err = live.diffWith(ctx, tx, aside); err != nil {
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
