package clerkapi

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// A list response is read in one pass without decoding any user: a
// validating scanner (validator) checks each element as strictly as
// encoding/json's json.Valid, finds its exact bytes, and on the way reads
// only the element's top-level id, object, created_at and updated_at
// (parseUser). A body that is not valid JSON is an error for the whole page
// (element boundaries cannot be trusted); a valid element that is not a
// well-formed user, or not valid UTF-8 (the ledger stores bodies as text,
// see domain.ParseEnvelope), is a Failure of its own.

var (
	errNotList   = domain.Errorf(domain.EINTERNAL, "Clerk Backend API answered something other than a list of users")
	errMalformed = domain.Errorf(domain.EINTERNAL, "Clerk Backend API answered with malformed JSON")
)

// parsePage fills p (Offset and Limit set, slices empty) from a list body:
// Clerk's bare array, or an object whose "data" is the array (with
// "total_count").
func parsePage(body []byte, p *Page) error {
	v := validator{b: body}
	i := skipWS(body, 0)
	if i == len(body) {
		return errMalformed
	}
	switch body[i] {
	case '[':
		end := p.addElements(&v, i)
		if end < 0 || skipWS(body, end) != len(body) {
			return errMalformed
		}
	case '{':
		end := v.value(i, 0)
		if end < 0 || skipWS(body, end) != len(body) {
			return errMalformed
		}
		arr, total, reason := envelope(body[i:end])
		if reason != "" {
			return domain.Errorf(domain.EINTERNAL, "Clerk Backend API answered an object %s", reason)
		}
		p.TotalCount = total
		av := validator{b: arr}
		p.addElements(&av, 0) // valid: this only splits and checks UTF-8
	default:
		if !json.Valid(body) {
			return errMalformed
		}
		return errNotList
	}
	return nil
}

// addElements validates the array at v.b[i] element by element, adding
// each to p. It returns the index after the array, or -1 when it is not
// valid JSON.
func (p *Page) addElements(v *validator, i int) int {
	b := v.b
	j := skipWS(b, i+1)
	if j < len(b) && b[j] == ']' {
		return j + 1
	}
	for {
		v.badUTF8 = false
		end, u, id, reason := parseObject(v, j, 1, p.objectName())
		if end < 0 {
			return -1
		}
		p.add(b[j:end], u, id, reason)
		j = skipWS(b, end)
		switch {
		case j == len(b):
			return -1
		case b[j] == ',':
			j = skipWS(b, j+1)
		case b[j] == ']':
			return j + 1
		default:
			return -1
		}
	}
}

// envelope reads {"data":[...],"total_count":N} (valid JSON). Repeated keys
// and keys differing only in case are refused, so the array read here is
// the one encoding/json would read.
func envelope(obj []byte) (arr []byte, total int64, reason string) {
	total = -1
	var seen [2]bool
	eachMember(obj, func(key, val []byte) {
		switch string(key) {
		case "data":
			if seen[0] {
				reason = "with two data keys"
			}
			seen[0] = true
			if val[0] != '[' {
				reason = "whose data is not an array"
				return
			}
			arr = val
		case "total_count":
			if seen[1] {
				reason = "with two total_count keys"
			}
			seen[1] = true
			if n, ok := parseInt(val); ok && n >= 0 {
				total = n
			}
		default:
			if foldsTo(key, "data", "total_count") {
				reason = "with a key " + strconv.Quote(string(key)) + " that differs only in case from data or total_count"
			}
		}
	})
	if reason == "" && arr == nil {
		reason = "without a data array"
	}
	return arr, total, reason
}

// add appends an element parseUser read to p's users or failures.
func (p *Page) add(raw []byte, u User, id, reason string) {
	index := p.Count
	p.Count++
	if reason == "" {
		p.Users = append(p.Users, u)
		return
	}
	pos := p.Offset + index
	who := ""
	if id != "" {
		who = " (" + id + ")"
	}
	p.Failures = append(p.Failures, Failure{
		Index: index, Position: pos, ID: id, Raw: raw,
		Err: domain.Errorf(domain.EINVALID, "malformed %s at list position %d%s: %s", strings.ReplaceAll(p.objectName(), "_", " "), pos, who, reason),
	})
}

