package schema

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Store is the event store: it appends verified deliveries to the events
// table through a Watermill publisher and reads the ledger back in ledger
// order. It is safe for concurrent use.
//
// Appends are group-committed: concurrent Append calls are gathered into one
// multi-row INSERT (one transaction, one WAL flush), at most MaxBatch rows and
// at most MaxInFlight INSERTs at a time. No goroutine runs in the background:
// a caller whose delivery is waiting becomes the one that flushes.
//
// Two Watermill publishers serve the Store's lifetime, one writing the
// INSERT without ON CONFLICT (EventsSchema.Plain, a group's first attempt)
// and one with it (a group holding a redelivery). Each group commit is
// one Publish of one message per delivery; the message carries its delivery
// typed (DeliveryMessage), so EventsSchema writes the columns from typed
// values, and the Store's executor runs the INSERT on a prepared statement
// (groups of up to preparedRows) and learns from its RETURNING which
// deliveries were new.
type Store struct {
	db     *sqlx.DB
	schema EventsSchema
	pub    *wmsql.Publisher // ON CONFLICT (delivery_id) DO NOTHING
	// plainPub publishes without ON CONFLICT (EventsSchema.Plain): a group
	// with a delivery stored already fails (ErrDeliveryTaken) and goes
	// again through pub.
	plainPub *wmsql.Publisher
	// AppendTimeout bounds one INSERT; past it the append fails as
	// EUNAVAILABLE so the sender retries. Default 5 s. A group sealed again
	// (ErrKeyRowTaken) runs a key statement and a second INSERT, each
	// under its own AppendTimeout.
	AppendTimeout time.Duration
	// MaxBatch is the most deliveries one INSERT carries (default 200).
	MaxBatch int
	// MaxInFlight is the most INSERTs running at once (default 2).
	MaxInFlight int
	// OnCommit, when not nil, is told of every group commit: the deliveries
	// it carried, how long its INSERT took, and its error (metrics;
	// ErrKeyRowTaken for an attempt that is sealed again and retried). It is
	// called from the appending goroutines, possibly concurrently, and must
	// not block. Set it before the first Append.
	OnCommit func(deliveries int, d time.Duration, err error)
	// Keys, when not nil, seals every delivery about a user under that
	// user's data key before it is inserted (SealDeliveries) and opens
	// sealed rows to compare redeliveries. nil keeps bodies in clear (a
	// ledger without LEDGER_MASTER_KEY: tests, the no-encryption bench
	// baseline). Set it before the first Append.
	Keys *userkeys.Keyring
	// Bodies, when not nil, is handed the sealed body of every row the
	// Store inserts, once committed, for a projector of this process to
	// take (ReadBatchTaking). Set it before the first Append.
	Bodies *Bodies

	mu       sync.Mutex
	pending  []*appendReq
	flushers int

	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt // prepared INSERTs by query text

	// freshPaused (unix ns) is until when seal makes no fresh keys: set
	// for freshPause when a fresh key's user turned out to have a key row
	// (a user known to the ledger but not to this process's keyring).
	freshPaused atomic.Int64
	// plainPaused (unix ns) is until when groups go straight through pub:
	// set for freshPause when a group found a delivery stored already
	// (redeliveries come in runs, as Svix retries a backlog).
	plainPaused atomic.Int64
}

// freshPause is how long the store seals through the key statement alone
// (provisionKeys, then the INSERT) after a fresh key found its user's row
// taken: a stream about users the ledger knows but this process has not
// cached (after a restart, or past userkeys.SealTTL) then costs one wasted
// statement a second, not one per group commit.
const freshPause = time.Second

// ErrKeyRowTaken is a group commit's INSERT's answer (to OnCommit) when a
// fresh key's user already had a key row: the statement failed, storing
// nothing (no key and no event), and the group is sealed again
// under the stored keys and inserted once more. Appends never return it.
var ErrKeyRowTaken = errors.New("a new data key's user already has a key row; the group is sealed again")

