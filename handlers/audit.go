package handlers

import (
	"bufio"
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/svixsig"
	"github.com/jmoiron/sqlx"
)

// actorOf names who made an audit request, for the access log.
func actorOf(r *http.Request) string {
	s, _ := sessionFrom(r.Context())
	return s.UserID
}

// eventsPage is the answer of GET /api/audit/events (format=json);
// appendEventsPage encodes it.
type eventsPage struct {
	Events []AuditEventJSON `json:"events"`
	Count  int              `json:"count"`
	// NextCursor continues after the last event; empty when the page was
	// not full (the end of what is visible now).
	NextCursor string `json:"next_cursor"`
}

// queryEventsPage runs one page of a history query, calling fn with each
// event as it arrives (e.Body valid only during the call), then records the
// query in the access log and waits for that commit. The page ends early once
// its bodies reach maxBytes (it always holds its first event). It returns the
// number of events and the cursor after them ("" when nothing follows: the
// end of what is visible now). After an error, what fn built must not be
// shown: a query that cannot be recorded is not answered.
func queryEventsPage(ctx context.Context, db *sqlx.DB, q EventQuery, maxBytes int64, actor, channel string, fn func(i int, e schema.AuditEvent)) (int, string, error) {
	var last domain.Event
	var bytes int64
	i := 0
	q.Filter.MaxBytes = maxBytes
	n, err := schema.QueryAuditEventsRecorded(ctx, db, q.Filter, schema.Access{Actor: actor, Channel: channel, Action: schema.ActionEvents, Filters: FilterRecord(q)},
		func(e schema.AuditEvent) error {
			fn(i, e)
			i++
			bytes += int64(len(e.Body))
			last = e.Event
			return nil
		})
	if err != nil {
		return 0, "", err
	}
	next := ""
	if schema.PageMore(q.Filter, n, bytes) {
		next = EncodeCursor(schema.After(last))
	}
	return n, next, nil
}

// MaxPageBytes is the most body bytes one page of the JSON API holds (the
// history and a user's events): a page stops early there and its next_cursor
// continues. A page always holds its first event (at most 1 MiB).
const MaxPageBytes = 8 << 20

// maxHTMLPageBytes is MaxPageBytes for the audit pages, which show each
// body pretty-printed and HTML-escaped (several times its size).
const maxHTMLPageBytes = 2 << 20

// handleAuditEvents serves GET /api/audit/events: the history query (one
// page as JSON, at most MaxPageBytes of bodies) or, with format=jsonl|csv,
// the streamed export of every matching event. 400 names a bad parameter;
// 503 when the audit reads' connections are all busy. Every call is recorded
// in the access log with its filters and row count.
func handleAuditEvents(log *slog.Logger, db *sqlx.DB, slots *auditSlots, idle time.Duration, now func() time.Time) http.HandlerFunc {
	bufs := sync.Pool{New: func() any { b := make([]byte, 0, 256<<10); return &b }}
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := ParseEventQuery(r.URL.Query())
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if q.Format != "json" {
			exportEvents(w, r, log, db, slots, idle, q, now())
			return
		}
		// The page is encoded as the rows arrive, into a pooled buffer:
		// no copy of the bodies is kept, and little garbage is left for
		// the collector, whose cycles were most of the latency tail.
		buf := bufs.Get().(*[]byte)
		defer func() {
			if cap(*buf) <= maxPooledPage {
				bufs.Put(buf)
			}
		}()
		release, err := slots.acquire(r.Context(), 1)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		b := append((*buf)[:0], eventsPageStart...)
		n, next, err := queryEventsPage(r.Context(), db, q, MaxPageBytes, actorOf(r), schema.ChannelAPI, func(i int, e schema.AuditEvent) {
			b = appendPageEvent(b, i, e)
		})
		release() // the connection is back: writing to a slow client holds none
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		b = appendEventsPageEnd(b, n, next)
		*buf = b
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		w.Write(b)
	}
}

// maxPooledPage is the largest history page buffer handleAuditEvents keeps
// for reuse; a bigger one (a page of 1000 large bodies) goes to the collector.
const maxPooledPage = 1 << 20

