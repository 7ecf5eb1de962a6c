package handlers

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/domain"
)

var eventQueryParams = map[string]bool{"user_id": true, "type": true, "since": true, "until": true, "limit": true, "cursor": true, "format": true}

// parseEventQuery parses the history query parameters into an
// audit.EventQuery and checks it (audit.EventQuery.Check): user_id, type
// (repeatable; exact, or a prefix ending in ".*" such as "user.*"), since
// and until (RFC 3339, on occurred_at: since <= occurred_at < until), limit
// (default 100, at most 1000; for an export no default: everything), cursor
// (opaque, from next_cursor) and format (json, jsonl, csv). It returns an
// EINVALID error naming the first bad or unknown parameter.
func parseEventQuery(v url.Values) (audit.EventQuery, error) {
	var q audit.EventQuery
	for k, vs := range v {
		if !eventQueryParams[k] {
			return q, domain.Errorf(domain.EINVALID, "unknown parameter %q (want user_id, type, since, until, limit, cursor, format)", k)
		}
		if k != "type" && len(vs) > 1 {
			return q, domain.Errorf(domain.EINVALID, "parameter %q is given %d times", k, len(vs))
		}
	}
	q.Format = v.Get("format")
	f := &q.Filter
	f.UserID = v.Get("user_id")
	f.Types = v["type"]
	var err error
	if f.Since, err = parseTimeParam(v, "since"); err != nil {
		return q, err
	}
	if f.Until, err = parseTimeParam(v, "until"); err != nil {
		return q, err
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return q, domain.Errorf(domain.EINVALID, "limit %q is not a positive integer", s)
		}
		f.Limit = n
	}
	if s := v.Get("cursor"); s != "" {
		if f.After, err = audit.DecodeCursor(s); err != nil {
			return q, err
		}
	}
	return q, q.Check()
}

// parseTimeParam parses the optional RFC 3339 parameter name.
func parseTimeParam(v url.Values, name string) (time.Time, error) {
	s := strings.TrimSpace(v.Get(name))
	if s == "" {
		return time.Time{}, nil
	}
	return parseTimeText(name, s)
}

// parseTimeText parses s, the parameter name, as RFC 3339 and returns it in
// UTC. Errors: EINVALID naming it when s does not parse or its instant in
// UTC falls outside the years 0000 to 9999 (RFC 3339 lets an offset carry
// 9999-12-31T23:59:59-23:59 into the year 10000, which answers cannot
// encode as JSON).
func parseTimeText(name, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, domain.Errorf(domain.EINVALID, "%s %q is not an RFC 3339 time (e.g. 2024-05-28T12:00:00Z)", name, s)
	}
	t = t.UTC()
	if y := t.Year(); y < 0 || y > 9999 {
		return time.Time{}, domain.Errorf(domain.EINVALID, "%s %q is outside the years 0000 to 9999 in UTC", name, s)
	}
	return t, nil
}

// parseUserPage reads order (time, the default, or ledger), limit (default
// audit.DefaultAuditLimit, at most audit.MaxAuditLimit) and cursor (a
// next_cursor of that order) for a page of a user's events.
func parseUserPage(v url.Values) (audit.UserPage, error) {
	p := audit.UserPage{Limit: audit.DefaultAuditLimit, Order: audit.OrderTime}
	switch o := v.Get("order"); o {
	case "", audit.OrderTime:
	case audit.OrderLedger:
		p.Order = o
	default:
		return p, domain.Errorf(domain.EINVALID, "order %q is not time or ledger", o)
	}
	var err error
	if p.Limit, err = parsePageLimit(v); err != nil {
		return p, err
	}
	if s := v.Get("cursor"); s != "" {
		c, err := audit.DecodeTimelineCursor(s)
		if err != nil {
			return p, err
		}
		if c.Order != p.Order {
			return p, domain.Errorf(domain.EINVALID, "cursor is a place in %s order: give order=%s", c.Order, c.Order)
		}
		p.After = c
	}
	return p, nil
}

// parsePageLimit reads limit: default audit.DefaultAuditLimit, at most
// audit.MaxAuditLimit.
func parsePageLimit(v url.Values) (int, error) {
	s := v.Get("limit")
	if s == "" {
		return audit.DefaultAuditLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, domain.Errorf(domain.EINVALID, "limit %q is not a positive integer", s)
	}
	if n > audit.MaxAuditLimit {
		return 0, domain.Errorf(domain.EINVALID, "limit %d is more than %d", n, audit.MaxAuditLimit)
	}
	return n, nil
}

// parseOrganizationPage reads limit (default audit.DefaultAuditLimit, at
// most audit.MaxAuditLimit) and cursor (a next_cursor: a place in ledger
// order) for a page of an organization's history.
func parseOrganizationPage(v url.Values) (audit.OrganizationPage, error) {
	var p audit.OrganizationPage
	var err error
	if p.Limit, err = parsePageLimit(v); err != nil {
		return p, err
	}
	if s := v.Get("cursor"); s != "" {
		if p.After, err = audit.DecodeCursor(s); err != nil {
			return p, err
		}
	}
	return p, nil
}

// parseVerifyParams reads digest and signatures from v (a form). Errors:
// EINVALID naming an unknown, repeated or malformed field.
func parseVerifyParams(v url.Values) (audit.VerifyOptions, error) {
	var o audit.VerifyOptions
	for k, vs := range v {
		if k != "digest" && k != "signatures" {
			return o, domain.Errorf(domain.EINVALID, "unknown parameter %q (want digest, signatures)", k)
		}
		if len(vs) > 1 {
			return o, domain.Errorf(domain.EINVALID, "parameter %q is given %d times", k, len(vs))
		}
	}
	if s := strings.TrimSpace(v.Get("digest")); s != "" {
		dg, err := domain.ParseDigest(s)
		if err != nil {
			return o, err
		}
		o.Digest = &dg
	}
	if s := v.Get("signatures"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return o, domain.Errorf(domain.EINVALID, "signatures %q is not true or false", s)
		}
		o.Signatures = b
	}
	return o, nil
}