// ErrDeliveryTaken is a group commit's INSERT's answer (to OnCommit) when
// it ran without ON CONFLICT (EventsSchema.Plain) and a delivery of the
// group was stored already: the statement stored nothing, and the group is
// inserted again with ON CONFLICT DO NOTHING, which tells the redelivery
// apart. Appends never return it.
var ErrDeliveryTaken = errors.New("a delivery of the group is stored already; the group is inserted again, skipping it")

// appendReq is one delivery on its way into the ledger: an Append waiting
// for its group commit, or a message made by DeliveryMessage. Its Watermill
// message carries it (rowFrom).
type appendReq struct {
	d    domain.Delivery
	seal Sealing // set by AppendDelivery (presealed) or by flush (seal) before the insert
	// presealed is set when AppendDelivery sealed d itself.
	presealed bool
	// inserted is set by the Store's executor when the INSERT wrote this
	// row (not a delivery id already stored).
	inserted bool
	result   domain.AppendResult
	err      error
	done     chan struct{} // closed when stored/err are set
	lead     chan struct{} // closed when this caller must flush for the others
	// promoted is set (under Store.mu) when lead is closed.
	promoted bool
	// fresh, when not nil, is the new data key Store.seal made for the user and
	// sealed this delivery under: its row goes into user_keys in the same
	// statement as the events (EventsSchema.InsertQuery), which stores the
	// events only if every fresh key's row was new.
	fresh *userkeys.Fresh
}

// NewStore returns a Store on db.
func NewStore(db *sqlx.DB) *Store {
	s := &Store{db: db, AppendTimeout: 5 * time.Second, MaxBatch: 200, MaxInFlight: 2, stmts: map[string]*sql.Stmt{}}
	// NewPublisher fails only on a nil executor or schema adapter.
	s.pub, _ = wmsql.NewPublisher(appendExec{DB: db, s: s}, wmsql.PublisherConfig{SchemaAdapter: s.schema}, nil)
	plain := s.schema
	plain.Plain = true
	s.plainPub, _ = wmsql.NewPublisher(appendExec{DB: db, s: s}, wmsql.PublisherConfig{SchemaAdapter: plain}, nil)
	return s
}

// DB returns the store's connection pool.
func (s *Store) DB() *sqlx.DB { return s.db }

// preparedRows is the largest group commit run on a prepared statement (one
// per group size, prepared on first use on each connection): one round trip
// and no parse or plan per INSERT. Larger groups, rarer, send their text.
const preparedRows = 32

// appendExec is the ContextExecutor the Store's Watermill publisher writes
// through. It runs the publisher's INSERT ... RETURNING delivery_id as a
// query under AppendTimeout (watermill-sql v3 passes context.Background()),
// and marks inserted each pending row (its delivery_id argument, a rowID)
// that the RETURNING names, which tells new deliveries from redeliveries.
// Only ExecContext is the Store's; the other methods (which the publisher
// does not call) are the pool's.
type appendExec struct {
	*sqlx.DB
	s *Store
}

