package clerkapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk/clerk-sdk-go/v2"
	"github.com/clerk/clerk-sdk-go/v2/user"
)

// MaxLimit is the largest page the Backend API serves (limit 1..500).
const MaxLimit = 500

// ListOrder is the order_by ListUsers sends.
//
// The Backend API orders users by one of created_at, updated_at,
// email_address, web3wallet, first_name, last_name, phone_number, username,
// last_active_at or last_sign_in_at, ascending (+) or descending (-), and
// takes a single order_by: there is no id tie-break, and paging is by
// offset only. created_at is the one key a user never changes (updated_at,
// last_active_at and the names move users across pages in mid-pass), and
// ascending puts new sign-ups, created "now", after everyone else. So while
// a pass of ListUsers pages is running:
//   - a new sign-up lands at the end: positions already read do not move;
//     it appears on the last pages or not at all (it arrives by webhook);
//   - a user created with a created_at in the past (the Backend API's
//     create-user accepts one, for migrations) lands mid-list and shifts the
//     users after it one place later: one user is seen twice, none is lost;
//   - a deleted user before the current offset shifts the users after it
//     one place earlier: one user at the next page boundary is skipped in
//     this pass (a deletion ahead of the offset costs nothing);
//   - users created in the same millisecond have no specified order among
//     themselves: if Clerk returns such a tie in different orders to two
//     requests and the tie straddles a page boundary, one can be seen twice
//     and another skipped.
//
// A pass is therefore not a snapshot: callers dedupe by id (keeping the
// greatest updated_at) and must not read "not listed" as "deleted" from one
// pass alone; compare CountUsers before and after, and GetUser an id in
// doubt. The alternatives are worse: -created_at puts every new sign-up at
// offset 0 and shifts the whole list, and +updated_at moves every user
// who changes during the pass to the end.
const ListOrder = "+created_at"

// User is one user object from the Backend API.
type User struct {
	ID        string // "user_…"
	CreatedAt int64  // created_at, Unix ms, as Clerk sends it
	UpdatedAt int64  // updated_at, Unix ms
	// Raw is the user object's exact bytes as the API sent them (not
	// re-encoded). Never log it: it holds emails and metadata.
	Raw json.RawMessage
}

// Failure is an element of a page that is not a well-formed user object:
// not an object; no id, or an id that is not a string of Clerk id
// characters; created_at or updated_at missing or not an integer; an
// object other than "user"; one of those keys repeated or differing only in
// case; invalid UTF-8. It is reported, never dropped and never half parsed;
// the rest of the page is usable.
type Failure struct {
	Index    int             // position in the page, from 0
	Position int             // position in the list: Page.Offset + Index
	ID       string          // the user's id when it could be read, else ""
	Raw      json.RawMessage // the element's exact bytes (never log them)
	Err      error           // EINVALID: what is wrong, with Position and ID
}

// Page is one page of ListUsers.
type Page struct {
	Offset   int       // the offset asked for
	Limit    int       // the limit asked for
	Users    []User    // well-formed users, in list order
	Failures []Failure // malformed elements, in list order
	// Count is how many elements the response held (users and failures):
	// the next page starts at Offset+Count, and a page with Count < Limit
	// is the last.
	Count int
	// TotalCount is total_count when the response carried one (an
	// {"data":[...],"total_count":N} envelope, as clerk-sdk-go's UserList
	// presents it); -1 for the bare array GET /v1/users returns today (the
	// SDK gets its total from a second request; see CountUsers).
	TotalCount int64

	buf    []byte // the response body, which Users and Failures point into
	object string // the "object" every element must have ("user", "organization", …)
}

// Next is the offset of the page after p.
func (p *Page) Next() int { return p.Offset + p.Count }

// Last reports whether p is the last page.
func (p *Page) Last() bool { return p.Count < p.Limit }

// ListUsers returns the page of users at offset (0-based) of at most limit
// (1..MaxLimit) users in ListOrder. The page owns its memory.
func (c *Client) ListUsers(ctx context.Context, offset, limit int) (*Page, error) {
	p := new(Page)
	if err := c.ListUsersInto(ctx, p, offset, limit); err != nil {
		return nil, err
	}
	return p, nil
}

