package handlers

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

//go:embed templates
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// pages renders every server-side HTML page: one template set, parsed once
// at start. templates/layout.html is the one layout (header with the
// navigation and the signed-in person, dev banner, ClerkJS scripts,
// footer); templates/components.html holds the shared components (ids,
// times, payloads, tables, the log status, pagers); every page is a
// template file that defines "title" and "content". The user's pages and
// the audit workspace (audit_*.html) share all of it. Add a page by adding
// templates/<name>.html and calling render with that name. Errors are
// answered by renderError, the one HTML error renderer.
type pages struct {
	log    *slog.Logger
	byName map[string]*template.Template
	clerk  clerkJS
	dev    bool // the dev sign-in is on
}

// clerkJS is what the layout needs to load ClerkJS; zero when the server
// has no publishable key (then no Clerk script is loaded).
type clerkJS struct {
	PublishableKey string
	FrontendAPI    string // host, e.g. clerk.example.com
}

// layout is the data every page template gets: the page's own data is Data.
type layout struct {
	Page     string // template name without .html; body data-page
	SignedIn bool
	Session  Session
	// Auditor shows the workspace's navigation; Section is the current
	// item ("overview", "search", "chain" (the verifiable log), "log" (the
	// access log), "home").
	Auditor bool
	Section string
	Wide    bool // the workspace's wider pages
	Clerk   clerkJS
	Dev     bool
	Data    any
}

// auditorKey marks a request whose session is an auditor's (requireAuditor
// passed, or the home page looked it up): the layout shows the workspace.
type auditorKey struct{}

func withAuditor(r *http.Request) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), auditorKey{}, true))
}

func isAuditorRequest(r *http.Request) bool {
	v, _ := r.Context().Value(auditorKey{}).(bool)
	return v
}

// Times are shown in one format: when (UTC) as the text, app.js turning it
// into the reader's zone, with the exact UTC instant (utc) on hover.
const (
	whenLayout = "2 Jan 2006, 15:04:05 UTC"
	utcLayout  = "2006-01-02 15:04:05.000000 UTC"
)

var templateFuncs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "unknown"
		}
		return t.UTC().Format(whenLayout)
	},
	"utc": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(utcLayout)
	},
	"iso": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339Nano)
	},
	"isolate":    isolate,
	"escapeBidi": escapeBidi,
	"deref":      func(b *bool) bool { return b != nil && *b },
	// userHref is the audit view of a user, at an instant when at is set.
	"userHref": func(id string, at time.Time) string {
		h := "/audit/users/" + url.PathEscape(id)
		if !at.IsZero() {
			h += "?" + url.Values{"at": {at.UTC().Format(time.RFC3339Nano)}}.Encode()
		}
		return h
	},
	"hexShort": func(s string) string {
		if len(s) > 12 {
			return s[:12] + "…"
		}
		return s
	},
	// orgHref is the audit view of an organization, at an instant when
	// at is set.
	"orgHref": func(id string, at time.Time) string {
		h := "/audit/organizations/" + url.PathEscape(id)
		if !at.IsZero() {
			h += "?" + url.Values{"at": {at.UTC().Format(time.RFC3339Nano)}}.Encode()
		}
		return h
	},
	// role is a Clerk organization role key as people read it
	// ("org:admin" is "admin").
	"role": func(key string) string { return strings.TrimPrefix(key, "org:") },
	// initials returns the first letter or digit of the first two words
	// of name (never a direction control or other mark).
	"initials": func(name string) string {
		var b strings.Builder
		for _, f := range strings.Fields(name) {
			for _, r := range f {
				if unicode.IsLetter(r) || unicode.IsDigit(r) {
					b.WriteRune(r)
					break
				}
			}
			if b.Len() >= 2 {
				break
			}
		}
		if b.Len() == 0 {
			return "?"
		}
		return strings.ToUpper(b.String())
	},
}

// sharedTemplates are parsed into every page: the layout and components.
var sharedTemplates = []string{"templates/layout.html", "templates/components.html"}