func (e appendExec) ExecContext(_ context.Context, query string, args ...any) (sql.Result, error) {
	rows := make(map[string]*appendReq, len(args)/insertColumns)
	for _, a := range args {
		if id, ok := a.(rowID); ok {
			rows[id.d.ID] = id.appendReq
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.s.AppendTimeout)
	defer cancel()
	var res *sql.Rows
	var err error
	if len(rows) <= preparedRows {
		var stmt *sql.Stmt
		if stmt, err = e.s.prepared(ctx, query); err == nil {
			res, err = stmt.QueryContext(ctx, args...)
		}
	} else {
		res, err = e.s.db.QueryContext(ctx, query, args...)
	}
	if err != nil {
		return nil, rowTaken(err)
	}
	defer res.Close()
	n := 0
	var id sql.RawBytes // valid until the next Next
	for res.Next() {
		if err := res.Scan(&id); err != nil {
			return nil, err
		}
		if r := rows[string(id)]; r != nil {
			r.inserted = true
			n++
		}
	}
	if err := res.Err(); err != nil {
		return nil, rowTaken(err)
	}
	return driver.RowsAffected(n), nil
}

// rowTaken is err, or ErrKeyRowTaken when err is a fresh key's row
// refused because its user has one (isKeyRowTaken), or ErrDeliveryTaken
// when a Plain INSERT found a delivery stored (isDeliveryTaken).
func rowTaken(err error) error {
	switch {
	case isKeyRowTaken(err):
		return ErrKeyRowTaken
	case isDeliveryTaken(err):
		return ErrDeliveryTaken
	}
	return err
}

// prepared returns the Store's prepared statement of query, preparing it on
// first use.
func (s *Store) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if st, ok := s.stmts[query]; ok {
		return st, nil
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	s.stmts[query] = st
	return st, nil
}

// storeQueryer is the Store's pool as a Queryer whose statements are the
// Store's prepared ones (prepared on first use on each connection): the
// data keys' statement, sent at every group commit that seals for a user
// whose key is not cached, is parsed and planned once, not each time.
type storeQueryer struct{ s *Store }

func (q storeQueryer) QueryxContext(ctx context.Context, query string, args ...any) (*sqlx.Rows, error) {
	st, err := q.s.prepared(ctx, query)
	if err != nil {
		return nil, err
	}
	return (&sqlx.Stmt{Stmt: st, Mapper: q.s.db.Mapper}).QueryxContext(ctx, args...)
}

// QueryRowxContext is the pool's (not prepared): the sealing path reads
// rows, not a row.
func (q storeQueryer) QueryRowxContext(ctx context.Context, query string, args ...any) *sqlx.Row {
	return q.s.db.QueryRowxContext(ctx, query, args...)
}

// Append is AppendDelivery reporting only whether d was new (stored=true) or
// already stored (stored=false: a duplicate or a conflict).
func (s *Store) Append(ctx context.Context, d domain.Delivery) (stored bool, err error) {
	res, err := s.AppendDelivery(ctx, d)
	return res == domain.AppendStored, err
}

// AppendDelivery durably stores d in the ledger through Watermill's SQL
// publisher and says what it did: AppendStored (new), AppendDuplicate (a
// delivery with this id is already stored with the same body) or
// AppendConflict (already stored with another body, which stays). The unique
// delivery id decides, also when copies race; within one group commit the
// first copy wins. When it returns nil the row is committed.
//
// One delivery never fails because of another's data: when the database
// refuses a group commit because of a row's values, the group is split and
// retried until only the offending deliveries fail.
//
// Errors: EINVALID when d fails Delivery.Check or the database refuses its
// values (nothing of it is stored); EUNAVAILABLE when the database is
// unreachable, overloaded or too slow (the caller should answer 503 so the
// sender retries); anything else is unexpected (a bug, a configuration error).
func (s *Store) AppendDelivery(ctx context.Context, d domain.Delivery) (domain.AppendResult, error) {
	if err := d.Check(); err != nil {
		return 0, fmt.Errorf("append delivery: %w", err)
	}
	r := &appendReq{d: d, done: make(chan struct{}), lead: make(chan struct{})}
	if err := s.preseal(r); err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.pending = append(s.pending, r)
	leader := s.flushers < max(1, s.MaxInFlight)
	if leader {
		s.flushers++
	}
	s.mu.Unlock()
	if !leader {
		select {
		case <-r.done:
		case <-r.lead:
		}
		select {
		case <-r.lead:
			leader = true
		default:
		}
	}
	if leader {
		s.flushLoop(r)
	}
	<-r.done
	return r.result, r.err
}

// flushLoop flushes pending deliveries until me is done, then hands the
// flusher's place to a waiting caller, or gives it up when none waits.
func (s *Store) flushLoop(me *appendReq) {
	for {
		s.mu.Lock()
		if len(s.pending) == 0 {
			s.flushers--
			s.mu.Unlock()
			return
		}
		select {
		case <-me.done:
			// Our own delivery is answered: hand our place to a waiting
			// caller, unless one was already handed a place.
			if next := s.pending[0]; !next.promoted {
				next.promoted = true
				close(next.lead)
			} else {
				s.flushers--
			}
			s.mu.Unlock()
			return
		default:
		}
		n := min(len(s.pending), max(1, s.MaxBatch))
		batch := s.pending[:n:n]
		s.pending = append([]*appendReq(nil), s.pending[n:]...)
		s.mu.Unlock()
		s.flush(batch)
	}
}

// flush appends one batch and answers every request in it. The rows go in
// delivery id order: two INSERTs racing on the same ids (two services
// receiving the same redeliveries) then wait for each other's unique-index
// entries in the same order and cannot deadlock.
func (s *Store) flush(batch []*appendReq) {
	defer func() {
		for _, r := range batch {
			close(r.done)
		}
	}()
	first := make(map[string]*appendReq, len(batch))
	uniq := make([]*appendReq, 0, len(batch))
	for _, r := range batch {
		if _, seen := first[r.d.ID]; !seen {
			first[r.d.ID] = r
			uniq = append(uniq, r)
		}
	}
	slices.SortFunc(uniq, func(a, b *appendReq) int { return cmp.Compare(a.d.ID, b.d.ID) })
	if err := s.seal(uniq); err != nil {
		for _, r := range batch {
			r.err = err
		}
		return
	}
	s.insertGroup(uniq, false)
	if s.Bodies != nil {
		for _, r := range uniq {
			if r.err == nil && r.inserted && r.seal.Sealed != nil {
				s.Bodies.keep(r.d.ID, r.d.Type, r.seal.Sealed)
			}
		}
	}

	// Every copy that was not the one inserted is a redelivery: compare its
	// body with the stored row's.
	var others []*appendReq
	for _, r := range batch {
		f := first[r.d.ID]
		switch {
		case f.err != nil:
			r.err = f.err
		case f == r && r.inserted:
			r.result = domain.AppendStored
		default:
			others = append(others, r)
		}
	}
	if len(others) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), s.AppendTimeout)
		defer cancel()
		s.compareStored(ctx, others)
	}
}

