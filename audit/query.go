package audit

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// History query limits.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)

// EventQuery is a parsed history query: the filter, and the output format
// ("json" for one page, jsonl or csv for a streamed export).
type EventQuery struct {
	Filter schema.EventFilter
	Format string // FormatJSON (one page), FormatJSONL or FormatCSV (an export)
}

// Check returns an EINVALID error naming what is wrong with q: an unknown
// format, a user id or type over 200 bytes, a wildcard anywhere but a
// trailing ".*", until not after since, a limit below 1 or, for a page
// (format json), above MaxAuditLimit. A zero limit means DefaultAuditLimit
// for a page and everything for an export. Every operation checks its query;
// HTTP and CLI parse their own syntax into an EventQuery.
func (q *EventQuery) Check() error {
	switch q.Format {
	case "":
		q.Format = FormatJSON
	case FormatJSON, FormatJSONL, FormatCSV:
	default:
		return domain.Errorf(domain.EINVALID, "format %q is not json, jsonl or csv", q.Format)
	}
	f := &q.Filter
	f.UserID = strings.TrimSpace(f.UserID)
	if len(f.UserID) > 200 {
		return domain.Errorf(domain.EINVALID, "user_id is longer than 200 characters")
	}
	types := f.Types[:0:0]
	for _, t := range f.Types {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if len(t) > 200 {
			return domain.Errorf(domain.EINVALID, "type is longer than 200 characters")
		}
		if i := strings.IndexByte(t, '*'); i >= 0 && (i != len(t)-1 || !strings.HasSuffix(t, ".*") || len(t) < 3) {
			return domain.Errorf(domain.EINVALID, "type %q: a wildcard is only allowed as a trailing \".*\" (e.g. user.*)", t)
		}
		types = append(types, t)
	}
	f.Types = types
	f.Since, f.Until = utc(f.Since), utc(f.Until)
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return domain.Errorf(domain.EINVALID, "until must be after since")
	}
	switch {
	case f.Limit < 0:
		return domain.Errorf(domain.EINVALID, "limit %d is not a positive integer", f.Limit)
	case f.Limit == 0 && q.Format == FormatJSON:
		f.Limit = DefaultAuditLimit
	case q.Format == FormatJSON && f.Limit > MaxAuditLimit:
		return domain.Errorf(domain.EINVALID, "limit %d is more than %d", f.Limit, MaxAuditLimit)
	}
	return nil
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

// EncodeCursor makes the opaque paging cursor for the place after c.
func EncodeCursor(c schema.Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte("v1:" + c.String()))
}

func DecodeCursor(s string) (schema.Cursor, error) {
	bad := domain.Errorf(domain.EINVALID, "cursor is not one this service issued")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return schema.Cursor{}, bad
	}
	rest, ok := strings.CutPrefix(string(b), "v1:")
	if !ok {
		return schema.Cursor{}, bad
	}
	tx, pos, ok := strings.Cut(rest, ":")
	if !ok {
		return schema.Cursor{}, bad
	}
	var c schema.Cursor
	if c.TxID, err = strconv.ParseUint(tx, 10, 64); err != nil {
		return schema.Cursor{}, bad
	}
	if c.Position, err = strconv.ParseInt(pos, 10, 64); err != nil || c.Position < 0 {
		return schema.Cursor{}, bad
	}
	return c, nil
}

// filters returns q as recorded in the access log.
func filters(q EventQuery) map[string]string {
	m := map[string]string{}
	f := q.Filter
	if f.UserID != "" {
		m["user_id"] = f.UserID
	}
	if len(f.Types) > 0 {
		m["type"] = strings.Join(f.Types, ",")
	}
	if !f.Since.IsZero() {
		m["since"] = f.Since.Format(time.RFC3339Nano)
	}
	if !f.Until.IsZero() {
		m["until"] = f.Until.Format(time.RFC3339Nano)
	}
	if f.Limit > 0 {
		m["limit"] = strconv.Itoa(f.Limit)
	}
	if f.After != (schema.Cursor{}) {
		m["cursor"] = f.After.String()
	}
	if q.Format != FormatJSON {
		m["format"] = q.Format
	}
	return m
}
