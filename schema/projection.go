package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Less reports whether c comes before d in ledger order.
func (c Cursor) Less(d Cursor) bool {
	if c.TxID != d.TxID {
		return c.TxID < d.TxID
	}
	return c.Position < d.Position
}

// gateHeadSQL selects the last event in ledger order below the xid8 gate.
const gateHeadSQL = `SELECT transaction_id::text AS tx, position, occurred_at, received_at FROM events
WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id DESC, position DESC LIMIT 1`

// gateHead reads gateHeadSQL; ok is false on an empty ledger.
func gateHead(ctx context.Context, q Queryer) (c Cursor, occurred, received time.Time, ok bool, err error) {
	var tx string
	err = q.QueryRowxContext(ctx, gateHeadSQL).Scan(&tx, &c.Position, &occurred, &received)
	if errors.Is(err, sql.ErrNoRows) {
		return Cursor{}, time.Time{}, time.Time{}, false, nil
	}
	if err != nil {
		return Cursor{}, time.Time{}, time.Time{}, false, fmt.Errorf("read ledger gate head: %w", Classify(err))
	}
	if c.TxID, err = strconv.ParseUint(tx, 10, 64); err != nil {
		return Cursor{}, time.Time{}, time.Time{}, false, fmt.Errorf("read ledger gate head: transaction id %q: %w", tx, err)
	}
	return c, occurred.UTC(), received.UTC(), true, nil
}

// GateHead returns the last event in ledger order below the xid8 gate, or
// the zero Cursor on an empty ledger. Every event at or before it is final:
// no transaction that could still add one before it is running.
func GateHead(ctx context.Context, q Queryer) (Cursor, error) {
	c, _, _, _, err := gateHead(ctx, q)
	return c, err
}

// Gate is what the xid8 gate holds back now: committed events that readers
// cannot see yet because an older transaction, anywhere in the cluster, is
// still running, and the oldest such transaction.
type Gate struct {
	// Waiting counts committed events at or above the gate (not yet readable).
	Waiting int64 `json:"waiting"`
	// OldestWaiting is when the oldest of them was received (zero when none).
	OldestWaiting time.Time `json:"oldest_waiting,omitzero"`
	// BlockedBy is the oldest running transaction holding a transaction id
	// (the one the gate waits for), when any events are waiting and the
	// server lets this role see it (superusers and pg_read_all_stats do).
	BlockedBy *GateBlocker `json:"blocked_by,omitempty"`
}

// GateBlocker is a running transaction that holds the xid8 gate back.
type GateBlocker struct {
	PID             int       `json:"pid"`
	Database        string    `json:"database"`
	ApplicationName string    `json:"application_name,omitempty"`
	State           string    `json:"state"`
	XID             uint64    `json:"xid"` // its 32-bit transaction id (backend_xid)
	XactStart       time.Time `json:"xact_start"`
	AgeSeconds      float64   `json:"age_seconds"`
}

// ReadGate reports what the xid8 gate holds back now (see Gate). A reader
// that is caught up but finds Waiting > 0 is stalled by BlockedBy, not slow.
func ReadGate(ctx context.Context, q Queryer) (Gate, error) {
	var g Gate
	var oldest sql.NullTime
	// The gate is read once (an InitPlan): in the WHERE clause itself it is
	// evaluated again at each row a bitmap scan rechecks, which made the
	// planner prefer two parallel workers, 5-8 ms a call on an idle ledger
	// of 44k events against 0.1 ms.
	if err := q.QueryRowxContext(ctx, `SELECT count(*), min(received_at) FROM events
WHERE transaction_id >= (SELECT pg_snapshot_xmin(pg_current_snapshot()))`).Scan(&g.Waiting, &oldest); err != nil {
		return Gate{}, fmt.Errorf("read the ledger gate: %w", Classify(err))
	}
	g.OldestWaiting = oldest.Time.UTC()
	if g.Waiting == 0 {
		return g, nil
	}
	var b GateBlocker
	var xid string
	var start sql.NullTime
	err := q.QueryRowxContext(ctx, `SELECT pid, COALESCE(datname, ''), COALESCE(application_name, ''), COALESCE(state, ''),
       backend_xid::text, xact_start, COALESCE(EXTRACT(epoch FROM clock_timestamp() - xact_start), 0)::float8
FROM pg_stat_activity WHERE backend_xid IS NOT NULL
ORDER BY age(backend_xid) DESC LIMIT 1`).Scan(&b.PID, &b.Database, &b.ApplicationName, &b.State, &xid, &start, &b.AgeSeconds)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return g, nil // ended meanwhile, or not visible to this role
	case err != nil:
		return Gate{}, fmt.Errorf("read the transaction holding the ledger gate: %w", Classify(err))
	}
	b.XactStart = start.Time.UTC()
	b.XID, _ = strconv.ParseUint(xid, 10, 32)
	g.BlockedBy = &b
	return g, nil
}

