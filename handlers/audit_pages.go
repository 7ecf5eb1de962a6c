package handlers

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// The audit workspace's pages: HTTP over the audit application, rendered
// with the one template set (pages) and its error renderer.

// notRecorded is the notice of a page that did not run its recorded read
// because the request did not come from the workspace's own pages.
const notRecorded = "Not run yet: this address was opened from outside the audit workspace (a link on another site, a bookmark or a typed URL), and what you look at here is recorded in the access log in your name. Check it and press the button to run it."

// mayRecord reports whether a page may run a read that is recorded in the
// access log in the caller's name: a Bearer session, or a request from the
// workspace's own pages (fromOwnPages). Otherwise the page shows its form,
// filled in, with the notRecorded notice, and records nothing.
func mayRecord(own origins, r *http.Request) bool {
	s, _ := sessionFrom(r.Context())
	return s.Bearer || own.fromOwnPages(r)
}

// jsonIndent pretty-prints a payload for people.
func jsonIndent(buf *bytes.Buffer, b []byte) error { return json.Indent(buf, b, "", "  ") }

// pageEvent is one event as the pages show it.
type pageEvent struct {
	Position               int64
	Type, UserID           string
	OccurredAt, ReceivedAt time.Time
	DeliveryID             string
	// Source is "clerk_api" for a snapshot read from Clerk's Backend API,
	// "svix" for a webhook delivery.
	Source    string
	LeafIndex int64  // the event's leaf in the Merkle tree
	LeafHash  string // its hash, base64; "" until sealed
	// OrganizationID is the organization an organization, membership or
	// invitation event is about ("" for other events, and on the
	// organization's own page): the event links to its view.
	OrganizationID string
	Payload        payload
	After          bool // occurred after the chosen instant (timeline)
}

// payload is an event body as the pages show it: pretty-printed, with
// direction controls spelled as \uXXXX (escapeBidi), HTML-escaped once
// here (a page holds up to 2 MiB of them: the template's escaper, a
// reflective call per value, was a third of a user view's rendering).
type payload struct {
	Len  int // characters of the pretty-printed JSON
	HTML template.HTML
	// Erased is set for an erased event's (no body): Note says when, by
	// whom and why.
	Erased bool
	Note   string
}

// erasedPayload is the payload of an erased event, m its erasure (nil:
// not recorded, a body discarded at ingest).
func erasedPayload(m *schema.ErasureMark) payload {
	if m == nil {
		return payload{Erased: true, Note: "Content erased."}
	}
	return payload{Erased: true, Note: "Content erased " + m.At.UTC().Format("2006-01-02 15:04 UTC") + " by " + m.By + ": " + m.Reason}
}

func newPayload(pretty string) payload {
	return payload{Len: utf8.RuneCountInString(pretty), HTML: template.HTML(html.EscapeString(escapeBidi(pretty)))}
}

func newPageEvent(e schema.AuditEvent) pageEvent {
	p := pageEvent{Position: e.Position, Type: e.Type, DeliveryID: e.DeliveryID, UserID: e.UserID, Source: audit.EventSource(e.Event),
		OccurredAt: e.OccurredAt, ReceivedAt: e.ReceivedAt, OrganizationID: domain.EventOrganization(e.Event)}
	if e.LeafHash != nil {
		p.LeafIndex, p.LeafHash = e.LeafIndex, base64.StdEncoding.EncodeToString(e.LeafHash)
	}
	p.Payload = prettyPayload(e.Body)
	if e.Erased {
		p.Payload = erasedPayload(e.Erasure)
	}
	return p
}

// newPageEventJSON is newPageEvent for an event in its JSON shape (an
// organization's history), without the organization link: the page is
// the organization's.
func newPageEventJSON(j audit.EventJSON) pageEvent {
	p := pageEvent{Position: j.Position, Type: j.Type, DeliveryID: j.DeliveryID, Source: j.Source,
		OccurredAt: j.OccurredAt, ReceivedAt: j.ReceivedAt}
	if j.UserID != nil {
		p.UserID = *j.UserID
	}
	if j.LeafHash != nil {
		p.LeafIndex, p.LeafHash = *j.LeafIndex, *j.LeafHash
	}
	p.Payload = prettyPayload(j.Payload)
	if j.Erased != nil {
		m := &schema.ErasureMark{By: j.Erased.By, Reason: j.Erased.Reason}
		if j.Erased.At != nil {
			m.At = *j.Erased.At
		}
		p.Payload = erasedPayload(m)
	}
	return p
}

