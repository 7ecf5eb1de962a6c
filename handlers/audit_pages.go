package handlers

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"html"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

//go:embed templates/audit_*.html
var auditTemplateFS embed.FS

// parseAuditTemplates parses the audit workspace's templates.
func parseAuditTemplates() (*template.Template, error) {
	return template.New("audit").Funcs(template.FuncMap{
		"deref":      func(b *bool) bool { return b != nil && *b },
		"isolate":    isolate,
		"escapeBidi": escapeBidi,
	}).ParseFS(auditTemplateFS, "templates/audit_*.html")
}

// auditPages renders the workspace pages. When the templates do not parse
// (a build defect), every page answers 500 and says so in the log.
type auditPages struct {
	log  *slog.Logger
	own  origins // tells requests from the workspace's own pages
	tmpl *template.Template
	err  error
}

func newAuditPages(log *slog.Logger, own origins) *auditPages {
	t, err := parseAuditTemplates()
	return &auditPages{log: log, own: own, tmpl: t, err: err}
}

// notRecorded is the notice of a page that did not run its recorded read
// because the request did not come from the workspace's own pages.
const notRecorded = "Not run yet: this address was opened from outside the audit workspace (a link on another site, a bookmark or a typed URL), and what you look at here is recorded in the access log in your name. Check it and press the button to run it."

// mayRecord reports whether a page may run a read that is recorded in the
// access log in the caller's name: a Bearer session, or a request from the
// workspace's own pages (fromOwnPages). Otherwise the page shows its form,
// filled in, with the notRecorded notice, and records nothing.
func (p *auditPages) mayRecord(r *http.Request) bool {
	s, _ := sessionFrom(r.Context())
	return s.Bearer || p.own.fromOwnPages(r)
}

// render executes the named template into a buffer first, so a template
// error never leaves half a page.
func (p *auditPages) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	if p.err != nil {
		writePageError(w, r, p.log, p.err)
		return
	}
	var buf bytes.Buffer
	if err := p.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		writePageError(w, r, p.log, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// writePageError answers err as a small HTML page with its mapped status
// (the HTML twin of writeError): internal errors are logged once, here.
func writePageError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status := ErrorStatus(err)
	if status >= 500 {
		log.ErrorContext(r.Context(), "page failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	title := strconv.Itoa(status) + " " + http.StatusText(status)
	_, _ = io.WriteString(w, `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>`+title+` · clerk-ledger audit</title>
<style>body{font:15px/1.5 system-ui,sans-serif;margin:3rem auto;max-width:40rem;color:#1b1f24}</style></head>
<body><h1>`+title+`</h1><p>`+html.EscapeString(domain.ErrorMessage(err))+`</p><p><a href="/">Home</a></p></body></html>
`)
}

// jsonIndent pretty-prints a payload for people.
func jsonIndent(buf *bytes.Buffer, b []byte) error { return json.Indent(buf, b, "", "  ") }

// pageEvent is one event as the pages show it.
type pageEvent struct {
	Position               int64
	Type, UserID           string
	OccurredAt, ReceivedAt string
	DeliveryID, LeafHash   string
	LeafIndex              int64
	Payload                string
	After                  bool // occurred after the chosen instant (timeline)
}

func newPageEvent(j audit.EventJSON) pageEvent {
	p := pageEvent{Position: j.Position, Type: j.Type, DeliveryID: j.DeliveryID,
		OccurredAt: j.OccurredAt.Format(time.RFC3339Nano), ReceivedAt: j.ReceivedAt.Format(time.RFC3339Nano)}
	if j.UserID != nil {
		p.UserID = *j.UserID
	}
	if j.LeafHash != nil {
		p.LeafHash, p.LeafIndex = *j.LeafHash, *j.LeafIndex
	}
	var buf bytes.Buffer
	if err := jsonIndent(&buf, j.Payload); err == nil {
		p.Payload = buf.String()
	} else {
		p.Payload = string(j.Payload)
	}
	return p
}

// chainStatus is the status box: the tree, its latest signed checkpoint,
// the frozen chain's head and the last verification.
type chainStatus struct {
	TreeSize         int64
	Checkpoint       string // the latest signed note
	CheckpointSize   int64
	CheckpointSigned string
	Head             string // the frozen chain's head
	HeadSealedAt     string
	Last             *schema.Verification
}

func loadChainStatus(ctx context.Context, svc *audit.Service) (chainStatus, error) {
	var c chainStatus
	st, err := svc.LogStatus(ctx)
	if err != nil {
		return c, err
	}
	c.TreeSize = st.TreeSize
	if st.Latest != nil {
		c.Checkpoint, c.CheckpointSize, c.CheckpointSigned = st.Latest.Note, st.Latest.Size, st.Latest.SignedAt.Format(time.RFC3339)
	}
	if st.Chain != nil {
		c.Head, c.HeadSealedAt = st.Chain.String(), st.ChainSealedAt.Format(time.RFC3339)
	}
	c.Last = st.Last
	return c, nil
}

// pageTimeLayouts are what a datetime-local input sends (no zone: UTC).
var pageTimeLayouts = []string{"2006-01-02T15:04:05", "2006-01-02T15:04"}

// normalizeTime turns a datetime-local value into RFC 3339 UTC; anything
// else is returned as is for the strict parser to judge.
func normalizeTime(s string) string {
	s = strings.TrimSpace(s)
	for _, l := range pageTimeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC().Format(time.RFC3339)
		}
	}
	return s
}

