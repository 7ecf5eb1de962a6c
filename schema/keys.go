package schema

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// This file holds the SQL of the per-user data keys (user_keys) and the one
// place a stored event's sealed body is opened.

// keyringKey is the context key of the keyring.
type keyringKey struct{}

// WithKeyring returns ctx carrying k: every ledger read made with the
// returned context opens sealed bodies with it. Reads take the keyring from
// their context rather than from a parameter so that no read's signature
// changes; a sealed body read without one is an error, never "erased".
func WithKeyring(ctx context.Context, k *userkeys.Keyring) context.Context {
	if k == nil {
		return ctx
	}
	return context.WithValue(ctx, keyringKey{}, k)
}

// KeyringFrom returns the keyring WithKeyring put in ctx, or nil.
func KeyringFrom(ctx context.Context) *userkeys.Keyring {
	k, _ := ctx.Value(keyringKey{}).(*userkeys.Keyring)
	return k
}

// sealColumns are the columns every ledger read of the events table (not
// aliased) scans after eventColumns' (openBody): the sealed body, the
// user's wrapped data key (only for a sealed row: a subquery on user_keys'
// primary key, in the statement's snapshot) and the stored commitment.
const sealColumns = `body_sealed, CASE WHEN body_sealed IS NULL THEN NULL ELSE (SELECT k.wrapped FROM user_keys k WHERE k.user_id = events.user_id) END, body_commitment`

// eSealColumns is sealColumns of the events table aliased e.
const eSealColumns = `e.body_sealed, CASE WHEN e.body_sealed IS NULL THEN NULL ELSE (SELECT k.wrapped FROM user_keys k WHERE k.user_id = e.user_id) END, e.body_commitment`

// kSealColumns is sealColumns of the events table aliased e LEFT JOINed
// with user_keys k on the user (bulk reads: one hash join, not a lookup per
// row), without the commitment (NULL: a fold reads no leaf).
const kSealColumns = `e.body_sealed, CASE WHEN e.body_sealed IS NULL THEN NULL ELSE k.wrapped END, NULL::bytea`

// kJoin is the join kSealColumns reads.
const kJoin = ` LEFT JOIN user_keys k ON k.user_id = e.user_id`

// sealed is what a read scans of sealColumns.
type sealed struct {
	body, wrapped, commitment []byte
}

// dest is what a single-row read (Row.Scan, which refuses sql.RawBytes)
// scans sealColumns into: copies it owns.
func (s *sealed) dest() []any { return []any{&s.body, &s.wrapped, &s.commitment} }

// rowsDest is dest for a read of many rows (Rows.Scan): the sealed body and
// the wrapped key are not copied (sql.RawBytes, the driver's buffer, valid
// until the next Rows.Next), so openBody must be called on s before then.
// openBody keeps neither: the opened body is a fresh slice and the keyring
// caches its own copy of the wrapped key. The commitment, which the event
// keeps, is copied.
func (s *sealed) rowsDest() []any {
	return []any{(*sql.RawBytes)(&s.body), (*sql.RawBytes)(&s.wrapped), &s.commitment}
}

// openBody fills e's Body, Salt, Commitment and Erased from s: a clear row
// keeps its body; a sealed one is opened with k (its Body then a fresh
// slice); one whose key was destroyed, or whose body was discarded, is
// Erased with no body. A sealed row without a keyring is an error.
func openBody(k *userkeys.Keyring, e *domain.Event, s *sealed) error {
	if k == nil {
		return openSealed(nil, e, s)
	}
	return openSealed(k, e, s)
}

// openRowBody is openBody for a read of many rows, with o (nil: no
// keyring), the read's own userkeys.Opener.
func openRowBody(o *userkeys.Opener, e *domain.Event, s *sealed) error {
	if o == nil {
		return openSealed(nil, e, s)
	}
	return openSealed(o, e, s)
}

// bodyOpener opens a sealed body: a userkeys.Keyring or Opener.
type bodyOpener interface {
	Open(user string, wrapped []byte, deliveryID string, sealed []byte) (salt, body []byte, erased bool, err error)
}

// openSealed is openBody with o (nil: no keyring).
func openSealed(o bodyOpener, e *domain.Event, s *sealed) error {
	if s.body == nil {
		e.Commitment = s.commitment
		return nil
	}
	if o == nil {
		return domain.Errorf(domain.EUNAVAILABLE, "event %d is sealed and this process has no master key (LEDGER_MASTER_KEY)", e.Position)
	}
	salt, body, erased, err := o.Open(e.UserID, s.wrapped, e.DeliveryID, s.body)
	if err != nil {
		return fmt.Errorf("open event %d: %w", e.Position, err)
	}
	e.Body, e.Salt, e.Erased = body, salt, erased
	e.Commitment = s.commitment
	return nil
}

// Sealing is how one delivery is stored: its body sealed (or discarded,
// for an erased user) and the commitment its leaf makes. Body "" and
// Sealed nil is a body kept in clear.
type Sealing struct {
	Sealed     []byte
	Commitment []byte
}

