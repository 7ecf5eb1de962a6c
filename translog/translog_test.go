package translog_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// memTree is a whole tree kept in memory by the library alone
// (tlog.StoredHashes): the reference for Edge.
type memTree []tlog.Hash

func (m memTree) ReadHashes(ix []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(ix))
	for i, x := range ix {
		if x >= int64(len(m)) {
			return nil, fmt.Errorf("no hash %d", x)
		}
		out[i] = m[x]
	}
	return out, nil
}

func TestEdgeStoresWhatTlogStores(t *testing.T) {
	var mem memTree
	var e translog.Edge
	for n := int64(0); n < 300; n++ {
		data := []byte(fmt.Sprint("leaf ", n))
		want, err := tlog.StoredHashes(n, data, mem)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.Append(tlog.RecordHash(data))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("leaf %d: stored %v, tlog %v", n, got, want)
		}
		mem = append(mem, want...)
		root, _ := tlog.TreeHash(n+1, mem)
		if e.Root() != root {
			t.Fatalf("size %d: root differs", n+1)
		}
		// An edge read back from the stored hashes goes on alike.
		hs, err := mem.ReadHashes(translog.EdgeIndexes(n + 1))
		if err != nil {
			t.Fatal(err)
		}
		back, err := translog.NewEdge(n+1, hs)
		if err != nil || back.Root() != root {
			t.Fatalf("edge of %d read back: %v", n+1, err)
		}
	}
	if _, err := translog.NewEdge(5, nil); err == nil {
		t.Error("an edge of 5 with no hashes")
	}
}

func newKey(t *testing.T, name string) (*translog.Signer, *translog.Verifier) {
	t.Helper()
	skey, vkey, err := translog.GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := translog.ParseSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	if s.VerifierKey() != vkey {
		t.Fatalf("derived verifier key %s, generated %s", s.VerifierKey(), vkey)
	}
	v, err := translog.ParseVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func TestCheckpointsAreC2SPSignedNotes(t *testing.T) {
	// Many keys, so that some have '+' in their base64.
	for i := range 20 {
		s, v := newKey(t, "clerk-ledger/example.com")
		c := translog.Checkpoint{Origin: "clerk-ledger/example.com", Size: 12345, Root: tlog.RecordHash([]byte{byte(i)})}
		msg, err := s.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("clerk-ledger/example.com\n12345\n%s\n\n", base64.StdEncoding.EncodeToString(c.Root[:]))
		if !strings.HasPrefix(string(msg), want) {
			t.Fatalf("note %q", msg)
		}
		// The library's own note.Open accepts it.
		nv, _ := note.NewVerifier(s.VerifierKey())
		if _, err := note.Open(msg, note.VerifierList(nv)); err != nil {
			t.Fatalf("note.Open: %v", err)
		}
		got, err := v.Open(msg)
		if err != nil || got != c {
			t.Fatalf("open: %+v %v", got, err)
		}
		_, other := newKey(t, "clerk-ledger/example.com")
		if _, err := other.Open(msg); domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), "not signed by") {
			t.Errorf("another key: %v", err)
		}
		bad := bytes.Replace(msg, []byte("12345"), []byte("12346"), 1)
		if _, err := v.Open(bad); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("edited size: %v", err)
		}
	}
	for _, bad := range []string{"", "PRIVATE+KEY+x", "not a key"} {
		if _, err := translog.ParseSigner(bad); domain.ErrorCode(err) != domain.EINVALID || strings.Contains(err.Error(), bad) && bad != "" {
			t.Errorf("ParseSigner(%q): %v", bad, err)
		}
	}
	if _, err := translog.ParseCheckpoint([]byte("o\n-1\nAAAA\n")); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("negative size: %v", err)
	}
}

