package relay

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// InvalidToken is the last subject token of events whose type is not a
// valid subject: they are published to <prefix>._invalid (the type is in
// the type header and in the body).
const InvalidToken = "_invalid"

// Subject returns the subject the event of type typ is published to:
// prefix + "." + typ when typ is a valid subject, else prefix + "._invalid".
// A type is a valid subject when it is one or more dot-separated tokens, each
// non-empty and made only of ASCII letters, digits, '-' and '_', and it does
// not start with '_' (so no real type lands on _invalid). Every Clerk type
// (user.created, organizationMembership.updated, ...) is valid; a type with a
// space, '*', '>', an empty token (a.., .a, a.), any other punctuation or a
// non-ASCII letter is not. The mapping never fails and never changes: it is
// the same for every relay and every run.
func Subject(prefix, typ string) string {
	if typ == "" || typ[0] == '_' || !validTokens(typ) {
		return prefix + "." + InvalidToken
	}
	return prefix + "." + typ
}

// validTokens reports whether s is dot-separated non-empty tokens of
// [A-Za-z0-9_-].
func validTokens(s string) bool {
	tok := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if tok == 0 {
				return false
			}
			tok = 0
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			tok++
		default:
			return false
		}
	}
	return tok > 0
}

// CheckPrefix returns an EINVALID error when prefix cannot begin the relay's
// subjects: it must be dot-separated tokens of ASCII letters, digits, '-'
// and '_' (e.g. "ledger" or "acme.ledger").
func CheckPrefix(prefix string) error {
	if !validTokens(prefix) {
		return domain.Errorf(domain.EINVALID, "subject prefix %q is not dot-separated tokens of letters, digits, - and _ (e.g. ledger)", prefix)
	}
	return nil
}

// CheckStreamName returns an EINVALID error when name is not a JetStream
// stream name the relay accepts: 1-200 ASCII letters, digits, '-' and '_'.
func CheckStreamName(name string) error {
	if name == "" || len(name) > 200 || strings.Contains(name, ".") || !validTokens(name) {
		return domain.Errorf(domain.EINVALID, "stream name %q is not 1-200 letters, digits, - and _ (e.g. LEDGER)", name)
	}
	return nil
}

// covers reports whether every subject the pattern b matches is matched by
// the pattern a (NATS wildcards: '*' one token, '>' one or more at the end).
func covers(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i, x := range at {
		if x == ">" {
			return len(bt) > i
		}
		if i >= len(bt) {
			return false
		}
		y := bt[i]
		switch {
		case y == ">":
			return false // b matches more tokens here than x can
		case x == "*":
		case x != y:
			return false
		}
	}
	return len(at) == len(bt)
}

// checkSubjects returns an ECONFLICT error, one line naming the stream and
// its subjects, unless the stream's subjects are exactly what the relay
// owns: they cover <prefix>.> (every event lands in the stream) and lie
// within it (nothing else is stored there, so the relay is the stream's only
// publisher and its sequence checks hold; see the package doc).
func checkSubjects(stream, prefix string, subjects []string) error {
	want := prefix + ".>"
	covered := false
	var foreign []string
	for _, s := range subjects {
		if covers(s, want) {
			covered = true
		}
		if !covers(want, s) {
			foreign = append(foreign, s)
		}
	}
	switch {
	case !covered:
		return domain.Errorf(domain.ECONFLICT, "JetStream stream %q has subjects %s, which do not cover %s: the relay publishes every event under %s; "+
			"give the stream the subject %s, or choose another stream (LEDGER_RELAY_STREAM) or prefix (LEDGER_RELAY_PREFIX)", stream, quoteList(subjects), want, want, want)
	case len(foreign) > 0:
		return domain.Errorf(domain.ECONFLICT, "JetStream stream %q has subjects %s, and %s lie outside %s: the relay must be the only publisher of its stream; "+
			"give the stream only the subject %s, or choose another stream (LEDGER_RELAY_STREAM)", stream, quoteList(subjects), quoteList(foreign), want, want)
	}
	return nil
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, " ") + "]"
}

// headerValue is s as it is sent in a header: each control character and
// each byte that is not UTF-8 becomes U+FFFD (a header is one line; the
// exact value is in the body).
func headerValue(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= 0x80 {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || (r == utf8.RuneError && n == 1) {
			r = utf8.RuneError
		}
		b.WriteRune(r)
		i += n
	}
	return b.String()
}

// msgID is the Nats-Msg-Id of e: its delivery id, unless the delivery id
// would not survive a header unchanged (control characters, invalid UTF-8,
// leading or trailing spaces), then "position:<position>", so two events never
// share a message id.
func msgID(e domain.Event) string {
	id := e.DeliveryID
	if id == "" || headerValue(id) != id || strings.TrimSpace(id) != id {
		return fmt.Sprintf("position:%d", e.Position)
	}
	return id
}
