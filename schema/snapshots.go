package schema

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// snapshotColumns is how many parameters AppendSnapshots binds per row.
const snapshotColumns = 11

// MaxSnapshotBatch is the most deliveries one AppendSnapshots call takes
// (PostgreSQL binds at most 65,535 parameters per statement).
const MaxSnapshotBatch = 65535 / snapshotColumns

// AppendSnapshots stores ds, events the ledger read itself (Backend API
// snapshots, source domain.SourceClerkAPI; any domain.Delivery passes), on
// tx, and returns the ids it inserted: an id not returned was stored
// before (the same snapshot imported again), or repeated within ds (the
// first copy counts). It looks the ids up in one query and COPYs only the
// new rows, in delivery id order; when another writer stored one of them
// meanwhile it stores them with INSERT … ON CONFLICT (delivery_id) DO
// NOTHING instead. It is the one place such events are written; it does
// not go through the webhook's group commit (a page of 500 is one COPY
// already), and commits nothing itself: the caller commits tx, with
// whatever else belongs with the page (its failures; the import's place
// moves after, over pages all stored: clerksync).
//
// Errors: EINVALID (nothing stored) when a delivery fails Delivery.Check
// or there are more than MaxSnapshotBatch; the database's errors through
// Classify (Refused tells a row's data was refused: store one at a time to
// find it).
func AppendSnapshots(ctx context.Context, tx *sqlx.Tx, ds []domain.Delivery) (map[string]bool, error) {
	if len(ds) > MaxSnapshotBatch {
		return nil, domain.Errorf(domain.EINVALID, "append snapshots: %d deliveries, at most %d at once", len(ds), MaxSnapshotBatch)
	}
	order := make([]int, 0, len(ds))
	seen := make(map[string]bool, len(ds))
	for i := range ds {
		if err := ds[i].Check(); err != nil {
			return nil, fmt.Errorf("append snapshot %s: %w", ds[i].ID, err)
		}
		if !seen[ds[i].ID] {
			seen[ds[i].ID] = true
			order = append(order, i)
		}
	}
	inserted := make(map[string]bool, len(order))
	if len(order) == 0 {
		return inserted, nil
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(ds[a].ID, ds[b].ID) })
	ids := make([]string, len(order))
	for k, i := range order {
		ids[k] = ds[i].ID
	}
	// Most of a re-import is stored already: one index lookup finds those,
	// and only the new rows are written.
	rows, err := tx.QueryContext(ctx, `SELECT delivery_id FROM events WHERE delivery_id = ANY($1)`, pq.Array(ids))
	if err != nil {
		return nil, fmt.Errorf("append %d snapshots: %w", len(order), Classify(err))
	}
	stored := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("append snapshots: %w", Classify(err))
		}
		stored[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("append %d snapshots: %w", len(order), Classify(err))
	}
	fresh := order[:0:0]
	for _, i := range order {
		if !stored[ds[i].ID] {
			fresh = append(fresh, i)
		}
	}
	if len(fresh) == 0 {
		return inserted, nil
	}
	// Sealed as every append path seals (SealDeliveries): a snapshot of a
	// user is that user's data, under their key; one of a user erased
	// since is stored with its body discarded.
	plain := make([]domain.Delivery, len(fresh))
	for k, i := range fresh {
		plain[k] = ds[i]
	}
	sealings, err := SealDeliveries(ctx, tx, KeyringFrom(ctx), plain)
	if err != nil {
		return nil, fmt.Errorf("append %d snapshots: %w", len(fresh), err)
	}
	seals := make([]Sealing, len(ds))
	for k, i := range fresh {
		seals[i] = sealings[k]
	}
	// COPY streams a page several times faster than a multi-row INSERT of
	// thousands of parameters. It has no ON CONFLICT: when another writer
	// stored one of these ids since the look-up (two imports at once), the
	// savepoint is rolled back and the rows go through INSERT … ON
	// CONFLICT DO NOTHING instead.
	if _, err := tx.ExecContext(ctx, `SAVEPOINT append_snapshots`); err != nil {
		return nil, fmt.Errorf("append snapshots: %w", Classify(err))
	}
	err = copySnapshots(ctx, tx, ds, seals, fresh)
	if err == nil {
		if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT append_snapshots`); err != nil {
			return nil, fmt.Errorf("append snapshots: %w", Classify(err))
		}
		for _, i := range fresh {
			inserted[ds[i].ID] = true
		}
		return inserted, nil
	}
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) || pqErr.Code != "23505" {
		return nil, fmt.Errorf("append %d snapshots: %w", len(fresh), Classify(err))
	}
	if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT append_snapshots`); err != nil {
		return nil, fmt.Errorf("append snapshots: %w", Classify(err))
	}
	return inserted, insertSnapshots(ctx, tx, ds, seals, fresh, inserted)
}

