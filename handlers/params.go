package handlers

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// Bounds of query strings and form fields. Go's own parser gives up on more
// than 10,000 parameters and then yields none at all, which would turn a
// filtered audit query into an unfiltered one: a request with more than
// maxParams is refused instead.
const (
	maxParams          = 1000
	maxParamNameBytes  = 64
	maxParamValueBytes = 2048
)

// checkText returns EINVALID naming what when s is not valid UTF-8, holds a
// control character (NUL included) or is longer than max bytes: PostgreSQL
// refuses NUL and invalid UTF-8 in text, and nothing the service reads needs
// them.
func checkText(what, s string, max int) error {
	switch {
	case !utf8.ValidString(s):
		return domain.Errorf(domain.EINVALID, "%s is not valid UTF-8", what)
	case len(s) > max:
		return domain.Errorf(domain.EINVALID, "%s is longer than %d bytes", what, max)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return domain.Errorf(domain.EINVALID, "%s contains a control character", what)
	}
	return nil
}

// paramName is how errors name a parameter: quoted, and cut short when long
// (it may itself be what is wrong).
func paramName(name string) string {
	if len(name) > maxParamNameBytes {
		name = name[:maxParamNameBytes] + "…"
	}
	return "parameter " + strconv.Quote(name) // controls, bidi overrides and invalid bytes come out escaped
}

// checkValues checks every name and value of v (checkText).
func checkValues(v url.Values) error {
	if len(v) > maxParams {
		return domain.Errorf(domain.EINVALID, "more than %d parameters", maxParams)
	}
	for k, vs := range v {
		if err := checkText(paramName(k)+" (its name)", k, maxParamNameBytes); err != nil {
			return err
		}
		for _, s := range vs {
			if err := checkText(paramName(k), s, maxParamValueBytes); err != nil {
				return err
			}
		}
	}
	return nil
}

// parseQuery parses a raw query string strictly: where url.ParseQuery skips
// a malformed parameter (a bad %-escape, a ';' separator) or, past 10,000
// parameters, all of them, it returns EINVALID naming the parameter, as it
// does for more than maxParams parameters and for names and values that
// checkText refuses.
func parseQuery(raw string) (url.Values, error) {
	v := url.Values{}
	if raw == "" {
		return v, nil
	}
	if n := strings.Count(raw, "&") + 1; n > maxParams {
		return nil, domain.Errorf(domain.EINVALID, "the query has %d parameters, more than %d", n, maxParams)
	}
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		rawName, rawValue, _ := strings.Cut(part, "=")
		if strings.Contains(part, ";") {
			return nil, domain.Errorf(domain.EINVALID, "%s: ';' does not separate parameters, '&' does", paramName(rawName))
		}
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			return nil, domain.Errorf(domain.EINVALID, "%s: its name is not valid %%-encoding", paramName(rawName))
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return nil, domain.Errorf(domain.EINVALID, "%s: its value is not valid %%-encoding", paramName(name))
		}
		v[name] = append(v[name], value)
	}
	return v, checkValues(v)
}

// checkQuery returns middleware that parses every request's query with
// parseQuery before any handler runs and answers a bad one 400 with fail
// (JSON under /api/, the error page elsewhere): handlers may then read
// r.URL.Query(), which holds every parameter, each valid text. Requests to
// exempt paths pass (the webhook reads no query).
func checkQuery(fail func(http.ResponseWriter, *http.Request, error), exempt ...string) func(http.Handler) http.Handler {
	skip := map[string]bool{}
	for _, p := range exempt {
		skip[p] = true
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !skip[r.URL.Path] {
				if _, err := parseQuery(r.URL.RawQuery); err != nil {
					fail(w, r, err)
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// formMaxBytes bounds the forms the service reads (a user id; a digest and
// a checkbox).
const formMaxBytes = 4 << 10

// readForm parses r's form, the query and an urlencoded body of at most
// formMaxBytes, and returns them merged (r.Form). Errors: ETOOLARGE for a
// larger body; EINVALID naming the problem when the body does not parse or
// a field fails checkValues.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	r.Body = http.MaxBytesReader(w, r.Body, formMaxBytes)
	if err := r.ParseForm(); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, domain.Errorf(domain.ETOOLARGE, "the form is larger than %d bytes", formMaxBytes)
		}
		return nil, domain.Errorf(domain.EINVALID, "the form does not parse: %v", err)
	}
	if err := checkValues(r.Form); err != nil {
		return nil, err
	}
	return r.Form, nil
}
