package handlers

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"
	"unicode"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

//go:embed templates
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// pages renders the server-side HTML pages. Every page is a template file in
// templates/ that defines "title" and "content"; layout.html wraps it (the
// base layout with header, dev banner, ClerkJS scripts and footer). Add a
// page by adding templates/<name>.html and calling render with that name.
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
	Title    string
	Page     string // template name without .html; body data-page
	SignedIn bool
	Session  Session
	Clerk    clerkJS
	Dev      bool
	Data     any
}

var templateFuncs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "unknown"
		}
		return t.UTC().Format("2 Jan 2006, 15:04 UTC")
	},
	"iso": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"isolate": isolate,
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

// parsePages parses every page template with the layout.
func parsePages(log *slog.Logger, clerk clerkJS, dev bool) (*pages, error) {
	base, err := template.New("layout.html").Funcs(templateFuncs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("parse layout: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{log: log, byName: map[string]*template.Template{}, clerk: clerk, dev: dev}
	for _, n := range names {
		name := path.Base(n)
		if name == "layout.html" || strings.HasPrefix(name, "audit_") { // audit pages have their own set (audit_pages.go)
			continue
		}
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
		Clerk:    p.clerk,
		Dev:      p.dev,
		Data:     data,
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

// renderError answers err as the error page with its mapped status. As with
// writeError, 5xx errors are logged here, once, and shown only as a generic
// message; other errors show their caller-safe message.
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
