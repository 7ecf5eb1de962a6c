package domain

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"strings"
)

// HashSize is the size of a chain hash (SHA-256).
const HashSize = sha256.Size

// ChainHash returns the tamper-evidence hash of e given the hash of the
// event before it in ledger order (nil or empty for the first event):
//
//	SHA-256(prev || position || len+delivery_id || len+type || len+user_id ||
//	        occurred_at µs || received_at µs || svix_timestamp ||
//	        len+svix_signature || len+body)
//
// with integers as 8-byte big-endian and strings length-prefixed, so no two
// different events encode alike. The transaction id is left out on purpose:
// a restore into a new cluster changes it (watermill issue 576) but not the
// event. Changing any stored field of e, or of any event before it, changes
// every hash from e on.
func ChainHash(prev []byte, e Event) [HashSize]byte {
	h := sha256.New()
	var p [HashSize]byte
	copy(p[:], prev)
	h.Write(p[:])
	var n [8]byte
	putInt := func(v int64) {
		binary.BigEndian.PutUint64(n[:], uint64(v))
		h.Write(n[:])
	}
	putBytes := func(b []byte) {
		putInt(int64(len(b)))
		h.Write(b)
	}
	putInt(e.Position)
	putBytes([]byte(e.DeliveryID))
	putBytes([]byte(e.Type))
	putBytes([]byte(e.UserID))
	putInt(e.OccurredAt.UnixMicro())
	putInt(e.ReceivedAt.UnixMicro())
	putInt(e.SvixTimestamp)
	putBytes([]byte(e.SvixSignature))
	putBytes(e.Body)
	var out [HashSize]byte
	h.Sum(out[:0])
	return out
}

// Digest names a point of the hash chain an auditor keeps elsewhere: the
// position of an event and the chain hash up to and including it. Its text
// form is POSITION:HEXHASH.
type Digest struct {
	Position int64
	Hash     [HashSize]byte
}

func (d Digest) String() string {
	return strconv.FormatInt(d.Position, 10) + ":" + hex.EncodeToString(d.Hash[:])
}

// ParseDigest parses POSITION:HEXHASH. It returns EINVALID when s is not one.
func ParseDigest(s string) (Digest, error) {
	pos, hash, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return Digest{}, Errorf(EINVALID, "digest %q is not POSITION:HASH", s)
	}
	var d Digest
	var err error
	if d.Position, err = strconv.ParseInt(pos, 10, 64); err != nil || d.Position <= 0 {
		return Digest{}, Errorf(EINVALID, "digest position %q is not a positive integer", pos)
	}
	b, err := hex.DecodeString(hash)
	if err != nil || len(b) != HashSize {
		return Digest{}, Errorf(EINVALID, "digest hash is not %d hex characters", 2*HashSize)
	}
	copy(d.Hash[:], b)
	return d, nil
}
