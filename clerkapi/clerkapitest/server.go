// Package clerkapitest is an in-process fake of Clerk's Backend API user
// endpoints, for tests and benchmarks of clients such as package clerkapi.
// It serves real HTTP (net/http/httptest, loopback) and speaks Clerk's JSON
// as of Clerk-API-Version 2025-04-10:
//
//	GET /v1/users?limit&offset&order_by  a bare JSON array of user objects
//	                                     (what Clerk sends; clerk-sdk-go's
//	                                     UserList {"data","total_count"} is
//	                                     put together by the SDK from this and
//	                                     /count). Options.Envelope answers
//	                                     {"data":[...],"total_count":N} instead.
//	GET /v1/users/count                  {"object":"total_count","total_count":N}
//	GET /v1/users/{id}                   the user object, or 404
//	GET /v1/organizations, /v1/organizations/{id}/memberships
//	                                     {"data":[...],"total_count":N} (organizations.go)
//
// Errors carry Clerk's shape {"errors":[{"message","long_message","code"}],
// "clerk_trace_id"}; a request without "Authorization: Bearer <SecretKey>"
// gets 401. Users are realistic generated Clerk user objects (see User),
// listed in Clerk's orders (+/-created_at, +/-updated_at; the fake breaks
// ties by id, Clerk leaves their order unspecified).
//
// Faults for the client's resilience paths: Inject answers the next requests
// with a status (429 with Retry-After, 5xx, a proxy's HTML page), cuts a
// body short or drops the connection; SetDelay slows list pages; PutRaw replaces a user's bytes with
// anything (a malformed object); OnList runs a hook before each page is read,
// so users can be created, updated or deleted between pages; Options.Gzip
// compresses answers as Clerk's edge does. Requests records every request
// with its arrival time. A Server is safe for concurrent use.
package clerkapitest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configure a Server.
type Options struct {
	// SecretKey is the key requests must carry as a bearer token; empty
	// makes a random sk_test_ key (see Server.SecretKey).
	SecretKey string
	// Users is how many generated users the Server starts with.
	Users int
	// Seed seeds generation: same seed, same users (ids and bytes).
	Seed uint64
	// Start is the created_at of the first generated user; later users are
	// created up to two minutes apart (a few in the same millisecond).
	// Default 2024-01-01 UTC.
	Start time.Time
	// Envelope answers GET /v1/users with {"data":[...],"total_count":N}
	// instead of Clerk's bare array.
	Envelope bool
	// Gzip compresses successful answers when the request accepts gzip, as
	// Clerk's edge does (net/http's client then decompresses, and the body
	// has no known length).
	Gzip bool
}

// Fault is what an injected failure answers.
type Fault struct {
	Status     int    // HTTP status; Clerk's error JSON for it unless Body is set (502 and 504 get a proxy's HTML page)
	RetryAfter string // Retry-After header value ("" for none): seconds or an HTTP date
	Body       string // body instead of the default one
	// Drop closes the connection without answering. net/http's Transport
	// quietly resends a GET once when a reused keep-alive connection closes
	// before any answer, so a client may not see a single Drop; Truncate it
	// always sees.
	Drop bool
	// Truncate answers 200 with a Content-Length the body never reaches:
	// the connection closes after a few bytes (the client sees an
	// unexpected EOF while reading).
	Truncate bool
	Delay    time.Duration // wait this long first
}

// Request is a request the Server received.
type Request struct {
	At         time.Time // arrival
	Method     string
	Path       string
	RawQuery   string
	Authorized bool // carried the right bearer token
	Fault      bool // answered by an injected Fault
	Status     int  // status answered; 0 while in progress or when dropped
}

// Entry is a stored user: its list position keys and its exact bytes.
type Entry struct {
	ID        string
	CreatedAt int64 // ms
	UpdatedAt int64 // ms
	Raw       []byte
}

