package clerkapitest

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Organizations and their memberships, served as Clerk does:
//
//	GET /v1/organizations?limit&offset&order_by                   {"data":[...],"total_count":N}
//	GET /v1/organizations/{id}/memberships?limit&offset&order_by  {"data":[...],"total_count":N}
//
// ordered by +/-created_at (ties by id). Objects are stored as given
// (PutOrganization, PutMembership): the caller renders them, e.g. from
// clerkgen's organization and membership events' data.

// orgStore is the fake's organizations and memberships; guarded by Server.mu.
type orgStore struct {
	orgs    []*Entry            // by (CreatedAt, ID)
	members map[string][]*Entry // organization id → memberships by (CreatedAt, ID)
}

// PutOrganization adds organization e (or replaces the one with its id):
// e.Raw is served verbatim as the organization object.
func (s *Server) PutOrganization(e Entry) error {
	if e.ID == "" {
		return fmt.Errorf("clerkapitest: PutOrganization needs an id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.org.orgs = putSorted(s.org.orgs, &e)
	return nil
}

// PutMembership adds membership e of organization orgID (or replaces the
// one with its id); the organization must exist.
func (s *Server) PutMembership(orgID string, e Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.ContainsFunc(s.org.orgs, func(o *Entry) bool { return o.ID == orgID }) {
		return fmt.Errorf("clerkapitest: no organization %s", orgID)
	}
	if s.org.members == nil {
		s.org.members = map[string][]*Entry{}
	}
	s.org.members[orgID] = putSorted(s.org.members[orgID], &e)
	return nil
}

// DeleteOrganization removes organization id and its memberships.
func (s *Server) DeleteOrganization(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.org.orgs)
	s.org.orgs = slices.DeleteFunc(s.org.orgs, func(o *Entry) bool { return o.ID == id })
	delete(s.org.members, id)
	return len(s.org.orgs) != n
}

// putSorted inserts e in (CreatedAt, ID) order, replacing an entry with its id.
func putSorted(list []*Entry, e *Entry) []*Entry {
	list = slices.DeleteFunc(list, func(o *Entry) bool { return o.ID == e.ID })
	i, _ := slices.BinarySearchFunc(list, e, func(a, b *Entry) int {
		if less(a, b.CreatedAt, b.ID) {
			return -1
		}
		return 1
	})
	return slices.Insert(list, i, e)
}

// serveOrganizations serves the paths under /v1/organizations.
func (s *Server) serveOrganizations(w http.ResponseWriter, r *http.Request, rest string) int {
	s.mu.Lock()
	var list []*Entry
	switch {
	case rest == "" || rest == "/":
		list = slices.Clone(s.org.orgs)
	case strings.HasSuffix(rest, "/memberships") && strings.Count(rest, "/") == 2:
		id := strings.TrimSuffix(strings.TrimPrefix(rest, "/"), "/memberships")
		if !slices.ContainsFunc(s.org.orgs, func(o *Entry) bool { return o.ID == id }) {
			s.mu.Unlock()
			return writeError(w, http.StatusNotFound, "resource_not_found", "not found", "Resource not found", "")
		}
		list = slices.Clone(s.org.members[id])
	default:
		s.mu.Unlock()
		return writeError(w, http.StatusNotFound, "resource_not_found", "not found", "Resource not found", "")
	}
	s.mu.Unlock()
	q := r.URL.Query()
	limit, offset := 10, 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			return writeError(w, http.StatusUnprocessableEntity, "form_param_value_invalid", "is invalid", "limit must be between 1 and 500", "limit")
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return writeError(w, http.StatusUnprocessableEntity, "form_param_value_invalid", "is invalid", "offset must be >= 0", "offset")
		}
		offset = n
	}
	switch q.Get("order_by") {
	case "", "-created_at": // Clerk's default: newest first
		slices.Reverse(list)
	case "+created_at", "created_at":
	default:
		return writeError(w, http.StatusUnprocessableEntity, "form_param_value_invalid", "is invalid", "order_by is not supported by the fake Backend API", "order_by")
	}
	var b strings.Builder
	b.WriteString(`{"data":[`)
	for i := offset; i < len(list) && i < offset+limit; i++ {
		if i > offset {
			b.WriteByte(',')
		}
		b.Write(list[i].Raw)
	}
	b.WriteString(`],"total_count":` + strconv.Itoa(len(list)) + `}`)
	return writeJSON(w, http.StatusOK, []byte(b.String()))
}