var typeChoices = []string{"user.*", "session.*", "email.*", "organization.*"}

type typeChoice struct {
	Value   string
	Checked bool
}

// searchPage is the data of audit_search.html.
type searchPage struct {
	Title, Actor, Error    string
	Notice                 string
	UserID, Since, Until   string
	Limit                  int
	TypeChoices            []typeChoice
	OtherTypes             string
	Ran                    bool
	Count                  int
	Events                 []pageEvent
	NextURL, FirstURL      string
	ExportJSONL, ExportCSV string
	Chain                  chainStatus
	Access                 []schema.Access
}

// handleAuditSearchPage serves GET /audit: the search form, one page of
// results with paging and export links, the chain status and the newest
// access log entries. A search is recorded in the access log, so it runs
// only when asked from the workspace's own pages (mayRecord).
func handleAuditSearchPage(p *auditPages, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		in := r.URL.Query()
		v := url.Values{}
		var other []string
		chosen := map[string]bool{}
		for k, vs := range in {
			for _, s := range vs {
				switch k {
				case "type":
					for _, t := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
						v.Add("type", t)
						chosen[t] = true
					}
				case "since", "until":
					if s = normalizeTime(s); s != "" {
						v.Set(k, s)
					}
				default:
					if strings.TrimSpace(s) != "" {
						v.Add(k, s)
					}
				}
			}
		}
		data := searchPage{Title: "Search the ledger", Actor: actorOf(r, schema.ChannelPage).ID, Limit: audit.DefaultAuditLimit,
			UserID: v.Get("user_id"), Since: v.Get("since"), Until: v.Get("until")}
		for _, c := range typeChoices {
			data.TypeChoices = append(data.TypeChoices, typeChoice{Value: c, Checked: chosen[c]})
		}
		for _, t := range v["type"] {
			if !contains(typeChoices, t) {
				other = append(other, t)
			}
		}
		data.OtherTypes = strings.Join(other, " ")
		status := http.StatusOK
		if len(in) > 0 && !p.mayRecord(r) {
			data.Notice = notRecorded
			if l, err := strconv.Atoi(v.Get("limit")); err == nil && l > 0 {
				data.Limit = l
			}
		} else if len(in) > 0 {
			v.Del("format")
			q, err := parseEventQuery(v)
			if err != nil {
				status, data.Error = ErrorStatus(err), domain.ErrorMessage(err)
			} else {
				data.Limit = q.Filter.Limit
				var events []pageEvent
				n, nextCursor, err := svc.Events(r.Context(), actorOf(r, schema.ChannelPage), q, maxHTMLPageBytes, func(_ int, e schema.AuditEvent) {
					events = append(events, newPageEvent(audit.NewEventJSON(e)))
				})
				if err != nil {
					writePageError(w, r, p.log, err)
					return
				}
				data.Ran, data.Count, data.Events = true, n, events
				base := cloneValues(v)
				base.Del("cursor")
				if nextCursor != "" {
					next := cloneValues(base)
					next.Set("cursor", nextCursor)
					data.NextURL = "/audit?" + next.Encode()
				}
				if v.Get("cursor") != "" {
					data.FirstURL = "/audit?" + base.Encode()
				}
				exp := cloneValues(base)
				exp.Del("limit")
				exp.Set("format", audit.FormatJSONL)
				data.ExportJSONL = "/api/audit/events?" + exp.Encode()
				exp.Set("format", audit.FormatCSV)
				data.ExportCSV = "/api/audit/events?" + exp.Encode()
			}
		}
		var err error
		if data.Chain, err = loadChainStatus(r.Context(), svc); err != nil {
			writePageError(w, r, p.log, err)
			return
		}
		if data.Access, err = svc.AccessLog(r.Context(), 0, 10); err != nil {
			writePageError(w, r, p.log, err)
			return
		}
		p.render(w, r, status, "audit_search.html", data)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// userPage is the data of audit_user.html.
