package projections

import (
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
	"runtime"
	"slices"
	"sync"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
	"github.com/jmoiron/sqlx"
)

// UsersName is the name of the users projector.
const UsersName = "users"

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
	table   schema.UsersTable
	workers int
	seed    maphash.Seed // shards users among the fold's workers

	// Bodies, when not nil, holds the sealed bodies this process's event
	// store just committed (schema.Store.Bodies): the projector's batches
	// take them from there instead of reading them (schema.ReadBatchTaking).
	// Set it before the Runner starts.
	Bodies *schema.Bodies
}

// NewUsers returns the users projector writing the live users table.
func NewUsers() *Users {
	return &Users{table: schema.LiveUsers(), workers: runtime.GOMAXPROCS(0), seed: maphash.MakeSeed()}
}

// Name implements Projector.
func (p *Users) Name() string { return UsersName }

// Types implements Projector: only user.* events.
func (p *Users) Types() []string { return domain.UserEventTypes() }

// readBatch implements batchReader: ReadBatchTaking with p.Bodies.
func (p *Users) readBatch(ctx context.Context, tx *sqlx.Tx, cp schema.Cursor, limit int) (schema.Batch, error) {
	return schema.ReadBatchTaking(ctx, tx, cp, p.Types(), limit, p.Bodies)
}

// Table is the table the projector writes.
func (p *Users) Table() schema.UsersTable { return p.table }

// aside returns the same projector writing into the table named table.
func (p *Users) aside(table string) *Users {
	return &Users{table: p.table.Aside(table), workers: p.workers, seed: p.seed}
}

// asideAs implements rebuildable.
func (p *Users) asideAs(name func(string) string) rebuildable { return p.aside(name(p.table.Name())) }

// createLike implements rebuildable.
func (p *Users) createLike(ctx context.Context, q schema.Execer, live rebuildable, temp bool) error {
	return p.table.CreateLike(ctx, q, live.(*Users).table, temp)
}

// dropTables implements rebuildable.
func (p *Users) dropTables(ctx context.Context, q schema.Execer) error { return p.table.Drop(ctx, q) }

// analyzeTables implements rebuildable.
func (p *Users) analyzeTables(ctx context.Context, q schema.Execer) error {
	return p.table.Analyze(ctx, q)
}

// replaceWith implements rebuildable.
func (p *Users) replaceWith(ctx context.Context, tx *sqlx.Tx, aside rebuildable) error {
	return p.table.ReplaceWith(ctx, tx, aside.(*Users).table)
}

// countRows implements rebuildable.
func (p *Users) countRows(ctx context.Context, q schema.Queryer) (int, error) {
	return p.table.Count(ctx, q)
}

// diffWith implements rebuildable.
func (p *Users) diffWith(ctx context.Context, q schema.Queryer, aside rebuildable) ([]Difference, error) {
	return p.table.Diff(ctx, q, aside.(*Users).table)
}

// foldRange implements rebuildable (see fold).
func (p *Users) foldRange(ctx context.Context, q schema.Queryer, after, upTo schema.Cursor, progress func(int64)) (folded, error) {
	bf, err := p.fold(ctx, q, after, upTo, progress)
	if err != nil {
		return nil, err
	}
	return bf, nil
}

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
	stored, err := p.table.Load(ctx, tx, ids)
	if err != nil {
		return nil, err
	}
	states := make(map[string]*userState, len(ids))
	for _, id := range ids {
		r := stored[id]
		states[id] = &userState{u: r.User, last: schema.Cursor{Position: r.LastPosition}}
	}
	folded, seen := p.foldParallel(states, events, keys)
	failures = append(failures, folded...)
	// Users the table does not hold yet go in with one COPY, the others
	// with the upsert: a COPY takes about half the time (Table.InsertNew). The batch
	// holds the projector's lock and the erasures' shared lock, so no other
	// writer adds a user between the Load and the COPY.
	fresh, known := make([]schema.UserRow, 0, len(states)), make([]schema.UserRow, 0, len(stored))
	for id, st := range states {
		if _, ok := stored[id]; ok {
			known = append(known, st.row())
		} else {
			fresh = append(fresh, st.row())
		}
	}
	if err := p.table.InsertNew(ctx, tx, fresh); err != nil {
		return nil, err
	}
	if err := p.table.Upsert(ctx, tx, known); err != nil {
		return nil, err
	}
	// So too their addresses: a pair of a user new to the table is new to
	// user_emails (schema.AddNewEmails).
	var newSeen, knownSeen []schema.EmailSighting
	for _, x := range seen {
		if _, ok := stored[x.UserID]; ok {
			knownSeen = append(knownSeen, x)
		} else {
			newSeen = append(newSeen, x)
		}
	}
	if err := schema.AddNewEmails(ctx, tx, newSeen); err != nil {
		return nil, err
	}
	if err := schema.AddEmails(ctx, tx, knownSeen); err != nil {
		return nil, err
	}
	// An erased user's addresses go (their events cannot be read any
	// more), after this batch's: a pass that read the user's events before
	// the erasure added them, and the erasure's event comes after those.
	var erased []string
	for _, e := range events {
		if e.Type == domain.ErasureEventType && e.UserID != "" {
			erased = append(erased, e.UserID)
		}
	}
	return failures, schema.DeleteEmailsOf(ctx, tx, erased)
}