// preseal seals r's delivery on the appending goroutine when the store
// seals and its user's key was read moments ago (Keyring.SealCached), as
// SealDeliveries would: the callers' goroutines seal in parallel, and a
// group commit's flush, which runs one at a time per group, seals only the
// deliveries whose key it must read or make.
func (s *Store) preseal(r *appendReq) error {
	if s.Keys == nil || r.d.UserID == "" {
		return nil
	}
	sealed, c, ok, err := s.Keys.SealCached(r.d.UserID, r.d.ID, r.d.Body)
	if err != nil {
		return fmt.Errorf("seal delivery %s: %w", r.d.ID, err)
	}
	if !ok {
		return nil
	}
	r.seal, r.presealed = Sealing{Sealed: sealed, Commitment: c[:]}, true
	return nil
}

// seal sets the Sealing of every request not presealed when the store
// seals (Keys set), within AppendTimeout. A delivery about a user whose key
// this process has not cached is sealed under a fresh key (userkeys.Fresh)
// whose row the INSERT stores with the events, in one statement and one
// commit: the key statement of SealDeliveries is saved for new users.
// While freshPaused, and for the other deliveries, it is SealDeliveries.
func (s *Store) seal(reqs []*appendReq) error {
	if s.Keys == nil {
		return nil
	}
	fresh := time.Now().UnixNano() >= s.freshPaused.Load()
	var made map[string]*userkeys.Fresh
	var todo []*appendReq
	for _, r := range reqs {
		switch {
		case r.presealed:
		case fresh && r.d.UserID != "" && s.Keys.CachedKey(r.d.UserID) == nil:
			f := made[r.d.UserID]
			if f == nil {
				var err error
				if f, err = s.Keys.NewFresh(r.d.UserID); err != nil {
					return fmt.Errorf("seal delivery %s: %w", r.d.ID, err)
				}
				if made == nil {
					made = map[string]*userkeys.Fresh{}
				}
				made[r.d.UserID] = f
			}
			sealed, c, err := s.Keys.SealFresh(f, r.d.UserID, r.d.ID, r.d.Body)
			if err != nil {
				return fmt.Errorf("seal delivery %s: %w", r.d.ID, err)
			}
			r.seal, r.fresh = Sealing{Sealed: sealed, Commitment: c[:]}, f
		default:
			todo = append(todo, r)
		}
	}
	return s.sealStored(todo)
}