// testBundle builds a bundle of user_1's events 1, 4 and 6 in a tree of 9
// (every other leaf another user's).
func testBundle(t *testing.T, s *translog.Signer) []byte {
	t.Helper()
	var mem memTree
	var events []domain.Event
	at := time.Date(2024, 5, 28, 12, 0, 0, 1000, time.UTC)
	for i := range 9 {
		user := "user_0"
		if i == 1 || i == 4 || i == 6 {
			user = "user_1"
		}
		e := domain.Event{Position: int64(i + 1), DeliveryID: fmt.Sprint("msg_", i), Type: "user.updated", UserID: user, Source: "svix",
			OccurredAt: at.Add(time.Duration(i) * time.Second), ReceivedAt: at.Add(time.Duration(i)*time.Second + time.Millisecond),
			SvixTimestamp: at.Unix(), SvixSignature: "v1,sig" + fmt.Sprint(i), Body: []byte(fmt.Sprintf(`{"data":{"id":%q,"first_name":"Zoë <%d>"}}`, user, i))}
		hs, err := tlog.StoredHashes(int64(i), domain.LeafOf(e, nil).Encode(nil), mem)
		if err != nil {
			t.Fatal(err)
		}
		mem = append(mem, hs...)
		events = append(events, e)
	}
	root, _ := tlog.TreeHash(9, mem)
	cp, err := s.Sign(translog.Checkpoint{Origin: "clerk-ledger/test", Size: 9, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	b := translog.Bundle{Format: translog.BundleFormat, UserID: "user_1", Checkpoint: string(cp)}
	for _, i := range []int64{1, 4, 6} {
		p, err := tlog.ProveRecord(9, i, mem)
		if err != nil {
			t.Fatal(err)
		}
		b.Events = append(b.Events, translog.NewBundleEvent(i, events[i], nil, p))
	}
	out, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBundleVerifiesOfflineAndAnyByteChangeFailsIt(t *testing.T) {
	s, v := newKey(t, "clerk-ledger/test")
	data := testBundle(t, s)
	rep, err := translog.VerifyBundle(data, v)
	if err != nil || !rep.OK || len(rep.Events) != 3 || rep.Checkpoint.Size != 9 {
		t.Fatalf("intact bundle: %+v %v", rep, err)
	}
	// The library's own checker agrees, from the bundle's JSON alone.
	var b translog.Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	nv, _ := note.NewVerifier(s.VerifierKey())
	n, err := note.Open([]byte(b.Checkpoint), note.VerifierList(nv))
	if err != nil {
		t.Fatal(err)
	}
	cp, _ := translog.ParseCheckpoint([]byte(n.Text))
	for _, e := range b.Events {
		var proof tlog.RecordProof
		for _, p := range e.Proof {
			h, _ := base64.StdEncoding.DecodeString(p)
			proof = append(proof, tlog.Hash(h))
		}
		c, _ := base64.StdEncoding.DecodeString(e.BodyCommitment)
		if domain.BodyCommitment(nil, []byte(*e.Body)) != [32]byte(c) {
			t.Fatal("body commitment")
		}
		leaf := domain.Leaf{LeafFields: e.LeafFields, BodyCommitment: [32]byte(c)}
		if err := tlog.CheckRecord(proof, cp.Size, cp.Root, e.LeafIndex, tlog.RecordHash(leaf.Encode(nil))); err != nil {
			t.Fatalf("tlog.CheckRecord of leaf %d: %v", e.LeafIndex, err)
		}
	}
	// Every byte changed, to each of a few other values: each fails.
	for i := range data {
		for _, d := range []byte{1, 0x20, 0x80} {
			bad := bytes.Clone(data)
			bad[i] ^= d
			rep, err := translog.VerifyBundle(bad, v)
			if err == nil && rep.OK {
				t.Fatalf("byte %d ^ %#x (%q) still verifies", i, d, data[max(0, i-20):min(len(data), i+20)])
			}
		}
	}
	// Another key, an edited but re-encoded bundle, reordered events.
	_, other := newKey(t, "clerk-ledger/test")
	if rep, _ := translog.VerifyBundle(data, other); rep.OK || !strings.Contains(rep.Problem, "not signed by") {
		t.Errorf("another key: %+v", rep)
	}
	edit := func(f func(*translog.Bundle)) translog.BundleReport {
		var b translog.Bundle
		_ = json.Unmarshal(data, &b)
		f(&b)
		out, _ := b.Encode()
		rep, err := translog.VerifyBundle(out, v)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	for name, f := range map[string]func(*translog.Bundle){
		"body": func(b *translog.Bundle) {
			x := strings.Replace(*b.Events[1].Body, "Zoë", "Zoe", 1)
			b.Events[1].Body = &x
		},
		"user":     func(b *translog.Bundle) { b.UserID = "user_0" },
		"type":     func(b *translog.Bundle) { b.Events[0].Type = "user.created" },
		"leaf":     func(b *translog.Bundle) { b.Events[2].LeafIndex = 5 },
		"reorder":  func(b *translog.Bundle) { b.Events[0], b.Events[1] = b.Events[1], b.Events[0] },
		"repeat":   func(b *translog.Bundle) { b.Events[1] = b.Events[0] },
		"erased":   func(b *translog.Bundle) { b.Events[0].Body, b.Events[0].Erased = nil, false },
		"proof":    func(b *translog.Bundle) { b.Events[0].Proof = b.Events[0].Proof[1:] },
		"time":     func(b *translog.Bundle) { b.Events[0].OccurredAt = b.Events[0].OccurredAt.Add(time.Microsecond) },
		"format":   func(b *translog.Bundle) { b.Format = "v0" },
		"received": func(b *translog.Bundle) { b.Events[2].ReceivedAt = b.Events[2].ReceivedAt.Add(-time.Microsecond) },
	} {
		if rep := edit(f); rep.OK {
			t.Errorf("%s edited and re-encoded: still verifies", name)
		}
	}
	// An erased body (issue 14): the leaf still verifies; the body is "erased".
	rep = edit(func(b *translog.Bundle) { b.Events[0].Body, b.Events[0].Erased = nil, true })
	if !rep.OK || rep.Erased != 1 || rep.Events[0].Body != "erased" || !rep.Events[0].Included {
		t.Errorf("erased body: %+v", rep)
	}
	if _, err := translog.VerifyBundle([]byte("not json"), v); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("not JSON: %v", err)
	}
}

// BenchmarkEdgeAppend: appending a leaf's hash to the edge (the sealer's
// and the full verify's per-leaf step) allocates nothing.
func BenchmarkEdgeAppend(b *testing.B) {
	var e translog.Edge
	h := tlog.RecordHash([]byte("leaf"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Append(h); err != nil {
			b.Fatal(err)
		}
	}
}
