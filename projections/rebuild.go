package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// rebuildLockNS is the first key of the session advisory lock a rebuild
// holds: (rebuildLockNS, hashtext(name)).
const rebuildLockNS = 4242

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
	case *Chain:
		return nil, domain.Errorf(domain.EINVALID, "projection %s cannot be rebuilt: its links are tamper evidence sealed once, in ledger order, when each event is first seen; re-sealing would vouch for whatever the ledger holds now", p.Name())
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
	release, err := lockRebuild(ctx, db, name)
	if err != nil {
		return RebuildResult{}, err
	}
	defer release()
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
			_, _ = db.ExecContext(ctx, `UPDATE projection_rebuilds SET phase = $2, done = $3, total = $4, updated_at = now() WHERE name = $1`, name, phase, done, total)
		}
	}

	aside := users.aside(live + "_rebuild")
	cleanup := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = db.ExecContext(cctx, `DROP TABLE IF EXISTS `+pq.QuoteIdentifier(aside.table))
	}
	cleanup() // left over by a crashed rebuild: we hold the lock, it is ours
	defer cleanup()
	if _, err := db.ExecContext(ctx, `CREATE TABLE `+pq.QuoteIdentifier(aside.table)+` (LIKE `+pq.QuoteIdentifier(live)+` INCLUDING ALL)`); err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild %s: create table aside: %w", name, schema.Classify(err))
	}

	res, cur, err := buildAside(ctx, db, aside, report)
	if err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild %s: %w", name, err)
	}
	if _, err := db.ExecContext(ctx, `ANALYZE `+pq.QuoteIdentifier(aside.table)); err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild %s: analyze: %w", name, schema.Classify(err))
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
	total, err := schema.CountEvents(ctx, db, schema.Cursor{}, head, userTypes)
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
	b, err := schema.ReadBatch(ctx, tx, cur, userTypes, catchUpBatch)
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
func swap(ctx context.Context, db *sqlx.DB, name, live string, aside *Users, res *RebuildResult, cur *schema.Cursor) error {
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
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('projector:' || $1))`, name); err != nil {
		return fmt.Errorf("wait for the live projector: %w", schema.Classify(err))
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
	indexes, err := indexNames(ctx, tx, live)
	if err != nil {
		return err
	}
	old := live + "_replaced"
	for _, q := range []string{
		`ALTER TABLE ` + pq.QuoteIdentifier(live) + ` RENAME TO ` + pq.QuoteIdentifier(old),
		`ALTER TABLE ` + pq.QuoteIdentifier(aside.table) + ` RENAME TO ` + pq.QuoteIdentifier(live),
		`DROP TABLE ` + pq.QuoteIdentifier(old),
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("swap tables: %w", schema.Classify(err))
		}
	}
	// LIKE ... INCLUDING ALL named the indexes after the table aside: give
	// them the live table's names back (matched by definition).
	now, err := indexNames(ctx, tx, live)
	if err != nil {
		return err
	}
	for def, idx := range now {
		if want, ok := indexes[def]; ok && want != idx {
			if _, err := tx.ExecContext(ctx, `ALTER INDEX `+pq.QuoteIdentifier(idx)+` RENAME TO `+pq.QuoteIdentifier(want)); err != nil {
				return fmt.Errorf("rename index %s: %w", idx, schema.Classify(err))
			}
		}
	}
	var users int
	if err := tx.GetContext(ctx, &users, `SELECT count(*) FROM `+pq.QuoteIdentifier(live)); err != nil {
		return fmt.Errorf("count %s: %w", live, schema.Classify(err))
	}
	res.Users = users
	var failed int64
	if err := tx.GetContext(ctx, &failed, `SELECT count(*) FROM projection_failures WHERE projector = $1`, name); err != nil {
		return fmt.Errorf("count failures: %w", schema.Classify(err))
	}
	if _, err := tx.ExecContext(ctx, `UPDATE projection_checkpoints
