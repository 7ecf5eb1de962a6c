package domain

import (
	"bytes"
	"encoding/base64"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits on what one delivery may carry into the ledger. Each keeps a value
// well inside what PostgreSQL stores and indexes (a btree entry holds at most
// ~2.7 kB) and far above anything Clerk or Svix sends.
const (
	MaxDeliveryIDBytes      = 200  // svix-id (Svix sends msg_ + 27 characters)
	MaxSignatureHeaderBytes = 2048 // svix-signature, the whole list
	MaxSignatureEntries     = 10   // entries in svix-signature (2 during a secret rotation)
	MaxTypeBytes            = 200  // envelope "type"
	MaxUserIDBytes          = 256  // the subject user id (Clerk's are user_ + 27 characters)
)

// Bounds of a stored occurred_at: the Unix epoch to the end of year 9999 (the
// last instant RFC 3339 writes with a four-digit year).
var (
	minOccurredAt = time.Unix(0, 0).UTC()
	maxOccurredAt = time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC)
)

// MaxEnvelopeTimestamp is the largest envelope "timestamp" accepted: the last
// millisecond of year 9999.
var MaxEnvelopeTimestamp = maxOccurredAt.UnixMilli()

// checkText returns EINVALID naming field when s is not text PostgreSQL stores
// and an operator can read: valid UTF-8, no control characters (NUL, newlines,
// escapes), at most max bytes.
func checkText(field, s string, max int) error {
	if len(s) > max {
		return Errorf(EINVALID, "%s is longer than %d bytes", field, max)
	}
	if !utf8.ValidString(s) {
		return Errorf(EINVALID, "%s is not UTF-8 text", field)
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return Errorf(EINVALID, "%s contains a control character", field)
	}
	return nil
}

// CheckDeliveryID returns EINVALID naming svix-id unless id is 1 to
// MaxDeliveryIDBytes bytes of UTF-8 text without control characters.
func CheckDeliveryID(id string) error {
	if id == "" {
		return Errorf(EINVALID, "svix-id is empty")
	}
	return checkText("svix-id", id, MaxDeliveryIDBytes)
}

// SignatureEntry is one "version,signature" entry of an svix-signature header.
type SignatureEntry struct {
	Version string // "v1" (HMAC-SHA256); others (e.g. "v1a") are kept but not checked
	Value   string // base64
}

// ParseSignatureHeader reads an svix-signature header as Svix writes it: a
// space-separated list of 1 to MaxSignatureEntries entries "v1,<base64 of
// the 32-byte HMAC-SHA256>" (other versions: "v<digits><letters>,<base64>",
// up to 128 characters), at most MaxSignatureHeaderBytes in all. Empty
// entries (doubled spaces) are skipped, as Svix's own verifier does. It
// returns EINVALID naming the entry that is malformed.
func ParseSignatureHeader(h string) ([]SignatureEntry, error) {
	if len(h) > MaxSignatureHeaderBytes {
		return nil, Errorf(EINVALID, "svix-signature is longer than %d bytes", MaxSignatureHeaderBytes)
	}
	var out []SignatureEntry
	n := 0
	for _, f := range strings.Split(h, " ") {
		if f == "" {
			continue
		}
		n++
		if n > MaxSignatureEntries {
			return nil, Errorf(EINVALID, "svix-signature has more than %d entries", MaxSignatureEntries)
		}
		version, value, ok := strings.Cut(f, ",")
		if !ok || !validSignatureVersion(version) {
			return nil, Errorf(EINVALID, `svix-signature entry %d is not "<version>,<base64 signature>"`, n)
		}
		if version == "v1" {
			if len(value) != base64.StdEncoding.EncodedLen(32) {
				return nil, Errorf(EINVALID, "svix-signature entry %d: a v1 signature is %d base64 characters", n, base64.StdEncoding.EncodedLen(32))
			}
			if b, err := base64.StdEncoding.DecodeString(value); err != nil || len(b) != 32 {
				return nil, Errorf(EINVALID, "svix-signature entry %d: a v1 signature is base64 of 32 bytes", n)
			}
		} else if len(value) == 0 || len(value) > 128 || strings.Trim(value, base64Alphabet) != "" {
			return nil, Errorf(EINVALID, "svix-signature entry %d (%s) is not 1 to 128 base64 characters", n, version)
		}
		out = append(out, SignatureEntry{Version: version, Value: value})
	}
	if n == 0 {
		return nil, Errorf(EINVALID, "svix-signature has no entry")
	}
	return out, nil
}

const base64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="