// sealStored seals todo through SealDeliveries: keys read from the cache
// or the database, new ones made in their own statement (provisionKeys).
func (s *Store) sealStored(todo []*appendReq) error {
	if len(todo) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.AppendTimeout)
	defer cancel()
	ds := make([]domain.Delivery, len(todo))
	for i, r := range todo {
		ds[i] = r.d
	}
	seals, err := sealDeliveries(ctx, storeQueryer{s}, s.Keys, ds, false)
	if err != nil {
		return fmt.Errorf("append %d deliveries: %w", len(todo), Classify(err))
	}
	for i, r := range todo {
		r.seal = seals[i]
	}
	return nil
}

// insertGroup inserts reqs (distinct ids, in id order) in one INSERT, which
// marks the ones it inserted. When the database refuses the INSERT because
// of some row's values, the group is split in two and each half inserted on
// its own, down to single deliveries: only an offender gets an error (r.err),
// as EINVALID. Any other failure is every request's error. The INSERT goes
// without ON CONFLICT (EventsSchema.Plain) unless dedupe, or a group found
// a delivery stored moments ago (plainPaused); a group that finds one is
// inserted again with it.
func (s *Store) insertGroup(reqs []*appendReq, dedupe bool) {
	err := s.insertOnce(reqs, dedupe)
	if err == nil {
		s.keepFresh(reqs)
		return
	}
	if errors.Is(err, ErrDeliveryTaken) && !dedupe {
		s.plainPaused.Store(time.Now().Add(freshPause).UnixNano())
		s.insertGroup(reqs, true)
		return
	}
	if errors.Is(err, ErrKeyRowTaken) {
		// A fresh key's user has a key row (live, or destroyed by an
		// erasure): seal those deliveries under the stored keys and insert
		// the group again, now without fresh keys.
		s.freshPaused.Store(time.Now().Add(freshPause).UnixNano())
		var redo []*appendReq
		for _, r := range reqs {
			if r.fresh != nil {
				r.fresh, r.seal = nil, Sealing{}
				redo = append(redo, r)
			}
		}
		if err := s.sealStored(redo); err != nil {
			for _, r := range reqs {
				r.err = err
			}
			return
		}
		s.insertGroup(reqs, dedupe)
		return
	}
	refused := Refused(err) || domain.ErrorCode(err) == domain.EINVALID
	if refused && len(reqs) > 1 {
		mid := len(reqs) / 2
		s.insertGroup(reqs[:mid], dedupe)
		s.insertGroup(reqs[mid:], dedupe)
		return
	}
	if refused && domain.ErrorCode(err) != domain.EINVALID {
		err = fmt.Errorf("%w: %w", domain.Errorf(domain.EINVALID, "the database refused this delivery's data"), err)
	}
	for _, r := range reqs {
		r.err = fmt.Errorf("append delivery %s: %w", r.d.ID, Classify(err))
	}
}

// keepFresh caches the fresh keys of reqs, whose rows just committed.
func (s *Store) keepFresh(reqs []*appendReq) {
	var last *userkeys.Fresh
	for _, r := range reqs {
		if r.fresh != nil && r.fresh != last {
			s.Keys.Keep(r.d.UserID, r.fresh)
			last = r.fresh
		}
	}
}