// prettyPayload is body as a payload, pretty-printed when it is JSON.
func prettyPayload(body []byte) payload {
	var buf bytes.Buffer
	if err := jsonIndent(&buf, body); err == nil {
		return newPayload(buf.String())
	}
	return newPayload(string(body))
}

// logStatus is the log status component's data: the Merkle tree, its
// latest signed checkpoint, the frozen hash chain's head (ledgers from
// before the tree) and the last verification.
type logStatus struct {
	TreeSize int64
	// The latest signed checkpoint (CheckpointSize 0: none yet): the note
	// byte for byte, its root (base64) and when it was signed.
	Checkpoint       string
	CheckpointSize   int64
	CheckpointRoot   string
	CheckpointSigned time.Time
	Head             string // the frozen chain's head ("": never had one)
	HeadSealedAt     time.Time
	Last             *schema.Verification
}

func newLogStatus(st audit.LogStatus) logStatus {
	c := logStatus{TreeSize: st.TreeSize, Last: st.Last}
	if cp := st.Latest; cp != nil {
		c.Checkpoint, c.CheckpointSize, c.CheckpointSigned = cp.Note, cp.Size, cp.SignedAt
		c.CheckpointRoot = base64.StdEncoding.EncodeToString(cp.Root[:])
	}
	if st.Chain != nil {
		c.Head, c.HeadSealedAt = st.Chain.String(), st.ChainSealedAt
	}
	return c
}

// pager is the pager component's data.
type pager struct {
	FirstURL, NextURL string
	End               string // shown when there is no next page
}

// newPager is the pager of a page of results served at path, base being the
// first page's query: a link to the next page when next (its cursor) is not
// "", one to the first page when this page is not it, and end to show when
// there is no next page.
func newPager(path string, base url.Values, next string, first bool, end string) pager {
	p := pager{End: end}
	if next != "" {
		v := cloneValues(base)
		v.Set("cursor", next)
		p.NextURL = path + "?" + v.Encode()
	}
	if !first {
		p.FirstURL = path + query(base)
	}
	return p
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

// localInput is t as a datetime-local input's value (UTC), "" for zero.
func localInput(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05")
}

// typeChoices are the event families the search offers as checkboxes.
var typeChoices = []struct{ Value, Label string }{
	{"user.*", "user (account changes)"}, {"session.*", "session (sign-ins)"}, {"email.*", "email"},
	{"sms.*", "sms"}, {"organization.*", "organization"}, {"organizationMembership.*", "organization membership"},
}

type typeChoice struct {
	Value, Label string
	Checked      bool
}

// searchPage is the data of audit_search.html.
type searchPage struct {
	Error, Notice          string
	UserID, Email          string
	Since, Until           string // datetime-local values (UTC)
	Limit                  int
	TypeChoices            []typeChoice
	OtherTypes             string
	Ran                    bool
	Result                 audit.SearchResult
	First, Last            int64
	Users                  []schema.EmailMatch
	Events                 []pageEvent
	Pager                  pager
	ExportJSONL, ExportCSV string
}

// handleAuditOverview serves GET /audit: the ledger at a glance (deliveries
// per day by family, last delivery, projection lag, the log's status:
// verification badge, tree size, latest signed checkpoint; latest
// accesses). Any query is an old search link (/audit?user_id=…):
// it is sent on to /audit/search with it.
func handleAuditOverview(pg *pages, svc *audit.Service, now func() time.Time) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			http.Redirect(w, r, "/audit/search?"+r.URL.RawQuery, http.StatusSeeOther)
			return
		}
		o, err := svc.Overview(r.Context(), now())
		if err != nil {
			pg.renderError(w, r, err)
			return
		}
		pg.render(w, r, http.StatusOK, "audit_overview.html", overviewPage{
			Chart: newChart(o.Days, o.Counts), LastDelivery: o.LastDelivery, Head: o.Head,
			Projectors: o.Projectors, Log: newLogStatus(o.Log), Access: o.Access, Reconciles: o.Reconciles,
		})
	}
}

