package audit_test

import (
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"golang.org/x/mod/sumdb/tlog"
)

// Every event's inclusion proof (Service.Proof, what GET
// /api/audit/events/{position}/proof serves) verifies against the signed
// checkpoint: sealed ones (about a user), clear ones (an organization's)
// and, after the erasure, the erased user's, with the same leaf bytes as
// before; and Verify (ledger audit verify) says OK after the erasure.
func TestInclusionProofsOfSealedAndErasedEventsVerify(t *testing.T) {
	l := newEraseLedger(t)
	l.history()
	cp := schematest.SignCheckpoint(t, l.db, l.signer, "clerk-ledger/erase-test")
	var kinds []struct {
		Position int64
		Sealed   bool
		Ada      bool
	}
	if err := l.db.Select(&kinds, `SELECT position AS "position", body_sealed IS NOT NULL AS "sealed", user_id IS NOT DISTINCT FROM 'user_ada' AS "ada" FROM events ORDER BY position`); err != nil {
		t.Fatal(err)
	}
	var sealed, clear, ada int
	for _, k := range kinds {
		switch {
		case k.Ada:
			ada++
			fallthrough
		case k.Sealed:
			sealed++
		default:
			clear++
		}
	}
	if int64(len(kinds)) != cp.Size || sealed == 0 || clear == 0 || ada == 0 {
		t.Fatalf("%d events (%d sealed, %d clear, %d of Ada's) in a tree of %d", len(kinds), sealed, clear, ada, cp.Size)
	}
	prove := func(pos int64) []byte {
		t.Helper()
		p, err := l.svc.Proof(l.ctx, auditor, pos, 0)
		if err != nil {
			t.Fatalf("proof of %d: %v", pos, err)
		}
		leaf, _ := base64.StdEncoding.DecodeString(p.Leaf)
		var proof tlog.RecordProof
		for _, s := range p.Proof {
			h, _ := base64.StdEncoding.DecodeString(s)
			proof = append(proof, tlog.Hash(h))
		}
		if h := tlog.RecordHash(leaf); base64.StdEncoding.EncodeToString(h[:]) != p.LeafHash {
			t.Errorf("event %d: leaf_hash is not the hash of leaf", pos)
		}
		if err := tlog.CheckRecord(proof, cp.Size, cp.Root, p.LeafIndex, tlog.RecordHash(leaf)); err != nil || p.TreeSize != cp.Size {
			t.Errorf("the inclusion proof of event %d does not verify: %v", pos, err)
		}
		return leaf
	}
	before := map[int64][]byte{}
	for _, k := range kinds {
		before[k.Position] = prove(k.Position)
	}
	if _, err := l.svc.Erase(l.ctx, auditor, audit.EraseInput{UserID: "user_ada", Reason: "T-3"}); err != nil {
		t.Fatal(err)
	}
	l.catchUp()
	for _, k := range kinds {
		if after := prove(k.Position); !bytes.Equal(after, before[k.Position]) {
			t.Errorf("event %d's leaf changed with the erasure", k.Position)
		}
	}
	rep, err := l.svc.Verify(l.ctx, auditor, audit.VerifyOptions{})
	if err != nil || !rep.OK || rep.Tree.Checkpoints != 1 {
		t.Fatalf("verify after the erasure: %s %v", rep.Message(), err)
	}
}