// copySnapshots COPYs ds[order], sealed as seals says, into events.
func copySnapshots(ctx context.Context, tx *sqlx.Tx, ds []domain.Delivery, seals []Sealing, order []int) error {
	stmt, err := tx.PrepareContext(ctx, pq.CopyIn("events", "message_uuid", "delivery_id", "type", "user_id", "occurred_at", "body", "svix_timestamp", "svix_signature", "source", "body_sealed", "body_commitment"))
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, i := range order {
		d := &ds[i]
		if _, err := stmt.ExecContext(ctx, snapshotRow(d, seals[i])...); err != nil {
			return err
		}
	}
	_, err = stmt.ExecContext(ctx)
	return err
}

// snapshotRow is d's column values for events (message_uuid, delivery_id,
// type, user_id, occurred_at, body, svix_timestamp, svix_signature, source,
// body_sealed, body_commitment), sealed as sl says (in clear, both NULL,
// for the zero Sealing).
func snapshotRow(d *domain.Delivery, sl Sealing) []any {
	var user any
	if d.UserID != "" {
		user = d.UserID
	}
	source := d.Source
	if source == "" {
		source = domain.SourceSvix
	}
	// The body goes as a string: COPY would hex-encode a []byte (as it
	// should the sealed body, for body_sealed is bytea).
	var body any = string(d.Body)
	var sealed, commitment any
	if sl.Sealed != nil {
		body, sealed, commitment = "", sl.Sealed, sl.Commitment
	}
	return []any{watermill.NewUUID(), d.ID, d.Type, user, d.OccurredAt.UTC(), body, d.Timestamp, d.Signature, source, sealed, commitment}
}

// insertSnapshots inserts ds[order] with one multi-row INSERT … ON
// CONFLICT (delivery_id) DO NOTHING, sealed as seals says, and adds the ids
// it inserted.
func insertSnapshots(ctx context.Context, tx *sqlx.Tx, ds []domain.Delivery, seals []Sealing, order []int, inserted map[string]bool) error {
	var b strings.Builder
	b.Grow(96 + len(order)*64)
	b.WriteString(`INSERT INTO events (message_uuid, delivery_id, type, user_id, occurred_at, body, svix_timestamp, svix_signature, source, body_sealed, body_commitment, transaction_id) VALUES `)
	args := make([]any, 0, len(order)*snapshotColumns)
	for k, i := range order {
		d := &ds[i]
		if k > 0 {
			b.WriteByte(',')
		}
		n := k * snapshotColumns
		b.WriteString("($")
		for c := 1; c <= snapshotColumns; c++ {
			if c > 1 {
				b.WriteString(",$")
			}
			b.WriteString(strconv.Itoa(n + c))
		}
		b.WriteString(",pg_current_xact_id())")
		args = append(args, snapshotRow(d, seals[i])...)
	}
	b.WriteString(` ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id`)
	rows, err := tx.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return fmt.Errorf("append %d snapshots: %w", len(order), Classify(err))
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return fmt.Errorf("append snapshots: %w", Classify(err))
		}
		inserted[id] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("append %d snapshots: %w", len(order), Classify(err))
	}
	return nil
}

// ImportState is the place and counts of an import pass (clerk_imports).
type ImportState struct {
	Kind       string
	StartedAt  time.Time
	UpdatedAt  time.Time
	Finished   bool
	NextOffset int
	Total      int64 // -1 when unknown
	Imported   int64
	Unchanged  int64
	Failed     int64
}