// exportEvents streams every event matching q in q.Format with constant
// memory, then records the export and its row count in the access log (also
// when the client goes away mid-way). It holds an audit slot, a REPEATABLE
// READ transaction and its connection while it streams, so it aborts when the
// client takes no bytes for idle: the transaction rolls back and the
// connection goes back to the pool. Once the first byte is out, a failure
// can only cut the stream short: it is logged and the body ends early.
func exportEvents(w http.ResponseWriter, r *http.Request, log *slog.Logger, db *sqlx.DB, slots *auditSlots, idle time.Duration, q EventQuery, now time.Time) {
	if idle <= 0 {
		idle = DefaultExportIdleTimeout
	}
	release, err := slots.acquire(r.Context(), 1)
	if err != nil {
		writeError(w, r, log, err)
		return
	}
	defer release()
	ext := q.Format
	name := "ledger-events-" + now.UTC().Format("20060102T150405Z") + "." + ext
	w.Header().Set("Content-Type", ExportContentType(q.Format))
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// An export may outlast the server's WriteTimeout: instead, each write
	// must make progress within idle.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})

	bw := bufio.NewWriterSize(newProgressWriter(w, idle), 64<<10)
	enc, err := NewEventWriter(bw, q.Format)
	if err != nil {
		writeError(w, r, log, err)
		return
	}
	n, err := schema.StreamAuditEvents(r.Context(), db, q.Filter, enc.Write)
	if err == nil {
		if err = enc.Flush(); err == nil {
			err = bw.Flush()
		}
	}
	switch {
	case err != nil && stalled(err):
		log.WarnContext(r.Context(), "audit export aborted: the client took no bytes", "idle_s", idle.Seconds(), "rows", n)
	case err != nil && n == 0 && r.Context().Err() == nil:
		// Nothing has reached the client yet beyond buffers: answer properly.
		w.Header().Del("Content-Disposition")
		writeError(w, r, log, err)
	case err != nil && r.Context().Err() == nil:
		log.ErrorContext(r.Context(), "audit export cut short", "rows", n, "err", err)
	}
	rec := schema.Access{Actor: actorOf(r), Channel: schema.ChannelAPI, Action: schema.ActionExport, Filters: FilterRecord(q), RowCount: n}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if err := schema.RecordAccess(ctx, db, rec); err != nil {
		log.ErrorContext(r.Context(), "record audit export", "rows", n, "err", err)
	}
}

// parseAt parses the optional at parameter (RFC 3339).
func parseAt(r *http.Request) (time.Time, error) {
	s := strings.TrimSpace(r.URL.Query().Get("at"))
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, domain.Errorf(domain.EINVALID, "at %q is not an RFC 3339 time (e.g. 2024-05-28T12:00:00Z)", s)
	}
	return t, nil
}

// checkUserID returns EINVALID unless id (from a path) is 1 to 200 bytes
// of text (checkText).
func checkUserID(id string) error {
	if id == "" || len(id) > 200 {
		return domain.Errorf(domain.EINVALID, "user id must be 1 to 200 characters")
	}
	return checkText("the user id in the path", id, 200)
}

// userAt runs UserAt within an audit slot and records it in the access log
// (the events on the page as its row count).
func userAt(ctx context.Context, db *sqlx.DB, slots *auditSlots, id string, at time.Time, page UserPage, actor, channel string, fn func(schema.AuditEvent)) (UserHistory, error) {
	if err := checkUserID(id); err != nil {
		return UserHistory{}, err
	}
	release, err := slots.acquire(ctx, 1)
	if err != nil {
		return UserHistory{}, err
	}
	h, err := userView(ctx, db, id, at, page, fn)
	release()
	if err != nil {
		return h, err
	}
	filters := map[string]string{"user_id": id}
	if !at.IsZero() {
		filters["at"] = at.UTC().Format(time.RFC3339Nano)
	}
	if page.After != (schema.Cursor{}) {
		filters["cursor"] = page.After.String()
	}
	if err := schema.RecordAccess(ctx, db, schema.Access{Actor: actor, Channel: channel, Action: schema.ActionUser, Filters: filters, RowCount: int64(h.Count)}); err != nil {
		return h, err
	}
	return h, nil
}

// ParseUserPage reads limit (default DefaultAuditLimit, at most
// MaxAuditLimit) and cursor (a next_cursor) for a page of a user's events.
func ParseUserPage(v url.Values) (UserPage, error) {
	p := UserPage{Limit: DefaultAuditLimit}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return p, domain.Errorf(domain.EINVALID, "limit %q is not a positive integer", s)
		}
		if n > MaxAuditLimit {
			return p, domain.Errorf(domain.EINVALID, "limit %d is more than %d", n, MaxAuditLimit)
		}
		p.Limit = n
	}
	if s := v.Get("cursor"); s != "" {
		c, err := decodeCursor(s)
		if err != nil {
			return p, err
		}
		p.After = c
	}
	return p, nil
}

// handleAuditUser serves GET /api/audit/users/{id}?at=RFC3339&limit=&cursor=:
// the user's state as of `at` (default now) folded from every event about
// them by then, and one page of those events (limit, default 100, at most
// MaxPageBytes of bodies; next_cursor continues; total counts them all).
// 404 when the ledger has no event about that user by then.
func handleAuditUser(log *slog.Logger, db *sqlx.DB, slots *auditSlots) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := r.URL.Query()
		for k, vs := range v {
			if k != "at" && k != "limit" && k != "cursor" {
				writeError(w, r, log, domain.Errorf(domain.EINVALID, "unknown parameter %q (want at, limit, cursor)", k))
				return
			}
			if len(vs) > 1 {
				writeError(w, r, log, domain.Errorf(domain.EINVALID, "parameter %q is given %d times", k, len(vs)))
				return
			}
		}
		at, err := parseAt(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		page, err := ParseUserPage(v)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		page.MaxBytes = MaxPageBytes
		events := []AuditEventJSON{}
		h, err := userAt(r.Context(), db, slots, r.PathValue("id"), at, page, actorOf(r), schema.ChannelAPI, func(e schema.AuditEvent) {
			events = append(events, NewAuditEventJSON(e))
		})
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if h.Total == 0 {
			writeError(w, r, log, domain.Errorf(domain.ENOTFOUND, "the ledger has no event about user %s by then", h.UserID))
			return
		}
		h.Events = events
		writeJSON(w, http.StatusOK, h)
	}
}