// Server is the fake Backend API.
type Server struct {
	ts       *httptest.Server
	key      string
	envelope bool
	gzip     bool

	mu       sync.Mutex
	rng      *rand.Rand
	entries  []*Entry // sorted by (CreatedAt, ID)
	byID     map[string]*Entry
	last     int64 // created_at of the newest generated user
	serial   int
	faults   []Fault
	delay    time.Duration
	onList   func(offset, limit int)
	requests []Request
	org      orgStore // organizations.go
}

// New starts a Server; Close it when done.
func New(o Options) *Server {
	s := &Server{
		key:      o.SecretKey,
		envelope: o.Envelope,
		gzip:     o.Gzip,
		rng:      rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)),
		byID:     map[string]*Entry{},
	}
	if s.key == "" {
		s.key = "sk_test_" + strings.TrimPrefix(newID(rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), "k"), "k_") + "Xy9"
	}
	start := o.Start
	if start.IsZero() {
		start = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	s.last = start.UnixMilli()
	s.entries = make([]*Entry, 0, o.Users)
	s.generate(o.Users, true)
	s.ts = httptest.NewServer(s)
	return s
}

// URL is the base URL to give a client (no /v1).
func (s *Server) URL() string { return s.ts.URL }

// SecretKey is the bearer token the Server accepts.
func (s *Server) SecretKey() string { return s.key }

// Client returns an HTTP client for the Server (loopback, keep-alive).
func (s *Server) Client() *http.Client { return s.ts.Client() }

// Close shuts the Server down.
func (s *Server) Close() { s.ts.Close() }

// Generate adds n generated users created after every user so far (as new
// sign-ups are) and returns their ids.
func (s *Server) Generate(n int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.generate(n, false)
}

func (s *Server) generate(n int, first bool) []string {
	ids := make([]string, 0, n)
	for i := range n {
		if !(first && i == 0) {
			if s.rng.IntN(100) < 3 {
				// same millisecond as the one before: Clerk's order between
				// such users is unspecified
			} else {
				s.last += 1 + s.rng.Int64N(120_000)
			}
		}
		s.serial++
		u := generate(s.rng, s.serial, s.last)
		raw, err := u.Render()
		if err != nil {
			panic(err) // generated metadata is valid JSON
		}
		s.insert(&Entry{ID: u.ID, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, Raw: raw})
		ids = append(ids, u.ID)
	}
	return ids
}

// Put adds u, or replaces the user with its id, rendered as Clerk sends it.
// A zero CreatedAt or UpdatedAt becomes now. It fails for an empty id or
// metadata that is not JSON.
func (s *Server) Put(u User) error {
	if u.ID == "" {
		return fmt.Errorf("clerkapitest: Put needs a user id")
	}
	now := time.Now().UnixMilli()
	if u.Object == "" {
		u.Object = "user"
	}
	if u.CreatedAt == 0 {
		u.CreatedAt = now
	}
	if u.UpdatedAt == 0 {
		u.UpdatedAt = now
	}
	raw, err := u.Render()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remove(u.ID)
	s.insert(&Entry{ID: u.ID, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, Raw: raw})
	return nil
}

// Get decodes the stored user id. It fails when there is none or its bytes
// were replaced by PutRaw with something that is not a user.
func (s *Server) Get(id string) (User, error) {
	raw, ok := s.Raw(id)
	if !ok {
		return User{}, fmt.Errorf("clerkapitest: no user %s", id)
	}
	var u User
	if err := json.Unmarshal(raw, &u); err != nil {
		return User{}, fmt.Errorf("clerkapitest: user %s is not a user object: %w", id, err)
	}
	return u, nil
}

