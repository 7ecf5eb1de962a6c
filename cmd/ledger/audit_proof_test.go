package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/jmoiron/sqlx"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// proofLedger is a migrated ledger with n events about users user_0..user_3,
// sealed, and its log key.
type proofLedger struct {
	env    map[string]string
	db     *sqlx.DB
	signer *translog.Signer
	vkey   string
	sealer schematest.Sealer
	n      int
	dir    string
}

const testOrigin = "clerk-ledger/proof-test"

func newProofLedger(t *testing.T, n int) *proofLedger {
	t.Helper()
	dsn := schematest.NewURL(t)
	skey, vkey, err := translog.GenerateKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	p := &proofLedger{env: map[string]string{"DATABASE_URL": dsn, "USER": "op", "LEDGER_LOG_KEY": skey}, vkey: vkey, dir: t.TempDir()}
	if _, _, err := ledger(t, p.env, "migrate"); err != nil {
		t.Fatal(err)
	}
	p.db = schematest.Open(t, dsn)
	p.signer, _ = translog.ParseSigner(skey)
	p.add(t, n)
	return p
}

// add appends and seals k more events.
func (p *proofLedger) add(t *testing.T, k int) {
	t.Helper()
	at := time.Date(2024, 5, 28, 12, 0, 0, 0, time.UTC)
	from := p.n
	schematest.CopyEvents(t, p.db, k, func(i int) domain.Delivery {
		i += from
		when := at.Add(time.Duration(i) * time.Minute)
		u := clerkgen.User{ID: fmt.Sprint("user_", i%4), Email: fmt.Sprint("u", i%4, "@example.com"), FirstName: fmt.Sprint("N", i), UpdatedAt: when}
		body, _ := clerkgen.Event("user.updated", u, when)
		return domain.Delivery{ID: fmt.Sprint("msg_", i), Timestamp: when.Unix(), Signature: "v1,x", Body: body, Type: "user.updated", UserID: u.ID, OccurredAt: when}
	})
	p.n += k
	p.sealer.SealAll(t, p.db, p.n)
}

