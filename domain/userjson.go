package domain

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// userEnvelope is what the fold reads from a user event's body.
type userEnvelope struct {
	Timestamp int64    `json:"timestamp"`
	Data      userData `json:"data"`
}

// decodeUserEnvelope decodes a user event's body exactly as json.Unmarshal
// into userEnvelope would: same result, and an error exactly when
// json.Unmarshal returns one.
//
// Most bodies take a single-pass scanner that validates the whole document
// and extracts only the fields the fold reads (rebuilds fold millions of
// events; json.Unmarshal validates, then decodes by reflection). Anything the
// scanner is not sure to decode identically — escapes in a field it keeps, a
// key differing only in case, an unexpected type, a malformed document — goes
// to json.Unmarshal, which then defines the result. FuzzDecodeUserEnvelope
// checks the two agree.
func decodeUserEnvelope(body []byte) (userEnvelope, error) {
	if env, ok := scanUserEnvelope(body); ok {
		return env, nil
	}
	var env userEnvelope
	err := json.Unmarshal(body, &env)
	return env, err
}

// maxScanDepth bounds the scanner's nesting; deeper documents go to
// encoding/json.
const maxScanDepth = 64

type scanner struct {
	b   []byte
	i   int
	bad bool // give up: let encoding/json decide
}

// scanUserEnvelope is the fast path of decodeUserEnvelope; ok is false when
// it could not be sure.
func scanUserEnvelope(b []byte) (env userEnvelope, ok bool) {
	s := &scanner{b: b}
	var seen uint64
	sure := s.document(func(key []byte) {
		switch string(key) {
		case "timestamp":
			s.once(&seen, 0)
			env.Timestamp = s.int64Value()
		case "data":
			s.once(&seen, 1)
			s.userData(&env.Data)
		default:
			s.foldCheck(key, "timestamp", "data")
			s.skip(1)
		}
	})
	if !sure {
		return userEnvelope{}, false
	}
	return env, true
}

// document scans all of s.b as one object (whitespace around it allowed),
// calling member as object does, and reports whether the scanner is sure of
// the whole document.
func (s *scanner) document(member func(key []byte)) bool {
	s.ws()
	s.object(0, member)
	s.ws()
	return !s.bad && s.i == len(s.b)
}

func (s *scanner) userData(d *userData) {
	if s.peek() != '{' {
		s.bad = true // null or another type: encoding/json's rules
		return
	}
	var seen uint64
	s.object(1, func(key []byte) {
		switch string(key) {
		case "id":
			s.once(&seen, 0)
			d.ID = s.stringValue()
		case "deleted":
			s.once(&seen, 1)
			d.Deleted = s.boolValue()
		case "primary_email_address_id":
			s.once(&seen, 2)
			d.PrimaryEmailAddressID = s.optString()
		case "email_addresses":
			s.once(&seen, 3)
			d.EmailAddresses = s.emails()
		case "first_name":
			s.once(&seen, 4)
			d.FirstName = s.optString()
		case "last_name":
			s.once(&seen, 5)
			d.LastName = s.optString()
		case "username":
			s.once(&seen, 6)
			d.Username = s.optString()
		case "image_url":
			s.once(&seen, 7)
			d.ImageURL = s.optString()
		case "public_metadata":
			s.once(&seen, 8)
			d.PublicMetadata = s.rawValue(2)
		case "created_at":
			s.once(&seen, 9)
			d.CreatedAt = s.int64Value()
		case "updated_at":
			s.once(&seen, 10)
			d.UpdatedAt = s.int64Value()
		case "primary_phone_number_id":
			s.once(&seen, 11)
			d.PrimaryPhoneNumberID = s.optString()
		case "phone_numbers":
			s.once(&seen, 12)
			d.PhoneNumbers = s.phones()
		case "external_id":
			s.once(&seen, 13)
			d.ExternalID = s.optString()
		case "banned":
			s.once(&seen, 14)
			d.Banned = s.boolValue()
		case "locked":
			s.once(&seen, 15)
			d.Locked = s.boolValue()
		case "two_factor_enabled":
			s.once(&seen, 16)
			d.TwoFactorEnabled = s.boolValue()
		case "last_sign_in_at":
			s.once(&seen, 17)
			d.LastSignInAt = s.optInt64()
		case "last_active_at":
			s.once(&seen, 18)
			d.LastActiveAt = s.optInt64()
		case "private_metadata":
			s.once(&seen, 19)
			d.PrivateMetadata = s.rawValue(2)
		default:
			s.foldCheck(key, "id", "deleted", "primary_email_address_id", "email_addresses", "first_name",
				"last_name", "username", "image_url", "public_metadata", "created_at", "updated_at")
			s.foldCheck(key, "primary_phone_number_id", "phone_numbers", "external_id", "banned", "locked",
				"two_factor_enabled", "last_sign_in_at", "last_active_at", "private_metadata")
			s.skip(2)
		}
	})
}