// Update applies f to user id (as a Backend API update would) and stores
// it; updated_at moves forward unless f set it. It fails when there is no
// such user or f changed the id.
func (s *Server) Update(id string, f func(*User)) error {
	u, err := s.Get(id)
	if err != nil {
		return err
	}
	before := u.UpdatedAt
	f(&u)
	if u.ID != id {
		return fmt.Errorf("clerkapitest: Update must not change the id")
	}
	if u.UpdatedAt == before {
		u.UpdatedAt = max(time.Now().UnixMilli(), before+1)
	}
	return s.Put(u)
}

// Delete removes user id; false when there was none.
func (s *Server) Delete(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remove(id)
}

// PutRaw replaces the stored bytes of user id with raw, verbatim: the
// user keeps its place in lists, and lists and GET /v1/users/{id} send raw
// as its object (valid JSON or not). It fails when there is no such user.
func (s *Server) PutRaw(id string, raw []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byID[id]
	if !ok {
		return fmt.Errorf("clerkapitest: no user %s", id)
	}
	ne := *e
	ne.Raw = bytes.Clone(raw)
	s.replace(e, &ne)
	return nil
}

// Raw returns the stored bytes of user id (do not modify them).
func (s *Server) Raw(id string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byID[id]
	if !ok {
		return nil, false
	}
	return e.Raw, true
}

// List returns every user in +created_at order (do not modify the bytes).
func (s *Server) List() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Entry, len(s.entries))
	for i, e := range s.entries {
		out[i] = *e
	}
	return out
}

// Len is the number of users.
func (s *Server) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// Inject makes the next n requests (any endpoint, before authentication, as
// a load balancer or rate limiter in front of the API would) answer f.
func (s *Server) Inject(n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, f)
	}
}

// ClearFaults drops the faults not yet served.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// SetDelay makes every list page wait d before it is read and answered.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// OnList sets a hook run before each authorized, valid list request is
// read (nil removes it). It runs on the request's goroutine without locks
// held, so it may call Generate, Put, Update, Delete or PutRaw.
func (s *Server) OnList(f func(offset, limit int)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onList = f
}

// Requests returns the requests received so far, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// RequestCount is how many requests the Server received.
func (s *Server) RequestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

func less(a *Entry, createdAt int64, id string) bool {
	return a.CreatedAt < createdAt || a.CreatedAt == createdAt && a.ID < id
}

// insert places e in created_at order; s.mu held.
func (s *Server) insert(e *Entry) {
	n := len(s.entries)
	if n == 0 || less(s.entries[n-1], e.CreatedAt, e.ID) {
		s.entries = append(s.entries, e)
	} else {
		i, _ := slices.BinarySearchFunc(s.entries, e, func(a, b *Entry) int {
			if less(a, b.CreatedAt, b.ID) {
				return -1
			}
			return 1
		})
		s.entries = slices.Insert(s.entries, i, e)
	}
	s.byID[e.ID] = e
}

func (s *Server) index(e *Entry) int {
	i, _ := slices.BinarySearchFunc(s.entries, e, func(a, b *Entry) int {
		switch {
		case less(a, b.CreatedAt, b.ID):
			return -1
		case a.ID == b.ID:
			return 0
		}
		return 1
	})
	return i
}

// remove deletes user id; s.mu held.
func (s *Server) remove(id string) bool {
	e, ok := s.byID[id]
	if !ok {
		return false
	}
	s.entries = slices.Delete(s.entries, s.index(e), s.index(e)+1)
	delete(s.byID, id)
	return true
}

// replace swaps an entry for one with the same keys; s.mu held. Entries
// are never changed in place: a page being written keeps the bytes it took.
func (s *Server) replace(old, e *Entry) {
	s.entries[s.index(old)] = e
	s.byID[e.ID] = e
}