// SealDeliveries seals the body of every delivery that names a user under
// that user's data key, making a key for a user who has none in one
// statement, and returns each delivery's Sealing (index-aligned; the zero
// Sealing for a delivery about no user, kept in clear). A delivery about a
// user whose key was destroyed (erased) is discarded: Sealed is
// userkeys.Discarded and the commitment is under a salt thrown away.
// It is the sealing step of every append path; the Store also seals a
// new user's deliveries under a fresh key stored with them (Store.seal).
func SealDeliveries(ctx context.Context, q Queryer, k *userkeys.Keyring, ds []domain.Delivery) ([]Sealing, error) {
	return sealDeliveries(ctx, q, k, ds, true)
}

// sealDeliveries is SealDeliveries; with durable false, q must be a pool
// (each statement its own transaction), and the data keys it makes commit
// without waiting for their WAL flush (provisionKeys).
func sealDeliveries(ctx context.Context, q Queryer, k *userkeys.Keyring, ds []domain.Delivery, durable bool) ([]Sealing, error) {
	out := make([]Sealing, len(ds))
	if k == nil {
		return out, nil
	}
	var users []string
	var wrapped [][]byte
	keys := make(map[string][]byte, len(ds))
	seen := map[string]bool{}
	for _, d := range ds {
		if d.UserID == "" || seen[d.UserID] {
			continue
		}
		seen[d.UserID] = true
		// A key read from the database moments ago (userkeys.SealTTL)
		// seals without asking it again.
		if w := k.CachedKey(d.UserID); w != nil {
			keys[d.UserID] = w
			continue
		}
		w, err := k.NewDataKey(d.UserID)
		if err != nil {
			return nil, err
		}
		users, wrapped = append(users, d.UserID), append(wrapped, w)
	}
	// In user order, as the event store's fresh keys (InsertQuery): two
	// statements making keys for the same users wait for each other's rows
	// in one order, never in a cycle (a deadlock, 40P01, for both groups).
	sortByUser(users, wrapped)
	// A key another append made meanwhile is invisible to the statement
	// that waited for it: the next attempt reads it.
	for attempt := 0; len(users) > 0; attempt++ {
		if attempt == 3 {
			return nil, fmt.Errorf("provision data keys: no key row for user %s", users[0])
		}
		if err := provisionKeys(ctx, q, k.ID(), users, wrapped, keys, durable); err != nil {
			return nil, err
		}
		var u2 []string
		var w2 [][]byte
		for i, u := range users {
			if _, ok := keys[u]; !ok {
				u2, w2 = append(u2, u), append(w2, wrapped[i])
			}
		}
		users, wrapped = u2, w2
	}
	for i, d := range ds {
		if d.UserID == "" {
			continue
		}
		w := keys[d.UserID]
		if w == nil {
			c, err := userkeys.DiscardCommitment(d.Body)
			if err != nil {
				return nil, err
			}
			out[i] = Sealing{Sealed: userkeys.Discarded, Commitment: c[:]}
			continue
		}
		s, c, err := k.Seal(d.UserID, w, d.ID, d.Body)
		if err != nil {
			return nil, fmt.Errorf("seal delivery %s: %w", d.ID, err)
		}
		out[i] = Sealing{Sealed: s, Commitment: c[:]}
	}
	return out, nil
}

// sortByUser sorts users (byte order, as their COLLATE "C" key) and
// wrapped with them.
func sortByUser(users []string, wrapped [][]byte) {
	type pair struct {
		user    string
		wrapped []byte
	}
	ps := make([]pair, len(users))
	for i := range users {
		ps[i] = pair{users[i], wrapped[i]}
	}
	slices.SortFunc(ps, func(a, b pair) int { return strings.Compare(a.user, b.user) })
	for i, p := range ps {
		users[i], wrapped[i] = p.user, p.wrapped
	}
}

// provisionKeys stores wrapped[i] as users[i]'s data key unless the user
// has a key row already (live, or destroyed by erasure: then it stays
// destroyed), and adds to keys every user's stored wrapped key it sees
// (nil: destroyed).
//
// With durable false the statement, which must be its own transaction,
// commits without waiting for its WAL flush (synchronous_commit off for
// that transaction only): an append then waits for one flush, its INSERT's,
// not two. No event can outlive its key: a body sealed under a new key is
// inserted after the key's commit, and PostgreSQL flushes WAL in order, so
// the flush that makes the event durable makes the key durable too; a key
// lost in a crash sealed nothing that was acknowledged.
func provisionKeys(ctx context.Context, q Queryer, kekID string, users []string, wrapped [][]byte, keys map[string][]byte, durable bool) error {
	rows, err := q.QueryxContext(ctx, `WITH commit_mode AS MATERIALIZED (
  SELECT CASE WHEN $4 THEN '' ELSE set_config('synchronous_commit', 'off', true) END),
new AS (
  INSERT INTO user_keys (user_id, wrapped, kek_id)
  SELECT u, w, $3 FROM unnest($1::text[], $2::bytea[]) AS t(u, w), commit_mode
  ON CONFLICT (user_id) DO NOTHING
  RETURNING user_id, wrapped)
SELECT user_id, wrapped FROM new
UNION ALL
SELECT k.user_id, k.wrapped FROM user_keys k WHERE k.user_id = ANY($1) AND k.user_id NOT IN (SELECT user_id FROM new)`,
		pq.Array(users), pq.ByteaArray(wrapped), kekID, durable)
	if err != nil {
		return fmt.Errorf("provision data keys: %w", Classify(err))
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		var w []byte
		if err := rows.Scan(&u, &w); err != nil {
			return fmt.Errorf("provision data keys: %w", Classify(err))
		}
		keys[u] = w
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("provision data keys: %w", Classify(err))
	}
	return nil
}

