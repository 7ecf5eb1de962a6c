package projections

import (
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// UsersName is the name of the users projector.
const UsersName = "users"

// userTypes are the event types the users projector reads.
var userTypes = []string{"user.created", "user.updated", "user.deleted"}

// Users is the users projector: it folds user.created, user.updated and
// user.deleted into one row per Clerk user with domain.Apply. A batch is
// grouped by user: the rows of the users it touches are loaded in one query,
// folded in memory (in parallel, one goroutine per shard of users) and
// written back in one upsert. Because the fold is order-insensitive and
// idempotent, the table converges whatever order and however often events
// arrive. The fold keeps text in storable form (domain.StorableText and
// StorableJSON); a row PostgreSQL still refuses is the Runner's to isolate
// (applyIsolated), and a rebuild's and check's (loadFolded).
type Users struct {
	table   string
	workers int
}

// NewUsers returns the users projector writing the live users table.
func NewUsers() *Users { return &Users{table: "users", workers: runtime.GOMAXPROCS(0)} }

// Name implements Projector.
func (p *Users) Name() string { return UsersName }

// Types implements Projector: only user.* events.
func (p *Users) Types() []string { return userTypes }

// Table is the table the projector writes.
func (p *Users) Table() string { return p.table }

// aside returns the same projector writing into table.
func (p *Users) aside(table string) *Users { return &Users{table: table, workers: p.workers} }

// Apply implements Projector.
func (p *Users) Apply(ctx context.Context, tx *sqlx.Tx, events []domain.Event) ([]Failure, error) {
	if len(events) == 0 {
		return nil, nil
	}
	keys, failures := userKeys(events)
	ids := make([]string, 0, len(keys))
	for id := range keys {
		ids = append(ids, id)
	}
	states, err := p.load(ctx, tx, ids)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if states[id] == nil {
			states[id] = &userState{}
		}
	}
	failures = append(failures, foldParallel(states, events, keys, p.workers)...)
	if err := p.upsert(ctx, tx, states); err != nil {
		return nil, err
	}
	return failures, nil
}

// userState is one user being folded: the User and the last event applied.
type userState struct {
	u    domain.User
	last schema.Cursor
}

// apply folds e, an event about user id, into s; it returns a Failure for a
// poison event, also for one whose data names another user than its user_id
// column (never written by ingest; it would put one user in two rows).
func (s *userState) apply(id string, e domain.Event) *Failure {
	next, err := domain.Apply(s.u, e)
	if err == nil && next.ID != id {
		err = domain.Errorf(domain.EINVALID, "event %d (%s) is stored for user %s but its data names %s", e.Position, e.Type, id, next.ID)
	}
	if err != nil {
		return &Failure{Position: e.Position, DeliveryID: e.DeliveryID, Err: err}
	}
	s.u = next
	if c := schema.After(e); s.last.Less(c) {
		s.last = c
	}
	return nil
}

// userKey returns the id of the user e is about: its user_id column, or for
// an event stored without one, the id in its data (or a Failure).
func userKey(e domain.Event) (string, *Failure) {
	if e.UserID != "" {
		return e.UserID, nil
	}
	u, err := domain.Apply(domain.User{}, e)
	if err != nil {
		return "", &Failure{Position: e.Position, DeliveryID: e.DeliveryID, Err: err}
	}
	return u.ID, nil
}

// userKeys maps each event index to its user (by position in events) and
// returns the poison events that name no user.
func userKeys(events []domain.Event) (map[string][]int, []Failure) {
	keys := map[string][]int{}
	var failures []Failure
	for i, e := range events {
		k, f := userKey(e)
		if f != nil {
			failures = append(failures, *f)
			continue
		}
		keys[k] = append(keys[k], i)
	}
	return keys, failures
}

var shardSeed = maphash.MakeSeed()

func shardOf(id string, n int) int { return int(maphash.String(shardSeed, id) % uint64(n)) }

// foldParallel folds every user's events (keys: user -> indexes into events,
// in ledger order) into states, which holds an entry for every user. Users
// are split into shards folded concurrently; each state is touched by one
// goroutine only.
func foldParallel(states map[string]*userState, events []domain.Event, keys map[string][]int, workers int) []Failure {
	workers = max(1, min(workers, len(keys)/64+1))
	shards := make([][]string, workers)
	for id := range keys {
		w := shardOf(id, workers)
		shards[w] = append(shards[w], id)
	}
	fails := make([][]Failure, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for _, id := range shards[w] {
				s := states[id]
				for _, i := range keys[id] {
					if f := s.apply(id, events[i]); f != nil {
						fails[w] = append(fails[w], *f)
					}
				}
			}
		})
	}
	wg.Wait()
	var out []Failure
	for _, f := range fails {
		out = append(out, f...)
	}
	return out
}

