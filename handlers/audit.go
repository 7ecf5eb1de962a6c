package handlers

import (
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// The audit routes are HTTP over the audit application (package audit):
// they parse requests into its typed queries, call it as the signed-in
// auditor (every operation records its own access), and encode its answers.

// DefaultExportIdleTimeout is how long an export may go without its client
// taking a byte before it is aborted, unless Deps.ExportIdleTimeout says
// otherwise.
const DefaultExportIdleTimeout = 30 * time.Second

// maxHTMLPageBytes is audit.MaxPageBytes for the audit pages, which show
// each body pretty-printed and HTML-escaped (several times its size).
const maxHTMLPageBytes = 2 << 20

// actorOf names who made an audit request, for the access log.
func actorOf(r *http.Request, channel string) audit.Actor {
	s, _ := sessionFrom(r.Context())
	return audit.Actor{ID: s.UserID, Channel: channel}
}

// handleAuditEvents serves GET /api/audit/events: the history query (one
// page as JSON, at most audit.MaxPageBytes of bodies) or, with
// format=jsonl|csv, the streamed export of every matching event. 400 names a
// bad parameter; 503 when the audit reads' connections are all busy. Every
// call is recorded in the access log with its filters and row count.
func handleAuditEvents(log *slog.Logger, svc *audit.Service, idle time.Duration, now func() time.Time) http.HandlerFunc {
	bufs := sync.Pool{New: func() any { b := make([]byte, 0, 256<<10); return &b }}
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := parseEventQuery(r.URL.Query())
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if q.Format != audit.FormatJSON {
			exportEvents(w, r, log, svc, idle, q, now())
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
		b := append((*buf)[:0], audit.EventsPageStart...)
		n, next, err := svc.Events(r.Context(), actorOf(r, schema.ChannelAPI), q, audit.MaxPageBytes, func(i int, e schema.AuditEvent) {
			b = audit.AppendPageEvent(b, i, e)
		})
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		b = audit.AppendEventsPageEnd(b, n, next)
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

// exportEvents streams every event matching q in q.Format (audit.Export).
// The export holds an audit slot, a REPEATABLE READ transaction and its
// connection while it streams, so it aborts when the client takes no bytes
// for idle: the transaction rolls back and the connection goes back to the
// pool. Once the first byte is out, a failure can only cut the stream
// short: it is logged and the body ends early.
func exportEvents(w http.ResponseWriter, r *http.Request, log *slog.Logger, svc *audit.Service, idle time.Duration, q audit.EventQuery, now time.Time) {
	if idle <= 0 {
		idle = DefaultExportIdleTimeout
	}
	name := "ledger-events-" + now.UTC().Format("20060102T150405Z") + "." + q.Format
	w.Header().Set("Content-Type", audit.ExportContentType(q.Format))
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// An export may outlast the server's WriteTimeout: instead, each write
	// must make progress within idle.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	n, err := svc.Export(r.Context(), actorOf(r, schema.ChannelAPI), q, newProgressWriter(w, idle))
	switch {
	case err == nil:
	case stalled(err):
		log.WarnContext(r.Context(), "audit export aborted: the client took no bytes", "idle_s", idle.Seconds(), "rows", n)
	case n == 0 && r.Context().Err() == nil:
		// Nothing has reached the client yet beyond buffers: answer properly.
		w.Header().Del("Content-Disposition")
		writeError(w, r, log, err)
	case r.Context().Err() == nil:
		log.ErrorContext(r.Context(), "audit export cut short", "rows", n, "err", err)
	}
}

// parseAt parses the optional at parameter (RFC 3339, parseTimeText).
func parseAt(r *http.Request) (time.Time, error) {
	s := strings.TrimSpace(r.URL.Query().Get("at"))
	if s == "" {
		return time.Time{}, nil
	}
	return parseTimeText("at", s)
}

// checkUserID returns EINVALID unless id (from a path) is 1 to 200 bytes
// of text (checkText).
func checkUserID(id string) error { return checkPathID("user", id) }

// checkPathID returns EINVALID unless id, the id of a what (user,
// organization) from a path, is 1 to 200 bytes of text (checkText).
func checkPathID(what, id string) error {
	if id == "" || len(id) > 200 {
		return domain.Errorf(domain.EINVALID, "%s id must be 1 to 200 characters", what)
	}
	return checkText("the "+what+" id in the path", id, 200)
}

// checkParams returns EINVALID naming the first parameter of v that is not
// one of allowed, or is given more than once.
func checkParams(v url.Values, allowed ...string) error {
	for k, vs := range v {
		if !slices.Contains(allowed, k) {
			return domain.Errorf(domain.EINVALID, "unknown parameter %q (want %s)", k, strings.Join(allowed, ", "))
		}
		if len(vs) > 1 {
			return domain.Errorf(domain.EINVALID, "parameter %q is given %d times", k, len(vs))
		}
	}
	return nil
}

// viewArgs checks the query of a request for one what's view (user,
// organization) against allowed (checkParams) and returns the id from the
// path (checkPathID) and `at` (parseAt; zero: now). Errors are EINVALID.
func viewArgs(r *http.Request, what string, allowed ...string) (id string, at time.Time, err error) {
	if err := checkParams(r.URL.Query(), allowed...); err != nil {
		return "", time.Time{}, err
	}
	if at, err = parseAt(r); err != nil {
		return "", time.Time{}, err
	}
	id = r.PathValue("id")
	if err := checkPathID(what, id); err != nil {
		return "", time.Time{}, err
	}
	return id, at, nil
}

// handleAuditOrganization serves GET
// /api/audit/organizations/{id}?at=RFC3339&limit=&cursor=: the
// organization's state and memberships as of `at` (default now), folded
// from every event about it by then, and one page of its history
// (organization, membership and invitation events; limit, default 100, at
// most audit.MaxPageBytes of bodies; next_cursor continues). 404 when the
// ledger has no event about it by then.
func handleAuditOrganization(log *slog.Logger, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, at, err := viewArgs(r, "organization", "at", "limit", "cursor")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		page, err := parseOrganizationPage(r.URL.Query())
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		page.MaxBytes = audit.MaxPageBytes
		h, err := svc.Organization(r.Context(), actorOf(r, schema.ChannelAPI), id, at, page)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if h.Total == 0 && !h.Exists {
			writeError(w, r, log, domain.Errorf(domain.ENOTFOUND, "the ledger has no event about organization %s by then", id))
			return
		}
		writeAnswer(w, r, log, h)
	}
}

// handleAuditUserOrganizations serves GET
// /api/audit/users/{id}/organizations?at=RFC3339: which organizations the
// user was in at `at` (default now), with which role, folded from the
// ledger (audit.Service.UserOrganizations); memberships that had ended by
// then are listed with member false.
func handleAuditUserOrganizations(log *slog.Logger, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, at, err := viewArgs(r, "user", "at")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		res, err := svc.UserOrganizations(r.Context(), actorOf(r, schema.ChannelAPI), id, at)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeAnswer(w, r, log, res)
	}
}

// handleAuditUser serves GET /api/audit/users/{id}?at=RFC3339&order=&limit=&cursor=:
// the user's state as of `at` (default now) folded from every event about
// them by then, and one page of those events, oldest first, in time order
// (order=time, the default: when each change happened in Clerk) or ledger
// order (order=ledger), each with the change it made to the folded state
// (limit, default 100, at most audit.MaxPageBytes of bodies; next_cursor
// continues; total counts them all). 404 when the ledger has no event about
// that user by then.
func handleAuditUser(log *slog.Logger, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, at, err := viewArgs(r, "user", "at", "order", "limit", "cursor")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		page, err := parseUserPage(r.URL.Query())
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		page.MaxBytes = audit.MaxPageBytes
		h, err := svc.User(r.Context(), actorOf(r, schema.ChannelAPI), id, at, page)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if h.Total == 0 {
			writeError(w, r, log, domain.Errorf(domain.ENOTFOUND, "the ledger has no event about user %s by then", h.UserID))
			return
		}
		writeAnswer(w, r, log, h)
	}
}

