package schema_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/jmoiron/sqlx"
	"golang.org/x/mod/sumdb/tlog"
)

// mth is RFC 6962's Merkle Tree Hash written out from the RFC (section
// 2.1), independent of tlog and of our code: the reference the stored tree
// is checked against.
func mth(leaves [][]byte) [32]byte {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return sha256.Sum256(append([]byte{0}, leaves[0]...))
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	l, r := mth(leaves[:k]), mth(leaves[k:])
	return sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...))
}

// copyLedger loads n events (users user_0..user_4) in one COPY.
func copyLedger(t *testing.T, db *sqlx.DB, n int) []domain.Event {
	t.Helper()
	schematest.CopyEvents(t, db, n, func(i int) domain.Delivery {
		return deliveryAt(t, fmt.Sprintf("msg_%04d", i), historyTypes[i%len(historyTypes)], fmt.Sprintf("user_%d", i%5), t0.Add(time.Duration(i)*time.Minute))
	})
	schematest.WaitReadable(t, db, int64(n))
	events, err := schema.ReadAfter(context.Background(), db, schema.Cursor{}, n+1)
	if err != nil || len(events) != n {
		t.Fatalf("read %d events: %v", len(events), err)
	}
	return events
}

// appendInBatches seals events with AppendLeaves in batches of the given
// sizes (cycled), one transaction each.
func appendInBatches(t *testing.T, db *sqlx.DB, events []domain.Event, sizes ...int) {
	t.Helper()
	ctx := context.Background()
	for i, k := 0, 0; i < len(events); k++ {
		j := min(len(events), i+sizes[k%len(sizes)])
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := schema.AppendLeaves(ctx, tx, events[i:j]); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		i = j
	}
}

// TestTreeMatchesRFC6962AndProvesEveryLeaf builds trees of sizes 1, 2, 3,
// 2^k-1, 2^k, 2^k+1 in uneven batches and checks, with the RFC's own
// definition and the library's own proof checkers (tlog.CheckRecord,
// tlog.CheckTree), the root at every size, every leaf's inclusion proof and
// every consistency proof, all read from the stored hashes.
func TestTreeMatchesRFC6962AndProvesEveryLeaf(t *testing.T) {
	ctx := context.Background()
	db := schematest.NewDB(t)
	events := copyLedger(t, db, 33)
	appendInBatches(t, db, events, 1, 2, 5, 3, 8)
	var leaves [][]byte
	for _, e := range events {
		leaves = append(leaves, domain.LeafOf(e, nil).Encode(nil))
	}
	r := schema.HashReader(ctx, db)
	for _, n := range []int64{1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33} {
		root, err := tlog.TreeHash(n, r)
		if err != nil {
			t.Fatal(err)
		}
		if want := mth(leaves[:n]); root != tlog.Hash(want) {
			t.Fatalf("size %d: stored root %x, RFC 6962 says %x", n, root, want)
		}
		for i := range n {
			p, err := tlog.ProveRecord(n, i, r)
			if err != nil {
				t.Fatal(err)
			}
			if err := tlog.CheckRecord(p, n, root, i, tlog.RecordHash(leaves[i])); err != nil {
				t.Fatalf("size %d leaf %d: %v", n, i, err)
			}
			if err := tlog.CheckRecord(p, n, root, i, tlog.RecordHash(leaves[(i+1)%n])); n > 1 && err == nil {
				t.Fatalf("size %d leaf %d: another leaf's hash passed", n, i)
			}
		}
		for m := int64(1); m < n; m++ {
			p, err := tlog.ProveTree(n, m, r)
			if err != nil {
				t.Fatal(err)
			}
			if err := tlog.CheckTree(p, n, root, m, tlog.Hash(mth(leaves[:m]))); err != nil {
				t.Fatalf("consistency %d -> %d: %v", m, n, err)
			}
		}
	}
	head, err := schema.ReadTreeHead(ctx, db)
	if err != nil || head.Size != 33 || head.Root != tlog.Hash(mth(leaves)) {
		t.Fatalf("head %+v %v", head, err)
	}
	// Events sealed in one batch give the RFC's tree too.
	db2 := schematest.NewDB(t)
	events2 := copyLedger(t, db2, 33)
	appendInBatches(t, db2, events2, 33)
	var leaves2 [][]byte
	for _, e := range events2 {
		leaves2 = append(leaves2, domain.LeafOf(e, nil).Encode(nil))
	}
	if h2, _ := schema.ReadTreeHead(ctx, db2); h2.Root != tlog.Hash(mth(leaves2)) {
		t.Errorf("one batch gave %+v", h2)
	}
	// The tree's tables are append-only.
	if _, err := schema.AddCheckpoint(ctx, db, schema.LogCheckpoint{Size: 33, Root: head.Root, Note: "n"}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`UPDATE log_leaves SET hashes = hashes`, `DELETE FROM log_leaves`, `TRUNCATE log_leaves`, `DELETE FROM log_checkpoints`} {
		if _, err := db.ExecContext(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v", q, err)
		}
	}
}