// userState is one user being folded: the User and the last event applied.
type userState struct {
	u    domain.User
	last schema.Cursor
	key  userkeys.Slot // the user's data key, in a fold that opens bodies itself
	seen bool          // an event of the user was folded (not only its key read)
}

// row is s as the users table stores it.
func (s *userState) row() schema.UserRow {
	return schema.UserRow{User: s.u, LastPosition: s.last.Position}
}

// maxEmailBytes is the longest address user_emails keeps (RFC 5321 allows 254).
const maxEmailBytes = 320

// apply folds e, an event about user id (domain.UserKey), into s; it
// returns a Failure for a poison event (domain.Apply's rules). When seen is
// not nil, it appends to it every address e names (user_emails).
func (s *userState) apply(e domain.Event, seen *[]schema.EmailSighting) *Failure {
	next, d, err := domain.ApplyUserEvent(s.u, e)
	if err != nil {
		return &Failure{Position: e.Position, DeliveryID: e.DeliveryID, Err: err}
	}
	if seen != nil {
		for _, a := range d.EmailAddresses() {
			if len(a) > maxEmailBytes {
				continue // no address is this long; an index row might not take it
			}
			*seen = append(*seen, schema.EmailSighting{Email: schema.NormalizeEmail(a), UserID: d.UserID(), Position: e.Position, At: e.OccurredAt})
		}
	}
	s.u = next
	if c := schema.After(e); s.last.Less(c) {
		s.last = c
	}
	return nil
}

