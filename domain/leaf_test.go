package domain_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// TestLeafEncodingByteForByte pins the leaf encoding the README documents:
// a change to it (which would invalidate every stored tree) fails here.
func TestLeafEncodingByteForByte(t *testing.T) {
	e := domain.Event{Position: 258, DeliveryID: "msg_1", Type: "user.created", UserID: "user_9", Source: "svix",
		OccurredAt: time.UnixMicro(1716883200000001), ReceivedAt: time.UnixMicro(1716883200500000),
		SvixTimestamp: 1716883200, SvixSignature: "v1,abc", Body: []byte(`{"a":1}`)}
	l := domain.LeafOf(e, nil)
	var want []byte
	want = append(want, "clerk-ledger/leaf/v1\n"...)
	want = append(want, 0, 0, 0, 0, 0, 0, 1, 2)
	for _, s := range []string{"msg_1", "user.created", "user_9", "svix"} {
		want = append(want, 0, 0, 0, byte(len(s)))
		want = append(want, s...)
	}
	want = append(want, mustHex(t, "0006197f0541c001")...) // 1716883200000001 µs
	want = append(want, mustHex(t, "0006197f05496120")...) // 1716883200500000 µs
	want = append(want, mustHex(t, "0000000066558f00")...) // 1716883200
	want = append(want, 0, 0, 0, 6)
	want = append(want, "v1,abc"...)
	c := sha256.Sum256([]byte("clerk-ledger/body/v1\n" + `{"a":1}`))
	want = append(want, c[:]...)
	got := l.Encode(nil)
	if !bytes.Equal(got, want) {
		t.Fatalf("leaf\n got %x\nwant %x", got, want)
	}
	if l.BodyCommitment != domain.BodyCommitment([]byte{}, e.Body) {
		t.Error("nil and empty salt differ")
	}
	salted := domain.BodyCommitment(bytes.Repeat([]byte{7}, 32), e.Body)
	if salted == l.BodyCommitment {
		t.Error("salt not covered")
	}
	back, err := domain.DecodeLeaf(got)
	if err != nil || !bytes.Equal(back.Encode(nil), got) || back.UserID != "user_9" || back.Position != 258 {
		t.Fatalf("decode: %+v %v", back, err)
	}
	// Every field is covered: change each and the encoding changes.
	for name, f := range map[string]func(*domain.Event){
		"position": func(e *domain.Event) { e.Position++ }, "delivery": func(e *domain.Event) { e.DeliveryID += "x" },
		"type": func(e *domain.Event) { e.Type = "user.updated" }, "user": func(e *domain.Event) { e.UserID = "" },
		"source":   func(e *domain.Event) { e.Source = "clerk_api" },
		"occurred": func(e *domain.Event) { e.OccurredAt = e.OccurredAt.Add(time.Microsecond) },
		"received": func(e *domain.Event) { e.ReceivedAt = e.ReceivedAt.Add(time.Microsecond) },
		"svix_ts":  func(e *domain.Event) { e.SvixTimestamp++ }, "svix_sig": func(e *domain.Event) { e.SvixSignature = "v1,abd" },
		"body": func(e *domain.Event) { e.Body = []byte(`{"a":2}`) },
	} {
		e2 := e
		f(&e2)
		if bytes.Equal(domain.LeafOf(e2, nil).Encode(nil), got) {
			t.Errorf("%s is not covered by the leaf", name)
		}
	}
	// Moving a byte between adjacent strings changes the encoding.
	a := domain.LeafOf(domain.Event{DeliveryID: "ab", Type: "c"}, nil).Encode(nil)
	b := domain.LeafOf(domain.Event{DeliveryID: "a", Type: "bc"}, nil).Encode(nil)
	if bytes.Equal(a, b) {
		t.Error("string boundaries are ambiguous")
	}
	for _, bad := range [][]byte{nil, got[:len(got)-1], append(bytes.Clone(got), 0), []byte("clerk-ledger/leaf/v2\n")} {
		if _, err := domain.DecodeLeaf(bad); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("DecodeLeaf(%x): %v", bad, err)
		}
	}
}

func mustHex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