// parsePages parses the layout and components once and every page onto a
// copy of them.
func parsePages(log *slog.Logger, clerk clerkJS, dev bool) (*pages, error) {
	base, err := template.New("layout.html").Funcs(templateFuncs).ParseFS(templateFS, sharedTemplates...)
	if err != nil {
		return nil, fmt.Errorf("parse layout: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{log: log, byName: map[string]*template.Template{}, clerk: clerk, dev: dev}
	for _, n := range names {
		if slices.Contains(sharedTemplates, n) {
			continue
		}
		name := path.Base(n)
		t, err := base.Clone()
		if err == nil {
			t, err = t.ParseFS(templateFS, n)
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", name, err)
		}
		p.byName[name] = t
	}
	return p, nil
}

// render writes the page template name ("home.html") with data inside the
// layout, with status. The page is rendered to a buffer first, so a template
// error becomes a plain 500 and never half a page.
func (p *pages) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	var t *template.Template
	if p != nil {
		t = p.byName[name]
	}
	if t == nil {
		if p != nil {
			p.log.ErrorContext(r.Context(), "no such page template", "template", name)
		}
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	s, signedIn := sessionFrom(r.Context())
	l := layout{
		Page:     strings.TrimSuffix(name, ".html"),
		SignedIn: signedIn,
		Session:  s,
		Auditor:  signedIn && isAuditorRequest(r),
		Clerk:    p.clerk,
		Dev:      p.dev,
		Data:     data,
	}
	if sec, ok := strings.CutPrefix(l.Page, "audit_"); ok {
		l.Section, l.Wide = sec, true
	} else if l.Page == "home" {
		l.Section = "home"
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", l); err != nil {
		p.log.ErrorContext(r.Context(), "render page", "template", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// errorPage is the data of error.html.
type errorPage struct {
	Status  int
	Heading string
	Message string
}

// refuse answers a view's failed read: a caller's mistake (4xx) is shown
// on the view itself through bad (the form stays, with the message), any
// other error through renderError.
func (p *pages) refuse(w http.ResponseWriter, r *http.Request, err error, bad func(msg string)) {
	if ErrorStatus(err) < 500 {
		bad(domain.ErrorMessage(err))
		return
	}
	p.renderError(w, r, err)
}

// renderError answers err as the error page with its mapped status: the
// one HTML error renderer, for every page (the HTML twin of writeError).
// As with writeError, 5xx errors are logged here, once, and shown only as
// a generic message; other errors show their caller-safe message.
func (p *pages) renderError(w http.ResponseWriter, r *http.Request, err error) {
	if p == nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	status := ErrorStatus(err)
	e := errorPage{Status: status, Heading: http.StatusText(status), Message: domain.ErrorMessage(err)}
	if status >= 500 {
		p.log.ErrorContext(r.Context(), "page failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
		e.Heading, e.Message = "Something went wrong", "The ledger could not answer this request. Try again in a moment."
		if status == http.StatusServiceUnavailable {
			e.Heading, e.Message = "Temporarily unavailable", "The ledger's database cannot be reached right now. Try again in a moment."
			w.Header().Set("Retry-After", "5")
		}
	}
	p.render(w, r, status, "error.html", e)
}

// notFound answers the 404 page.
func (p *pages) notFound(w http.ResponseWriter, r *http.Request) {
	p.render(w, r, http.StatusNotFound, "error.html", errorPage{
		Status: http.StatusNotFound, Heading: "Page not found",
		Message: "There is nothing at this address.",
	})
}

// refresh answers the page that lets ClerkJS renew an expired session cookie
// and reload (see needsRefresh). It shows no data.
func (p *pages) refresh(w http.ResponseWriter, r *http.Request) {
	p.render(w, r, http.StatusOK, "refresh.html", nil)
}

// signIn answers the signed-out page: what this is and the sign-in mount.
func (p *pages) signIn(w http.ResponseWriter, r *http.Request, status int) {
	p.render(w, r, status, "signed_out.html", nil)
}

// handleNotFound serves every path no other route matches: JSON 404 under
// /api/, the 404 page elsewhere.
func handleNotFound(log *slog.Logger, pg *pages) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			writeError(w, r, log, domain.Errorf(domain.ENOTFOUND, "no such endpoint"))
			return
		}
		pg.notFound(w, r)
	}
}

// handleStatic serves the embedded stylesheet and script under /static/.
func handleStatic() http.Handler {
	sub, _ := fs.Sub(staticFS, "static") // "static" is embedded: cannot fail
	files := http.StripPrefix("/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=300")
		files.ServeHTTP(w, r)
	})
}
