package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"golang.org/x/mod/sumdb/tlog"
)

// TestAuditCosignWitnessesTheLog: ledger audit cosign cosigns the first
// checkpoint it sees, then each later one only when the consistency proof
// from the last cosigned one checks; a forked checkpoint (signed with the
// log's real key over another history) is refused and the state kept.
func TestAuditCosignWitnessesTheLog(t *testing.T) {
	p := newProofLedger(t, 10)
	out, _, err := ledger(t, p.env, "audit", "cosign", "--new", "witness.example.com/w1")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 2 {
		t.Fatalf("cosign --new: %v %q", err, out)
	}
	keyFile := filepath.Join(p.dir, "witness.key")
	if err := os.WriteFile(keyFile, []byte(lines[0]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wv, err := translog.ParseCosignatureVerifier(lines[1])
	if err != nil {
		t.Fatal(err)
	}
	logKey, _ := translog.ParseVerifier(p.vkey)
	state, cosigned := filepath.Join(p.dir, "witnessed"), filepath.Join(p.dir, "cosigned")
	// Only the log's verifier key, as a witness has it: no LEDGER_LOG_KEY.
	env := map[string]string{"DATABASE_URL": p.env["DATABASE_URL"], "USER": "witness"}
	cosign := []string{"audit", "cosign", "--witness-key", keyFile, "--key", p.vkey, "--state", state, "--out", cosigned}
	check := func(size int64) []byte {
		t.Helper()
		b, err := os.ReadFile(cosigned)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := wv.Cosigned(b); err != nil {
			t.Fatalf("cosignature: %v\n%s", err, b)
		}
		if c, err := logKey.Open(b); err != nil || c.Size != size {
			t.Fatalf("log signature: %+v %v", c, err)
		}
		if s, _ := os.ReadFile(state); !bytes.Equal(s, b) {
			t.Fatal("the state is not the cosigned checkpoint")
		}
		return b
	}

	p.keep(t, "k10")
	if _, stderr, err := ledger(t, env, cosign...); err != nil || !strings.Contains(stderr, "cosigned the tree of 10") || !strings.Contains(stderr, "the first") {
		t.Fatalf("first cosign: %v %q", err, stderr)
	}
	check(10)
	p.add(t, 15)
	p.keep(t, "k25")
	if _, stderr, err := ledger(t, env, cosign...); err != nil || !strings.Contains(stderr, "cosigned the tree of 25") || !strings.Contains(stderr, "extends the last cosigned, of 10") {
		t.Fatalf("second cosign: %v %q", err, stderr)
	}
	check(25)
	// Nothing new: the same checkpoint is cosigned again.
	if _, _, err := ledger(t, env, cosign...); err != nil {
		t.Fatalf("cosign of the same tree: %v", err)
	}
	good := check(25)
	// An auditor's consistency check takes the cosigned checkpoint as a kept one.
	if out, _, err := ledger(t, p.env, "audit", "verify", "--checkpoint", cosigned); err != nil || !strings.HasPrefix(out, "OK") {
		t.Errorf("verify --checkpoint of the cosigned note: %v %q", err, out)
	}

	// The operator forks: a checkpoint of 30 over another history, signed with the real key.
	p.add(t, 5)
	other := tlog.RecordHash([]byte("another history"))
	n, _ := p.signer.Sign(translog.Checkpoint{Origin: testOrigin, Size: 30, Root: other})
	if _, err := schema.AddCheckpoint(context.Background(), p.db, schema.LogCheckpoint{Size: 30, Root: other, Note: string(n)}); err != nil {
		t.Fatal(err)
	}
	wantExit1(t, env, "does not check: the log forked or rewrote history", cosign...)
	if s, _ := os.ReadFile(state); !bytes.Equal(s, good) {
		t.Error("a refused checkpoint changed the state")
	}
	// Bad inputs are refused with a clear message.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"audit", "cosign", "--state", state}, "--witness-key and --state are required"},
		{[]string{"audit", "cosign", "--witness-key", p.vkey, "--key", p.vkey, "--state", state}, "witness key"},
		{[]string{"audit", "cosign", "--witness-key", keyFile, "--state", state}, "no verifier key"},
		{[]string{"audit", "cosign", "--witness-key", keyFile, "--key", p.vkey, "--state", keyFile}, "--state does not hold a checkpoint signed by the log"},
	} {
		if _, _, err := ledger(t, env, c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
}