// handleAuditSearchPage serves GET /audit/search: the search form (user
// id, email current or past, type families, time range) and one page of
// results in ledger order with "N–M of T", paging, export links and each
// result linking to the user view at that instant. A search is recorded in
// the access log, so it runs only when asked from the workspace's own pages
// (mayRecord).
func handleAuditSearchPage(pg *pages, own origins, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		in := r.URL.Query()
		v := url.Values{}
		var other []string
		chosen := map[string]bool{}
		email := ""
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
				case "email":
					email = schema.NormalizeEmail(s)
				default:
					if strings.TrimSpace(s) != "" {
						v.Add(k, s)
					}
				}
			}
		}
		data := searchPage{Limit: audit.DefaultAuditLimit, UserID: v.Get("user_id"), Email: email,
			Since: localInput(v.Get("since")), Until: localInput(v.Get("until"))}
		for _, c := range typeChoices {
			data.TypeChoices = append(data.TypeChoices, typeChoice{Value: c.Value, Label: c.Label, Checked: chosen[c.Value]})
		}
		for _, t := range v["type"] {
			known := false
			for _, c := range typeChoices {
				known = known || c.Value == t
			}
			if !known {
				other = append(other, t)
			}
		}
		data.OtherTypes = strings.Join(other, " ")
		status := http.StatusOK
		switch {
		case len(in) == 0:
		case !mayRecord(own, r):
			data.Notice = notRecorded
			if l, err := strconv.Atoi(v.Get("limit")); err == nil && l > 0 {
				data.Limit = l
			}
		default:
			v.Del("format")
			q, err := parseEventQuery(v)
			if err != nil {
				status, data.Error = ErrorStatus(err), domain.ErrorMessage(err)
				break
			}
			data.Limit = q.Filter.Limit
			res, err := svc.Search(r.Context(), actorOf(r, schema.ChannelPage), q, email, maxHTMLPageBytes, func(_ int, e schema.AuditEvent) {
				data.Events = append(data.Events, newPageEvent(e))
			})
			if err != nil {
				if ErrorStatus(err) >= 500 {
					pg.renderError(w, r, err)
					return
				}
				status, data.Error, data.Events = ErrorStatus(err), domain.ErrorMessage(err), nil
				break
			}
			data.Ran, data.Result, data.Users = true, res, res.Users
			data.First, data.Last = res.Offset+1, res.Offset+int64(res.Count)
			base := cloneValues(v)
			base.Del("cursor")
			if email != "" {
				base.Set("email", email)
			}
			data.Pager = newPager("/audit/search", base, res.Next, v.Get("cursor") == "", "End of the results.")
			if email == "" { // the export API has no email filter
				exp := cloneValues(base)
				exp.Del("limit")
				exp.Set("format", audit.FormatJSONL)
				data.ExportJSONL = "/api/audit/events?" + exp.Encode()
				exp.Set("format", audit.FormatCSV)
				data.ExportCSV = "/api/audit/events?" + exp.Encode()
			}
		}
		pg.render(w, r, status, "audit_search.html", data)
	}
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// userPageEvents is how many events a page of the user view shows: each
// with its change table and payload.
const userPageEvents = 50

// userPage is the data of audit_user.html.
type userPage struct {
	Error, Notice   string
	UserID          string
	At              time.Time
	AtLocal, AtText string
	Order           string
	History         *audit.UserHistory
	Events          []changeEvent
	// The page's place in the timeline: events First to Last of Total.
	First, Last        int64
	Pager              pager
	TimeURL, LedgerURL string // the order toggle
	NowURL             string
	// Organizations are the user's memberships as of the instant.
	Organizations *audit.UserOrganizations
	ProofURL      string // the user's proof bundle (a download)
}

// changeEvent is one event of the user view's change history.
type changeEvent struct {
	pageEvent
	ChangedAt        time.Time
	OutOfOrder, Late bool
	Delay            string
	Kind             string // account, session, email, organization, other
	Summary          string
	Outcome          string
	OutcomeClass     string
	Changes          []domain.Change
	Request          domain.HTTPRequest
	Poison           string
}