SET transaction_id = $2::xid8, position = $3, applied = $4, failed = $5, updated_at = now()
WHERE name = $1`, name, strconv.FormatUint(cur.TxID, 10), cur.Position, res.Events-int64(res.Failures), failed); err != nil {
		return fmt.Errorf("set checkpoint: %w", schema.Classify(err))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", schema.Classify(err))
	}
	return nil
}

// indexNames maps the definition of each index of table (without its name
// and table) to its name.
func indexNames(ctx context.Context, tx *sqlx.Tx, table string) (map[string]string, error) {
	rows, err := tx.QueryxContext(ctx, `SELECT c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = $1::regclass`, pq.QuoteIdentifier(table))
	if err != nil {
		return nil, fmt.Errorf("list indexes of %s: %w", table, schema.Classify(err))
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			return nil, fmt.Errorf("list indexes of %s: %w", table, schema.Classify(err))
		}
		// CREATE [UNIQUE] INDEX name ON public.table USING btree (id)
		unique := strings.HasPrefix(def, "CREATE UNIQUE")
		_, using, _ := strings.Cut(def, " USING ")
		out[strconv.FormatBool(unique)+" "+using] = name
	}
	return out, rows.Err()
}

// lockRebuild takes p's rebuild lock on a connection of its own and records
// the rebuild in projection_rebuilds; release undoes both. A rebuild already
// running is refused with ECONFLICT.
func lockRebuild(ctx context.Context, db *sqlx.DB, name string) (release func(), err error) {
	conn, err := db.Connx(ctx)
	if err != nil {
		return nil, fmt.Errorf("rebuild %s: %w", name, schema.Classify(err))
	}
	var ok bool
	if err := conn.QueryRowxContext(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, rebuildLockNS, name).Scan(&ok); err != nil {
		conn.Close()
		return nil, fmt.Errorf("rebuild %s: lock: %w", name, schema.Classify(err))
	}
	if !ok {
		conn.Close()
		msg := fmt.Sprintf("a rebuild of projection %s is already running", name)
		var r RebuildStatus
		if err := db.QueryRowxContext(ctx, `SELECT pid, host, phase, done, total, started_at FROM projection_rebuilds WHERE name = $1`, name).
			Scan(&r.PID, &r.Host, &r.Phase, &r.Done, &r.Total, &r.StartedAt); err == nil {
			msg += fmt.Sprintf(" (pid %d on %s, started %s ago, %s %d/%d)", r.PID, r.Host, time.Since(r.StartedAt).Round(time.Second), r.Phase, r.Done, r.Total)
		}
		return nil, domain.Errorf(domain.ECONFLICT, "%s; wait for it to finish", msg)
	}
	host, _ := os.Hostname()
	release = func() {
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = conn.ExecContext(rctx, `DELETE FROM projection_rebuilds WHERE name = $1`, name)
		if _, err := conn.ExecContext(rctx, `SELECT pg_advisory_unlock($1, hashtext($2))`, rebuildLockNS, name); err != nil {
			// Never hand a connection still holding the lock back to the pool.
			_ = conn.Raw(func(any) error { return errors.New("discard") })
		}
		conn.Close()
	}
	if _, err := conn.ExecContext(ctx, `INSERT INTO projection_rebuilds (name, pid, host, phase) VALUES ($1, $2, $3, 'start')
