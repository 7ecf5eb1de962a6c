package translog_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"golang.org/x/mod/sumdb/tlog"
)

// checkCosignatureBySpec checks the last signature line of msg as C2SP
// tlog-cosignature v1 states it, written out here from the spec and not
// from translog's code: the key ID, the timestamped signature, the signed
// message. It returns the timestamp.
func checkCosignatureBySpec(t *testing.T, msg []byte, name string, pub ed25519.PublicKey) uint64 {
	t.Helper()
	i := bytes.LastIndex(msg, []byte("\n\n"))
	body := msg[:i+1]
	lines := strings.Split(strings.TrimSuffix(string(msg[i+2:]), "\n"), "\n")
	last := strings.Fields(lines[len(lines)-1])
	if len(last) != 3 || last[0] != "—" || last[1] != name {
		t.Fatalf("last signature line %q is not the witness's", lines[len(lines)-1])
	}
	raw, err := base64.StdEncoding.DecodeString(last[2])
	if err != nil || len(raw) != 4+8+64 {
		t.Fatalf("cosignature of %d bytes: %v", len(raw), err)
	}
	id := sha256.Sum256(append(append([]byte(name+"\n"), 0x04), pub...))
	if !bytes.Equal(raw[:4], id[:4]) {
		t.Fatalf("key ID %x, the spec's %x", raw[:4], id[:4])
	}
	ts := binary.BigEndian.Uint64(raw[4:12])
	signed := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", ts)), body...)
	if !ed25519.Verify(pub, signed, raw[12:]) {
		t.Fatal("the cosignature does not verify as the spec says")
	}
	return ts
}

func TestCosignAddsATlogCosignatureV1(t *testing.T) {
	signer, logKey := newKey(t, "clerk-ledger/test")
	wskey, wvkey, err := translog.GenerateWitnessKey("witness.example.com/w1")
	if err != nil {
		t.Fatal(err)
	}
	w, err := translog.ParseCosigner(wskey)
	if err != nil {
		t.Fatal(err)
	}
	if w.VerifierKey() != wvkey {
		t.Fatalf("verifier key %q, generated %q", w.VerifierKey(), wvkey)
	}
	wv, err := translog.ParseCosignatureVerifier(wvkey)
	if err != nil {
		t.Fatal(err)
	}
	cp := translog.Checkpoint{Origin: "clerk-ledger/test", Size: 20852163, Root: tlog.RecordHash([]byte("root"))}
	msg, _ := signer.Sign(cp)
	before := time.Now().Unix()
	cosigned, err := translog.Cosign(msg, logKey, w)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(cosigned, msg) || bytes.Count(cosigned, []byte("\n— ")) != 2 {
		t.Fatalf("cosigned note:\n%s", cosigned)
	}
	// The witness's public key, as the spec's vkey: 0x04 || key.
	raw, _ := base64.StdEncoding.DecodeString(strings.SplitN(wvkey, "+", 3)[2]) // base64 may hold a +
	ts := checkCosignatureBySpec(t, cosigned, "witness.example.com/w1", ed25519.PublicKey(raw[1:]))
	if int64(ts) < before || int64(ts) > time.Now().Unix() {
		t.Errorf("timestamp %d is not now", ts)
	}
	if at, err := wv.Cosigned(cosigned); err != nil || at.Unix() != int64(ts) {
		t.Errorf("Cosigned: %v %v", at, err)
	}
	// The log's own check still passes with the witness's line added.
	if got, err := logKey.Open(cosigned); err != nil || got != cp {
		t.Errorf("log key on the cosigned note: %+v %v", got, err)
	}
	// A second witness keeps the first's line; cosigning again replaces one's own.
	w2skey, w2vkey, _ := translog.GenerateWitnessKey("witness.example.org")
	w2, _ := translog.ParseCosigner(w2skey)
	both, err := translog.Cosign(cosigned, logKey, w2)
	if err != nil || bytes.Count(both, []byte("\n— ")) != 3 {
		t.Fatalf("second witness: %v\n%s", err, both)
	}
	w2v, _ := translog.ParseCosignatureVerifier(w2vkey)
	if _, err := wv.Cosigned(both); err != nil {
		t.Errorf("first witness lost: %v", err)
	}
	if _, err := w2v.Cosigned(both); err != nil {
		t.Errorf("second witness: %v", err)
	}
	again, err := translog.Cosign(both, logKey, w)
	if err != nil || bytes.Count(again, []byte("\n— ")) != 3 {
		t.Fatalf("cosigning again: %v\n%s", err, again)
	}
	// Tampering: the body, the cosignature, another witness key, the log's key.
	if _, err := wv.Cosigned(bytes.Replace(cosigned, []byte("20852163"), []byte("20852164"), 1)); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("changed body: %v", err)
	}
	i := bytes.LastIndex(cosigned, []byte(" ")) + 20
	flipped := bytes.Clone(cosigned)
	flipped[i] ^= 'A' ^ 'B'
	if _, err := wv.Cosigned(flipped); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("changed cosignature: %v", err)
	}
	if _, err := w2v.Cosigned(cosigned); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("another witness's key: %v", err)
	}
	otherSkey, _, _ := translog.GenerateKey("clerk-ledger/test")
	other, _ := translog.ParseSigner(otherSkey)
	forged, _ := other.Sign(cp)
	if _, err := translog.Cosign(forged, logKey, w); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("a checkpoint not signed by the log: %v", err)
	}
	for _, bad := range []string{"", "PRIVATE+KEY+w+00000000+AAAA", otherSkey, strings.Replace(wskey, "PRIVATE+KEY+witness.example.com/w1", "PRIVATE+KEY+witness.example.com/w2", 1)} {
		if _, err := translog.ParseCosigner(bad); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("ParseCosigner(%.30q): %v", bad, err)
		}
	}
	if _, err := translog.ParseCosignatureVerifier(signer.VerifierKey()); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("the log's (alg 1) key as a witness key: %v", err)
	}
}

