package schema

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/lib/pq"
)

// Bodies hands the sealed bodies a Store just committed to a projector of
// the same process (ReadBatchTaking), so that its next read takes each one
// from memory instead of reading it back: a sealed body is most of an
// event row, and its bytea travels hex-encoded, twice its size. Only the
// bytes come from memory. The read still takes every other column from the
// events row, and the user's wrapped key in the same statement, and opens
// the body exactly as a body read from the table is opened, so a key
// destroyed meanwhile (an erasure, in any process) makes the event Erased
// either way. A body is the one stored: the Store keeps only the bodies of
// rows its INSERT wrote, and a delivery id is stored once.
//
// Bodies holds at most maxEntries bodies and maxBytes of them. The oldest
// kept goes first when either is reached (a projector that lags, or that
// runs in another process, then reads from the table); a body is dropped
// once taken. It is safe for concurrent use.
type Bodies struct {
	types    []string // the types kept (nil: every type)
	mu       sync.Mutex
	m        map[string][]byte // sealed body by delivery id
	ring     []string          // delivery ids in the order kept (some taken)
	head, n  int               // ring[head] is the oldest of n slots in use
	bytes    int               // of the bodies in m
	maxBytes int
}

// DefaultBodies bounds the Bodies serve keeps for its users projector:
// 4,096 bodies and 4 MiB, some three thousand of Clerk's ~1.4 kB sealed
// user events, more than the projector lags behind ingest under load.
const (
	DefaultBodiesEntries = 4096
	DefaultBodiesBytes   = 4 << 20
)

// maxKeptBody is the largest sealed body Bodies keeps: a larger one (rare:
// Clerk's user events are a few kB) is read from the table.
const maxKeptBody = 64 << 10

// NewBodies returns an empty Bodies that keeps the bodies of events of types
// (the types its reader reads; nil keeps every type), at most maxEntries
// bodies and maxBytes of them (each at least 1).
func NewBodies(types []string, maxEntries, maxBytes int) *Bodies {
	maxEntries = max(1, maxEntries)
	return &Bodies{types: types, m: make(map[string][]byte, maxEntries), ring: make([]string, maxEntries), maxBytes: max(1, maxBytes)}
}

// keep keeps sealed, the stored body of delivery id (an event of type typ),
// making room by dropping the oldest bodies kept, unless b keeps no event
// of that type; a body held for id already stays. b keeps sealed itself:
// the caller must not change it.
func (b *Bodies) keep(id, typ string, sealed []byte) {
	if len(sealed) > maxKeptBody || len(sealed) > b.maxBytes || (b.types != nil && !slices.Contains(b.types, typ)) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.m[id]; ok {
		return // a delivery id is stored once: the body held is its body
	}
	for b.n == len(b.ring) || (b.bytes+len(sealed) > b.maxBytes && b.n > 0) {
		old := b.ring[b.head]
		b.ring[b.head] = ""
		b.head = (b.head + 1) % len(b.ring)
		b.n--
		if s, ok := b.m[old]; ok {
			b.bytes -= len(s)
			delete(b.m, old)
		}
	}
	b.ring[(b.head+b.n)%len(b.ring)] = id
	b.n++
	b.m[id] = sealed
	b.bytes += len(sealed)
}

// take returns and drops the sealed body of delivery id, or nil when none is kept.
func (b *Bodies) take(id string) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.m[id]
	if ok {
		delete(b.m, id)
		b.bytes -= len(s)
	}
	return s
}

// Len returns how many bodies b holds.
func (b *Bodies) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}

// readBatchTakingSQL is ReadBatch's query with the sealed body left out:
// whether the row is sealed, and its user's wrapped key, stand in for it.
const readBatchTakingSQL = `SELECT position, transaction_id, delivery_id, type, COALESCE(user_id, ''), occurred_at, received_at,
  CASE WHEN body_sealed IS NULL THEN body END, svix_timestamp, svix_signature, source, body_sealed IS NOT NULL,
  CASE WHEN body_sealed IS NULL THEN NULL ELSE (SELECT k.wrapped FROM user_keys k WHERE k.user_id = events.user_id) END, body_commitment FROM events
WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
  AND (transaction_id, position) <= ($3::xid8, $4::bigint)
  AND type = ANY($5)
ORDER BY transaction_id, position
LIMIT $6`

