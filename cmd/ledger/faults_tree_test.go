package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/jmoiron/sqlx"
	"golang.org/x/mod/sumdb/tlog"
)

// sealing reports whether a backend of app is inside a tree sealer's batch
// that has written (it holds a transaction id and runs the tree's SQL).
func sealing(t *testing.T, db *sqlx.DB, app string) bool {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1 AND backend_xid IS NOT NULL AND query LIKE '%log_%'`, app).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// TestFaultSealerKilledMidBatch SIGKILLs `ledger project` three times while
// its tree sealer is inside a batch (leaves and hashes written, not yet
// committed) during a 90k-event load (enough batches that each restart is caught inside one, however fast the sealer), then restarts it: the tree it ends
// with has exactly one leaf per event, in ledger order, and the root RFC
// 6962 gives for those events (computed here with tlog alone); every
// checkpoint signed along the way is a prefix of it (tlog.CheckTree), and
// `ledger audit verify` agrees.
func TestFaultSealerKilledMidBatch(t *testing.T) {
	dsn := schematest.NewURL(t)
	skey, vkey, err := translog.GenerateKey("clerk-ledger/faults")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DATABASE_URL": dsn}
	if out, errOut, code := runLedger(t, env, "migrate"); code != 0 {
		t.Fatalf("migrate: exit %d\n%s%s", code, out, errOut)
	}
	db := schematest.Open(t, dsn)
	seed := startLedger(t, env, "seed", "--users", "9000", "--events", "90000", "--seed", "7")
	projEnv := map[string]string{"DATABASE_URL": withAppName(dsn, "faults_tree"), "LOG_LEVEL": "warn",
		"LEDGER_LOG_KEY": skey, "LEDGER_CHECKPOINT_INTERVAL": "1s"}
	last := int64(-1)
	for kill := 1; kill <= 3; kill++ {
		p := startLedger(t, projEnv, "project")
		waitFor(t, 30*time.Second, "the sealer writing a batch past the last checkpoint", func() (bool, string) {
			applied, _ := checkpoint(t, db, "tree")
			return applied > last && sealing(t, db, "faults_tree"), fmt.Sprintf("tree applied %d", applied)
		})
		p.kill()
		last, _ = checkpoint(t, db, "tree")
		size, _ := schema.TreeSize(context.Background(), db)
		if size != max(0, last) {
			t.Fatalf("kill %d: tree of %d leaves, checkpoint at %d applied: the batch was half committed", kill, size, last)
		}
		t.Logf("kill %d: tree %d leaves", kill, size)
	}
	if err := seed.wait(60 * time.Second); err != nil {
		t.Fatalf("seed: %v\n%s", err, seed.logs.String())
	}
	startLedger(t, projEnv, "project")
	waitCaughtUp(t, db, 60*time.Second)

	// The reference: every event in ledger order, hashed by tlog alone.
	ctx := context.Background()
	var stored []tlog.Hash
	mem := tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(ix))
		for i, x := range ix {
			out[i] = stored[x]
		}
		return out, nil
	})
	var n int64
	var c schema.Cursor
	for {
		evs, err := schema.ReadAfter(withTestKeys(ctx), db, c, 5000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			hs, err := tlog.StoredHashes(n, e.Leaf().Encode(nil), mem)
			if err != nil {
				t.Fatal(err)
			}
			stored = append(stored, hs...)
			n++
		}
		c = schema.After(evs[len(evs)-1])
	}
	want, _ := tlog.TreeHash(n, mem)
	head, err := schema.ReadTreeHead(ctx, db)
	if err != nil || head.Size != n || head.Root != want {
		t.Fatalf("tree after the kills: %d leaves, root %x; the %d events give %x (%v)", head.Size, head.Root, n, want, err)
	}
	// Every checkpoint signed across the kills is consistent with it.
	v, _ := translog.ParseVerifier(vkey)
	kept := 0
	waitFor(t, 10*time.Second, "a checkpoint of the whole tree", func() (bool, string) {
		cp, err := schema.LatestCheckpoint(ctx, db)
		return err == nil && cp.Size == n, fmt.Sprint(err)
	})
	if err := schema.EachCheckpoint(ctx, db, func(cp schema.LogCheckpoint) error {
		stated, err := v.Open([]byte(cp.Note))
		if err != nil {
			return err
		}
		p, err := tlog.ProveTree(n, stated.Size, mem)
		if err == nil {
			err = tlog.CheckTree(p, n, want, stated.Size, stated.Root)
		}
		kept++
		return err
	}); err != nil {
		t.Fatalf("a checkpoint is not a prefix of the tree: %v", err)
	}
	out, errOut, code := runLedger(t, map[string]string{"DATABASE_URL": dsn, "LEDGER_LOG_KEY": skey}, "audit", "verify")
	if code != 0 || !strings.HasPrefix(out, fmt.Sprintf("OK: %d leaves match", n)) {
		t.Fatalf("audit verify: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("%d events, %d checkpoints, all consistent", n, kept)
}