// verifyAnswer is the JSON answer of POST /api/audit/verify.
type verifyAnswer struct {
	OK           bool      `json:"ok"`
	Message      string    `json:"message"`
	FirstBad     int64     `json:"first_bad_position,omitempty"`
	Checked      int64     `json:"checked"`
	Head         string    `json:"head,omitempty"`
	HeadSealedAt time.Time `json:"head_sealed_at,omitzero"`
	Digest       string    `json:"digest,omitempty"`
	Signatures   *struct {
		Checked int64   `json:"checked"`
		Failed  int64   `json:"failed"`
		Bad     []int64 `json:"bad_positions,omitempty"`
	} `json:"signatures,omitempty"`
	DurationMS int64 `json:"duration_ms"`
}

func newVerifyAnswer(res VerifyResult) verifyAnswer {
	a := verifyAnswer{OK: res.OK, Message: res.Message(), FirstBad: res.FirstBad(), Checked: res.Chain.Checked,
		HeadSealedAt: res.Chain.HeadSealedAt, DurationMS: res.Chain.Duration.Milliseconds()}
	if res.Chain.Head.Position > 0 {
		a.Head = res.Chain.Head.String()
	}
	if res.Chain.Digest != nil {
		a.Digest = res.Chain.Digest.String()
	}
	if s := res.Signatures; s != nil {
		a.Signatures = &struct {
			Checked int64   `json:"checked"`
			Failed  int64   `json:"failed"`
			Bad     []int64 `json:"bad_positions,omitempty"`
		}{s.Checked, s.Failed, s.Bad}
		a.DurationMS += s.Duration.Milliseconds()
	}
	return a
}

// verifyRunner lets one verification run at a time: each reads the whole
// ledger.
type verifyRunner struct {
	mu       sync.Mutex
	db       *sqlx.DB
	verifier *svixsig.Verifier
	slots    *auditSlots
}

// parseVerifyParams reads digest and signatures from v (a form). Errors:
// EINVALID naming an unknown, repeated or malformed field.
func parseVerifyParams(v url.Values) (*domain.Digest, bool, error) {
	for k, vs := range v {
		if k != "digest" && k != "signatures" {
			return nil, false, domain.Errorf(domain.EINVALID, "unknown parameter %q (want digest, signatures)", k)
		}
		if len(vs) > 1 {
			return nil, false, domain.Errorf(domain.EINVALID, "parameter %q is given %d times", k, len(vs))
		}
	}
	var d *domain.Digest
	if s := strings.TrimSpace(v.Get("digest")); s != "" {
		dg, err := domain.ParseDigest(s)
		if err != nil {
			return nil, false, err
		}
		d = &dg
	}
	sigs := false
	if s := v.Get("signatures"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, false, domain.Errorf(domain.EINVALID, "signatures %q is not true or false", s)
		}
		sigs = b
	}
	return d, sigs, nil
}

func (v *verifyRunner) run(ctx context.Context, d *domain.Digest, sigs bool, actor, channel string) (VerifyResult, error) {
	if !v.mu.TryLock() {
		return VerifyResult{}, domain.Errorf(domain.ERATELIMIT, "a verification is already running; try again when it is done")
	}
	defer v.mu.Unlock()
	parts, weight := verifyParts(v.slots)
	release, err := v.slots.acquire(ctx, weight)
	if err != nil {
		return VerifyResult{}, err
	}
	defer release()
	return VerifyLedger(ctx, v.db, VerifyOptions{Digest: d, Signatures: sigs, Verifier: v.verifier, Actor: actor, Channel: channel, Parts: parts})
}

// handleAuditVerify serves POST /api/audit/verify with the optional fields
// digest=POSITION:HASH and signatures=true, in the query or an urlencoded
// body: it recomputes the hash chain (and re-checks signatures), records
// the run, and answers 200 with ok true or false and the first position
// that does not match. 429 while another verification runs. It is a POST,
// behind checkOrigin, so that no link can start a verification.
func handleAuditVerify(log *slog.Logger, runner *verifyRunner) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		form, err := readForm(w, r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		d, sigs, err := parseVerifyParams(form)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		res, err := runner.run(r.Context(), d, sigs, actorOf(r), schema.ChannelAPI)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, newVerifyAnswer(res))
	}
}