// outcomeLabels says how the fold took an event, for people.
var outcomeLabels = map[domain.Outcome][2]string{
	domain.OutcomeApplied:       {"applied", "badge-ok"},
	domain.OutcomeOlder:         {"older than what the ledger had: ignored", "badge-warn"},
	domain.OutcomeDeleted:       {"deletion", "badge-bad"},
	domain.OutcomeAfterDeletion: {"after the deletion: ignored", "badge-warn"},
	domain.OutcomeOtherUser:     {"about another user: ignored", "badge-warn"},
	domain.OutcomeNotUserEvent:  {"no change to the record", "badge-info"},
	domain.OutcomePoison:        {"does not decode: skipped", "badge-bad"},
}

// humanDuration writes d as "2 h 5 min", "3 min 4 s" or "12 s".
func humanDuration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days %d h", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%d h %d min", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%d min %d s", d/time.Minute, d%time.Minute/time.Second)
	}
	return fmt.Sprintf("%d s", d/time.Second)
}

func newChangeEvent(te audit.TimelineEvent, at time.Time) changeEvent {
	c := changeEvent{pageEvent: newPageEvent(te.Event), ChangedAt: te.ChangedAt, OutOfOrder: te.OutOfOrder,
		Late: te.Late, Delay: humanDuration(te.Delay), Request: te.Request}
	c.After = te.After
	entry := summarize(te.Event.Event, te.Prev, te.Next, "")
	c.Kind, c.Summary = entry.Kind, entry.Summary
	l := outcomeLabels[te.Step.Outcome]
	c.Outcome, c.OutcomeClass = l[0], l[1]
	if te.Step.Outcome == domain.OutcomeApplied && len(te.Step.Changes) == 0 {
		c.Outcome, c.OutcomeClass = "no change", "badge-info"
	}
	if te.Step.Err != nil {
		c.Poison = domain.ErrorMessage(te.Step.Err)
	}
	for _, ch := range te.Step.Changes {
		if ch.Field == "updated_at" && len(te.Step.Changes) > 1 {
			continue // the entry's own time
		}
		c.Changes = append(c.Changes, ch)
	}
	return c
}

// handleAuditUserPage serves GET /audit/users/{id}?at=&order=&cursor=: the
// state as of the chosen instant (folded from every event about the user by
// then) with a point-in-time picker, and one page of the user's change
// history: every event, in time order (when it happened in Clerk) or raw
// ledger order (order=ledger), each with the change it made to the folded
// state field by field, how it arrived (out of order, late), who made it
// (the event's http_request) and its payload; later events greyed; at most
// 100 events and maxHTMLPageBytes of bodies a page, "First–Last of Total"
// and a next-page link, and a link to download the user's proof bundle
// (GET /api/audit/users/{id}/proof). Recorded in the access log, so shown
// only when asked from the workspace's own pages (mayRecord).
func handleAuditUserPage(pg *pages, own origins, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := checkUserID(id); err != nil {
			pg.renderError(w, r, err)
			return
		}
		q := r.URL.Query()
		data := userPage{UserID: id, Order: audit.OrderTime}
		self := "/audit/users/" + url.PathEscape(id)
		links := func() {
			base := url.Values{}
			if data.AtText != "" {
				base.Set("at", data.AtText)
			}
			data.TimeURL = self + query(base)
			l := cloneValues(base)
			l.Set("order", audit.OrderLedger)
			data.LedgerURL = self + "?" + l.Encode()
			now := url.Values{}
			if data.Order == audit.OrderLedger {
				now.Set("order", audit.OrderLedger)
			}
			data.NowURL = self + query(now)
		}
		bad := func(msg string) {
			links()
			data.Error = msg
			pg.render(w, r, http.StatusBadRequest, "audit_user.html", data)
		}
		var problem string
		if data.At, data.AtLocal, data.AtText, problem = pageAt(q.Get("at")); problem != "" {
			bad(problem)
			return
		}
		page, err := parseUserPage(url.Values{"order": q["order"], "cursor": q["cursor"]})
		if err != nil {
			bad(domain.ErrorMessage(err))
			return
		}
		data.Order = page.Order
		links()
		if !mayRecord(own, r) {
			data.Notice = notRecorded
			pg.render(w, r, http.StatusOK, "audit_user.html", data)
			return
		}
		page.Limit, page.MaxBytes, page.Later = userPageEvents, maxHTMLPageBytes, true
		h, err := svc.EachUserEvent(r.Context(), actorOf(r, schema.ChannelPage), id, data.At, page, func(te audit.TimelineEvent) {
			data.Events = append(data.Events, newChangeEvent(te, data.At))
		})
		if err != nil {
			pg.refuse(w, r, err, bad)
			return
		}
		data.History = &h
		orgs, err := svc.UserOrganizations(r.Context(), actorOf(r, schema.ChannelPage), id, data.At)
		if err != nil {
			pg.renderError(w, r, err)
			return
		}
		data.Organizations = &orgs
		data.First, data.Last = h.Offset+1, h.Offset+int64(h.Count)
		base := url.Values{}
		if data.AtText != "" {
			base.Set("at", data.AtText)
		}
		if data.Order == audit.OrderLedger {
			base.Set("order", audit.OrderLedger)
		}
		data.Pager = newPager(self, base, h.NextCursor, page.After.IsZero(), "End of the timeline.")
		status := http.StatusOK
		if h.Total == 0 {
			status, data.Error = http.StatusNotFound, "The ledger has no event about user "+id+"."
		} else {
			data.ProofURL = "/api/audit/users/" + url.PathEscape(id) + "/proof"
		}
		pg.render(w, r, status, "audit_user.html", data)
	}
}