// load reads the stored rows of ids from the projector's table.
func (p *Users) load(ctx context.Context, q schema.Queryer, ids []string) (map[string]*userState, error) {
	rows, err := q.QueryxContext(ctx, `SELECT `+userColumns+`, last_position FROM `+pq.QuoteIdentifier(p.table)+` WHERE id = ANY($1)`, pq.Array(ids))
	if err != nil {
		return nil, fmt.Errorf("load %d users: %w", len(ids), schema.Classify(err))
	}
	defer rows.Close()
	out := make(map[string]*userState, len(ids))
	for rows.Next() {
		var last int64
		u, err := scanUser(withExtra{rows, []any{&last}})
		if err != nil {
			return nil, fmt.Errorf("load users: %w", schema.Classify(err))
		}
		out[u.ID] = &userState{u: u, last: schema.Cursor{Position: last}}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load users: %w", schema.Classify(err))
	}
	return out, nil
}

// withExtra scans the row's trailing columns into extra.
type withExtra struct {
	row   interface{ Scan(...any) error }
	extra []any
}

func (w withExtra) Scan(dest ...any) error { return w.row.Scan(append(dest, w.extra...)...) }

// writeColumns are the users columns the projector writes, in the order of
// userRecord.values.
const writeColumns = `id, email, first_name, last_name, name, username, image_url, public_metadata,
created_at, updated_at, deleted, deleted_at, version_updated_at, version_occurred_at, version_delivery_id, last_position`

func tsText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// tsArg is t as a COPY value: tsText, or NULL for the zero time.
func tsArg(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return tsText(t)
}

func metaText(u domain.User) string {
	if len(u.PublicMetadata) == 0 {
		return "{}"
	}
	return string(u.PublicMetadata)
}

// upsert writes states into the projector's table in one statement.
func (p *Users) upsert(ctx context.Context, tx *sqlx.Tx, states map[string]*userState) error {
	n := len(states)
	var (
		ids, emails, firsts, lasts, names, usernames, images, metas = make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
		created, updated, deletedAt, vdel                           = make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
		deleted                                                     = make([]bool, 0, n)
		vupd, vocc, lastPos                                         = make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n)
	)
	for _, s := range states {
		u := s.u
		if u.ID == "" {
			continue // only poison events: nothing to write
		}
		ids, emails, firsts, lasts = append(ids, u.ID), append(emails, u.Email), append(firsts, u.FirstName), append(lasts, u.LastName)
		names, usernames, images, metas = append(names, u.Name()), append(usernames, u.Username), append(images, u.ImageURL), append(metas, metaText(u))
		created, updated, deletedAt = append(created, tsText(u.CreatedAt)), append(updated, tsText(u.UpdatedAt)), append(deletedAt, tsText(u.DeletedAt))
		deleted, vupd, vocc, vdel = append(deleted, u.Deleted), append(vupd, u.Version.UpdatedAt), append(vocc, u.Version.OccurredAt), append(vdel, u.Version.DeliveryID)
		lastPos = append(lastPos, s.last.Position)
	}
	if len(ids) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO `+pq.QuoteIdentifier(p.table)+` (`+writeColumns+`)
SELECT id, email, first_name, last_name, name, username, image_url, meta::jsonb,
       NULLIF(created, '')::timestamptz, NULLIF(updated, '')::timestamptz, deleted, NULLIF(deleted_at, '')::timestamptz,
       vupd, vocc, vdel, last_position
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::text[], $10::text[], $11::bool[], $12::text[], $13::bigint[], $14::bigint[], $15::text[], $16::bigint[])
     AS t(id, email, first_name, last_name, name, username, image_url, meta, created, updated, deleted, deleted_at, vupd, vocc, vdel, last_position)