// keep signs a checkpoint now and saves the note as an auditor would.
func (p *proofLedger) keep(t *testing.T, name string) string {
	t.Helper()
	cp := schematest.SignCheckpoint(t, p.db, p.signer, testOrigin)
	file := filepath.Join(p.dir, name)
	if err := os.WriteFile(file, []byte(cp.Note), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// wantExit1 requires `ledger args...` to exit 1 with out containing want.
func wantExit1(t *testing.T, env map[string]string, want string, args ...string) {
	t.Helper()
	out, _, err := ledger(t, env, args...)
	var ec exitCode
	if !errors.As(err, &ec) || ec != 1 || !strings.Contains(out, want) {
		t.Errorf("%v: %v %q, want exit 1 with %q", args, err, out, want)
	}
}

func TestAuditProofBundleVerifiesOffline(t *testing.T) {
	p := newProofLedger(t, 40)
	p.keep(t, "k")
	bundle := filepath.Join(p.dir, "user_1.json")
	if _, stderr, err := ledger(t, p.env, "audit", "proof", "--user", "user_1", "--out", bundle); err != nil || !strings.Contains(stderr, "10 events of user_1 in the tree of 40") {
		t.Fatalf("proof: %v %q", err, stderr)
	}
	// Offline: no DATABASE_URL at all.
	offline := map[string]string{}
	out, _, err := ledger(t, offline, "audit", "verify-proof", bundle, "--key", p.vkey)
	if err != nil || !strings.HasPrefix(out, "OK: 10 events of user_1 are in the tree of 40 leaves") {
		t.Fatalf("verify-proof: %v %q", err, out)
	}
	data, _ := os.ReadFile(bundle)
	// The library's own checker agrees with every event's proof.
	var b translog.Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	nv, _ := note.NewVerifier(p.vkey)
	n, err := note.Open([]byte(b.Checkpoint), note.VerifierList(nv))
	if err != nil {
		t.Fatal(err)
	}
	cp, _ := translog.ParseCheckpoint([]byte(n.Text))
	for _, e := range b.Events {
		st, err := schema.EventByDeliveryID(context.Background(), p.db, e.DeliveryID)
		if err != nil || *e.Body != string(st.Body) {
			t.Fatalf("event %s does not carry the stored body: %v", e.DeliveryID, err)
		}
		var proof tlog.RecordProof
		for _, s := range e.Proof {
			h, _ := base64.StdEncoding.DecodeString(s)
			proof = append(proof, tlog.Hash(h))
		}
		if err := tlog.CheckRecord(proof, cp.Size, cp.Root, e.LeafIndex, tlog.RecordHash(domain.LeafOf(st, nil).Encode(nil))); err != nil {
			t.Errorf("tlog.CheckRecord for %s: %v", e.DeliveryID, err)
		}
	}
	// A changed byte, another key, a missing key.
	bad := bytes.Replace(data, []byte(`"first_name\":\"N5\"`), []byte(`"first_name\":\"N6\"`), 1)
	if bytes.Equal(bad, data) {
		t.Fatal("the test's edit found nothing to change")
	}
	os.WriteFile(bundle+".bad", bad, 0o644)
	wantExit1(t, offline, "does not match the body commitment", "audit", "verify-proof", bundle+".bad", "--key", p.vkey)
	_, otherKey, _ := translog.GenerateKey(testOrigin)
	wantExit1(t, offline, "not signed by", "audit", "verify-proof", bundle, "--key", otherKey)
	if _, _, err := ledger(t, offline, "audit", "verify-proof", bundle); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("no --key: %v", err)
	}
	// One event's inclusion proof.
	out, _, err = ledger(t, p.env, "audit", "proof", "--position", "7")
	var ip audit.InclusionProof
	if err != nil || json.Unmarshal([]byte(out), &ip) != nil || ip.LeafIndex != 6 || ip.TreeSize != 40 {
		t.Fatalf("proof --position: %v %s", err, out)
	}
	leaf, _ := base64.StdEncoding.DecodeString(ip.Leaf)
	var proof tlog.RecordProof
	for _, s := range ip.Proof {
		h, _ := base64.StdEncoding.DecodeString(s)
		proof = append(proof, tlog.Hash(h))
	}
	if err := tlog.CheckRecord(proof, 40, cp.Root, 6, tlog.RecordHash(leaf)); err != nil {
		t.Errorf("inclusion proof of position 7: %v", err)
	}
	// Each is recorded.
	list, _ := schema.ListAccess(context.Background(), p.db, 0, 10)
	if len(list) != 2 || list[0].Action != schema.ActionProof || list[1].Action != schema.ActionUserProof || list[1].RowCount != 10 || list[1].Filters["user_id"] != "user_1" {
		t.Errorf("access log: %+v", list)
	}
}

func TestAuditVerifyCheckpointProvesConsistency(t *testing.T) {
	t.Run("extended", func(t *testing.T) {
		p := newProofLedger(t, 30)
		kept := p.keep(t, "k30")
		p.add(t, 25)
		p.keep(t, "k55")
		out, _, err := ledger(t, p.env, "audit", "verify", "--checkpoint", kept)
		if err != nil || !strings.Contains(out, "OK: the log today (checkpoint of tree size 55") || !strings.Contains(out, "extends the kept checkpoint of tree size 30") {
			t.Fatalf("verify --checkpoint: %v %q", err, out)
		}
		// With the key given as --key only (no LEDGER_LOG_KEY).
		env := map[string]string{"DATABASE_URL": p.env["DATABASE_URL"]}
		if out, _, err := ledger(t, env, "audit", "verify", "--checkpoint", kept, "--key", p.vkey); err != nil || !strings.HasPrefix(out, "OK") {
			t.Errorf("with --key: %v %q", err, out)
		}
		v, err := schema.LastVerification(context.Background(), p.db)
		if err != nil || v.Kind != schema.KindConsistency || !v.OK || v.TreeSize != 30 || v.Checked != 55 {
			t.Errorf("recorded: %+v %v", v, err)
		}
	})
	t.Run("history rewritten and re-signed with the real key", func(t *testing.T) {
		p := newProofLedger(t, 30)
		kept := p.keep(t, "k30")
		p.add(t, 5)
		// The operator edits an event, rebuilds the whole tree and signs it.
		schematest.Tamper(t, p.db, `UPDATE events SET body = replace(body, 'u1@example.com', 'evil@example.com') WHERE position = 6`)
		schematest.Tamper(t, p.db, `DELETE FROM log_leaves`)
		schematest.Tamper(t, p.db, `DELETE FROM log_checkpoints`)
		var s schematest.Sealer
		s.SealAll(t, p.db, 35)
		p.keep(t, "forged35")
		wantExit1(t, p.env, "the ledger before it was rewritten", "audit", "verify", "--checkpoint", kept)
		// The full re-read agrees with the new, self-consistent tree: only the kept checkpoint catches it.
		if out, _, err := ledger(t, p.env, "audit", "verify"); err != nil || !strings.HasPrefix(out, "OK") {
			t.Errorf("full verify of the rewritten ledger: %v %q", err, out)
		}
	})
	t.Run("a checkpoint that does not extend the kept one", func(t *testing.T) {
		p := newProofLedger(t, 30)
		kept := p.keep(t, "k30")
		p.add(t, 5)
		// A latest checkpoint signed over another tree of 35 (the stored hashes untouched).
		other := tlog.RecordHash([]byte("another history"))
		n, _ := p.signer.Sign(translog.Checkpoint{Origin: testOrigin, Size: 35, Root: other})
		if _, err := schema.AddCheckpoint(context.Background(), p.db, schema.LogCheckpoint{Size: 35, Root: other, Note: string(n)}); err != nil {
			t.Fatal(err)
		}
		wantExit1(t, p.env, "the tree's table was changed", "audit", "verify", "--checkpoint", kept)
		wantExit1(t, p.env, "another root than the tree recomputed", "audit", "verify")
	})
	t.Run("the tree's hashes rewritten to fit a forged checkpoint", func(t *testing.T) {
		p := newProofLedger(t, 8)
		kept := p.keep(t, "k8")
		// Change the stored hash over leaves 0..7 (the tree of 8's root).
		// (the level-3 hash, the last of leaf 7's four)
		schematest.Tamper(t, p.db, `UPDATE log_leaves SET hashes = overlay(hashes PLACING sha256(hashes) FROM 97 FOR 32) WHERE leaf = 7`)
		wantExit1(t, p.env, "the tree's table was changed", "audit", "verify", "--checkpoint", kept)
		wantExit1(t, p.env, "the tree's table was changed", "audit", "verify")
	})
	t.Run("forged checkpoints with another key", func(t *testing.T) {
		p := newProofLedger(t, 10)
		kept := p.keep(t, "k10")
		otherSkey, _, _ := translog.GenerateKey(testOrigin)
		other, _ := translog.ParseSigner(otherSkey)
		// A kept checkpoint signed by another key.
		head, _ := schema.ReadTreeHead(context.Background(), p.db)
		forged, _ := other.Sign(translog.Checkpoint{Origin: testOrigin, Size: head.Size, Root: head.Root})
		os.WriteFile(filepath.Join(p.dir, "forged"), forged, 0o644)
		wantExit1(t, p.env, "the kept checkpoint: checkpoint is not signed by the key", "audit", "verify", "--checkpoint", filepath.Join(p.dir, "forged"))
		// The ledger's latest checkpoint signed by another key.
		p.add(t, 2)
		schematest.SignCheckpoint(t, p.db, other, testOrigin)
		wantExit1(t, p.env, "latest checkpoint (tree size 12): checkpoint is not signed by the key", "audit", "verify", "--checkpoint", kept)
		wantExit1(t, p.env, "not signed by the key", "audit", "verify")
	})
	t.Run("leaves removed", func(t *testing.T) {
		p := newProofLedger(t, 20)
		kept := p.keep(t, "k20")
		schematest.Tamper(t, p.db, `DELETE FROM log_checkpoints`)
		schematest.Tamper(t, p.db, `DELETE FROM log_leaves WHERE leaf >= 15`)
		p.keep(t, "k15")
		wantExit1(t, p.env, "smaller than the kept one", "audit", "verify", "--checkpoint", kept)
	})
	t.Run("no key", func(t *testing.T) {
		p := newProofLedger(t, 3)
		kept := p.keep(t, "k3")
		env := map[string]string{"DATABASE_URL": p.env["DATABASE_URL"]}
		if _, _, err := ledger(t, env, "audit", "verify", "--checkpoint", kept); domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), "verifier key") {
			t.Errorf("no key: %v", err)
		}
	})
}