// logLedger is a sealed ledger of 20 events with a checkpoint signed at 20.
type logLedger struct {
	db       *sqlx.DB
	events   []domain.Event
	signer   *translog.Signer
	verifier *translog.Verifier
	kept     schema.LogCheckpoint
}

func newLogLedger(t *testing.T) *logLedger {
	t.Helper()
	db := schematest.NewDB(t)
	l := &logLedger{db: db, events: copyLedger(t, db, 20)}
	var s schematest.Sealer
	s.SealAll(t, db, 20)
	l.signer, l.verifier = schematest.NewLogKey(t, "clerk-ledger/test")
	l.kept = schematest.SignCheckpoint(t, db, l.signer, "clerk-ledger/test")
	return l
}

func (l *logLedger) verify(t *testing.T) schema.LogReport {
	t.Helper()
	rep, err := schema.VerifyLog(context.Background(), l.db, l.verifier.Open)
	if err != nil {
		t.Fatal(err)
	}
	// In pages of 1 to 7 leaves, the same report: the fast path (the
	// leaves zipped with the events in ledger order) and the slow path it
	// falls back to at a mismatch agree, across page boundaries.
	for page := int64(1); page <= 7; page++ {
		paged, err := schema.VerifyLogInPages(context.Background(), l.db, l.verifier.Open, page)
		if err != nil {
			t.Fatal(err)
		}
		paged.Duration, paged.Latest = rep.Duration, rep.Latest
		if paged != rep {
			t.Fatalf("in pages of %d: %+v, in one: %+v", page, paged, rep)
		}
	}
	return rep
}

// reseal rebuilds the whole tree from the events as they are now (an
// attacker with the database rewriting the tree's own tables).
func (l *logLedger) reseal(t *testing.T) {
	t.Helper()
	schematest.Tamper(t, l.db, `DELETE FROM log_leaves`)
	var s schematest.Sealer
	s.SealAll(t, l.db, len(l.events))
}