// insertOnce publishes reqs as one Watermill Publish: one multi-row INSERT,
// without ON CONFLICT unless a group found a delivery stored moments ago.
func (s *Store) insertOnce(reqs []*appendReq, dedupe bool) error {
	msgs := make(message.Messages, 0, len(reqs))
	for _, r := range reqs {
		r.inserted = false
		msgs = append(msgs, rowMessage(r))
	}
	start := time.Now()
	pub := s.plainPub
	if dedupe || start.UnixNano() < s.plainPaused.Load() {
		pub = s.pub
	}
	err := pub.Publish(Topic, msgs...)
	if s.OnCommit != nil {
		s.OnCommit(len(reqs), time.Since(start), err)
	}
	return err
}

// compareStored answers deliveries whose id was already stored: duplicate
// when the stored body is byte for byte theirs, conflict otherwise. The
// bodies are compared by SHA-256 computed in the database, so a stored body
// is not read back.
func (s *Store) compareStored(ctx context.Context, reqs []*appendReq) {
	ids := make([]string, 0, len(reqs))
	for _, r := range reqs {
		ids = append(ids, r.d.ID)
	}
	digests := make(map[string][]byte, len(ids))
	opened := make(map[string]domain.Event, len(ids))
	rows, err := s.db.QueryContext(ctx, `SELECT delivery_id, COALESCE(user_id, ''), CASE WHEN body_sealed IS NULL THEN sha256(convert_to(body, 'UTF8')) END, `+sealColumns+` FROM events WHERE delivery_id = ANY($1)`, pq.Array(ids))
	if err == nil {
		o := s.Keys.Opener()
		for rows.Next() {
			var id, user string
			var sum []byte
			var sl sealed
			if err = rows.Scan(append([]any{&id, &user, &sum}, sl.rowsDest()...)...); err != nil {
				break
			}
			if sl.body == nil {
				digests[id] = sum
				continue
			}
			// A sealed body is opened and compared in memory: the table
			// keeps no unsalted digest of it.
			e := domain.Event{DeliveryID: id, UserID: user}
			if err = openRowBody(o, &e, &sl); err != nil {
				break
			}
			opened[id] = e
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	for _, r := range reqs {
		sum := sha256.Sum256(r.d.Body)
		stored, found := digests[r.d.ID]
		e, sealedRow := opened[r.d.ID]
		switch {
		case err != nil:
			r.err = fmt.Errorf("compare delivery %s with the stored one: %w", r.d.ID, Classify(err))
		case sealedRow && (e.Erased || bytes.Equal(e.Body, r.d.Body)):
			// An erased body cannot be compared: the redelivery is
			// answered as a duplicate, so the sender stops.
			r.result = domain.AppendDuplicate
		case sealedRow:
			r.result = domain.AppendConflict
		case !found:
			r.err = fmt.Errorf("delivery %s was neither inserted nor found stored", r.d.ID)
		case bytes.Equal(stored, sum[:]):
			r.result = domain.AppendDuplicate
		default:
			r.result = domain.AppendConflict
		}
	}
}

// DeliveryMessage is the Watermill message EventsSchema stores for d (with
// any publisher, e.g. one writing in the caller's transaction): its payload
// is d.Body, and its context carries d itself, so EventsSchema writes the
// columns from typed values; it has no metadata.
func DeliveryMessage(d domain.Delivery) *message.Message {
	return rowMessage(&appendReq{d: d})
}

// rowKey is the context key of the appendReq a message carries.
type rowKey struct{}

func rowMessage(r *appendReq) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), r.d.Body)
	msg.SetContext(context.WithValue(context.Background(), rowKey{}, r))
	return msg
}