// verifyAnswer is the JSON answer of POST /api/audit/verify.
type verifyAnswer struct {
	OK       bool   `json:"ok"`
	Message  string `json:"message"`
	FirstBad int64  `json:"first_bad_position,omitempty"`
	Checked  int64  `json:"checked"` // leaves recomputed
	TreeSize int64  `json:"tree_size"`
	Root     string `json:"root,omitempty"` // base64
	// Checkpoints kept checkpoints whose roots (and, with a key, signatures)
	// matched; LatestCheckpoint the latest's tree size (0: none).
	Checkpoints      int64  `json:"checkpoints"`
	LatestCheckpoint int64  `json:"latest_checkpoint,omitempty"`
	SignaturesOfKey  bool   `json:"checkpoint_signatures_checked"`
	Unsealed         int64  `json:"unsealed"`
	Digest           string `json:"digest,omitempty"` // the frozen chain's kept digest checked
	Signatures       *struct {
		Checked int64   `json:"checked"`
		Failed  int64   `json:"failed"`
		Bad     []int64 `json:"bad_positions,omitempty"`
	} `json:"signatures,omitempty"`
	DurationMS int64 `json:"duration_ms"`
}

func newVerifyAnswer(res audit.VerifyResult) verifyAnswer {
	t := res.Tree
	a := verifyAnswer{OK: res.OK, Message: res.Message(), FirstBad: res.FirstBad(), Checked: t.Checked, TreeSize: t.Tree.Size,
		Checkpoints: t.Checkpoints, SignaturesOfKey: res.KeyChecked, Unsealed: t.Unsealed, DurationMS: t.Duration.Milliseconds()}
	if t.Tree.Size > 0 {
		a.Root = base64.StdEncoding.EncodeToString(t.Tree.Root[:])
	}
	if t.Latest != nil {
		a.LatestCheckpoint = t.Latest.Size
	}
	if c := res.Chain; c != nil {
		a.DurationMS += c.Duration.Milliseconds()
		if c.Digest != nil {
			a.Digest = c.Digest.String()
		}
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

// handleAuditVerify serves POST /api/audit/verify with the optional fields
// digest=POSITION:HASH (of the frozen hash chain) and signatures=true, in
// the query or an urlencoded body: it recomputes the Merkle tree (and the
// frozen chain up to the digest, and re-checks signatures), records
// the run, and answers 200 with ok true or false and the first position
// that does not match. 429 while another verification runs. It is a POST,
// behind checkOrigin, so that no link can start a verification.
func handleAuditVerify(log *slog.Logger, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		form, err := readForm(w, r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		o, err := parseVerifyParams(form)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		res, err := svc.Verify(r.Context(), actorOf(r, schema.ChannelAPI), o)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeAnswer(w, r, log, newVerifyAnswer(res))
	}
}

// progressWriter writes a streamed response with a write deadline renewed
// before each piece of at most progressChunk bytes: a client that takes no
// bytes for idle fails the write (which also cancels the request's
// context), so a stalled reader cannot hold the stream's transaction and
// connection for longer than that.
type progressWriter struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

const progressChunk = 16 << 10

func newProgressWriter(w http.ResponseWriter, idle time.Duration) *progressWriter {
	return &progressWriter{w: w, rc: http.NewResponseController(w), idle: idle}
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		piece := b[:min(len(b), progressChunk)]
		// ErrNotSupported (a ResponseWriter without a connection, as in
		// in-process tests) leaves the write without a deadline.
		_ = p.rc.SetWriteDeadline(time.Now().Add(p.idle))
		m, err := p.w.Write(piece)
		n += m
		if err != nil {
			return n, err
		}
		b = b[m:]
	}
	return n, nil
}

// stalled reports whether err is a write that hit its deadline: the client
// stopped taking bytes.
func stalled(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// requireAuditor lets a request through only when its session (sessionFrom)
// is an auditor's: no session is 401, any other user 403, a failed role
// lookup 503. API answers are JSON (writeError); with pg, pages get its
// error page (pages.renderError). A page request that passes is marked as
// an auditor's, so the layout shows the workspace's navigation.
func requireAuditor(log *slog.Logger, auditors *audit.Service, pg *pages, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail := func(err error) {
			if pg != nil {
				pg.renderError(w, r, err)
				return
			}
			writeError(w, r, log, err)
		}
		s, ok := sessionFrom(r.Context())
		if !ok {
			fail(domain.Errorf(domain.EUNAUTHORIZED, "sign in to use the audit workspace"))
			return
		}
		yes, err := auditors.IsAuditor(r.Context(), s.UserID)
		if err != nil {
			fail(err)
			return
		}
		if !yes {
			fail(domain.Errorf(domain.EFORBIDDEN, "only auditors may use the audit workspace"))
			return
		}
		next.ServeHTTP(w, withAuditor(r))
	})
}