// parseUser validates the JSON value at v.b[i] (inside depth containers)
// and reads it as a user object: its top-level id, object, created_at and
// updated_at. end is the index after the value, -1 when it is not valid
// JSON. reason says what is wrong with it as a user ("" when nothing); id
// is set whenever a well-formed id was read, even if something else is
// wrong.
//
// Keys are matched exactly, and a repeated key or one that differs only in
// case from those four is refused: encoding/json (which the ledger's fold
// reads user objects with) matches keys case-insensitively and keeps the
// last of repeats, so this is what makes the id read here the id every
// later reader sees.
func parseUser(v *validator, i, depth int) (end int, u User, id, reason string) {
	return parseObject(v, i, depth, "user")
}

// objectName is the object p's elements must be ("user" by default).
func (p *Page) objectName() string {
	if p.object == "" {
		return "user"
	}
	return p.object
}

// parseObject is parseUser for objects whose "object" is object.
func parseObject(v *validator, i, depth int, object string) (end int, u User, id, reason string) {
	if i >= len(v.b) {
		return -1, User{}, "", ""
	}
	if v.b[i] != '{' {
		return v.value(i, depth), User{}, "", "it is " + kind(v.b[i]) + ", not an object"
	}
	var seen [4]bool // id, object, created_at, updated_at
	fail := func(r string) {
		if reason == "" {
			reason = r
		}
	}
	number := func(name string, val []byte, slot int, dst *int64) {
		if seen[slot] {
			fail("it has two " + name + " keys")
			return
		}
		seen[slot] = true
		n, ok := parseInt(val)
		if !ok {
			if val[0] == '-' || '0' <= val[0] && val[0] <= '9' {
				fail(name + " is not an integer")
			} else {
				fail(name + " is " + kind(val[0]) + ", not a number")
			}
			return
		}
		*dst = n
	}
	end = v.object(i, depth, func(key, val []byte) {
		switch string(key) {
		case "id":
			if seen[0] {
				fail("it has two id keys")
				id = ""
				return
			}
			seen[0] = true
			if val[0] != '"' {
				fail("id is " + kind(val[0]) + ", not a string")
				return
			}
			s, ok := stringValue(val)
			if !ok || !isClerkID(s) {
				fail("id is not a Clerk id")
				return
			}
			id = s
		case "object":
			if seen[1] {
				fail("it has two object keys")
				return
			}
			seen[1] = true
			if len(val) != len(object)+2 || string(val[1:len(val)-1]) != object { // compared without a copy; escapes are decoded below
				if s, ok := stringValue(val); !ok || s != object {
					fail(`its object is not "` + object + `"`)
				}
			}
		case "created_at":
			number("created_at", val, 2, &u.CreatedAt)
		case "updated_at":
			number("updated_at", val, 3, &u.UpdatedAt)
		default:
			if foldsTo(key, "id", "object", "created_at", "updated_at") {
				fail("it has a key " + strconv.Quote(string(key)) + " that differs only in case from a field")
			}
		}
	})
	if end < 0 {
		return -1, User{}, "", ""
	}
	switch {
	case !seen[0]:
		fail("it has no id")
	case !seen[2]:
		fail("it has no created_at")
	case !seen[3]:
		fail("it has no updated_at")
	case v.badUTF8:
		fail("it is not valid UTF-8")
	}
	if reason != "" {
		return end, User{}, id, reason
	}
	u.ID, u.Raw = id, v.b[i:end]
	return end, u, id, ""
}

// eachMember calls f with each member of the object at obj[0] (valid JSON):
// the key unescaped and the value's exact bytes.
func eachMember(obj []byte, f func(key, val []byte)) {
	i := skipWS(obj, 1)
	for obj[i] != '}' {
		end := skipString(obj, i)
		key := obj[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			var s string
			json.Unmarshal(obj[i:end], &s) // valid JSON: cannot fail
			key = []byte(s)
		}
		i = skipWS(obj, end) // at ':'
		i = skipWS(obj, i+1)
		vend := skipValue(obj, i)
		f(key, obj[i:vend])
		i = skipWS(obj, vend)
		if obj[i] == ',' {
			i = skipWS(obj, i+1)
		}
	}
}

// stringValue decodes a JSON string value. ok is false for another type
// or a string with invalid UTF-8 (which decoders would alter).
func stringValue(val []byte) (string, bool) {
	if val[0] != '"' {
		return "", false
	}
	in := val[1 : len(val)-1]
	if bytes.IndexByte(in, '\\') < 0 {
		if !utf8.Valid(in) {
			return "", false
		}
		return string(in), true
	}
	var s string
	if json.Unmarshal(val, &s) != nil {
		return "", false
	}
	return s, true
}