type userPage struct {
	Title, Actor, Error string
	Notice              string
	UserID              string
	AtLocal, AtText     string
	History             *audit.UserHistory
	Events              []pageEvent
	// The page's place in the timeline: events First to Last of Total,
	// with links to the next page and back to the first.
	First, Last       int64
	NextURL, FirstURL string
	ProofURL          string // the user's proof bundle
}

// handleAuditUserPage serves GET /audit/users/{id}?at=&cursor=: the state
// as of the chosen instant (folded from every event about the user by then)
// with a point-in-time picker, and one page of the user's timeline (every
// event, later ones greyed; at most 100 events and maxHTMLPageBytes of
// bodies), "First–Last of Total" and a next-page link. Recorded in the
// access log, so shown only when asked from the workspace's own pages
// (mayRecord).
func handleAuditUserPage(p *auditPages, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := checkUserID(id); err != nil {
			writePageError(w, r, p.log, err)
			return
		}
		data := userPage{Title: "User " + isolate(id), Actor: actorOf(r, schema.ChannelPage).ID, UserID: id}
		var at time.Time
		if s := r.URL.Query().Get("at"); strings.TrimSpace(s) != "" {
			t, err := time.Parse(time.RFC3339Nano, normalizeTime(s))
			if err != nil {
				data.Error = "at " + strconv.Quote(s) + " is not a time (use the picker, or RFC 3339)"
				p.render(w, r, http.StatusBadRequest, "audit_user.html", data)
				return
			}
			at = t.UTC()
			data.AtLocal, data.AtText = at.Format("2006-01-02T15:04:05"), at.Format(time.RFC3339Nano)
		}
		if !p.mayRecord(r) {
			data.Notice = notRecorded
			p.render(w, r, http.StatusOK, "audit_user.html", data)
			return
		}
		page := audit.UserPage{Limit: audit.DefaultAuditLimit, MaxBytes: maxHTMLPageBytes, Later: true}
		if s := r.URL.Query().Get("cursor"); s != "" {
			c, err := audit.DecodeCursor(s)
			if err != nil {
				data.Error = domain.ErrorMessage(err)
				p.render(w, r, http.StatusBadRequest, "audit_user.html", data)
				return
			}
			page.After = c
		}
		h, err := svc.EachUserEvent(r.Context(), actorOf(r, schema.ChannelPage), id, at, page, func(e schema.AuditEvent) {
			pe := newPageEvent(audit.NewEventJSON(e))
			pe.After = !at.IsZero() && e.OccurredAt.After(at)
			data.Events = append(data.Events, pe)
		})
		if err != nil {
			writePageError(w, r, p.log, err)
			return
		}
		data.History = &h
		data.First, data.Last = h.Offset+1, h.Offset+int64(h.Count)
		data.ProofURL = "/api/audit/users/" + url.PathEscape(id) + "/proof"
		base := url.Values{}
		if !at.IsZero() {
			base.Set("at", data.AtText)
		}
		self := "/audit/users/" + url.PathEscape(id)
		if h.NextCursor != "" {
			next := cloneValues(base)
			next.Set("cursor", h.NextCursor)
			data.NextURL = self + "?" + next.Encode()
		}
		if page.After != (schema.Cursor{}) {
			data.FirstURL = self
			if len(base) > 0 {
				data.FirstURL += "?" + base.Encode()
			}
		}
		status := http.StatusOK
		if h.Total == 0 {
			status, data.Error = http.StatusNotFound, "The ledger has no event about user "+id+"."
		}
		p.render(w, r, status, "audit_user.html", data)
	}
}