// query is "?"+v.Encode(), or "" for no values.
func query(v url.Values) string {
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// organizationPage is the data of audit_organization.html.
type organizationPage struct {
	Error, Notice   string
	OrganizationID  string
	At              time.Time
	AtLocal, AtText string
	NowURL          string
	History         *audit.OrganizationHistory
	Metadata        string // the state's public metadata, pretty-printed
	Events          []pageEvent
	// The page's place in the history: events First to Last of Total.
	First, Last int64
	Pager       pager
}

// handleAuditOrganizationPage serves GET /audit/organizations/{id}?at=&cursor=:
// the organization's state and memberships as of the chosen instant (folded
// from every event about it by then) with a point-in-time picker, each
// member linking to their user view then, and one page of its member
// history in ledger order (organization, membership and invitation events;
// later ones greyed; at most 100 events and maxHTMLPageBytes of bodies a
// page). Recorded in the access log, so shown only when asked from the
// workspace's own pages (mayRecord).
func handleAuditOrganizationPage(pg *pages, own origins, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := checkPathID("organization", id); err != nil {
			pg.renderError(w, r, err)
			return
		}
		q := r.URL.Query()
		self := "/audit/organizations/" + url.PathEscape(id)
		data := organizationPage{OrganizationID: id, NowURL: self}
		bad := func(msg string) {
			data.Error = msg
			pg.render(w, r, http.StatusBadRequest, "audit_organization.html", data)
		}
		var problem string
		if data.At, data.AtLocal, data.AtText, problem = pageAt(q.Get("at")); problem != "" {
			bad(problem)
			return
		}
		page, err := parseOrganizationPage(url.Values{"cursor": q["cursor"]})
		if err != nil {
			bad(domain.ErrorMessage(err))
			return
		}
		if !mayRecord(own, r) {
			data.Notice = notRecorded
			pg.render(w, r, http.StatusOK, "audit_organization.html", data)
			return
		}
		page.MaxBytes, page.Later = maxHTMLPageBytes, true
		h, err := svc.Organization(r.Context(), actorOf(r, schema.ChannelPage), id, data.At, page)
		if err != nil {
			pg.refuse(w, r, err, bad)
			return
		}
		data.History = &h
		for _, e := range h.Events {
			pe := newPageEventJSON(e)
			pe.After = !data.At.IsZero() && e.OccurredAt.After(data.At)
			data.Events = append(data.Events, pe)
		}
		var buf bytes.Buffer
		if err := jsonIndent(&buf, h.State.PublicMetadata); err == nil {
			data.Metadata = buf.String()
		}
		data.First, data.Last = h.Offset+1, h.Offset+int64(h.Count)
		base := url.Values{}
		if data.AtText != "" {
			base.Set("at", data.AtText)
		}
		data.Pager = newPager(self, base, h.NextCursor, page.After == (schema.Cursor{}), "End of the history.")
		status := http.StatusOK
		if h.Total == 0 && !h.Exists {
			status, data.Error = http.StatusNotFound, "The ledger has no event about organization "+id+"."
		}
		pg.render(w, r, status, "audit_organization.html", data)
	}
}

