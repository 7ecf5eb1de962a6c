package schematest

import (
	"context"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// CopyEvents loads n deliveries made by gen into the events table with COPY,
// in one transaction (so they share one transaction id and keep gen's order
// in ledger order). It is for setting up large histories fast; the service
// appends through schema.Store.
func CopyEvents(tb testing.TB, db *sqlx.DB, n int, gen func(i int) domain.Delivery) {
	tb.Helper()
	ctx := context.Background()
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		tb.Fatalf("schematest: copy events: %v", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, pq.CopyIn("events", "message_uuid", "delivery_id", "type", "user_id", "occurred_at", "body", "svix_timestamp", "svix_signature"))
	if err != nil {
		tb.Fatalf("schematest: copy events: %v", err)
	}
	for i := range n {
		d := gen(i)
		var user any
		if d.UserID != "" {
			user = d.UserID
		}
		if _, err := stmt.ExecContext(ctx, uuid(i), d.ID, d.Type, user, d.OccurredAt, string(d.Body), d.Timestamp, d.Signature); err != nil {
			tb.Fatalf("schematest: copy event %d: %v", i, err)
		}
	}
	if _, err := stmt.ExecContext(ctx); err != nil {
		tb.Fatalf("schematest: copy events: %v", err)
	}
	if err := stmt.Close(); err != nil {
		tb.Fatalf("schematest: copy events: %v", err)
	}
	if err := tx.Commit(); err != nil {
		tb.Fatalf("schematest: copy events: %v", err)
	}
}

func uuid(i int) string {
	const hex = "0123456789abcdef"
	b := []byte("00000000-0000-4000-8000-000000000000")
	for p, v := len(b)-1, uint64(i); v > 0 && p >= 0; p-- {
		if b[p] == '-' {
			continue
		}
		b[p] = hex[v%16]
		v /= 16
	}
	return string(b)
}

// Sealer seals the ledger for tests as the tree sealer projector does:
// schema.AppendLeaves over schema.ReadAfter batches, in ledger order, one
// transaction per batch. It is not safe for concurrent use.
type Sealer struct {
	after  schema.Cursor
	sealed int
	// Chain makes it build the legacy hash chain (event_chain) instead, as
	// the retired chain sealer did: for tests of old digests.
	Chain bool
	// Keys opens sealed bodies while sealing (nil: a sealed event fails
	// the test, as a read without the master key does).
	Keys *userkeys.Keyring
	link chainLink
}

// SealAll seals until this Sealer has sealed total events, waiting for the
// xid8 gate (an open transaction anywhere in the cluster, such as another
// package's test, holds it back). It fails the test after 20 s.
func (s *Sealer) SealAll(tb testing.TB, db *sqlx.DB, total int) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.Seal(tb, db); s.sealed < total; s.Seal(tb, db) {
		if time.Now().After(deadline) {
			tb.Fatalf("schematest: sealed %d events, want %d", s.sealed, total)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Seal seals every event readable now (below the xid8 gate) that this
// Sealer has not sealed yet, and returns how many it sealed.
func (s *Sealer) Seal(tb testing.TB, db *sqlx.DB) int {
	tb.Helper()
	ctx := schema.WithKeyring(context.Background(), s.Keys)
	n := 0
	for {
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			tb.Fatalf("schematest: seal: %v", err)
		}
		events, err := schema.ReadAfter(ctx, tx, s.after, 5000)
		if err != nil {
			tx.Rollback()
			tb.Fatalf("schematest: seal: %v", err)
		}
		if len(events) == 0 {
			tx.Rollback()
			return n
		}
		if s.Chain {
			err = s.sealChain(ctx, tx, events)
		} else {
			_, err = schema.AppendLeaves(ctx, tx, events)
		}
		if err != nil {
			tx.Rollback()
			tb.Fatalf("schematest: seal: %v", err)
		}
		if err := tx.Commit(); err != nil {
			tb.Fatalf("schematest: seal: %v", err)
		}
		s.after = schema.After(events[len(events)-1])
		n += len(events)
		s.sealed += len(events)
	}
}

// chainLink is the last link of a legacy chain built by a Sealer.
type chainLink struct {
	seq  int64
	hash []byte
}

// sealChain appends the legacy chain links of events (domain.ChainHash).
func (s *Sealer) sealChain(ctx context.Context, tx *sqlx.Tx, events []domain.Event) error {
	for _, e := range events {
		h := domain.ChainHash(s.link.hash, e)
		s.link.seq++
		s.link.hash = h[:]
		if _, err := tx.ExecContext(ctx, `INSERT INTO event_chain (seq, position, hash) VALUES ($1, $2, $3)`, s.link.seq, e.Position, s.link.hash); err != nil {
			return err
		}
	}
	return nil
}

// SignCheckpoint signs the tree as it is now with signer, for origin, and
// keeps the checkpoint (as projections.Checkpointer does), returning it.
func SignCheckpoint(tb testing.TB, db *sqlx.DB, signer *translog.Signer, origin string) schema.LogCheckpoint {
	tb.Helper()
	ctx := context.Background()
	head, err := schema.ReadTreeHead(ctx, db)
	if err != nil {
		tb.Fatalf("schematest: sign checkpoint: %v", err)
	}
	note, err := signer.Sign(translog.Checkpoint{Origin: origin, Size: head.Size, Root: head.Root})
	if err != nil {
		tb.Fatalf("schematest: sign checkpoint: %v", err)
	}
	cp := schema.LogCheckpoint{Size: head.Size, Root: head.Root, Note: string(note)}
	if _, err := schema.AddCheckpoint(ctx, db, cp); err != nil {
		tb.Fatalf("schematest: sign checkpoint: %v", err)
	}
	if cp, err = schema.CheckpointOfSize(ctx, db, head.Size); err != nil {
		tb.Fatalf("schematest: sign checkpoint: %v", err)
	}
	return cp
}

// NewLogKey returns a fresh log signing key named origin and its verifier.
func NewLogKey(tb testing.TB, origin string) (*translog.Signer, *translog.Verifier) {
	tb.Helper()
	skey, vkey, err := translog.GenerateKey(origin)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := translog.ParseSigner(skey)
	if err != nil {
		tb.Fatal(err)
	}
	v, err := translog.ParseVerifier(vkey)
	if err != nil {
		tb.Fatal(err)
	}
	return s, v
}

// Tamper runs query as the superuser with the append-only triggers
// disabled (session_replication_role = replica), as an attacker with
// database access could: tests use it to show the tampering is detected.
func Tamper(tb testing.TB, db *sqlx.DB, query string, args ...any) {
	tb.Helper()
	ctx := context.Background()
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		tb.Fatalf("schematest: tamper: %v", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
		tb.Fatalf("schematest: tamper: %v", err)
	}
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		tb.Fatalf("schematest: tamper %q: %v", query, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		tb.Fatalf("schematest: tamper %q changed no row", query)
	}
	if err := tx.Commit(); err != nil {
		tb.Fatalf("schematest: tamper: %v", err)
	}
}

// NewKeyring returns a keyring with a new random master key (what
// LEDGER_MASTER_KEY gives a process).
func NewKeyring(tb testing.TB) *userkeys.Keyring {
	tb.Helper()
	text, err := userkeys.Generate()
	if err != nil {
		tb.Fatal(err)
	}
	k, err := userkeys.Load(text)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// NewSealedDB returns a new test database (NewDB), a keyring of a fresh
// master key (NewKeyring), and a context carrying it (schema.WithKeyring):
// a ledger whose bodies about users are sealed.
func NewSealedDB(t testing.TB) (*sqlx.DB, *userkeys.Keyring, context.Context) {
	t.Helper()
	k := NewKeyring(t)
	return NewDB(t), k, schema.WithKeyring(context.Background(), k)
}