// ServeHTTP serves the Backend API's user endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	authorized := r.Header.Get("Authorization") == "Bearer "+s.key
	s.mu.Lock()
	idx := len(s.requests)
	s.requests = append(s.requests, Request{At: time.Now(), Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Authorized: authorized})
	var fault *Fault
	if len(s.faults) > 0 {
		f := s.faults[0]
		s.faults = s.faults[1:]
		fault = &f
		s.requests[idx].Fault = true
	}
	s.mu.Unlock()

	status := 0
	defer func() { // also when a fault aborts the handler
		s.mu.Lock()
		s.requests[idx].Status = status
		s.mu.Unlock()
	}()
	if s.gzip && fault == nil && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		gw := &gzipWriter{ResponseWriter: w}
		defer gw.close()
		w = gw
	}
	status = s.serve(w, r, fault, authorized)
}

// gzipWriter compresses a 2xx answer (dropping its Content-Length).
type gzipWriter struct {
	http.ResponseWriter
	zw *gzip.Writer
}

func (g *gzipWriter) WriteHeader(status int) {
	if status >= 200 && status < 300 {
		g.Header().Del("Content-Length")
		g.Header().Set("Content-Encoding", "gzip")
		g.zw = gzip.NewWriter(g.ResponseWriter)
	}
	g.ResponseWriter.WriteHeader(status)
}

func (g *gzipWriter) Write(b []byte) (int, error) {
	if g.zw != nil {
		return g.zw.Write(b)
	}
	return g.ResponseWriter.Write(b)
}

func (g *gzipWriter) close() {
	if g.zw != nil {
		g.zw.Close()
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, fault *Fault, authorized bool) int {
	if fault != nil {
		return s.serveFault(w, r, *fault)
	}
	if !authorized {
		msg := "Unable to authenticate the request, you need to supply an active API key"
		if r.Header.Get("Authorization") == "" {
			msg = "Authorization header missing: you need to supply an active API key"
		}
		return writeError(w, http.StatusUnauthorized, "authentication_invalid", "Invalid authentication", msg, "")
	}
	if r.Method != http.MethodGet {
		return writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed", "The fake Backend API serves GET only", "")
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, "/v1/organizations"); ok && (rest == "" || rest[0] == '/') {
		return s.serveOrganizations(w, r, rest)
	}
	switch rest, _ := strings.CutPrefix(r.URL.Path, "/v1/users"); {
	case rest == "" || rest == "/":
		return s.serveList(w, r)
	case rest == "/count":
		s.mu.Lock()
		n := len(s.entries)
		s.mu.Unlock()
		return writeJSON(w, http.StatusOK, []byte(`{"object":"total_count","total_count":`+strconv.Itoa(n)+`}`))
	case strings.HasPrefix(rest, "/") && !strings.Contains(rest[1:], "/"):
		raw, ok := s.Raw(rest[1:])
		if !ok {
			return writeError(w, http.StatusNotFound, "resource_not_found", "not found", "Resource not found", "")
		}
		return writeJSON(w, http.StatusOK, raw)
	}
	return writeError(w, http.StatusNotFound, "resource_not_found", "not found", "Resource not found", "")
}

func (s *Server) serveFault(w http.ResponseWriter, r *http.Request, f Fault) int {
	if f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return 0
		}
	}
	if f.Drop {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return 0
			}
		}
		panic(http.ErrAbortHandler) // aborts the response: the client sees a broken connection
	}
	if f.Truncate {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "100000")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`[{"id":"user_`))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the server closes the connection mid-body
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if f.Body != "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(f.Status)
		w.Write([]byte(f.Body))
		return f.Status
	}
	switch f.Status {
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		text := strconv.Itoa(f.Status) + " " + http.StatusText(f.Status)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(f.Status)
		fmt.Fprintf(w, "<html>\r\n<head><title>%s</title></head>\r\n<body>\r\n<center><h1>%s</h1></center>\r\n</body>\r\n</html>\r\n", text, text)
		return f.Status
	case http.StatusTooManyRequests:
		return writeError(w, f.Status, "too_many_requests", "Too many requests", "Too many requests, retry later", "")
	case http.StatusUnauthorized:
		return writeError(w, f.Status, "authentication_invalid", "Invalid authentication", "Unable to authenticate the request, you need to supply an active API key", "")
	}
	if f.Status >= 500 {
		return writeError(w, f.Status, "internal_clerk_error", "Oops, an unexpected error occurred",
			"There was an internal error on our servers. We've been notified and are working on fixing it.", "")
	}
	return writeError(w, f.Status, "bad_request", http.StatusText(f.Status), http.StatusText(f.Status), "")
}