// parseInt reads a JSON integer (no fraction, no exponent) that fits int64.
func parseInt(val []byte) (int64, bool) {
	neg := val[0] == '-'
	digits := val
	if neg {
		digits = val[1:]
	}
	if len(digits) == 0 || len(digits) > 18 { // 18 digits always fit int64
		return 0, false
	}
	var n int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// foldsTo reports whether key matches one of names under encoding/json's
// case-insensitive key matching (callers ask about keys that are none of
// them exactly).
func foldsTo(key []byte, names ...string) bool {
	if len(key) == 0 {
		return false
	}
	if c := key[0]; c < utf8.RuneSelf {
		// Every name here starts with one of these letters, which fold only
		// to their ASCII upper case: most keys are done with at one byte.
		switch c | 0x20 {
		case 'i', 'o', 'c', 'u', 'd', 't':
		default:
			return false
		}
	}
	return domain.JSONKeyFolds(key, names...)
}

// kind names the JSON type of a value by its first byte.
func kind(c byte) string {
	switch c {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func isWS(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipWS(b []byte, i int) int {
	for i < len(b) && isWS(b[i]) {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] ('"').
func skipString(b []byte, i int) int {
	j := i + 1
	for {
		q := j + bytes.IndexByte(b[j:], '"')
		k := q - 1
		for k > i && b[k] == '\\' {
			k--
		}
		if (q-1-k)%2 == 0 { // an even run of backslashes: the quote is not escaped
			return q + 1
		}
		j = q + 1
	}
}

// skipValue returns the index after the value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) {
		switch b[i] {
		case ',', ']', '}', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

// validator checks JSON as encoding/json's json.Valid does (RFC 8259; bytes
// of 0x80 and above are accepted in strings), noting invalid UTF-8 there.
type validator struct {
	b       []byte
	badUTF8 bool
}

// value returns the index after the valid JSON value at b[i] inside depth
// containers, or -1.
func (v *validator) value(i, depth int) int {
	b := v.b
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return v.str(i)
	case '{':
		return v.object(i, depth, nil)
	case '[':
		if depth >= maxDepth {
			return -1
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1
		}
		for {
			if i = v.value(i, depth+1); i < 0 {
				return -1
			}
			if i = skipWS(b, i); i >= len(b) {
				return -1
			}
			switch b[i] {
			case ',':
				i = skipWS(b, i+1)
			case ']':
				return i + 1
			default:
				return -1
			}
		}
	case 't':
		return literal(b, i, "true")
	case 'f':
		return literal(b, i, "false")
	case 'n':
		return literal(b, i, "null")
	}
	return number(b, i)
}

// object validates the object at v.b[i] (inside depth containers), calling
// f (when not nil) with each member's key, unescaped, and value bytes. It
// returns the index after the object, or -1.
func (v *validator) object(i, depth int, f func(key, val []byte)) int {
	b := v.b
	if depth >= maxDepth {
		return -1
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return -1
		}
		kstart := i
		if i = v.str(i); i < 0 {
			return -1
		}
		kend := i
		if i = skipWS(b, i); i >= len(b) || b[i] != ':' {
			return -1
		}
		vstart := skipWS(b, i+1)
		if i = v.value(vstart, depth+1); i < 0 {
			return -1
		}
		if f != nil {
			key := b[kstart+1 : kend-1]
			if bytes.IndexByte(key, '\\') >= 0 {
				var s string
				json.Unmarshal(b[kstart:kend], &s) // valid: cannot fail
				key = []byte(s)
			}
			f(key, b[vstart:i])
		}
		if i = skipWS(b, i); i >= len(b) {
			return -1
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return i + 1
		default:
			return -1
		}
	}
}

func literal(b []byte, i int, lit string) int {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit)
	}
	return -1
}

// number returns the index after the JSON number at b[i], or -1.
func number(b []byte, i int) int {
	digits := func(i int) int {
		j := i
		for j < len(b) && '0' <= b[j] && b[j] <= '9' {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return -1
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i = digits(i)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		if i = digits(i + 1); i < 0 {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i = digits(i); i < 0 {
			return -1
		}
	}
	return i
}

// plain marks the bytes a string holds as they are: not '"', '\\', a
// control character or a byte of a multi-byte UTF-8 sequence.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str returns the index after the valid JSON string at b[i] ('"'), or -1.
func (v *validator) str(i int) int {
	b := v.b
	i++
	for i < len(b) {
		c := b[i]
		if plain[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			return i + 1
		case c == '\\':
			if i+1 >= len(b) {
				return -1
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return -1
				}
				i += 6
			default:
				return -1
			}
		case c < 0x20:
			return -1
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				v.badUTF8 = true
			}
			i += size
		}
	}
	return -1
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
