package clerkapi

import (
	"context"
	"net/url"
	"strconv"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// ListOrganizationsInto reads the page of organizations at offset (at most
// limit, 1..MaxLimit) in ListOrder (GET /v1/organizations, an
// {"data":[...],"total_count":N} envelope) into p, as ListUsersInto does
// for users: p.Users holds the well-formed organization objects (object
// "organization", id, created_at, updated_at; exact bytes in Raw),
// p.Failures the malformed ones.
func (c *Client) ListOrganizationsInto(ctx context.Context, p *Page, offset, limit int) error {
	if err := checkPage(offset, limit); err != nil {
		return err
	}
	return c.listInto(ctx, p, "list_organizations", "organization", c.base()+"/organizations?"+pageQuery(offset, limit), offset, limit)
}

// ListMembershipsInto reads the page of organization orgID's memberships at
// offset (GET /v1/organizations/{id}/memberships) into p: objects
// "organization_membership". ENOTFOUND when there is no such organization
// (deleted since it was listed).
func (c *Client) ListMembershipsInto(ctx context.Context, p *Page, orgID string, offset, limit int) error {
	if !isClerkID(orgID) {
		return domain.Errorf(domain.EINVALID, "list memberships: %s is not a Clerk organization id", quoteID(orgID))
	}
	if err := checkPage(offset, limit); err != nil {
		return err
	}
	return c.listInto(ctx, p, "list_memberships", "organization_membership",
		c.base()+"/organizations/"+url.PathEscape(orgID)+"/memberships?"+pageQuery(offset, limit), offset, limit)
}

// base is the API's base URL with /v1.
func (c *Client) base() string { return strings.TrimSuffix(c.users, "/users") }

func checkPage(offset, limit int) error {
	if limit < 1 || limit > MaxLimit {
		return domain.Errorf(domain.EINVALID, "list: limit %d is out of range 1..%d", limit, MaxLimit)
	}
	if offset < 0 {
		return domain.Errorf(domain.EINVALID, "list: offset %d is negative", offset)
	}
	return nil
}

func pageQuery(offset, limit int) string {
	return url.Values{"limit": {strconv.Itoa(limit)}, "offset": {strconv.Itoa(offset)}, "order_by": {ListOrder}}.Encode()
}