// Batch is a run of ledger events read by ReadBatch and the cursor a reader
// that has processed them moves to.
type Batch struct {
	Events []domain.Event
	// Next is the new cursor. With a type filter it may lie past the last
	// event of the batch: events of other types in between are skipped.
	Next Cursor
	// Full reports whether the batch hit the limit (more may be waiting).
	Full bool
}

// ReadBatch returns up to limit events after c in ledger order, only from
// below the xid8 gate (see ReadAfter). With types (exact type names) it
// returns only events of those types, and when fewer than limit match it
// moves Next to the gate head, so a reader of a few types does not lag
// behind on events it does not read. It runs on q, so a projector can read
// inside its own transaction.
func ReadBatch(ctx context.Context, q Queryer, c Cursor, types []string, limit int) (Batch, error) {
	if len(types) == 0 {
		evs, err := ReadAfter(ctx, q, c, limit)
		return batchOf(evs, c, limit), err
	}
	// The head is read first: every event up to it is final, so the read
	// below, bounded by it, sees all of them whatever commits meanwhile.
	head, err := GateHead(ctx, q)
	if err != nil {
		return Batch{}, err
	}
	if !c.Less(head) {
		return Batch{Next: c}, nil
	}
	rows, err := q.QueryxContext(ctx, `SELECT `+eventColumns+` FROM events
WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
  AND (transaction_id, position) <= ($3::xid8, $4::bigint)
  AND type = ANY($5)
ORDER BY transaction_id, position
LIMIT $6`, strconv.FormatUint(c.TxID, 10), c.Position, strconv.FormatUint(head.TxID, 10), head.Position, pq.Array(types), limit)
	if err != nil {
		return Batch{}, fmt.Errorf("read ledger after %s: %w", c, Classify(err))
	}
	defer rows.Close()
	b := Batch{Events: make([]domain.Event, 0, min(limit, 1024))}
	for rows.Next() {
		e, err := scanEvent(KeyringFrom(ctx), rows)
		if err != nil {
			return Batch{}, err
		}
		b.Events = append(b.Events, e)
	}
	if err := rows.Err(); err != nil {
		return Batch{}, fmt.Errorf("read ledger after %s: %w", c, Classify(err))
	}
	b.Full = len(b.Events) == limit
	b.Next = head
	if b.Full {
		b.Next = After(b.Events[len(b.Events)-1])
	}
	return b, nil
}

// ReadLeafBatch is ReadBatch of every type for the tree sealer: its events
// are ReadLeavesAfter's (no sealed body read or opened).
func ReadLeafBatch(ctx context.Context, q Queryer, c Cursor, limit int) (Batch, error) {
	evs, err := ReadLeavesAfter(ctx, q, c, limit)
	return batchOf(evs, c, limit), err
}

// batchOf is the Batch of evs, read after c with limit.
func batchOf(evs []domain.Event, c Cursor, limit int) Batch {
	b := Batch{Events: evs, Next: c, Full: len(evs) == limit}
	if len(evs) > 0 {
		b.Next = After(evs[len(evs)-1])
	}
	return b
}

// rangeWhere is the condition of StreamEvents and CountEvents.
const rangeWhere = `(transaction_id, position) > ($1::xid8, $2::bigint)
  AND (transaction_id, position) <= ($3::xid8, $4::bigint)
  AND ($5::text[] IS NULL OR type = ANY($5))`

func rangeArgs(after, upTo Cursor, types []string) []any {
	var t any // NULL: every type
	if len(types) > 0 {
		t = pq.Array(types)
	}
	return []any{strconv.FormatUint(after.TxID, 10), after.Position, strconv.FormatUint(upTo.TxID, 10), upTo.Position, t}
}