func TestVerifyLogDetectsTampering(t *testing.T) {
	t.Run("intact", func(t *testing.T) {
		l := newLogLedger(t)
		rep := l.verify(t)
		if !rep.OK || rep.Checked != 20 || rep.Checkpoints != 1 || rep.Tree.Root != l.kept.Root || rep.Unsealed != 0 {
			t.Fatalf("intact: %+v", rep)
		}
	})
	for _, c := range []struct {
		name, query, want string
		event, bad        int // the event tampered with, and the one reported (its successor in leaf order for a reorder)
	}{
		{"edited body", `UPDATE events SET body = body || ' ' WHERE position = $1`, "does not match its leaf hash", 4, 4},
		{"edited time", `UPDATE events SET occurred_at = occurred_at - interval '1 microsecond' WHERE position = $1`, "does not match its leaf hash", 7, 7},
		{"edited source", `UPDATE events SET source = 'clerk_api' WHERE position = $1`, "does not match its leaf hash", 9, 9},
		{"edited signature header", `UPDATE events SET svix_signature = 'v1,forged' WHERE position = $1`, "does not match its leaf hash", 0, 0},
		{"deleted event", `DELETE FROM events WHERE position = $1`, "missing from the ledger", 6, 6},
		{"reordered in ledger order", `UPDATE events SET transaction_id = (SELECT max(transaction_id) FROM events)::text::bigint + 1000 || '' WHERE position = $1`, "out of ledger order", 3, 4},
		{"swapped leaves", `UPDATE log_leaves l SET position = (SELECT -o.position FROM log_leaves o WHERE o.leaf = 11 - l.leaf) WHERE leaf IN (5, 6) AND $1 > 0`, "does not match its leaf hash", 5, 6},
		{"leaf row deleted", `DELETE FROM log_leaves WHERE position = $1`, "missing from log_leaves", 11, 11},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newLogLedger(t)
			p := l.events[c.event].Position
			q := strings.Replace(c.query, "|| ''", "", 1)
			if strings.Contains(c.name, "reordered") {
				q = `UPDATE events SET transaction_id = ((SELECT max(transaction_id)::text::bigint FROM events) + 1000)::text::xid8 WHERE position = $1`
			}
			if strings.Contains(c.name, "swapped") {
				schematest.Tamper(t, l.db, `UPDATE log_leaves SET position = -position WHERE leaf IN (5, 6)`)
			}
			schematest.Tamper(t, l.db, q, p)
			rep := l.verify(t)
			if rep.OK || !strings.Contains(rep.Problem, c.want) {
				t.Fatalf("%s at %d: %+v", c.name, p, rep)
			}
			if want := l.events[c.bad].Position; !strings.Contains(c.name, "leaf row") && rep.FirstBad != want {
				t.Errorf("%s: first bad %d, want %d (%s)", c.name, rep.FirstBad, want, rep.Problem)
			}
		})
	}
	t.Run("event slipped in among the sealed ones", func(t *testing.T) {
		l := newLogLedger(t)
		// Position 0 in the sealed events' transaction: before the last leaf in ledger order.
		schematest.Tamper(t, l.db, `INSERT INTO events (position, transaction_id, message_uuid, delivery_id, type, user_id, occurred_at, body, svix_timestamp, svix_signature)
SELECT 0, transaction_id, gen_random_uuid(), 'msg_forged', type, user_id, occurred_at, body, svix_timestamp, svix_signature FROM events WHERE position = $1`, l.events[2].Position)
		if rep := l.verify(t); rep.OK || !strings.Contains(rep.Problem, "inserted") || rep.FirstBad != 0 || !strings.Contains(rep.Problem, "position 0 ") {
			t.Fatalf("insert: %+v", rep)
		}
	})
	t.Run("an inner node of the tree changed", func(t *testing.T) {
		l := newLogLedger(t)
		// Leaf 7 closes the subtrees of 2, 4 and 8 leaves: change the one of 4 (leaves 4..7).
		schematest.Tamper(t, l.db, `UPDATE log_leaves SET hashes = overlay(hashes PLACING sha256(hashes) FROM 65 FOR 32) WHERE leaf = 7`)
		if rep := l.verify(t); rep.OK || !strings.Contains(rep.Problem, "stored hash of 4 leaves ending at leaf 7") {
			t.Fatalf("inner node: %+v", rep)
		}
	})
	t.Run("a leaf's hashes cut", func(t *testing.T) {
		l := newLogLedger(t)
		schematest.Tamper(t, l.db, `UPDATE log_leaves SET hashes = substring(hashes FROM 1 FOR 32) WHERE leaf = 15`)
		if rep := l.verify(t); rep.OK || !strings.Contains(rep.Problem, "the tree's table was changed") {
			t.Fatalf("cut hashes: %+v", rep)
		}
	})
	t.Run("edit with the whole tree rewritten is caught by the kept checkpoint", func(t *testing.T) {
		l := newLogLedger(t)
		schematest.Tamper(t, l.db, `UPDATE events SET body = replace(body, 'example.com', 'evil.test') WHERE position = $1`, l.events[3].Position)
		l.reseal(t)
		if rep := l.verify(t); rep.OK || !strings.Contains(rep.Problem, "another root") {
			t.Fatalf("rewritten tree: %+v", rep)
		}
	})
	t.Run("tail cut", func(t *testing.T) {
		l := newLogLedger(t)
		schematest.Tamper(t, l.db, `DELETE FROM log_leaves WHERE leaf >= 18`)
		if rep := l.verify(t); rep.OK || !strings.Contains(rep.Problem, "leaves were removed") {
			t.Fatalf("tail cut: %+v", rep)
		}
	})
	t.Run("forged checkpoint with another key", func(t *testing.T) {
		l := newLogLedger(t)
		other, _ := schematest.NewLogKey(t, "clerk-ledger/test")
		schematest.Tamper(t, l.db, `DELETE FROM log_checkpoints`)
		schematest.SignCheckpoint(t, l.db, other, "clerk-ledger/test")
		if rep := l.verify(t); rep.OK || !strings.Contains(rep.Problem, "not signed by the key") {
			t.Fatalf("forged checkpoint: %+v", rep)
		}
	})
	t.Run("checkpoint row changed under its note", func(t *testing.T) {
		l := newLogLedger(t)
		schematest.Tamper(t, l.db, `UPDATE log_checkpoints SET root = sha256(root)`)
		if rep := l.verify(t); rep.OK || !strings.Contains(rep.Problem, "signed note states") {
			t.Fatalf("row changed: %+v", rep)
		}
	})
}