// chainPage is the data of audit_chain.html.
type chainPage struct {
	Error, Notice string
	Log           logStatus
	Digest        string
	Signatures    bool
	Result        *struct {
		OK      bool
		Message string
	}
}

// handleAuditChainPage serves GET /audit/chain, the verifiable log's page
// (at the hash chain's old address): the log's status (tree size, the
// latest signed checkpoint in full, the frozen chain's head, the last
// verification) and the verification form (digest and signatures may be filled in from the
// query). It never runs a verification: the form POSTs (a link with the
// old ?verify=1 only gets a notice saying so).
func handleAuditChainPage(pg *pages, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		data := chainPage{Digest: q.Get("digest")}
		data.Signatures, _ = strconv.ParseBool(q.Get("signatures"))
		if q.Has("verify") {
			data.Notice = "Not run: a verification reads the whole ledger and is recorded in your name, so it starts only from this page's button."
		}
		st, err := svc.LogStatus(r.Context())
		if err != nil {
			pg.renderError(w, r, err)
			return
		}
		data.Log = newLogStatus(st)
		pg.render(w, r, http.StatusOK, "audit_chain.html", data)
	}
}

// handleAuditChainVerify serves POST /audit/chain (form fields digest,
// signatures), the verification form: it runs the verification and shows
// its outcome with the log's status. It is a POST, behind checkOrigin, so
// that no link on another site can start one.
func handleAuditChainVerify(pg *pages, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		data := chainPage{}
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
				pg.renderError(w, r, err)
				return
			}
			status, data.Error = ErrorStatus(err), domain.ErrorMessage(err)
		}
		st, err := svc.LogStatus(r.Context())
		if err != nil {
			pg.renderError(w, r, err)
			return
		}
		data.Log = newLogStatus(st)
		pg.render(w, r, status, "audit_chain.html", data)
	}
}

// logPage is the data of audit_log.html.
type logPage struct {
	Error    string
	Access   []schema.Access
	OlderURL string
}

// handleAuditLogPage serves GET /audit/log?before=ID: the access log, 100
// entries a page, newest first.
func handleAuditLogPage(pg *pages, svc *audit.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		data := logPage{}
		var before int64
		if s := r.URL.Query().Get("before"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 1 {
				data.Error = "before " + strconv.Quote(s) + " is not a positive integer"
				pg.render(w, r, http.StatusBadRequest, "audit_log.html", data)
				return
			}
			before = n
		}
		const pageSize = 100
		list, err := svc.AccessLog(r.Context(), before, pageSize)
		if err != nil {
			pg.renderError(w, r, err)
			return
		}
		data.Access = list
		if len(list) == pageSize {
			data.OlderURL = "/audit/log?before=" + strconv.FormatInt(list[len(list)-1].ID, 10)
		}
		pg.render(w, r, http.StatusOK, "audit_log.html", data)
	}
}

// pageAt parses a view's `at` as the workspace's time picker (or a person
// typing RFC 3339) gives it: the time in UTC, as the picker shows it
// (local) and as RFC 3339 (text); problem says what is wrong with s, if
// anything. A blank s is no instant (the view is as of now): all zero.
func pageAt(s string) (at time.Time, local, text, problem string) {
	if strings.TrimSpace(s) == "" {
		return time.Time{}, "", "", ""
	}
	t, err := time.Parse(time.RFC3339Nano, normalizeTime(s))
	if err != nil {
		return time.Time{}, "", "", "at " + strconv.Quote(s) + " is not a time (use the picker, or RFC 3339)"
	}
	at = t.UTC()
	return at, at.Format("2006-01-02T15:04:05"), at.Format(time.RFC3339Nano), ""
}