// ListUsersInto is ListUsers reading into p and reusing its memory (the
// body buffer and slices), for importers paging through many users: what
// p held before, Raw bytes included, is overwritten, so copy anything kept
// across calls. Alternate two Pages to process one while fetching the next.
func (c *Client) ListUsersInto(ctx context.Context, p *Page, offset, limit int) error {
	if limit < 1 || limit > MaxLimit {
		return domain.Errorf(domain.EINVALID, "list users: limit %d is out of range 1..%d", limit, MaxLimit)
	}
	if offset < 0 {
		return domain.Errorf(domain.EINVALID, "list users: offset %d is negative", offset)
	}
	// The SDK's own parameter type writes the query (limit, offset, order_by).
	q := (&user.ListParams{
		ListParams: clerk.ListParams{Limit: clerk.Int64(int64(limit)), Offset: clerk.Int64(int64(offset))},
		OrderBy:    clerk.String(ListOrder),
	}).ToQuery()
	return c.listInto(ctx, p, "list_users", "user", c.usersURL()+"?"+q.Encode(), offset, limit)
}

// listInto GETs one list page of objects of kind object into p.
func (c *Client) listInto(ctx context.Context, p *Page, op, object, rawURL string, offset, limit int) error {
	p.Offset, p.Limit, p.Count, p.TotalCount, p.object = offset, limit, 0, -1, object
	p.Users, p.Failures = p.Users[:0], p.Failures[:0]
	body, err := c.get(ctx, op, rawURL, p.buf)
	p.buf = body
	if err != nil {
		return fmt.Errorf("%s at offset %d: %w", strings.ReplaceAll(op, "_", " "), offset, err)
	}
	if err := parsePage(body, p); err != nil {
		p.Users, p.Failures = p.Users[:0], p.Failures[:0]
		return fmt.Errorf("%s at offset %d: %w", strings.ReplaceAll(op, "_", " "), offset, err)
	}
	return nil
}

// CountUsers returns how many users the instance has (GET /v1/users/count).
func (c *Client) CountUsers(ctx context.Context) (int64, error) {
	body, err := c.get(ctx, "count_users", c.usersURL()+"/count", nil)
	if err != nil {
		return 0, fmt.Errorf("count users: %w", err)
	}
	var n user.TotalCount // the SDK's type for this response
	if err := json.Unmarshal(body, &n); err != nil || n.TotalCount < 0 {
		return 0, fmt.Errorf("count users: %w", domain.Errorf(domain.EINTERNAL, "Clerk Backend API answered something other than a total_count object"))
	}
	return n.TotalCount, nil
}

// GetUser returns user id (GET /v1/users/{id}); ENOTFOUND when Clerk has no
// such user (never created, or deleted), EINVALID for an id that is not a
// Clerk id (no request is made) or an answer that is not a well-formed user
// object with that id (the reasons of Failure), EINTERNAL for one that is
// not JSON.
func (c *Client) GetUser(ctx context.Context, id string) (User, error) {
	if !isClerkID(id) {
		return User{}, domain.Errorf(domain.EINVALID, "get user: %s is not a Clerk user id", quoteID(id))
	}
	body, err := c.get(ctx, "get_user", c.usersURL()+"/"+url.PathEscape(id), nil)
	if err != nil {
		if domain.ErrorCode(err) == domain.ENOTFOUND {
			return User{}, fmt.Errorf("get user %s: %w", id, domain.Errorf(domain.ENOTFOUND, "Clerk has no user %s", id))
		}
		return User{}, fmt.Errorf("get user %s: %w", id, err)
	}
	v := validator{b: body}
	end, u, gotID, reason := parseUser(&v, skipWS(body, 0), 0)
	if end < 0 || skipWS(body, end) != len(body) {
		return User{}, fmt.Errorf("get user %s: %w", id, errMalformed)
	}
	if reason != "" {
		return User{}, fmt.Errorf("get user %s: %w", id, domain.Errorf(domain.EINVALID, "Clerk returned a malformed user: %s", reason))
	}
	if gotID != id {
		return User{}, fmt.Errorf("get user %s: %w", id, domain.Errorf(domain.EINVALID, "Clerk returned user %s instead", gotID))
	}
	return u, nil
}

func (c *Client) usersURL() string { return c.users }

// isClerkID reports whether id looks like a Clerk id: 1..128 letters,
// digits, _ or -. (Any id Clerk makes does; anything else cannot be one and
// must not reach a URL path or the ledger.)
func isClerkID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// quoteID shows a rejected id safely: quoted, at most 64 bytes.
func quoteID(id string) string {
	if len(id) > 64 {
		return strconv.Quote(id[:64]) + "…"
	}
	return strconv.Quote(id)
}