// rowFrom returns the delivery a message made by DeliveryMessage carries.
func rowFrom(m *message.Message) (*appendReq, bool) {
	r, ok := m.Context().Value(rowKey{}).(*appendReq)
	return r, ok && r != nil
}

// rowID is the delivery_id argument of a row's INSERT: its SQL value is the
// id, and it lets the Store's executor mark the row inserted.
type rowID struct{ *appendReq }

// Value implements driver.Valuer.
func (r rowID) Value() (driver.Value, error) { return r.d.ID, nil }

// Cursor is a place in ledger order: the last (transaction id, position) read.
// The zero Cursor is before the first event.
type Cursor struct {
	TxID     uint64 `json:"transaction_id,string"`
	Position int64  `json:"position"`
}

// After returns the cursor just past e.
func After(e domain.Event) Cursor { return Cursor{TxID: e.TxID, Position: e.Position} }

func (c Cursor) String() string {
	return strconv.FormatUint(c.TxID, 10) + ":" + strconv.FormatInt(c.Position, 10)
}

// Queryer is what ledger reads run on: a *sqlx.DB or a *sqlx.Tx.
type Queryer interface {
	QueryxContext(ctx context.Context, query string, args ...any) (*sqlx.Rows, error)
	QueryRowxContext(ctx context.Context, query string, args ...any) *sqlx.Row
}

const readAfterSQL = `SELECT ` + eventColumns + ` FROM events
WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id, position
LIMIT $3`

// ReadAfter returns up to limit events after c in ledger order, only from
// transactions older than every transaction still running (the xid8 gate), so
// an event that commits late is never skipped by a reader that moved on. An
// open transaction anywhere in the cluster therefore holds reads back until it
// ends. It runs on q, so a projector can read inside its own transaction.
func ReadAfter(ctx context.Context, q Queryer, c Cursor, limit int) ([]domain.Event, error) {
	k := KeyringFrom(ctx)
	return readAfter(ctx, q, readAfterSQL, c, limit, func(row wmsql.Scanner) (domain.Event, error) { return scanEvent(k, row) })
}

const readLeavesAfterSQL = `SELECT position, transaction_id, delivery_id, type, COALESCE(user_id, ''), occurred_at, received_at,
  CASE WHEN body_sealed IS NULL THEN body END, svix_timestamp, svix_signature, source, body_sealed IS NOT NULL, body_commitment FROM events
WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id, position
LIMIT $3`

// ReadLeavesAfter is ReadAfter for the tree sealer: it reads what an
// event's leaf commits to (Event.Leaf) and no sealed body. An event kept
// in clear comes with its Body; a sealed (or erased) one with its stored
// Commitment and no Body, Salt or Erased, so no key is read and nothing is
// decrypted: it needs no keyring. A sealed row without a stored commitment
// is an error (its leaf could not be made).
func ReadLeavesAfter(ctx context.Context, q Queryer, c Cursor, limit int) ([]domain.Event, error) {
	return readAfter(ctx, q, readLeavesAfterSQL, c, limit, scanLeafEvent)
}

// scanLeafEvent scans one row of readLeavesAfterSQL.
func scanLeafEvent(row wmsql.Scanner) (domain.Event, error) {
	var e domain.Event
	var sealed bool
	if err := row.Scan(&e.Position, &e.TxID, &e.DeliveryID, &e.Type, &e.UserID, &e.OccurredAt, &e.ReceivedAt, &e.Body, &e.SvixTimestamp, &e.SvixSignature, &e.Source, &sealed, &e.Commitment); err != nil {
		return domain.Event{}, fmt.Errorf("scan event: %w", Classify(err))
	}
	if sealed && len(e.Commitment) != domain.HashSize {
		return domain.Event{}, fmt.Errorf("event %d is sealed and has no stored body commitment", e.Position)
	}
	e.OccurredAt = e.OccurredAt.UTC()
	e.ReceivedAt = e.ReceivedAt.UTC()
	return e, nil
}