// optInt64 is a *int64 field: null gives nil.
func (s *scanner) optInt64() *int64 {
	if s.literal("null") {
		return nil
	}
	n := s.int64Value()
	return &n
}

type emailAddress = struct {
	ID           string `json:"id"`
	EmailAddress string `json:"email_address"`
	Verification *struct {
		Status string `json:"status"`
	} `json:"verification"`
}

// emails scans email_addresses: an array of objects, of which id,
// email_address and verification.status are kept.
func (s *scanner) emails() []emailAddress {
	return objectArray(s, 3, func(a *emailAddress, key []byte, seen *uint64) {
		switch string(key) {
		case "id":
			s.once(seen, 0)
			a.ID = s.stringValue()
		case "email_address":
			s.once(seen, 1)
			a.EmailAddress = s.stringValue()
		case "verification":
			s.once(seen, 2)
			if s.literal("null") {
				a.Verification = nil
				return
			}
			if s.peek() != '{' {
				s.bad = true
				return
			}
			a.Verification = &struct {
				Status string `json:"status"`
			}{}
			var vseen uint64
			s.object(5, func(key []byte) {
				switch string(key) {
				case "status":
					s.once(&vseen, 0)
					a.Verification.Status = s.stringValue()
				default:
					s.foldCheck(key, "status")
					s.skip(6)
				}
			})
		default:
			s.foldCheck(key, "id", "email_address")
			s.foldCheck(key, "verification")
			s.skip(4)
		}
	})
}

// phones scans phone_numbers: an array of objects, of which id and
// phone_number are kept.
func (s *scanner) phones() []phoneNumber {
	return objectArray(s, 3, func(p *phoneNumber, key []byte, seen *uint64) {
		switch string(key) {
		case "id":
			s.once(seen, 0)
			p.ID = s.stringValue()
		case "phone_number":
			s.once(seen, 1)
			p.PhoneNumber = s.stringValue()
		default:
			s.foldCheck(key, "id", "phone_number")
			s.skip(4)
		}
	})
}

// objectArray scans an array of objects at s.i (depth is the objects') into
// a slice of T, empty but not nil for []: for each element it appends a
// zero T and calls member with it and each key (and that element's once
// bits), with s.i at the value, which member must consume. Anything else
// than an array of objects (null included) gives up; when the scanner gives
// up, objectArray returns nil.
func objectArray[T any](s *scanner, depth int, member func(e *T, key []byte, seen *uint64)) []T {
	if s.peek() != '[' {
		s.bad = true
		return nil
	}
	s.i++
	s.ws()
	out := []T{}
	if s.peek() == ']' {
		s.i++
		return out
	}
	for !s.bad {
		s.ws()
		if s.peek() != '{' {
			s.bad = true
			break
		}
		var zero T
		out = append(out, zero)
		e := &out[len(out)-1]
		var seen uint64
		s.object(depth, func(key []byte) { member(e, key, &seen) })
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			if s.bad {
				return nil
			}
			return out
		default:
			s.bad = true
		}
	}
	return nil
}

// once gives up when a kept key repeats: encoding/json merges repeats by
// rules the scanner does not copy.
func (s *scanner) once(seen *uint64, bit uint) {
	if *seen&(1<<bit) != 0 {
		s.bad = true
	}
	*seen |= 1 << bit
}

// foldCheck gives up when key is not one of names but encoding/json would
// match it to one (its key match is case-insensitive).
func (s *scanner) foldCheck(key []byte, names ...string) {
	if JSONKeyFolds(key, names...) {
		s.bad = true
	}
}

