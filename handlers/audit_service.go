package handlers

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/svixsig"
	"github.com/jmoiron/sqlx"
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
	Format string
}

var eventQueryParams = map[string]bool{"user_id": true, "type": true, "since": true, "until": true, "limit": true, "cursor": true, "format": true}

// ParseEventQuery parses the history query parameters user_id, type
// (repeatable; exact, or a prefix ending in ".*" such as "user.*"), since and
// until (RFC 3339, on occurred_at: since <= occurred_at < until), limit
// (default 100, at most 1000; for an export no default: everything), cursor
// (opaque, from next_cursor) and format (json, jsonl, csv). It returns an
// EINVALID error naming the first bad or unknown parameter.
func ParseEventQuery(v url.Values) (EventQuery, error) {
	var q EventQuery
	for k := range v {
		if !eventQueryParams[k] {
			return q, domain.Errorf(domain.EINVALID, "unknown parameter %q (want user_id, type, since, until, limit, cursor, format)", k)
		}
	}
	for k, vs := range v {
		if k != "type" && len(vs) > 1 {
			return q, domain.Errorf(domain.EINVALID, "parameter %q is given %d times", k, len(vs))
		}
	}
	q.Format = v.Get("format")
	switch q.Format {
	case "", "json":
		q.Format = "json"
	case FormatJSONL, FormatCSV:
	default:
		return q, domain.Errorf(domain.EINVALID, "format %q is not json, jsonl or csv", q.Format)
	}
	f := &q.Filter
	if id := strings.TrimSpace(v.Get("user_id")); id != "" {
		if len(id) > 200 {
			return q, domain.Errorf(domain.EINVALID, "user_id is longer than 200 characters")
		}
		f.UserID = id
	}
	for _, t := range v["type"] {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if len(t) > 200 {
			return q, domain.Errorf(domain.EINVALID, "type is longer than 200 characters")
		}
		if i := strings.IndexByte(t, '*'); i >= 0 && (i != len(t)-1 || !strings.HasSuffix(t, ".*") || len(t) < 3) {
			return q, domain.Errorf(domain.EINVALID, "type %q: a wildcard is only allowed as a trailing \".*\" (e.g. user.*)", t)
		}
		f.Types = append(f.Types, t)
	}
	var err error
	if f.Since, err = parseTimeParam(v, "since"); err != nil {
		return q, err
	}
	if f.Until, err = parseTimeParam(v, "until"); err != nil {
		return q, err
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return q, domain.Errorf(domain.EINVALID, "until must be after since")
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return q, domain.Errorf(domain.EINVALID, "limit %q is not a positive integer", s)
		}
		if q.Format == "json" && n > MaxAuditLimit {
			return q, domain.Errorf(domain.EINVALID, "limit %d is more than %d", n, MaxAuditLimit)
		}
		f.Limit = n
	} else if q.Format == "json" {
		f.Limit = DefaultAuditLimit
	}
	if s := v.Get("cursor"); s != "" {
		c, err := decodeCursor(s)
		if err != nil {
			return q, err
		}
		f.After = c
	}
	return q, nil
}

func parseTimeParam(v url.Values, name string) (time.Time, error) {
	s := strings.TrimSpace(v.Get(name))
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, domain.Errorf(domain.EINVALID, "%s %q is not an RFC 3339 time (e.g. 2024-05-28T12:00:00Z)", name, s)
	}
	return t.UTC(), nil
}

// EncodeCursor makes the opaque paging cursor for the place after c.
func EncodeCursor(c schema.Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte("v1:" + c.String()))
}