// CheckKeyring returns an EINVALID error, one line naming
// LEDGER_MASTER_KEY, when a live data key in user_keys was wrapped by
// another master key than k or does not open with it: start-up refuses a
// wrong master key before it reads or writes anything.
//
// A right key costs two probes of user_keys_kek_idx (the live keys' master
// key ids, below and above k's), not a scan of every key: start-up stays
// instant however many users the ledger has (100k keys: 0.7 ms against
// 37 ms for the scan it replaced).
func CheckKeyring(ctx context.Context, q Queryer, k *userkeys.Keyring) error {
	var other string
	err := q.QueryRowxContext(ctx, `SELECT kek_id FROM (
  (SELECT kek_id FROM user_keys WHERE wrapped IS NOT NULL AND kek_id < $1 ORDER BY kek_id LIMIT 1)
  UNION ALL
  (SELECT kek_id FROM user_keys WHERE wrapped IS NOT NULL AND kek_id > $1 ORDER BY kek_id LIMIT 1)) AS other LIMIT 1`, k.ID()).Scan(&other)
	switch {
	case errorsIsNoRows(err):
	case err != nil:
		return fmt.Errorf("check the master key: %w", Classify(err))
	default:
		var n int64
		if err := q.QueryRowxContext(ctx, `SELECT count(*) FROM user_keys WHERE wrapped IS NOT NULL AND kek_id <> $1`, k.ID()).Scan(&n); err != nil {
			return fmt.Errorf("check the master key: %w", Classify(err))
		}
		return domain.Errorf(domain.EINVALID, "LEDGER_MASTER_KEY (key id %s) is not the master key of this ledger: %d data keys are wrapped by key id %s", k.ID(), n, other)
	}
	var user string
	var wrapped []byte
	err = q.QueryRowxContext(ctx, `SELECT user_id, wrapped FROM user_keys WHERE wrapped IS NOT NULL LIMIT 1`).Scan(&user, &wrapped)
	if errorsIsNoRows(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check the master key: %w", Classify(err))
	}
	if err := k.Check(user, wrapped); err != nil {
		return domain.Errorf(domain.EINVALID, "LEDGER_MASTER_KEY (key id %s) does not open this ledger's data keys", k.ID())
	}
	return nil
}

// RotateKeys rewraps every live data key wrapped by from (or already by
// to: skipped) under to, in one transaction. It returns how many it
// rewrapped. Errors: EINVALID when a key is wrapped by neither.
func RotateKeys(ctx context.Context, db *sqlx.DB, from, to *userkeys.Keyring) (int, error) {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("rotate the master key: %w", Classify(err))
	}
	defer tx.Rollback()
	rows, err := tx.QueryxContext(ctx, `SELECT user_id, wrapped, kek_id FROM user_keys WHERE wrapped IS NOT NULL ORDER BY user_id FOR UPDATE`)
	if err != nil {
		return 0, fmt.Errorf("rotate the master key: %w", Classify(err))
	}
	var users []string
	var rewrapped [][]byte
	for rows.Next() {
		var u, id string
		var w []byte
		if err := rows.Scan(&u, &w, &id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("rotate the master key: %w", Classify(err))
		}
		if id == to.ID() {
			continue
		}
		if id != from.ID() {
			rows.Close()
			return 0, domain.Errorf(domain.EINVALID, "the data key of user %s is wrapped by key id %s, neither the old (%s) nor the new (%s) master key", u, id, from.ID(), to.ID())
		}
		nw, err := from.Rewrap(u, w, to)
		if err != nil {
			rows.Close()
			return 0, err
		}
		users, rewrapped = append(users, u), append(rewrapped, nw)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("rotate the master key: %w", Classify(err))
	}
	if _, err := tx.ExecContext(ctx, `UPDATE user_keys k SET wrapped = t.w, kek_id = $3
FROM unnest($1::text[], $2::bytea[]) AS t(u, w) WHERE k.user_id = t.u`, pq.Array(users), pq.ByteaArray(rewrapped), to.ID()); err != nil {
		return 0, fmt.Errorf("rotate the master key: %w", Classify(err))
	}
	return len(users), tx.Commit()
}