ON CONFLICT (id) DO UPDATE SET
    email = EXCLUDED.email, first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, name = EXCLUDED.name,
    username = EXCLUDED.username, image_url = EXCLUDED.image_url, public_metadata = EXCLUDED.public_metadata,
    created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, deleted = EXCLUDED.deleted,
    deleted_at = EXCLUDED.deleted_at, version_updated_at = EXCLUDED.version_updated_at,
    version_occurred_at = EXCLUDED.version_occurred_at, version_delivery_id = EXCLUDED.version_delivery_id,
    last_position = EXCLUDED.last_position`,
		pq.Array(ids), pq.Array(emails), pq.Array(firsts), pq.Array(lasts), pq.Array(names), pq.Array(usernames),
		pq.Array(images), pq.Array(metas), pq.Array(created), pq.Array(updated), pq.Array(deleted), pq.Array(deletedAt),
		pq.Array(vupd), pq.Array(vocc), pq.Array(vdel), pq.Array(lastPos))
	if err != nil {
		return fmt.Errorf("upsert %d users into %s: %w", len(ids), p.table, schema.Classify(err))
	}
	return nil
}

// loadFolded writes the users of bf, folded from the events in (after,
// upTo], into the projector's table, which must hold none of them, inside
// tx (the bulk load of a rebuild and of check). It returns bf's failures
// and those found on the way.
//
// It COPYs every user inside a savepoint. When PostgreSQL refuses a row
// (schema.Refused), it finds the refused users by COPYing halves
// (copyIsolated), reads those users' events in (after, upTo] again, and
// applies them in ledger order with applyIsolated, as the live projector
// does: the events whose rows are refused become poison, the others are
// kept. So a rebuild or check gives the live projector's table whatever
// PostgreSQL refuses; the slow path costs one more scan of the range, and
// only when a row is refused.
func (p *Users) loadFolded(ctx context.Context, tx *sqlx.Tx, bf *bulkFold, after, upTo schema.Cursor) ([]Failure, error) {
	states := make([]*userState, 0, bf.users())
	for _, m := range bf.shards {
		for _, s := range m {
			if s.u.ID != "" { // only poison events: nothing to write
				states = append(states, s)
			}
		}
	}
	refused, err := p.copyIsolated(ctx, tx, states)
	if err != nil || len(refused) == 0 {
		return bf.failures, err
	}
	ids := make(map[string]bool, len(refused))
	for _, s := range refused {
		ids[s.u.ID] = true
	}
	var events []domain.Event
	err = schema.StreamEvents(ctx, tx, after, upTo, userTypes, func(e domain.Event) error {
		if k, f := userKey(e); f == nil && ids[k] {
			events = append(events, e)
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("read the events of %d users whose rows are refused: %w", len(ids), err)
	}
	slices.SortFunc(events, func(a, b domain.Event) int {
		return cmp.Or(cmp.Compare(a.TxID, b.TxID), cmp.Compare(a.Position, b.Position))
	})
	fs, err := applyIsolated(ctx, tx, p, events)
	if err != nil {
		return nil, fmt.Errorf("apply the events of %d users whose rows are refused: %w", len(ids), err)
	}
	// The fold found these users' undecodable events too: keep one of each.
	seen := make(map[int64]bool, len(bf.failures))
	out := bf.failures
	for _, f := range out {
		seen[f.Position] = true
	}
	for _, f := range fs {
		if !seen[f.Position] {
			seen[f.Position] = true
			out = append(out, f)
		}
	}
	return out, nil
}

// copyIsolated COPYs states into the projector's table inside a savepoint
// and returns the states whose rows PostgreSQL refuses (schema.Refused),
// found by COPYing halves, down to single rows; the others are written.
func (p *Users) copyIsolated(ctx context.Context, tx *sqlx.Tx, states []*userState) ([]*userState, error) {
	if len(states) == 0 {
		return nil, nil
	}
	if _, err := tx.ExecContext(ctx, `SAVEPOINT copy_isolated`); err != nil {
		return nil, fmt.Errorf("savepoint: %w", schema.Classify(err))
	}
	err := p.copyInto(ctx, tx, states)
	if err == nil {
		if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT copy_isolated`); err != nil {
			return nil, fmt.Errorf("release savepoint: %w", schema.Classify(err))
		}
		return nil, nil
	}
	if !schema.Refused(err) {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT copy_isolated; RELEASE SAVEPOINT copy_isolated`); err != nil {
		return nil, fmt.Errorf("roll back to savepoint: %w", schema.Classify(err))
	}
	if len(states) == 1 {
		return states, nil
	}
	mid := len(states) / 2
	left, err := p.copyIsolated(ctx, tx, states[:mid])
	if err != nil {
		return nil, err
	}
	right, err := p.copyIsolated(ctx, tx, states[mid:])
	if err != nil {
		return nil, err
	}
	return append(left, right...), nil
}

// copyInto writes states into the projector's table, which must hold none
// of them, with one COPY inside tx. Values are encoded as upsert encodes
// them (timestamps as tsText), so PostgreSQL takes or refuses a row alike
// on both paths.
func (p *Users) copyInto(ctx context.Context, tx *sqlx.Tx, states []*userState) error {
	stmt, err := tx.PrepareContext(ctx, pq.CopyIn(p.table, "id", "email", "first_name", "last_name", "name", "username",
		"image_url", "public_metadata", "created_at", "updated_at", "deleted", "deleted_at",
		"version_updated_at", "version_occurred_at", "version_delivery_id", "last_position"))
	if err != nil {
		return fmt.Errorf("copy into %s: %w", p.table, schema.Classify(err))
	}
	defer stmt.Close()
	for _, s := range states {
		u := s.u
		if _, err := stmt.ExecContext(ctx, u.ID, u.Email, u.FirstName, u.LastName, u.Name(), u.Username, u.ImageURL,
			metaText(u), tsArg(u.CreatedAt), tsArg(u.UpdatedAt), u.Deleted, tsArg(u.DeletedAt),
			u.Version.UpdatedAt, u.Version.OccurredAt, u.Version.DeliveryID, s.last.Position); err != nil {
			return fmt.Errorf("copy user %s into %s: %w", u.ID, p.table, schema.Classify(err))
		}
	}
	if _, err := stmt.ExecContext(ctx); err != nil {
		return fmt.Errorf("copy into %s: %w", p.table, schema.Classify(err))
	}
	return nil
}

// bulkFold is the result of folding a range of the ledger in memory.
type bulkFold struct {
	shards   []map[string]*userState
	failures []Failure
	read     int64
}

func (b *bulkFold) users() int {
	n := 0
	for _, m := range b.shards {
		n += len(m)
	}
	return n
}

// fold reads every user event in (after, upTo] with one sequential scan and
// folds it in memory from the zero state: a reader goroutine routes events
// by user to worker goroutines, each owning a shard of users. The fold is
// order-insensitive, so the scan needs no ORDER BY; last is tracked as the
// greatest cursor. progress, when not nil, is called with the number of
// events read so far (from the reader goroutine, every few thousand events).
func (p *Users) fold(ctx context.Context, q schema.Queryer, after, upTo schema.Cursor, progress func(int64)) (*bulkFold, error) {
	workers := max(1, p.workers)
	const chunk = 512
	chans := make([]chan []domain.Event, workers)
	out := &bulkFold{shards: make([]map[string]*userState, workers)}
	fails := make([][]Failure, workers)
	var wg sync.WaitGroup
	for w := range workers {
		chans[w] = make(chan []domain.Event, 8)
		out.shards[w] = map[string]*userState{}
		wg.Go(func() {
			m := out.shards[w]
			for evs := range chans[w] {
				for _, e := range evs {
					k, f := userKey(e)
					if f == nil {
						s := m[k]
						if s == nil {
							s = &userState{}
							m[k] = s
						}
						f = s.apply(k, e)
					}
					if f != nil {
						fails[w] = append(fails[w], *f)
					}
				}
			}
		})
	}
	pending := make([][]domain.Event, workers)
	flush := func(w int) {
		if len(pending[w]) > 0 {
			chans[w] <- pending[w]
			pending[w] = make([]domain.Event, 0, chunk)
		}
	}
	err := schema.StreamEvents(ctx, q, after, upTo, userTypes, func(e domain.Event) error {
		w := 0 // a poison event naming no user goes to shard 0 to be recorded
		if e.UserID == "" {
			if k, f := userKey(e); f == nil {
				e.UserID = k // stored without user_id: route by the id in its data
			}
		}
		if e.UserID != "" {
			w = shardOf(e.UserID, workers)
		}
		pending[w] = append(pending[w], e)
		if len(pending[w]) >= chunk {
			flush(w)
		}
		out.read++
		if progress != nil && out.read%4096 == 0 {
			progress(out.read)
		}
		return ctx.Err()
	})
	for w := range workers {
		flush(w)
		close(chans[w])
	}
	wg.Wait()
	if err != nil {
		return nil, err
	}
	if progress != nil {
		progress(out.read)
	}
	for _, f := range fails {
		out.failures = append(out.failures, f...)
	}
	return out, nil
}