func decodeCursor(s string) (schema.Cursor, error) {
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

// FilterRecord returns f as recorded in the access log.
func FilterRecord(q EventQuery) map[string]string {
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
	if q.Format != "json" {
		m["format"] = q.Format
	}
	return m
}

// AuditEventJSON is the JSON shape of one event in audit answers.
type AuditEventJSON struct {
	Position   int64           `json:"position"`
	DeliveryID string          `json:"delivery_id"`
	Type       string          `json:"type"`
	UserID     *string         `json:"user_id"`
	OccurredAt time.Time       `json:"occurred_at"`
	ReceivedAt time.Time       `json:"received_at"`
	ChainHash  *string         `json:"chain_hash"`
	Payload    json.RawMessage `json:"payload"`
}

// NewAuditEventJSON returns e in its JSON shape.
func NewAuditEventJSON(e schema.AuditEvent) AuditEventJSON {
	j := AuditEventJSON{
		Position: e.Position, DeliveryID: e.DeliveryID, Type: e.Type,
		OccurredAt: e.OccurredAt, ReceivedAt: e.ReceivedAt,
		Payload: appendPayload(nil, e.Body),
	}
	if e.UserID != "" {
		u := e.UserID
		j.UserID = &u
	}
	if e.ChainHash != nil {
		h := hex.EncodeToString(e.ChainHash)
		j.ChainHash = &h
	}
	return j
}

// UserHistory is one user's state at a point in time and one page of the
// events about them.
type UserHistory struct {
	UserID string     `json:"user_id"`
	At     *time.Time `json:"at"` // nil: now
	// Exists is false when no user.* event about the user occurred by At.
	Exists bool        `json:"exists"`
	State  domain.User `json:"state"`
	// Poison describes the first maxPoison events the fold skipped because
	// they do not decode; PoisonCount counts them all.
	Poison      []string `json:"poison,omitempty"`
	PoisonCount int      `json:"poison_count,omitempty"`
	// Total is how many events the pages list in all (those that occurred
	// by At, or every one with UserPage.Later); Offset how many come before
	// this page; Count how many are on it. NextCursor continues after it
	// ("" at the end).
	Total      int64            `json:"total"`
	Offset     int64            `json:"offset"`
	Count      int              `json:"count"`
	Events     []AuditEventJSON `json:"events"`
	NextCursor string           `json:"next_cursor"`
	// Projection is the users table row (only without At); Matches says
	// whether the fold equals it (nil when there is no row yet).
	Projection *domain.User `json:"projection,omitempty"`
	Matches    *bool        `json:"matches_projection,omitempty"`
}

// UserPage says which page of a user's events UserAt lists.
type UserPage struct {
	After    schema.Cursor // continue after this place (from NextCursor)
	Limit    int           // events on the page, default DefaultAuditLimit
	MaxBytes int64         // end the page once its bodies reach this; default MaxPageBytes
	// Later lists the events that occurred after `at` too (the audit page's
	// timeline shows them greyed); the fold never reads them.
	Later bool
}

// maxPoison is how many skipped events a UserHistory describes.
const maxPoison = 100

// userEventTypes are the event types the fold reads (domain.IsUserEvent).
var userEventTypes = []string{"user.created", "user.updated", "user.deleted"}

// occurredBy is the EventFilter.Until that keeps events whose occurred_at
// is at or before at (zero: no bound). occurred_at has microsecond
// precision: <= at is < at's next microsecond.
func occurredBy(at time.Time) time.Time {
	if at.IsZero() {
		return time.Time{}
	}
	return at.UTC().Truncate(time.Microsecond).Add(time.Microsecond)
}

// UserAt folds the user's state as of `at` (zero: now) with domain.Apply, the
// users projection's own fold, from every one of that user's events whose
// occurred_at is at or before `at`: the time Clerk says the change happened,
// not when the ledger received it. An event that arrives late but occurred
// before `at` therefore changes the answer for `at` once it is stored (the
// answer is "what Clerk reports had happened by then, as the ledger knows it
// now"). The fold streams the events one at a time, so memory does not grow
// with the user's history. It lists one page of the events (page), counts
// them all, and without `at` also reads the users projection's row and says
// whether the fold equals it. Everything comes from one snapshot.
func UserAt(ctx context.Context, db *sqlx.DB, userID string, at time.Time, page UserPage) (UserHistory, error) {
	events := []AuditEventJSON{}
	h, err := userView(ctx, db, userID, at, page, func(e schema.AuditEvent) {
		events = append(events, NewAuditEventJSON(e))
	})
	h.Events = events
	return h, err
}

// userView is UserAt handing each event of the page to fn as it arrives
// (e.Body is valid only during the call) instead of keeping them.
func userView(ctx context.Context, db *sqlx.DB, userID string, at time.Time, page UserPage, fn func(schema.AuditEvent)) (UserHistory, error) {
	h := UserHistory{UserID: userID}
	if !at.IsZero() {
		at = at.UTC()
		h.At = &at
	}
	if page.Limit <= 0 {
		page.Limit = DefaultAuditLimit
	}
	if page.MaxBytes <= 0 {
		page.MaxBytes = MaxPageBytes
	}
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return h, fmt.Errorf("read user %s: %w", userID, schema.Classify(err))
	}
	defer tx.Rollback()
	var u domain.User
	fold := schema.EventFilter{UserID: userID, Types: userEventTypes, Until: occurredBy(at)}
	if _, err := schema.EachEvent(ctx, tx, fold, func(e domain.Event) error {
		next, err := domain.Apply(u, e)
		if err != nil {
			if h.PoisonCount++; len(h.Poison) < maxPoison {
				h.Poison = append(h.Poison, domain.ErrorMessage(err))
			}
			return nil
		}
		u = next
		return nil
	}); err != nil {
		return h, fmt.Errorf("fold user %s: %w", userID, err)
	}
	h.State, h.Exists = u, u.Exists()

	list := schema.EventFilter{UserID: userID}
	if !page.Later {
		list.Until = occurredBy(at)
	}
	if h.Total, err = schema.CountAuditEvents(ctx, tx, list); err != nil {
		return h, err
	}
	if page.After != (schema.Cursor{}) {
		before := list
		before.UpTo = page.After
		if h.Offset, err = schema.CountAuditEvents(ctx, tx, before); err != nil {
			return h, err
		}
	}
	pf := list
	pf.After, pf.Limit, pf.MaxBytes = page.After, page.Limit, page.MaxBytes
	p, err := schema.EachAuditEvent(ctx, tx, pf, func(e schema.AuditEvent) error {
		fn(e)
		return nil
	})
	if err != nil {
		return h, err
	}
	h.Count = p.Count
	if p.More {
		h.NextCursor = EncodeCursor(p.Last)
	}
	if at.IsZero() {
		pu, err := schema.GetUser(ctx, tx, userID)
		switch {
		case domain.ErrorCode(err) == domain.ENOTFOUND:
		case err != nil:
			return h, err
		default:
			h.Projection = &pu
			same := SameUser(u, pu)
			h.Matches = &same
		}
	}
	return h, tx.Commit()
}