// ReadBatchTaking is ReadBatch (with types; without, it is ReadBatch)
// taking the sealed bodies bodies holds instead of reading them: the
// events are the ones ReadBatch returns, byte for byte, and the bodies
// bodies did not hold are read from the table in a second statement on q.
// A nil bodies is ReadBatch.
func ReadBatchTaking(ctx context.Context, q Queryer, c Cursor, types []string, limit int, bodies *Bodies) (Batch, error) {
	if bodies == nil || len(types) == 0 || bodies.Len() == 0 {
		// Nothing to take (after a restart, or a reader far behind): the
		// plain read costs one statement, not two.
		return ReadBatch(ctx, q, c, types, limit)
	}
	head, err := GateHead(ctx, q)
	if err != nil {
		return Batch{}, err
	}
	if !c.Less(head) {
		return Batch{Next: c}, nil
	}
	o := KeyringFrom(ctx).Opener()
	rows, err := q.QueryxContext(ctx, readBatchTakingSQL, strconv.FormatUint(c.TxID, 10), c.Position, strconv.FormatUint(head.TxID, 10), head.Position, pq.Array(types), limit)
	if err != nil {
		return Batch{}, fmt.Errorf("read ledger after %s: %w", c, Classify(err))
	}
	defer rows.Close()
	b := Batch{Events: make([]domain.Event, 0, min(limit, 1024))}
	type miss struct {
		i                   int
		wrapped, commitment []byte
	}
	var misses []miss
	for rows.Next() {
		var e domain.Event
		var isSealed bool
		var sl sealed
		if err := rows.Scan(&e.Position, &e.TxID, &e.DeliveryID, &e.Type, &e.UserID, &e.OccurredAt, &e.ReceivedAt, &e.Body, &e.SvixTimestamp, &e.SvixSignature, &e.Source, &isSealed, &sl.wrapped, &sl.commitment); err != nil {
			return Batch{}, fmt.Errorf("scan event: %w", Classify(err))
		}
		e.OccurredAt, e.ReceivedAt = e.OccurredAt.UTC(), e.ReceivedAt.UTC()
		if isSealed {
			if sl.body = bodies.take(e.DeliveryID); sl.body == nil {
				misses = append(misses, miss{i: len(b.Events), wrapped: sl.wrapped, commitment: sl.commitment})
				b.Events = append(b.Events, e)
				continue
			}
		}
		if err := openRowBody(o, &e, &sl); err != nil {
			return Batch{}, err
		}
		b.Events = append(b.Events, e)
	}
	if err := rows.Err(); err != nil {
		return Batch{}, fmt.Errorf("read ledger after %s: %w", c, Classify(err))
	}
	rows.Close()
	if len(misses) > 0 {
		positions := make([]int64, len(misses))
		for j, m := range misses {
			positions[j] = b.Events[m.i].Position
		}
		stored, err := sealedBodies(ctx, q, positions)
		if err != nil {
			return Batch{}, err
		}
		for _, m := range misses {
			e := &b.Events[m.i]
			sl := sealed{body: stored[e.Position], wrapped: m.wrapped, commitment: m.commitment}
			if sl.body == nil {
				return Batch{}, fmt.Errorf("read ledger after %s: event %d has no sealed body", c, e.Position)
			}
			if err := openRowBody(o, e, &sl); err != nil {
				return Batch{}, err
			}
		}
	}
	b.Full = len(b.Events) == limit
	b.Next = head
	if b.Full {
		b.Next = After(b.Events[len(b.Events)-1])
	}
	return b, nil
}

// sealedBodies reads the sealed bodies of the events at positions.
func sealedBodies(ctx context.Context, q Queryer, positions []int64) (map[int64][]byte, error) {
	rows, err := q.QueryxContext(ctx, `SELECT position, body_sealed FROM events WHERE position = ANY($1) AND body_sealed IS NOT NULL`, pq.Array(positions))
	if err != nil {
		return nil, fmt.Errorf("read %d sealed bodies: %w", len(positions), Classify(err))
	}
	defer rows.Close()
	out := make(map[int64][]byte, len(positions))
	for rows.Next() {
		var p int64
		var s []byte
		if err := rows.Scan(&p, &s); err != nil {
			return nil, fmt.Errorf("read %d sealed bodies: %w", len(positions), Classify(err))
		}
		out[p] = s
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %d sealed bodies: %w", len(positions), Classify(err))
	}
	return out, nil
}