// readAfter runs query (a gated read after c: $1 the transaction id, $2
// the position, $3 the limit) and scans its rows with scan.
func readAfter(ctx context.Context, q Queryer, query string, c Cursor, limit int, scan func(wmsql.Scanner) (domain.Event, error)) ([]domain.Event, error) {
	rows, err := q.QueryxContext(ctx, query, strconv.FormatUint(c.TxID, 10), c.Position, limit)
	if err != nil {
		return nil, fmt.Errorf("read ledger after %s: %w", c, Classify(err))
	}
	defer rows.Close()
	events := make([]domain.Event, 0, limit)
	for rows.Next() {
		e, err := scan(rows)
		if err != nil {
			return nil, err
		}
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read ledger after %s: %w", c, Classify(err))
	}
	return events, nil
}

// scanEvent scans one row of eventColumns, opening a sealed body with k.
func scanEvent(k *userkeys.Keyring, row wmsql.Scanner) (domain.Event, error) {
	var e domain.Event
	var b []byte
	var sl sealed
	if err := row.Scan(append([]any{&e.Position, &e.TxID, &e.DeliveryID, &e.Type, &e.UserID, &e.OccurredAt, &e.ReceivedAt, &b, &e.SvixTimestamp, &e.SvixSignature, &e.Source}, sl.dest()...)...); err != nil {
		return domain.Event{}, fmt.Errorf("scan event: %w", Classify(err))
	}
	e.Body = b
	e.OccurredAt = e.OccurredAt.UTC()
	e.ReceivedAt = e.ReceivedAt.UTC()
	if err := openBody(k, &e, &sl); err != nil {
		return domain.Event{}, err
	}
	return e, nil
}

// Head is the newest event readers can see (below the xid8 gate) and how
// many events the ledger holds in all.
type Head struct {
	Cursor     Cursor
	OccurredAt time.Time
	ReceivedAt time.Time
	Count      int64 // every stored event, gated or not
}

// ReadHead returns the ledger head. On an empty ledger it returns the zero Head.
func ReadHead(ctx context.Context, q Queryer) (Head, error) {
	var h Head
	var err error
	if h.Cursor, h.OccurredAt, h.ReceivedAt, _, err = gateHead(ctx, q); err != nil {
		return Head{}, err
	}
	if err := q.QueryRowxContext(ctx, `SELECT count(*) FROM events`).Scan(&h.Count); err != nil {
		return Head{}, fmt.Errorf("count ledger: %w", Classify(err))
	}
	return h, nil
}

// CountAfter returns how many visible events lie after c: a projector's lag.
func CountAfter(ctx context.Context, q Queryer, c Cursor) (int64, error) {
	var n int64
	err := q.QueryRowxContext(ctx, `SELECT count(*) FROM events
WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())`, strconv.FormatUint(c.TxID, 10), c.Position).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count events after %s: %w", c, Classify(err))
	}
	return n, nil
}

// EventByDeliveryID returns the stored event with that svix-id.
// Errors: ENOTFOUND when there is none.
func EventByDeliveryID(ctx context.Context, q Queryer, id string) (domain.Event, error) {
	e, err := scanEvent(KeyringFrom(ctx), q.QueryRowxContext(ctx, `SELECT `+eventColumns+` FROM events WHERE delivery_id = $1`, id))
	if err != nil {
		if errorsIsNoRows(err) {
			return domain.Event{}, domain.Errorf(domain.ENOTFOUND, "no event with delivery id %s", id)
		}
		return domain.Event{}, err
	}
	return e, nil
}

// Ready returns nil when the database answers and every embedded migration is
// applied; otherwise EUNAVAILABLE saying which.
func (s *Store) Ready(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("ping: %w", Classify(err))
	}
	ok, err := MigrationsCurrent(ctx, s.db.DB)
	if err != nil {
		return err
	}
	if !ok {
		return domain.Errorf(domain.EUNAVAILABLE, "database migrations are not current (run ledger migrate)")
	}
	return nil
}