// listOrders are the order_by values the fake implements (Clerk also
// orders by email_address, web3wallet, first_name, last_name, phone_number,
// username, last_active_at and last_sign_in_at; the fake answers 422 for those).
var listOrders = map[string]bool{
	"created_at": true, "+created_at": true, "-created_at": true,
	"updated_at": true, "+updated_at": true, "-updated_at": true,
}

func (s *Server) serveList(w http.ResponseWriter, r *http.Request) int {
	q := r.URL.Query()
	limit, offset, order := 10, 0, "-created_at" // Clerk's defaults
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			return writeError(w, http.StatusUnprocessableEntity, "form_param_value_invalid", "is invalid",
				"limit must be an integer greater than zero and less than 501", "limit")
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return writeError(w, http.StatusUnprocessableEntity, "form_param_value_invalid", "is invalid",
				"offset must be an integer greater or equal to zero", "offset")
		}
		offset = n
	}
	if v := q.Get("order_by"); v != "" {
		if !listOrders[v] {
			return writeError(w, http.StatusUnprocessableEntity, "form_param_value_invalid", "is invalid",
				"order_by "+strconv.Quote(v)+" is not supported by the fake Backend API", "order_by")
		}
		order = v
	}
	s.mu.Lock()
	hook, delay := s.onList, s.delay
	s.mu.Unlock()
	if hook != nil {
		hook(offset, limit)
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return 0
		}
	}

	s.mu.Lock()
	list := s.entries
	if strings.HasSuffix(order, "updated_at") {
		list = slices.Clone(list)
		slices.SortFunc(list, func(a, b *Entry) int {
			if a.UpdatedAt != b.UpdatedAt {
				return cmpInt(a.UpdatedAt, b.UpdatedAt)
			}
			return strings.Compare(a.ID, b.ID)
		})
	}
	total := len(list)
	page := make([][]byte, 0, max(0, min(limit, total-offset)))
	for i := offset; i < total && len(page) < limit; i++ {
		j := i
		if order[0] == '-' {
			j = total - 1 - i
		}
		page = append(page, list[j].Raw)
	}
	s.mu.Unlock()

	head, tail := "[", "]"
	if s.envelope {
		head, tail = `{"data":[`, `],"total_count":`+strconv.Itoa(total)+`}`
	}
	size := len(head) + len(tail) + max(0, len(page)-1)
	for _, raw := range page {
		size += len(raw)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(size))
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, head)
	for i, raw := range page {
		if i > 0 {
			w.Write(comma)
		}
		w.Write(raw)
	}
	io.WriteString(w, tail)
	return http.StatusOK
}

var comma = []byte{','} // shared: a literal per Write would allocate per user

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func writeJSON(w http.ResponseWriter, status int, body []byte) int {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
	return status
}

// writeError answers Clerk's error shape.
func writeError(w http.ResponseWriter, status int, code, message, long, param string) int {
	type clerkError struct {
		Message     string            `json:"message"`
		LongMessage string            `json:"long_message"`
		Code        string            `json:"code"`
		Meta        map[string]string `json:"meta,omitempty"`
	}
	e := clerkError{Message: message, LongMessage: long, Code: code}
	if param != "" {
		e.Meta = map[string]string{"param_name": param}
	}
	body, _ := json.Marshal(struct {
		Errors  []clerkError `json:"errors"`
		TraceID string       `json:"clerk_trace_id"`
	}{[]clerkError{e}, fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64())})
	return writeJSON(w, status, body)
}