// chainPage is the data of audit_chain.html.
type chainPage struct {
	Title, Actor, Error string
	Notice              string
	Chain               chainStatus
	Digest              string
	Signatures          bool
	Result              *struct {
		OK      bool
		Message string
	}
}

// handleAuditChainPage serves GET /audit/chain: the chain status and the
// verification form (digest and signatures may be filled in from the
// query). It never runs a verification: the form POSTs (a link with the
// old ?verify=1 only gets a notice saying so).
func handleAuditChainPage(p *auditPages, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		data := chainPage{Title: "Tamper evidence", Actor: actorOf(r, schema.ChannelPage).ID, Digest: q.Get("digest")}
		data.Signatures, _ = strconv.ParseBool(q.Get("signatures"))
		if q.Has("verify") {
			data.Notice = "Not run: a verification reads the whole ledger and is recorded in your name, so it starts only from this page's button."
		}
		var err error
		if data.Chain, err = loadChainStatus(r.Context(), svc); err != nil {
			writePageError(w, r, p.log, err)
			return
		}
		p.render(w, r, http.StatusOK, "audit_chain.html", data)
	}
}

// handleAuditChainVerify serves POST /audit/chain (form fields digest,
// signatures), the verification form: it runs the verification and shows
// its outcome with the chain status. It is a POST, behind checkOrigin, so
// that no link on another site can start one.
func handleAuditChainVerify(p *auditPages, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		data := chainPage{Title: "Tamper evidence", Actor: actorOf(r, schema.ChannelPage).ID}
		status := http.StatusOK
		form, err := readForm(w, r)
		if err == nil {
			data.Digest = form.Get("digest")
			var o audit.VerifyOptions
			if o, err = parseVerifyParams(form); err == nil {
				data.Signatures = o.Signatures
				var res audit.VerifyResult
				if res, err = svc.Verify(r.Context(), actorOf(r, schema.ChannelPage), o); err == nil {
					data.Result = &struct {
						OK      bool
						Message string
					}{res.OK, res.Message()}
				}
			}
		}
		if err != nil {
			if ErrorStatus(err) >= 500 {
				writePageError(w, r, p.log, err)
				return
			}
			status, data.Error = ErrorStatus(err), domain.ErrorMessage(err)
		}
		if data.Chain, err = loadChainStatus(r.Context(), svc); err != nil {
			writePageError(w, r, p.log, err)
			return
		}
		p.render(w, r, status, "audit_chain.html", data)
	}
}

// logPage is the data of audit_log.html.
type logPage struct {
	Title, Actor, Error string
	Access              []schema.Access
	OlderURL            string
}

// handleAuditLogPage serves GET /audit/log?before=ID: the access log, 100
// entries a page, newest first.
func handleAuditLogPage(p *auditPages, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		data := logPage{Title: "Audit access log", Actor: actorOf(r, schema.ChannelPage).ID}
		var before int64
		if s := r.URL.Query().Get("before"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 1 {
				data.Error = "before " + strconv.Quote(s) + " is not a positive integer"
				p.render(w, r, http.StatusBadRequest, "audit_log.html", data)
				return
			}
			before = n
		}
		const pageSize = 100
		list, err := svc.AccessLog(r.Context(), before, pageSize)
		if err != nil {
			writePageError(w, r, p.log, err)
			return
		}
		data.Access = list
		if len(list) == pageSize {
			data.OlderURL = "/audit/log?before=" + strconv.FormatInt(list[len(list)-1].ID, 10)
		}
		p.render(w, r, http.StatusOK, "audit_log.html", data)
	}
}