// JSONKeyFolds reports whether encoding/json would decode an object key
// into a field named one of names: its match is case-insensitive (Unicode
// simple folding), so "ID" and "Id" fill the field "id". A hand-written
// scanner that matches keys exactly must treat such a key as ambiguous.
func JSONKeyFolds(key []byte, names ...string) bool {
	ascii := true
	for _, c := range key {
		if c >= 0x80 {
			ascii = false
			break
		}
	}
	for _, n := range names {
		if ascii && len(key) != len(n) {
			continue // ASCII folds only to ASCII of the same length
		}
		if bytes.EqualFold(key, []byte(n)) {
			return true
		}
	}
	return false
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// object scans an object at s.i, calling member with each key (unescaped
// keys only) with s.i at the value, which member must consume.
func (s *scanner) object(depth int, member func(key []byte)) {
	if depth > maxScanDepth || s.peek() != '{' {
		s.bad = true
		return
	}
	s.i++
	s.ws()
	if s.peek() == '}' {
		s.i++
		return
	}
	for !s.bad {
		s.ws()
		key, escaped := s.str()
		if s.bad {
			return
		}
		if escaped {
			s.bad = true // an escaped key might match a field
			return
		}
		s.ws()
		if s.peek() != ':' {
			s.bad = true
			return
		}
		s.i++
		s.ws()
		member(key)
		if s.bad {
			return
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return
		default:
			s.bad = true
		}
	}
}

// str scans a string at s.i and returns its raw content (between the
// quotes) and whether it holds escapes. It validates escapes and rejects
// control characters, as JSON requires.
func (s *scanner) str() (raw []byte, escaped bool) {
	if s.peek() != '"' {
		s.bad = true
		return nil, false
	}
	s.i++
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw = s.b[start:s.i]
			s.i++
			return raw, escaped
		case c == '\\':
			escaped = true
			if s.i+1 >= len(s.b) {
				s.bad = true
				return nil, false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) {
					s.bad = true
					return nil, false
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if !isHex(h) {
						s.bad = true
						return nil, false
					}
				}
				s.i += 6
			default:
				s.bad = true
				return nil, false
			}
		case c < 0x20:
			s.bad = true
			return nil, false
		case c >= 0x80:
			// encoding/json replaces invalid UTF-8 in strings it decodes;
			// a kept string with non-ASCII bytes goes to it (see keep).
			s.i++
		default:
			s.i++
		}
	}
	s.bad = true
	return nil, false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// keep returns a string the scanner can hand over as is: no escapes, ASCII
// only (so no invalid UTF-8 to replace).
func (s *scanner) keep(raw []byte, escaped bool) string {
	if escaped {
		s.bad = true
		return ""
	}
	for _, c := range raw {
		if c >= 0x80 {
			// Valid UTF-8 decodes unchanged; invalid bytes would be
			// replaced by U+FFFD.
			if !utf8.Valid(raw) {
				s.bad = true
				return ""
			}
			break
		}
	}
	return string(raw)
}

func (s *scanner) stringValue() string {
	raw, esc := s.str()
	if s.bad {
		return ""
	}
	return s.keep(raw, esc)
}

// optString is a *string field: null gives nil.
func (s *scanner) optString() *string {
	if s.literal("null") {
		return nil
	}
	v := s.stringValue()
	return &v
}

func (s *scanner) boolValue() bool {
	switch {
	case s.literal("true"):
		return true
	case s.literal("false"):
		return false
	}
	s.bad = true // null leaves the field as it was: encoding/json decides
	return false
}

// int64Value scans a plain integer; anything else (null, fractions,
// exponents, out of range, another type) goes to encoding/json.
func (s *scanner) int64Value() int64 {
	start := s.i
	if s.peek() == '-' {
		s.i++
	}
	digits := s.i
	for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
		s.i++
	}
	if s.i == digits || (s.b[digits] == '0' && s.i-digits > 1) {
		s.bad = true
		return 0
	}
	switch s.peek() {
	case '.', 'e', 'E':
		s.bad = true
		return 0
	}
	n, err := strconv.ParseInt(string(s.b[start:s.i]), 10, 64)
	if err != nil {
		s.bad = true
	}
	return n
}

func (s *scanner) literal(lit string) bool {
	if bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
		s.i += len(lit)
		return true
	}
	return false
}

// rawValue scans and validates any JSON value at s.i (depth is its own, as
// for skip) and returns its bytes: a slice of s.b, not a copy.
func (s *scanner) rawValue(depth int) json.RawMessage {
	start := s.i
	s.skip(depth)
	return s.b[start:s.i]
}

// skip scans and validates any JSON value at s.i.
func (s *scanner) skip(depth int) {
	if depth > maxScanDepth {
		s.bad = true
		return
	}
	switch c := s.peek(); {
	case c == '{':
		s.object(depth, func([]byte) { s.skip(depth + 1) })
	case c == '[':
		s.i++
		s.ws()
		if s.peek() == ']' {
			s.i++
			return
		}
		for !s.bad {
			s.ws()
			s.skip(depth + 1)
			s.ws()
			switch s.peek() {
			case ',':
				s.i++
			case ']':
				s.i++
				return
			default:
				s.bad = true
			}
		}
	case c == '"':
		s.str()
	case c == '-' || '0' <= c && c <= '9':
		s.number()
	case s.literal("true"), s.literal("false"), s.literal("null"):
	default:
		s.bad = true
	}
}

// number scans a JSON number (RFC 8259 grammar).
func (s *scanner) number() {
	if s.peek() == '-' {
		s.i++
	}
	switch {
	case s.peek() == '0':
		s.i++
	case '1' <= s.peek() && s.peek() <= '9':
		s.digits()
	default:
		s.bad = true
		return
	}
	if s.peek() == '.' {
		s.i++
		if !s.digits() {
			s.bad = true
			return
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if !s.digits() {
			s.bad = true
		}
	}
}

func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}
