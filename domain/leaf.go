package domain

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// LeafPrefix opens every leaf: the encoding's name and version.
const LeafPrefix = "clerk-ledger/leaf/v1\n"

// BodyPrefix opens what BodyCommitment hashes.
const BodyPrefix = "clerk-ledger/body/v1\n"

// BodyCommitment returns the commitment a leaf makes to an event's body:
//
//	SHA-256("clerk-ledger/body/v1\n" || salt || body)
//
// body is the exact delivered bytes. salt is empty for a body kept in clear
// (an event about no user, or stored before sealing); a body sealed under
// its user's data key (userkeys) carries 32 random bytes of salt inside its
// ciphertext, so that once the key is destroyed the commitment cannot be
// linked to a guessed body.
func BodyCommitment(salt, body []byte) [HashSize]byte {
	h := sha256.New()
	h.Write([]byte(BodyPrefix))
	h.Write(salt)
	h.Write(body)
	var out [HashSize]byte
	h.Sum(out[:0])
	return out
}

// Leaf is what the Merkle tree commits to for one event: every stored field,
// the body through its commitment (so the body can later be erased and the
// leaf still checked). The transaction id is left out on purpose: a restore
// into a new cluster changes it, not the event (see ChainHash).
type Leaf struct {
	LeafFields
	BodyCommitment [HashSize]byte
}

// LeafFields are the stored fields of an event a leaf commits to as they
// are: all of the leaf but the body commitment. A proof bundle carries them
// (translog.BundleEvent) so that its leaf can be rebuilt and checked.
type LeafFields struct {
	Position      int64     `json:"position"`
	DeliveryID    string    `json:"delivery_id"`
	Type          string    `json:"type"`
	UserID        string    `json:"user_id"`
	Source        string    `json:"source"`
	OccurredAt    time.Time `json:"occurred_at"`
	ReceivedAt    time.Time `json:"received_at"`
	SvixTimestamp int64     `json:"svix_timestamp"`
	SvixSignature string    `json:"svix_signature"`
}

// LeafOf returns e's leaf with the body committed with salt (empty for a
// body kept in clear).
func LeafOf(e Event, salt []byte) Leaf {
	return Leaf{LeafFields: e.leafFields(), BodyCommitment: BodyCommitment(salt, e.Body)}
}

// Encode appends the leaf's bytes to b and returns the result:
//
//	"clerk-ledger/leaf/v1\n"
//	|| u64 position
//	|| str delivery_id || str type || str user_id || str source
//	|| i64 occurred_at (µs since the epoch) || i64 received_at (µs)
//	|| i64 svix_timestamp || str svix_signature
//	|| 32 bytes body_commitment
//
// u64 and i64 are 8 bytes big-endian (two's complement); str is a u32
// big-endian byte length followed by the bytes. Every field has a fixed size
// or a length, so no two different leaves encode alike. This is the one
// definition of the encoding: the sealer, the verifier and the offline
// bundle check all call it. Strings longer than 4 GiB cannot occur (the
// ledger's columns are far smaller); Encode panics on one rather than
// encode it ambiguously.
func (l Leaf) Encode(b []byte) []byte {
	b = append(b, LeafPrefix...)
	b = binary.BigEndian.AppendUint64(b, uint64(l.Position))
	b = appendStr(b, l.DeliveryID)
	b = appendStr(b, l.Type)
	b = appendStr(b, l.UserID)
	b = appendStr(b, l.Source)
	b = binary.BigEndian.AppendUint64(b, uint64(l.OccurredAt.UnixMicro()))
	b = binary.BigEndian.AppendUint64(b, uint64(l.ReceivedAt.UnixMicro()))
	b = binary.BigEndian.AppendUint64(b, uint64(l.SvixTimestamp))
	b = appendStr(b, l.SvixSignature)
	return append(b, l.BodyCommitment[:]...)
}

func appendStr(b []byte, s string) []byte {
	if uint64(len(s)) > 1<<32-1 {
		panic(fmt.Sprintf("domain: leaf string of %d bytes", len(s)))
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// DecodeLeaf parses an encoded leaf (Encode's output). It returns EINVALID
// when b is not exactly one leaf.
func DecodeLeaf(b []byte) (Leaf, error) {
	bad := func(what string) (Leaf, error) {
		return Leaf{}, Errorf(EINVALID, "leaf: %s", what)
	}
	if len(b) < len(LeafPrefix) || string(b[:len(LeafPrefix)]) != LeafPrefix {
		return bad("does not start with " + fmt.Sprintf("%q", LeafPrefix))
	}
	b = b[len(LeafPrefix):]
	u64 := func() (uint64, bool) {
		if len(b) < 8 {
			return 0, false
		}
		v := binary.BigEndian.Uint64(b)
		b = b[8:]
		return v, true
	}
	str := func() (string, bool) {
		if len(b) < 4 {
			return "", false
		}
		n := binary.BigEndian.Uint32(b)
		if uint64(len(b)-4) < uint64(n) {
			return "", false
		}
		s := string(b[4 : 4+n])
		b = b[4+n:]
		return s, true
	}
	var l Leaf
	var ok bool
	var v uint64
	if v, ok = u64(); !ok {
		return bad("truncated position")
	}
	l.Position = int64(v)
	for _, f := range []*string{&l.DeliveryID, &l.Type, &l.UserID, &l.Source} {
		if *f, ok = str(); !ok {
			return bad("truncated string")
		}
	}
	var occ, rec, ts uint64
	if occ, ok = u64(); !ok {
		return bad("truncated occurred_at")
	}
	if rec, ok = u64(); !ok {
		return bad("truncated received_at")
	}
	if ts, ok = u64(); !ok {
		return bad("truncated svix_timestamp")
	}
	l.OccurredAt, l.ReceivedAt, l.SvixTimestamp = time.UnixMicro(int64(occ)).UTC(), time.UnixMicro(int64(rec)).UTC(), int64(ts)
	if l.SvixSignature, ok = str(); !ok {
		return bad("truncated svix_signature")
	}
	if len(b) != HashSize {
		return bad(fmt.Sprintf("%d bytes after the signature, want the %d-byte body commitment", len(b), HashSize))
	}
	copy(l.BodyCommitment[:], b)
	return l, nil
}