// validSignatureVersion: "v", then digits, then lowercase letters; at most 8.
func validSignatureVersion(v string) bool {
	if len(v) < 2 || len(v) > 8 || v[0] != 'v' {
		return false
	}
	i := 1
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		i++
	}
	if i == 1 {
		return false
	}
	for ; i < len(v); i++ {
		if v[i] < 'a' || v[i] > 'z' {
			return false
		}
	}
	return true
}

// secondsBelow: an envelope timestamp below 10^11 is read as seconds. As
// milliseconds it would be before 1973-03-04, years before Clerk existed; as
// seconds it spans 1970 to the year 5138. Clerk documents milliseconds, but
// its published example payloads (webhook OpenAPI spec, and so possibly the
// dashboard's "Send example") carry seconds, e.g. 1716883200.
const secondsBelow = 100_000_000_000

// maxAheadOfSvix is how far after its svix-timestamp an event may claim to
// have happened (clocks of Clerk and Svix that disagree).
const maxAheadOfSvix = 24 * time.Hour

// OccurredAt returns when a delivered event happened, from its envelope
// "timestamp" (documented as Unix milliseconds) and its svix-timestamp
// (Unix seconds at which Svix signed this attempt; <= 0 when unknown):
//
//   - an envelope timestamp <= 0 (absent): the svix-timestamp;
//   - below 10^11: seconds, so multiplied by 1000; otherwise milliseconds;
//   - more than 24 h after the svix-timestamp: the svix-timestamp (an event
//     cannot happen after its delivery was signed);
//   - any earlier time is kept, however old: a replay or a recovery from the
//     Clerk dashboard is signed days after the event.
//
// It returns the zero Time when neither timestamp is usable.
func OccurredAt(envelopeTimestamp, svixTimestamp int64) time.Time {
	ms := envelopeTimestamp
	if ms > 0 && ms < secondsBelow {
		ms *= 1000
	}
	switch {
	case ms > 0 && (svixTimestamp <= 0 || ms <= time.Unix(svixTimestamp, 0).Add(maxAheadOfSvix).UnixMilli()):
		return time.UnixMilli(ms).UTC()
	case svixTimestamp > 0:
		return time.Unix(svixTimestamp, 0).UTC()
	}
	return time.Time{}
}

// AppendResult says what appending a delivery to the ledger did.
type AppendResult int

const (
	// AppendStored: the delivery is new and now stored.
	AppendStored AppendResult = iota + 1
	// AppendDuplicate: a delivery with this id is already stored, with the
	// same body (a redelivery).
	AppendDuplicate
	// AppendConflict: a delivery with this id is already stored with another
	// body. The stored body stays; nothing else is stored.
	AppendConflict
)

func (r AppendResult) String() string {
	switch r {
	case AppendStored:
		return "stored"
	case AppendDuplicate:
		return "duplicate"
	case AppendConflict:
		return "conflict"
	}
	return "unknown"
}

// Check returns an EINVALID error naming the field when d cannot be stored as
// it is: an svix-id that fails CheckDeliveryID; a signature header, type or
// user id that is not UTF-8 text without control characters within its
// limit; an empty type; a body over MaxBodyBytes, not UTF-8 or with a NUL
// byte; an occurred_at outside 1970..9999; a negative svix-timestamp. Every
// Delivery made by NewDelivery passes.
func (d Delivery) Check() error {
	if err := CheckDeliveryID(d.ID); err != nil {
		return err
	}
	if err := checkText("svix-signature", d.Signature, MaxSignatureHeaderBytes); err != nil {
		return err
	}
	if strings.TrimSpace(d.Type) == "" {
		return Errorf(EINVALID, `envelope has no "type"`)
	}
	if err := checkText(`envelope "type"`, d.Type, MaxTypeBytes); err != nil {
		return err
	}
	if err := checkText("user id", d.UserID, MaxUserIDBytes); err != nil {
		return err
	}
	if len(d.Body) > MaxBodyBytes {
		return Errorf(ETOOLARGE, "body is larger than %d bytes", MaxBodyBytes)
	}
	if !utf8.Valid(d.Body) {
		return Errorf(EINVALID, "body is not UTF-8 text")
	}
	if bytes.IndexByte(d.Body, 0) >= 0 {
		return Errorf(EINVALID, "body contains a NUL byte")
	}
	if d.OccurredAt.Before(minOccurredAt) || d.OccurredAt.After(maxOccurredAt) {
		return Errorf(EINVALID, "occurred_at %s is outside 1970..9999", d.OccurredAt.UTC().Format("2006-01-02"))
	}
	if d.Timestamp < 0 {
		return Errorf(EINVALID, "svix-timestamp is negative")
	}
	if d.Source != "" && d.Source != SourceSvix && d.Source != SourceClerkAPI {
		return Errorf(EINVALID, "source %q is not %s or %s", d.Source, SourceSvix, SourceClerkAPI)
	}
	return nil
}
