package domain

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// What the projection keeps. The ledger stores every verified body byte for
// byte, but a read model lives in a text store (PostgreSQL) that refuses two
// things JSON can carry: the NUL character (U+0000: "\u0000" in JSON, a NUL
// byte once decoded) and, in a JSON value, the escape of a surrogate code
// point that is not half of a pair ("\ud800" alone; RFC 8259 §8.2 calls its
// meaning unpredictable). encoding/json accepts all of them (json.Valid is
// true), and one such value made every projector batch that wrote it fail.
// So the fold (Apply) keeps text in one storable form, the same for the
// projector, a rebuild, check and the auditors' point-in-time view:
//
//   - text fields (email, names, username, image URL): each NUL and each byte
//     that is not valid UTF-8 becomes U+FFFD, the replacement character.
//     encoding/json already decodes a lone surrogate escape (and invalid
//     UTF-8) to U+FFFD, so after decoding only NUL is left to replace.
//   - public metadata (raw JSON): inside its strings, keys and values alike,
//     the escapes \u0000 and \uD800-\uDFFF when not a high surrogate followed
//     by a low one become \ufffd, and each byte that is not valid UTF-8
//     becomes U+FFFD; every
//     other byte is kept as it is (numbers, order, duplicate keys, other
//     escapes, even the text "\\u0000": an escaped backslash before "u0000").
//   - the user id: a NUL in it makes the event poison (Apply returns
//     EINVALID): the id is the user's key, and replacing it could merge two
//     users into one.
//
// Replacing keeps the rest of the value and shows where something was
// dropped; U+FFFD is what a decoder puts for what it cannot represent.

// replacement is U+FFFD as JSON text and as UTF-8.
const (
	replacementEscape = `\ufffd`
	replacement       = "\uFFFD"
)

// StorableText returns s with each NUL character and each byte that is
// not valid UTF-8 replaced by U+FFFD; s itself (no copy) when it has neither.
func StorableText(s string) string {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s
	}
	return string(appendValid(nil, []byte(s), true))
}

// appendValid appends b to out with each byte that is not part of a valid
// UTF-8 sequence replaced by U+FFFD (as encoding/json decodes strings) and,
// when nul, each NUL too.
func appendValid(out, b []byte, nul bool) []byte {
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && n == 1, nul && r == 0:
			out = append(out, replacement...)
		default:
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return out
}

// StorableJSON returns the JSON document raw with, inside its strings, every
// \u0000 escape and every escape of an unpaired surrogate (\uD800-\uDFFF not
// a high surrogate directly followed by a low one) rewritten as \ufffd, and
// each byte that is not valid UTF-8 replaced by U+FFFD (as
// encoding/json decodes strings); every other byte is kept.
// It returns raw itself (no copy) when there is nothing to rewrite. raw must
// be valid JSON (it is not checked): outside strings JSON has no backslash,
// so every backslash starts an escape.
func StorableJSON(raw []byte) []byte {
	if !utf8.Valid(raw) {
		raw = appendValid(make([]byte, 0, len(raw)+8), raw, false)
	}
	i := firstUnstorableEscape(raw)
	if i < 0 {
		return raw
	}
	out := make([]byte, 0, len(raw)+8)
	for i >= 0 {
		out = append(out, raw[:i]...)
		out = append(out, replacementEscape...)
		raw = raw[i+6:]
		i = firstUnstorableEscape(raw)
	}
	return append(out, raw...)
}

// firstUnstorableEscape returns the index of the first escape in raw that
// StorableJSON rewrites (always 6 bytes: \uXXXX), or -1.
func firstUnstorableEscape(raw []byte) int {
	for i := 0; i < len(raw); {
		j := bytes.IndexByte(raw[i:], '\\')
		if j < 0 {
			return -1
		}
		i += j
		if i+1 >= len(raw) {
			return -1
		}
		if raw[i+1] != 'u' {
			i += 2 // \" \\ \/ \b \f \n \r \t
			continue
		}
		c, ok := hex4(raw, i+2)
		if !ok {
			i += 2 // not a valid escape: invalid JSON, leave it
			continue
		}
		switch {
		case c == 0:
			return i
		case 0xD800 <= c && c <= 0xDBFF:
			// A high surrogate is storable only when a low one follows.
			if i+11 < len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
				if lo, ok := hex4(raw, i+8); ok && 0xDC00 <= lo && lo <= 0xDFFF {
					i += 12
					continue
				}
			}
			return i
		case 0xDC00 <= c && c <= 0xDFFF:
			return i // a low surrogate without a high one before it
		}
		i += 6
	}
	return -1
}

// hex4 decodes the 4 hex digits at raw[i:].
func hex4(raw []byte, i int) (rune, bool) {
	if i+4 > len(raw) {
		return 0, false
	}
	var r rune
	for _, c := range raw[i : i+4] {
		r <<= 4
		switch {
		case '0' <= c && c <= '9':
			r |= rune(c - '0')
		case 'a' <= c && c <= 'f':
			r |= rune(c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}