func TestCheckExtends(t *testing.T) {
	var mem memTree
	for n := int64(0); n < 40; n++ {
		hs, err := tlog.StoredHashes(n, []byte(fmt.Sprint("leaf ", n)), mem)
		if err != nil {
			t.Fatal(err)
		}
		mem = append(mem, hs...)
	}
	head := func(n int64) translog.Checkpoint {
		r, err := tlog.TreeHash(n, mem)
		if err != nil {
			t.Fatal(err)
		}
		return translog.Checkpoint{Origin: "log", Size: n, Root: r}
	}
	prove := func(from, to int64) tlog.TreeProof {
		p, err := tlog.ProveTree(to, from, mem)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range [][2]int64{{0, 5}, {1, 40}, {7, 8}, {16, 33}, {40, 40}} {
		var p tlog.TreeProof
		if c[0] > 0 && c[0] < c[1] {
			p = prove(c[0], c[1])
		}
		if err := translog.CheckExtends(head(c[0]), head(c[1]), p); err != nil {
			t.Errorf("%d -> %d: %v", c[0], c[1], err)
		}
	}
	forked := head(20)
	forked.Root = tlog.RecordHash([]byte("another history"))
	other := head(20)
	other.Origin = "another log"
	for name, c := range map[string]struct {
		old, cur translog.Checkpoint
		proof    tlog.TreeProof
		want     string
	}{
		"rollback":              {head(30), head(20), nil, "rolled back"},
		"fork at the same size": {head(20), forked, nil, "forked"},
		"another log":           {head(10), other, nil, "another log"},
		"proof to a fork":       {head(10), forked, prove(10, 20), "does not check"},
		"proof from a fork":     {forked, head(30), prove(20, 30), "does not check"},
		"no proof":              {head(10), head(20), nil, "does not check"},
	} {
		if err := translog.CheckExtends(c.old, c.cur, c.proof); domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}