// ReadImport returns the state of the last pass of kind; ok is false when
// there has been none.
func ReadImport(ctx context.Context, q Queryer, kind string) (st ImportState, ok bool, err error) {
	var finished sql.NullTime
	err = q.QueryRowxContext(ctx, `SELECT kind, started_at, updated_at, finished_at, next_offset, total, imported, unchanged, failed
FROM clerk_imports WHERE kind = $1`, kind).Scan(&st.Kind, &st.StartedAt, &st.UpdatedAt, &finished, &st.NextOffset, &st.Total, &st.Imported, &st.Unchanged, &st.Failed)
	if errors.Is(err, sql.ErrNoRows) {
		return ImportState{}, false, nil
	}
	if err != nil {
		return ImportState{}, false, fmt.Errorf("read import %s: %w", kind, Classify(err))
	}
	st.Finished = finished.Valid
	return st, true, nil
}

// StartImport begins a new pass of kind at offset 0 with zero counts,
// replacing any earlier state.
func StartImport(ctx context.Context, q Execer, kind string, total int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO clerk_imports (kind, total) VALUES ($1, $2)
ON CONFLICT (kind) DO UPDATE SET started_at = now(), updated_at = now(), finished_at = NULL,
  next_offset = 0, total = EXCLUDED.total, imported = 0, unchanged = 0, failed = 0`, kind, total)
	if err != nil {
		return fmt.Errorf("start import %s: %w", kind, Classify(err))
	}
	return nil
}

// ImportFailure is an object an import could not store.
type ImportFailure struct {
	ObjectID string // "" when the id could not be read
	Position int64  // list position
	Reason   string // never the object's bytes
}

// AddImportCounts adds a stored page's counts to the pass of kind and keeps
// its failures (ids and reasons only), on q: the page's transaction.
func AddImportCounts(ctx context.Context, q Execer, kind string, imported, unchanged int64, failures []ImportFailure) error {
	_, err := q.ExecContext(ctx, `UPDATE clerk_imports SET updated_at = now(),
  imported = imported + $2, unchanged = unchanged + $3, failed = failed + $4
WHERE kind = $1`, kind, imported, unchanged, len(failures))
	if err != nil {
		return fmt.Errorf("count import %s: %w", kind, Classify(err))
	}
	for _, f := range failures {
		if _, err := q.ExecContext(ctx, `INSERT INTO clerk_import_failures (kind, object_id, position, reason) VALUES ($1, $2, $3, $4)
ON CONFLICT (kind, object_id, position) DO UPDATE SET reason = EXCLUDED.reason, failed_at = now()`,
			kind, f.ObjectID, f.Position, domain.StorableText(f.Reason)); err != nil {
			return fmt.Errorf("record import failure: %w", Classify(err))
		}
	}
	return nil
}

// SetImportPlace records that every page of the pass of kind before offset
// next is stored (the place only moves forward), and the pass finished when
// finished. A place behind the recorded one (a writer racing the one that
// stored the later pages) changes nothing: not the place, not the finish.
func SetImportPlace(ctx context.Context, q Execer, kind string, next int, finished bool) error {
	_, err := q.ExecContext(ctx, `UPDATE clerk_imports SET updated_at = now(), next_offset = GREATEST(next_offset, $2),
  finished_at = CASE WHEN $2 < next_offset THEN finished_at WHEN $3 THEN now() END
WHERE kind = $1`, kind, next, finished)
	if err != nil {
		return fmt.Errorf("advance import %s: %w", kind, Classify(err))
	}
	return nil
}

// UserVersion is what reconcile compares of a projected user.
type UserVersion struct {
	UpdatedAt int64 // the winning snapshot's updated_at (ms); 0 once deleted
	Deleted   bool
	Erased    bool // erased (users.erased_at set): never repaired from Clerk
}

// UserVersions returns every projected user's version, by id.
func UserVersions(ctx context.Context, q Queryer) (map[string]UserVersion, error) {
	rows, err := q.QueryxContext(ctx, `SELECT id, version_updated_at, deleted, erased_at IS NOT NULL FROM users`)
	if err != nil {
		return nil, fmt.Errorf("read user versions: %w", Classify(err))
	}
	defer rows.Close()
	out := map[string]UserVersion{}
	for rows.Next() {
		var id string
		var v UserVersion
		if err := rows.Scan(&id, &v.UpdatedAt, &v.Deleted, &v.Erased); err != nil {
			return nil, fmt.Errorf("read user versions: %w", Classify(err))
		}
		out[id] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read user versions: %w", Classify(err))
	}
	return out, nil
}

// ReconcileRun is one recorded reconcile (reconcile_runs).
type ReconcileRun struct {
	ID          int64     `json:"id"`
	StartedAt   time.Time `json:"started_at"`
	FinishedAt  time.Time `json:"finished_at"`
	Trigger     string    `json:"trigger"` // "cli", "schedule"
	DryRun      bool      `json:"dry_run"`
	ClerkUsers  int64     `json:"clerk_users"`
	LedgerUsers int64     `json:"ledger_users"`
	Missing     int64     `json:"missing"`
	Stale       int64     `json:"stale"`
	Gone        int64     `json:"gone"`
	Same        int64     `json:"same"`
	DeletedHere int64     `json:"deleted_here"`
	Repaired    int64     `json:"repaired"`
	Failed      int64     `json:"failed"`
	HeldBack    string    `json:"held_back,omitempty"`
	Error       string    `json:"error,omitempty"`
}

// RecordReconcile appends r (its ID and FinishedAt are assigned) and
// returns its id.
func RecordReconcile(ctx context.Context, q Queryer, r ReconcileRun) (int64, error) {
	var id int64
	err := q.QueryRowxContext(ctx, `INSERT INTO reconcile_runs (started_at, trigger, dry_run, clerk_users, ledger_users, missing, stale, gone, same, deleted_here, repaired, failed, held_back, error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id`,
		r.StartedAt, r.Trigger, r.DryRun, r.ClerkUsers, r.LedgerUsers, r.Missing, r.Stale, r.Gone, r.Same, r.DeletedHere, r.Repaired, r.Failed,
		domain.StorableText(r.HeldBack), domain.StorableText(r.Error)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("record reconcile run: %w", Classify(err))
	}
	return id, nil
}

// ReconcileRuns returns the last limit runs, newest first.
func ReconcileRuns(ctx context.Context, q Queryer, limit int) ([]ReconcileRun, error) {
	rows, err := q.QueryxContext(ctx, `SELECT id, started_at, finished_at, trigger, dry_run, clerk_users, ledger_users, missing, stale, gone, same, deleted_here, repaired, failed, held_back, error
FROM reconcile_runs ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("read reconcile runs: %w", Classify(err))
	}
	defer rows.Close()
	var out []ReconcileRun
	for rows.Next() {
		var r ReconcileRun
		if err := rows.Scan(&r.ID, &r.StartedAt, &r.FinishedAt, &r.Trigger, &r.DryRun, &r.ClerkUsers, &r.LedgerUsers, &r.Missing, &r.Stale, &r.Gone, &r.Same, &r.DeletedHere, &r.Repaired, &r.Failed, &r.HeldBack, &r.Error); err != nil {
			return nil, fmt.Errorf("read reconcile runs: %w", Classify(err))
		}
		r.StartedAt, r.FinishedAt = r.StartedAt.UTC(), r.FinishedAt.UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read reconcile runs: %w", Classify(err))
	}
	return out, nil
}

// TryReconcileLock takes the session advisory lock that lets one reconcile
// run at a time across every process (serve replicas' schedules, the CLI),
// on a connection of its own held until release. ok is false when another
// holds it.
func TryReconcileLock(ctx context.Context, db *sqlx.DB) (release func(), ok bool, err error) {
	conn, err := db.Connx(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("reconcile lock: %w", Classify(err))
	}
	if err := conn.QueryRowxContext(ctx, `SELECT pg_try_advisory_lock(hashtext('ledger:reconcile'))`).Scan(&ok); err != nil {
		conn.Close()
		return nil, false, fmt.Errorf("reconcile lock: %w", Classify(err))
	}
	if !ok {
		conn.Close()
		return nil, false, nil
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = conn.ExecContext(ctx, `SELECT pg_advisory_unlock(hashtext('ledger:reconcile'))`)
		conn.Close()
	}, true, nil
}