// StreamEvents calls fn with every event after `after` up to and including
// upTo, of the given types (none: all), in NO particular order: it is one
// sequential scan, the fastest way to read a large part of the ledger. upTo
// should come from GateHead, so the range is final. To read less, it leaves
// ReceivedAt, SvixTimestamp, SvixSignature and Commitment empty: it is for
// folding, not for auditing. fn's error stops the scan and is returned as is.
// With a keyring in ctx, sealed bodies are decrypted, and fn called, on a
// goroutine of their own while the next rows are read (one call at a time,
// in the scan's order, all before StreamEvents returns).
func StreamEvents(ctx context.Context, q Queryer, after, upTo Cursor, types []string, fn func(domain.Event) error) error {
	o := KeyringFrom(ctx).Opener()
	if o == nil {
		return StreamSealed(ctx, q, after, upTo, types, nil, func(s Streamed) error { return fn(s.Event) })
	}
	rows, err := streamRows(ctx, q, after, upTo, types)
	if err != nil {
		return err
	}
	defer rows.Close()

	batches := make(chan []Streamed, 4)
	stop := make(chan struct{}) // closed by the opening goroutine when it fails
	done := make(chan error, 1)
	go func() { done <- openStreamed(batches, stop, fn) }()
	readErr := func() error {
		defer close(batches)
		batch := make([]Streamed, 0, streamBatch)
		send := func() bool {
			select {
			case batches <- batch:
				batch = make([]Streamed, 0, streamBatch)
				return true
			case <-stop:
				return false
			}
		}
		for rows.Next() {
			batch = append(batch, Streamed{})
			if err := scanStreamed(o.Prepare, rows, &batch[len(batch)-1]); err != nil {
				return err
			}
			if len(batch) == streamBatch && !send() {
				return nil
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("stream ledger %s..%s: %w", after, upTo, Classify(err))
		}
		if len(batch) > 0 {
			send()
		}
		return nil
	}()
	if err := <-done; err != nil {
		return err
	}
	return readErr
}

// StreamSealed is StreamEvents for a reader that opens the sealed bodies
// itself (Streamed.Open), on goroutines of its own that each keep the keys
// of the users they fold (a rebuild's, whose workers own a share of the
// users): with a keyring in ctx, it first calls key with the wrapped data
// key of every user who has one (a destroyed key is not given: that user's
// bodies open as erased), then fn, on the same goroutine, with every event
// as read, a sealed body not opened yet (Streamed.Sealed). The keys are
// read before the events: a key is stored with or before the first event
// sealed under it, so every event up to an upTo from GateHead finds its
// key, and when q is a transaction both reads share its snapshot. Reading
// the keys once, rather than joining them to every event, keeps the scan
// as cheap as a clear ledger's (a join with 100k keys outgrows work_mem:
// PostgreSQL then spills the events to disk, or scans them in parallel on
// the cores the fold needs). With a keyring key must not be nil (without
// the keys every body would open as erased); without one key is not
// called, and a sealed event is an error, as in StreamEvents. key's or fn's error
// stops the read and is returned as is.
func StreamSealed(ctx context.Context, q Queryer, after, upTo Cursor, types []string, key func(user string, wrapped []byte) error, fn func(Streamed) error) error {
	k := KeyringFrom(ctx)
	var prepare preparer
	if k != nil {
		if key == nil {
			return fmt.Errorf("stream ledger %s..%s: no function to give the data keys to", after, upTo)
		}
		if err := streamKeys(ctx, q, key); err != nil {
			return err
		}
		prepare = func(user string, _ []byte, deliveryID string, sealed []byte) (userkeys.Pending, bool, error) {
			return k.Defer(user, deliveryID, sealed)
		}
	}
	rows, err := q.QueryxContext(ctx, `SELECT e.position, e.transaction_id, e.delivery_id, e.type, COALESCE(e.user_id, ''), e.occurred_at, e.body, e.body_sealed, NULL::bytea, NULL::bytea
FROM events e WHERE `+rangeWhere, rangeArgs(after, upTo, types)...)
	if err != nil {
		return fmt.Errorf("stream ledger %s..%s: %w", after, upTo, Classify(err))
	}
	defer rows.Close()
	for rows.Next() {
		var s Streamed
		if err := scanStreamed(prepare, rows, &s); err != nil {
			return err
		}
		if err := fn(s); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("stream ledger %s..%s: %w", after, upTo, Classify(err))
	}
	return nil
}

// streamKeys calls key with every user's wrapped data key not destroyed
// (StreamSealed).
func streamKeys(ctx context.Context, q Queryer, key func(user string, wrapped []byte) error) error {
	rows, err := q.QueryxContext(ctx, `SELECT user_id, wrapped FROM user_keys WHERE wrapped IS NOT NULL`)
	if err != nil {
		return fmt.Errorf("read the data keys: %w", Classify(err))
	}
	defer rows.Close()
	var user string
	var wrapped sql.RawBytes
	for rows.Next() {
		if err := rows.Scan(&user, &wrapped); err != nil {
			return fmt.Errorf("read the data keys: %w", Classify(err))
		}
		if err := key(user, wrapped); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the data keys: %w", Classify(err))
	}
	return nil
}

// streamRows runs the query of StreamEvents.
func streamRows(ctx context.Context, q Queryer, after, upTo Cursor, types []string) (*sqlx.Rows, error) {
	rows, err := q.QueryxContext(ctx, `SELECT e.position, e.transaction_id, e.delivery_id, e.type, COALESCE(e.user_id, ''), e.occurred_at, e.body, `+kSealColumns+`
FROM events e`+kJoin+` WHERE `+rangeWhere, rangeArgs(after, upTo, types)...)
	if err != nil {
		return nil, fmt.Errorf("stream ledger %s..%s: %w", after, upTo, Classify(err))
	}
	return rows, nil
}

// streamBatch is how many events StreamEvents hands at a time from its
// reading goroutine to the one that opens them.
const streamBatch = 256

// Streamed is an event StreamSealed read: whole when its body is in clear
// or erased, else with the body still sealed (Sealed), opened by Open.
type Streamed struct {
	Event  domain.Event
	p      userkeys.Pending
	sealed bool
}

// Sealed reports whether s's body is still sealed (Event.Body is nil
// until Open).
func (s *Streamed) Sealed() bool { return s.sealed }

// Open opens s's sealed body into s.Event (Body, Salt) with the data key
// in slot, which must be kept for s.Event.UserID alone and given the key
// StreamSealed read for that user (Slot.Hold); a slot given none makes the
// event Erased (the key was destroyed), with no body. It builds the
// associated data in aad's memory, and returns aad's memory to use again.
// A body that does not open is an error naming the event. It does nothing
// for a body not sealed.
func (s *Streamed) Open(slot *userkeys.Slot, aad []byte) ([]byte, error) {
	if !s.sealed {
		return aad, nil
	}
	salt, body, aad, erased, err := s.p.OpenIn(slot, aad)
	if err != nil {
		return aad, fmt.Errorf("open event %d: %w", s.Event.Position, err)
	}
	s.Event.Body, s.Event.Salt, s.Event.Erased, s.sealed, s.p = body, salt, erased, false, userkeys.Pending{}
	return aad, nil
}

// preparer makes the Pending of a sealed body read with its user's
// wrapped key (nil for a read that does not select it): Opener.Prepare,
// or Keyring.Defer.
type preparer func(user string, wrapped []byte, deliveryID string, sealed []byte) (userkeys.Pending, bool, error)

// scanStreamed scans a StreamEvents or StreamSealed row into s: a clear or
// erased event whole; without prepare (no keyring) a sealed one is an
// error, with it its body is left to decrypt (s.p).
func scanStreamed(prepare preparer, rows *sqlx.Rows, s *Streamed) error {
	e := &s.Event
	var sl sealed
	if err := rows.Scan(append([]any{&e.Position, &e.TxID, &e.DeliveryID, &e.Type, &e.UserID, &e.OccurredAt, &e.Body}, sl.rowsDest()...)...); err != nil {
		return fmt.Errorf("stream ledger: scan event: %w", Classify(err))
	}
	e.OccurredAt = e.OccurredAt.UTC()
	if sl.body == nil || prepare == nil {
		return openRowBody(nil, e, &sl)
	}
	e.Body, e.Commitment = nil, sl.commitment
	p, erased, err := prepare(e.UserID, sl.wrapped, e.DeliveryID, sl.body)
	if err != nil {
		return fmt.Errorf("open event %d: %w", e.Position, err)
	}
	e.Erased, s.p, s.sealed = erased, p, !erased
	return nil
}

// openStreamed opens each batch's sealed bodies and calls fn with its
// events, until batches is closed or it fails: then it closes stop and
// returns the error (fn's as is).
func openStreamed(batches <-chan []Streamed, stop chan<- struct{}, fn func(domain.Event) error) error {
	var aad []byte
	for b := range batches {
		for i := range b {
			e := &b[i].Event
			if b[i].sealed {
				salt, body, buf, err := b[i].p.Open(aad)
				if aad = buf; err != nil {
					close(stop)
					return fmt.Errorf("open event %d: %w", e.Position, err)
				}
				e.Body, e.Salt = body, salt
			}
			if err := fn(*e); err != nil {
				close(stop)
				return err
			}
		}
	}
	return nil
}

// CountEvents returns how many events of the given types (none: all) lie
// after `after` up to and including upTo.
func CountEvents(ctx context.Context, q Queryer, after, upTo Cursor, types []string) (int64, error) {
	var n int64
	if err := q.QueryRowxContext(ctx, `SELECT count(*) FROM events WHERE `+rangeWhere, rangeArgs(after, upTo, types)...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count events %s..%s: %w", after, upTo, Classify(err))
	}
	return n, nil
}

// Backdated is a delivery loaded straight into the ledger (by `ledger seed`)
// with the time it was received.
type Backdated struct {
	domain.Delivery
	ReceivedAt time.Time
}

// CopyDeliveries appends ds to the ledger with COPY inside tx, the fastest
// way to load a large synthetic history. It bypasses the webhook path: no
// signature is checked, and a delivery id already stored makes the whole COPY
// fail (no ON CONFLICT with COPY). All rows share tx's transaction id, so
// their ledger order is the order of ds. With a keyring in ctx
// (WithKeyring) every delivery about a user is sealed (SealDeliveries), as
// the event store does.
func CopyDeliveries(ctx context.Context, tx *sqlx.Tx, ds []Backdated) error {
	plain := make([]domain.Delivery, len(ds))
	for i := range ds {
		plain[i] = ds[i].Delivery
	}
	seals, err := SealDeliveries(ctx, tx, KeyringFrom(ctx), plain)
	if err != nil {
		return fmt.Errorf("copy into events: %w", err)
	}
	cols := []string{"message_uuid", "delivery_id", "type", "user_id", "occurred_at", "received_at", "body", "svix_timestamp", "svix_signature"}
	sealing := KeyringFrom(ctx) != nil
	if sealing {
		cols = append(cols, "body_sealed", "body_commitment")
	}
	stmt, err := tx.PrepareContext(ctx, pq.CopyIn("events", cols...))
	if err != nil {
		return fmt.Errorf("copy into events: %w", Classify(err))
	}
	defer stmt.Close()
	for i, d := range ds {
		var user any
		if d.UserID != "" {
			user = d.UserID
		}
		args := []any{watermill.NewUUID(), d.ID, d.Type, user, d.OccurredAt, d.ReceivedAt, string(d.Body), d.Timestamp, d.Signature}
		if sealing {
			var sealedBody, commitment any
			if sl := seals[i]; sl.Sealed != nil {
				args[6], sealedBody, commitment = "", sl.Sealed, sl.Commitment
			}
			args = append(args, sealedBody, commitment)
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("copy delivery %s: %w", d.ID, Classify(err))
		}
	}
	if _, err := stmt.ExecContext(ctx); err != nil {
		return fmt.Errorf("copy into events: %w", Classify(err))
	}
	return nil
}

// NextReceivedAt returns when the first visible event after c was received
// (found false when there is none): a projector's lag in time, read
// without the event's body.
func NextReceivedAt(ctx context.Context, q Queryer, c Cursor) (at time.Time, found bool, err error) {
	err = q.QueryRowxContext(ctx, `SELECT received_at FROM events
WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id, position LIMIT 1`, strconv.FormatUint(c.TxID, 10), c.Position).Scan(&at)
	if errorsIsNoRows(err) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read the event after %s: %w", c, Classify(err))
	}
	return at.UTC(), true, nil
}