// SameUser reports whether a and b are the same state, comparing public
// metadata as JSON values (jsonb does not keep the bytes).
func SameUser(a, b domain.User) bool {
	var ma, mb any
	if json.Unmarshal(a.PublicMetadata, &ma) != nil || json.Unmarshal(b.PublicMetadata, &mb) != nil {
		return false
	}
	if !reflect.DeepEqual(ma, mb) {
		return false
	}
	a.PublicMetadata, b.PublicMetadata = nil, nil
	return a.ID == b.ID && a.Email == b.Email && a.FirstName == b.FirstName && a.LastName == b.LastName &&
		a.Username == b.Username && a.ImageURL == b.ImageURL && a.CreatedAt.Equal(b.CreatedAt) &&
		a.UpdatedAt.Equal(b.UpdatedAt) && a.Deleted == b.Deleted && a.DeletedAt.Equal(b.DeletedAt) &&
		a.Version == b.Version
}

// VerifyOptions says what VerifyLedger checks and who asked.
type VerifyOptions struct {
	Digest     *domain.Digest    // the kept digest the chain must reach, if any
	Signatures bool              // also re-check every stored delivery's Svix signature
	Verifier   *svixsig.Verifier // needed with Signatures
	Actor      string
	Channel    string
	// Parts is how many ranges of the chain are checked at once, each on a
	// connection of its own (0: schema.VerifyChain's choice).
	Parts int
}