// TestAddCheckpointNeverGoesBack: a checkpoint of a size already kept, or
// smaller than one kept, is not stored.
func TestAddCheckpointNeverGoesBack(t *testing.T) {
	ctx := context.Background()
	db := schematest.NewDB(t)
	for _, c := range []struct {
		size int64
		want bool
	}{{5, true}, {5, false}, {3, false}, {9, true}} {
		added, err := schema.AddCheckpoint(ctx, db, schema.LogCheckpoint{Size: c.size, Note: fmt.Sprint(c.size)})
		if err != nil || added != c.want {
			t.Errorf("size %d: added %v %v", c.size, added, err)
		}
	}
	if cp, err := schema.LatestCheckpoint(ctx, db); err != nil || cp.Size != 9 {
		t.Errorf("latest %+v %v", cp, err)
	}
}

// TestProofTargetAndRecordedHashes: the one query of an inclusion proof
// gives the checkpoint, the leaf and the event, or the reason there is no
// proof; the hashes read with their access record make a proof that
// tlog.CheckRecord accepts, and the record is kept.
func TestProofTargetAndRecordedHashes(t *testing.T) {
	ctx := context.Background()
	db := schematest.NewDB(t)
	events := copyLedger(t, db, 20)
	if _, _, err := schema.ProofTarget(ctx, db, events[0].Position, 0); domain.ErrorCode(err) != domain.ENOTFOUND || !strings.Contains(err.Error(), "no checkpoint is signed yet") {
		t.Fatalf("no checkpoint: %v", err)
	}
	appendInBatches(t, db, events[:10], 4)
	signer, _ := schematest.NewLogKey(t, "clerk-ledger/test")
	cp := schematest.SignCheckpoint(t, db, signer, "clerk-ledger/test")
	appendInBatches(t, db, events[10:15], 5)
	for _, c := range []struct {
		position, size int64
		code, want     string
	}{
		{events[0].Position, -1, domain.EINVALID, "negative"},
		{events[0].Position, 7, domain.ENOTFOUND, "no checkpoint of tree size 7"},
		{events[19].Position + 1000, 0, domain.ENOTFOUND, "no event at position"},
		{events[17].Position, 0, domain.ENOTFOUND, "not in the tree yet"},
		{events[12].Position, 0, domain.ENOTFOUND, "is leaf 12, not in the tree of the checkpoint of size 10"},
		{events[12].Position, 10, domain.ENOTFOUND, "is leaf 12, not in the tree of the checkpoint of size 10"},
	} {
		if _, _, err := schema.ProofTarget(ctx, db, c.position, c.size); domain.ErrorCode(err) != c.code || !strings.Contains(err.Error(), c.want) {
			t.Errorf("position %d, size %d: %v, want %s %q", c.position, c.size, err, c.code, c.want)
		}
	}
	for _, size := range []int64{0, 10} {
		got, e, err := schema.ProofTarget(ctx, db, events[6].Position, size)
		if err != nil || got.Size != 10 || got.Root != cp.Root || got.Note != cp.Note || e.Leaf != 6 || e.DeliveryID != events[6].DeliveryID || string(e.Body) != string(events[6].Body) || !e.OccurredAt.Equal(events[6].OccurredAt) {
			t.Fatalf("size %d: %+v %+v %v", size, got, e, err)
		}
		var need []int64
		if _, err := tlog.ProveRecord(got.Size, e.Leaf, tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) {
			need = ix
			return make([]tlog.Hash, len(ix)), nil
		})); err != nil {
			t.Fatal(err)
		}
		hs, err := schema.ReadHashesRecorded(ctx, db, need, schema.Access{Actor: "auditor_1", Channel: "api", Action: schema.ActionProof, RowCount: 1})
		if err != nil {
			t.Fatal(err)
		}
		have := map[int64]tlog.Hash{}
		for i, idx := range need {
			have[idx] = hs[i]
		}
		proof, err := tlog.ProveRecord(got.Size, e.Leaf, tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(ix))
			for i, idx := range ix {
				out[i] = have[idx]
			}
			return out, nil
		}))
		if err != nil || tlog.CheckRecord(proof, got.Size, got.Root, e.Leaf, translog.LeafHash(domain.LeafOf(e.Event, nil))) != nil {
			t.Fatalf("the proof does not check: %v", err)
		}
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM audit_access WHERE actor = 'auditor_1' AND action = 'proof'`); err != nil || n != 2 {
		t.Fatalf("%d access records, want 2: %v", n, err)
	}
}
