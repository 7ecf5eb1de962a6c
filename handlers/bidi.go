package handlers

import (
	"fmt"
	"strings"
)

// isBidiControl reports whether r is one of Unicode's explicit directional
// formatting characters (embeddings, overrides such as U+202E, isolates,
// marks): in user-supplied text they can make a page display other text
// than it holds.
func isBidiControl(r rune) bool {
	switch {
	case r == '\u061c', r == '\u200e', r == '\u200f':
		return true
	case r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
		return true
	}
	return false
}

// isolate returns s between FIRST STRONG ISOLATE and POP DIRECTIONAL
// ISOLATE, the plain-text <bdi>: whatever direction controls s holds, they
// end with it. For text that cannot hold markup (<title>) or user values
// inside a sentence built here (timeline summaries). Templates wrap
// user-supplied values in <bdi>.
func isolate(s string) string {
	return "\u2068" + s + "\u2069"
}

// escapeBidi returns JSON text with every direction control written as its
// \uXXXX escape: the same JSON value (in JSON they can only occur inside
// strings), but the auditor sees the control instead of its effect.
func escapeBidi(s string) string {
	if strings.IndexFunc(s, isBidiControl) < 0 {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if isBidiControl(r) {
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