ON CONFLICT (name) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host, phase = EXCLUDED.phase, done = 0, total = 0, started_at = now(), updated_at = now()`,
		name, os.Getpid(), host); err != nil {
		release()
		return nil, fmt.Errorf("rebuild %s: record: %w", name, schema.Classify(err))
	}
	return release, nil
}

// Difference is one user whose live row differs from the row rebuilt from
// the events.
type Difference struct {
	ID string `json:"id"`
	// Kind is "missing_live", "missing_rebuilt" or "differs".
	Kind    string       `json:"kind"`
	Columns []ColumnDiff `json:"columns,omitempty"`
}

// ColumnDiff is one differing column. Personal columns (email, names,
// username, image URL, metadata) show no values, only that they differ.
type ColumnDiff struct {
	Column  string `json:"column"`
	Live    string `json:"live,omitempty"`
	Rebuilt string `json:"rebuilt,omitempty"`
}

// CheckResult is the outcome of Check.
type CheckResult struct {
	Checkpoint  schema.Cursor `json:"checkpoint"`
	Events      int64         `json:"events"`
	Users       int           `json:"users"`
	Differences []Difference  `json:"differences"`
}

var personal = map[string]bool{"email": true, "first_name": true, "last_name": true, "name": true, "username": true, "image_url": true, "public_metadata": true}

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
	total, err := schema.CountEvents(ctx, tx, schema.Cursor{}, res.Checkpoint, userTypes)
	if err != nil {
		return CheckResult{}, err
	}
	aside := users.aside("check_" + users.Table())
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
	if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE `+pq.QuoteIdentifier(aside.table)+` (LIKE `+pq.QuoteIdentifier(users.Table())+` INCLUDING ALL) ON COMMIT DROP`); err != nil {
		return CheckResult{}, fmt.Errorf("check %s: create table aside: %w", p.Name(), schema.Classify(err))
	}
	if _, err := aside.loadFolded(ctx, tx, bf, schema.Cursor{}, res.Checkpoint); err != nil {
		return CheckResult{}, fmt.Errorf("check %s: %w", p.Name(), err)
	}
	bf.shards = nil
	cols := strings.Split(strings.NewReplacer("\n", "", " ", "").Replace(writeColumns), ",")
	var sel, l, r []string
	for _, c := range cols {
		sel = append(sel, "l."+c+"::text", "r."+c+"::text")
		l, r = append(l, "l."+c), append(r, "r."+c)
	}
	rows, err := tx.QueryxContext(ctx, `SELECT `+strings.Join(sel, ", ")+`
FROM `+pq.QuoteIdentifier(users.Table())+` l FULL JOIN `+pq.QuoteIdentifier(aside.table)+` r ON l.id = r.id
WHERE (`+strings.Join(l, ", ")+`) IS DISTINCT FROM (`+strings.Join(r, ", ")+`)
ORDER BY COALESCE(l.id, r.id)`)
	if err != nil {
		return CheckResult{}, fmt.Errorf("check %s: compare: %w", p.Name(), schema.Classify(err))
	}
	defer rows.Close()
	for rows.Next() {
		vals := make([]sql.NullString, 2*len(cols))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return CheckResult{}, fmt.Errorf("check %s: compare: %w", p.Name(), schema.Classify(err))
		}
		d := Difference{ID: vals[0].String + vals[1].String, Kind: "differs"}
		switch {
		case !vals[0].Valid:
			d.Kind = "missing_live"
		case !vals[1].Valid:
			d.Kind = "missing_rebuilt"
		default:
			for i, c := range cols {
				lv, rv := vals[2*i], vals[2*i+1]
				if lv == rv {
					continue
				}
				cd := ColumnDiff{Column: c}
				if !personal[c] {
					cd.Live, cd.Rebuilt = nullText(lv), nullText(rv)
				}
				d.Columns = append(d.Columns, cd)
			}
		}
		res.Differences = append(res.Differences, d)
	}
	if err := rows.Err(); err != nil {
		return CheckResult{}, fmt.Errorf("check %s: compare: %w", p.Name(), schema.Classify(err))
	}
	return res, nil
}

func nullText(s sql.NullString) string {
	if !s.Valid {
		return "NULL"
	}
	return s.String
}

// checkpointOrStart reads name's checkpoint into c; a projector that never
// ran is at the start of the ledger.
func checkpointOrStart(ctx context.Context, q schema.Queryer, name string, c *schema.Cursor) error {
	cp, err := readCheckpoint(ctx, q, name)
	if errors.Is(err, sql.ErrNoRows) {
		*c = schema.Cursor{}
		return nil
	}
	if err != nil {
		return err
	}
	*c = cp
	return nil
}