// userKey returns the id of the user e is about (domain.UserKey), or a
// Failure for a poison event that names none.
func userKey(e domain.Event) (string, *Failure) {
	id, err := domain.UserKey(e)
	if err != nil {
		return "", &Failure{Position: e.Position, DeliveryID: e.DeliveryID, Err: err}
	}
	return id, nil
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

func (p *Users) shardOf(id string, n int) int { return int(maphash.String(p.seed, id) % uint64(n)) }

// foldParallel folds every user's events (keys: user -> indexes into events,
// in ledger order) into states, which holds an entry for every user. Users
// are split into shards folded concurrently; each state is touched by one
// goroutine only.
func (p *Users) foldParallel(states map[string]*userState, events []domain.Event, keys map[string][]int) ([]Failure, []schema.EmailSighting) {
	workers := max(1, min(p.workers, len(keys)/64+1))
	shards := make([][]string, workers)
	for id := range keys {
		w := p.shardOf(id, workers)
		shards[w] = append(shards[w], id)
	}
	fails := make([][]Failure, workers)
	seen := make([][]schema.EmailSighting, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for _, id := range shards[w] {
				s := states[id]
				for _, i := range keys[id] {
					if f := s.apply(events[i], &seen[w]); f != nil {
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
	return out, slices.Concat(seen...)
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
	rows := make([]schema.UserRow, 0, bf.nrows)
	for _, m := range bf.shards {
		for _, s := range m {
			if s.u.ID != "" { // only poison events: nothing to write
				rows = append(rows, s.row())
			}
		}
	}
	refused, err := p.copyIsolated(ctx, tx, rows)
	if err != nil || len(refused) == 0 {
		return bf.failures, err
	}
	ids := make(map[string]bool, len(refused))
	for _, r := range refused {
		ids[r.User.ID] = true
	}
	var events []domain.Event
	err = schema.StreamEvents(ctx, tx, after, upTo, domain.UserEventTypes(), func(e domain.Event) error {
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
	return mergeFailures(bf.failures, fs), nil
}

// mergeFailures returns a with the failures of b that are not in a (by
// position).
func mergeFailures(a, b []Failure) []Failure {
	seen := make(map[int64]bool, len(a))
	for _, f := range a {
		seen[f.Position] = true
	}
	for _, f := range b {
		if !seen[f.Position] {
			seen[f.Position] = true
			a = append(a, f)
		}
	}
	return a
}

// copyIsolated COPYs rows into the projector's table inside a savepoint
// and returns the rows PostgreSQL refuses (see copyRefused).
func (p *Users) copyIsolated(ctx context.Context, tx *sqlx.Tx, rows []schema.UserRow) ([]schema.UserRow, error) {
	return copyRefused(ctx, tx, p.table, rows)
}

// copyRefused COPYs rows into table inside a savepoint and returns the rows
// PostgreSQL refuses (schema.Refused), found by COPYing halves, down to
// single rows; the others are written.
func copyRefused[R any](ctx context.Context, tx *sqlx.Tx, table schema.Table[R], rows []R) ([]R, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	if _, err := tx.ExecContext(ctx, `SAVEPOINT copy_isolated`); err != nil {
		return nil, fmt.Errorf("savepoint: %w", schema.Classify(err))
	}
	err := table.Copy(ctx, tx, rows)
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
	if len(rows) == 1 {
		return rows, nil
	}
	mid := len(rows) / 2
	left, err := copyRefused(ctx, tx, table, rows[:mid])
	if err != nil {
		return nil, err
	}
	right, err := copyRefused(ctx, tx, table, rows[mid:])
	if err != nil {
		return nil, err
	}
	return append(left, right...), nil
}

// bulkFold is the result of folding a range of the ledger in memory.
type bulkFold struct {
	p        *Users
	shards   []map[string]*userState
	failures []Failure
	nread    int64
	nrows    int
}

func (b *bulkFold) read() int64 { return b.nread }
func (b *bulkFold) rows() int   { return b.nrows }

// load implements folded (see loadFolded); it lets the users go.
func (b *bulkFold) load(ctx context.Context, tx *sqlx.Tx, after, upTo schema.Cursor) ([]Failure, error) {
	fs, err := b.p.loadFolded(ctx, tx, b, after, upTo)
	b.shards = nil
	return fs, err
}

// fold reads every user event in (after, upTo] with one sequential scan and
// folds it in memory from the zero state: a reader goroutine routes events
// by user to worker goroutines, each owning a shard of users. A sealed body
// is opened by the worker that owns its user, with the data key it keeps in
// the user's state (userkeys.Slot): the key is unwrapped once per user, not
// looked up per body, and the decryption runs on every worker. The fold is
// order-insensitive, so the scan needs no ORDER BY; last is tracked as the
// greatest cursor. progress, when not nil, is called with the number of
// events read so far (from the reader goroutine, every few thousand events).
// A body that does not open stops the fold with its error.
func (p *Users) fold(ctx context.Context, q schema.Queryer, after, upTo schema.Cursor, progress func(int64)) (*bulkFold, error) {
	workers := max(1, p.workers)
	const chunk = 512
	ctx, stop := context.WithCancelCause(ctx) // a worker's error stops the reader
	defer stop(nil)
	chans := make([]chan []schema.Streamed, workers)
	out := &bulkFold{p: p, shards: make([]map[string]*userState, workers)}
	fails := make([][]Failure, workers)
	errs := make([]error, workers) // a body that did not open, per worker
	var wg sync.WaitGroup
	for w := range workers {
		chans[w] = make(chan []schema.Streamed, 8)
		out.shards[w] = map[string]*userState{}
		wg.Go(func() {
			m := out.shards[w]
			var aad []byte
			for evs := range chans[w] {
				for i := range evs {
					if errs[w] != nil {
						break // drain: the reader stops at its next event
					}
					k, f := userKey(evs[i].Event) // a sealed event has its user_id
					if f == nil {
						s := m[k]
						if s == nil {
							s = &userState{}
							m[k] = s
						}
						s.seen = true
						var err error
						if aad, err = evs[i].Open(&s.key, aad); err != nil {
							errs[w] = err
							stop(err)
							break
						}
						f = s.apply(evs[i].Event, nil)
					}
					if f != nil {
						fails[w] = append(fails[w], *f)
					}
				}
			}
		})
	}
	pending := make([][]schema.Streamed, workers)
	flush := func(w int) {
		if len(pending[w]) > 0 {
			chans[w] <- pending[w]
			pending[w] = make([]schema.Streamed, 0, chunk)
		}
	}
	// Every data key is read before the first event is sent to a worker:
	// each goes into its user's state in the shard of the worker that will
	// open the user's bodies (the send orders these writes before it).
	key := func(user string, wrapped []byte) error {
		s := &userState{}
		if err := s.key.Hold(wrapped); err != nil {
			return fmt.Errorf("the data key of user %s: %w", user, err)
		}
		out.shards[p.shardOf(user, workers)][user] = s
		return nil
	}
	err := schema.StreamSealed(ctx, q, after, upTo, domain.UserEventTypes(), key, func(s schema.Streamed) error {
		w := 0 // a poison event naming no user goes to shard 0 to be recorded
		if s.Event.UserID == "" {
			if k, f := userKey(s.Event); f == nil {
				s.Event.UserID = k // stored without user_id: route by the id in its data
			}
		}
		if s.Event.UserID != "" {
			w = p.shardOf(s.Event.UserID, workers)
		}
		pending[w] = append(pending[w], s)
		if len(pending[w]) >= chunk {
			flush(w)
		}
		out.nread++
		if progress != nil && out.nread%4096 == 0 {
			progress(out.nread)
		}
		return ctx.Err()
	})
	for w := range workers {
		flush(w)
		close(chans[w])
	}
	wg.Wait()
	for _, werr := range errs {
		if werr != nil {
			err = werr // the reader stopped for it (or finished first)
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if progress != nil {
		progress(out.nread)
	}
	for _, f := range fails {
		out.failures = append(out.failures, f...)
	}
	for _, m := range out.shards {
		for _, s := range m {
			if s.seen {
				out.nrows++
			}
		}
	}
	return out, nil
}