// VerifyResult is the outcome of VerifyLedger.
type VerifyResult struct {
	OK         bool                    `json:"ok"`
	Chain      schema.ChainReport      `json:"-"`
	Signatures *schema.SignatureReport `json:"-"`
}

// Message returns "OK ..." or the first problem, for people.
func (r VerifyResult) Message() string {
	if !r.Chain.OK {
		return "FAIL: " + r.Chain.Problem
	}
	if r.Signatures != nil && !r.Signatures.OK {
		return "FAIL: event at position " + strconv.FormatInt(r.Signatures.FirstBad, 10) + " does not carry a valid Svix signature for its stored bytes (" +
			strconv.FormatInt(r.Signatures.Failed, 10) + " of " + strconv.FormatInt(r.Signatures.Checked, 10) + " fail)"
	}
	msg := "OK: " + strconv.FormatInt(r.Chain.Checked, 10) + " links match"
	if r.Chain.Head.Position > 0 {
		msg += ", head " + r.Chain.Head.String()
	}
	if r.Chain.Digest != nil {
		msg += ", reaches the kept digest"
	}
	if r.Signatures != nil {
		msg += ", " + strconv.FormatInt(r.Signatures.Checked, 10) + " signatures valid"
	}
	return msg
}

// FirstBad is the first position that does not match, 0 when OK.
func (r VerifyResult) FirstBad() int64 {
	if !r.Chain.OK {
		return r.Chain.FirstBad
	}
	if r.Signatures != nil && !r.Signatures.OK {
		return r.Signatures.FirstBad
	}
	return 0
}

// VerifyLedger recomputes the hash chain (schema.VerifyChain), optionally
// re-checks every stored delivery's signature ignoring its age, and records
// the outcome in the verification log. Errors mean the check could not run
// or could not be recorded; a mismatch is an OK=false result.
func VerifyLedger(ctx context.Context, db *sqlx.DB, o VerifyOptions) (VerifyResult, error) {
	var res VerifyResult
	var chain schema.ChainReport
	var err error
	if o.Parts > 0 {
		chain, err = schema.VerifyChainParts(ctx, db, o.Digest, o.Parts)
	} else {
		chain, err = schema.VerifyChain(ctx, db, o.Digest)
	}
	if err != nil {
		return res, err
	}
	res.Chain = chain
	res.OK = chain.OK
	rec := schema.Verification{
		Actor: o.Actor, Channel: o.Channel, OK: chain.OK, Checked: chain.Checked, Head: chain.Head,
		FirstBad: chain.FirstBad, Problem: chain.Problem, Duration: chain.Duration,
	}
	if o.Digest != nil {
		rec.Digest = o.Digest.String()
	}
	if o.Signatures {
		if o.Verifier == nil {
			return res, domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET is not set: cannot re-check signatures")
		}
		h := http.Header{}
		sigs, err := schema.VerifySignatures(ctx, db, func(e domain.Event) error {
			h.Set("svix-id", e.DeliveryID)
			h.Set("svix-timestamp", strconv.FormatInt(e.SvixTimestamp, 10))
			h.Set("svix-signature", e.SvixSignature)
			return o.Verifier.VerifyIgnoringTimestamp(e.Body, h)
		})
		if err != nil {
			return res, err
		}
		res.Signatures = &sigs
		res.OK = res.OK && sigs.OK
		rec.SignaturesChecked, rec.SignaturesFailed = sigs.Checked, sigs.Failed
		rec.Duration += sigs.Duration
		if rec.OK && !sigs.OK {
			rec.OK, rec.FirstBad, rec.Problem = false, sigs.FirstBad, res.Message()
		}
	}
	if err := schema.RecordVerification(context.WithoutCancel(ctx), db, rec); err != nil {
		return res, err
	}
	return res, nil
}
