// Package clerkgen makes realistic Clerk webhook deliveries: event envelopes
// shaped like Clerk's (user.*, session.*, email.*, organization.*), ids in
// Clerk's formats, webhook signing secrets, and Svix signatures made with the
// svix library exactly as Svix makes them. The CLI uses it for `webhook send`,
// `bench` and `seed`; tests use it to drive the real endpoint.
package clerkgen

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	svix "github.com/svix/svix-webhooks/go"
)

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewID returns a Clerk-style id: prefix + "_" + 27 random base62 characters
// (user_..., sess_..., idn_..., msg_...).
func NewID(prefix string) string {
	var b strings.Builder
	b.WriteString(prefix)
	b.WriteByte('_')
	max := big.NewInt(int64(len(alphabet)))
	for range 27 {
		n, _ := rand.Int(rand.Reader, max)
		b.WriteByte(alphabet[n.Int64()])
	}
	return b.String()
}

// NewSecret returns a new webhook signing secret in Svix's format, whsec_ + base64 of 24 random bytes.
func NewSecret() string {
	b := make([]byte, 24)
	rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// User describes the Clerk user an event is about. Empty names become JSON
// null, as Clerk sends them; an empty Email makes a phone-only user.
type User struct {
	ID             string
	Email          string
	Phone          string
	FirstName      string
	LastName       string
	Username       string
	PublicMetadata map[string]any
	CreatedAt      time.Time
	UpdatedAt      time.Time

	// The rest of the user object. Zero values are Clerk's defaults:
	// verified email, no external id, not banned or locked, two-factor
	// off, last signed in and active at UpdatedAt, empty private metadata.
	EmailUnverified  bool
	ExternalID       string
	Banned           bool
	Locked           bool
	TwoFactorEnabled bool
	LastSignInAt     time.Time
	PrivateMetadata  map[string]any
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// EventTypes are the event types Event can build.
var EventTypes = []string{"user.created", "user.updated", "user.deleted", "session.created", "session.ended", "email.created", "organization.created"}

// Event builds the JSON body of a Clerk webhook of type typ about u, sent at
// `at`. It returns an error for a type it cannot build.
func Event(typ string, u User, at time.Time) ([]byte, error) {
	fillDefaults(&u.ID, "user", &u.CreatedAt, &u.UpdatedAt, at)
	var data any
	switch typ {
	case "user.created", "user.updated":
		data = userObject(u)
	case "user.deleted":
		data = map[string]any{"id": u.ID, "object": "user", "deleted": true}
	case "session.created", "session.ended", "session.removed", "session.revoked":
		data = map[string]any{
			"id": NewID("sess"), "object": "session", "user_id": u.ID, "client_id": NewID("client"),
			"status":     strings.TrimPrefix(typ, "session."),
			"created_at": at.UnixMilli(), "updated_at": at.UnixMilli(),
			"last_active_at": at.UnixMilli(), "expire_at": at.Add(7 * 24 * time.Hour).UnixMilli(),
			"abandon_at": at.Add(30 * 24 * time.Hour).UnixMilli(),
		}
	case "email.created":
		data = map[string]any{
			"id": NewID("ema"), "object": "email", "user_id": u.ID, "email_address_id": NewID("idn"),
			"from_email_name": "notifications", "to_email_address": u.Email,
			"subject": "Your verification code", "slug": "verification_code",
			"status": "queued", "delivered_by_clerk": true,
			"body":       "<p>Your verification code is 424242.</p>",
			"body_plain": "Your verification code is 424242.",
		}
	case "organization.created":
		data = map[string]any{
			"id": NewID("org"), "object": "organization", "name": "Acme Inc", "slug": "acme",
			"created_by": u.ID, "created_at": at.UnixMilli(), "updated_at": at.UnixMilli(),
			"public_metadata": map[string]any{}, "max_allowed_memberships": 5,
		}
	default:
		return nil, fmt.Errorf("cannot build a %q event (known: %s)", typ, strings.Join(EventTypes, ", "))
	}
	return envelope(typ, data, at)
}

// envelope wraps data in Clerk's webhook envelope.
func envelope(typ string, data any, at time.Time) ([]byte, error) {
	return json.Marshal(map[string]any{
		"data":        data,
		"object":      "event",
		"type":        typ,
		"timestamp":   at.UnixMilli(),
		"instance_id": "ins_2cXjVmE1lwfnGaHWoAb6p7XPkDS",
		"event_attributes": map[string]any{"http_request": map[string]any{
			"client_ip":  "192.0.2.10",
			"user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		}},
	})
}

func userObject(u User) map[string]any {
	emails := []any{}
	var primaryEmail any
	if u.Email != "" {
		id := "idn_" + u.ID[len("user_"):min(len(u.ID), 32)] + "e"
		primaryEmail = id
		emails = append(emails, map[string]any{
			"id": id, "object": "email_address", "email_address": u.Email,
			"linked_to": []any{}, "reserved": false,
			"verification": map[string]any{"status": map[bool]string{false: "verified", true: "unverified"}[u.EmailUnverified], "strategy": "email_code", "attempts": 1, "expire_at": u.CreatedAt.Add(10 * time.Minute).UnixMilli()},
		})
	}
	phones := []any{}
	var primaryPhone any
	if u.Phone != "" {
		id := "idn_" + u.ID[len("user_"):min(len(u.ID), 32)] + "p"
		primaryPhone = id
		phones = append(phones, map[string]any{
			"id": id, "object": "phone_number", "phone_number": u.Phone, "reserved_for_second_factor": false,
			"verification": map[string]any{"status": "verified", "strategy": "phone_code"},
		})
	}
	meta := u.PublicMetadata
	if meta == nil {
		meta = map[string]any{}
	}
	private := u.PrivateMetadata
	if private == nil {
		private = map[string]any{}
	}
	signedIn := u.LastSignInAt
	if signedIn.IsZero() {
		signedIn = u.UpdatedAt
	}
	return map[string]any{
		"id": u.ID, "object": "user",
		"username": nullable(u.Username), "first_name": nullable(u.FirstName), "last_name": nullable(u.LastName),
		"image_url":                "https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCIsImlpZCI6Imluc18yY1hqVm1FMWx3Zm5HYUhXb0FiNnA3WFBrRFMifQ",
		"has_image":                false,
		"primary_email_address_id": primaryEmail, "primary_phone_number_id": primaryPhone,
		"primary_web3_wallet_id": nil,
		"email_addresses":        emails, "phone_numbers": phones, "web3_wallets": []any{}, "external_accounts": []any{},
		"password_enabled": true, "two_factor_enabled": u.TwoFactorEnabled, "totp_enabled": u.TwoFactorEnabled, "backup_code_enabled": false,
		"public_metadata": meta, "private_metadata": private, "unsafe_metadata": map[string]any{},
		"external_id": nullable(u.ExternalID), "banned": u.Banned, "locked": u.Locked,
		"last_sign_in_at": signedIn.UnixMilli(), "last_active_at": u.UpdatedAt.UnixMilli(),
		"created_at": u.CreatedAt.UnixMilli(), "updated_at": u.UpdatedAt.UnixMilli(),
	}
}

// Signer signs deliveries with one webhook signing secret, as Svix does.
type Signer struct {
	wh *svix.Webhook
}

// NewSigner returns a Signer for a whsec_ secret. It fails for a malformed secret.
func NewSigner(secret string) (*Signer, error) {
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		return nil, fmt.Errorf("webhook signing secret is malformed: %w", err)
	}
	return &Signer{wh: wh}, nil
}

// Headers returns the svix-id, svix-timestamp and svix-signature headers of a
// delivery with that id and body sent at `at`.
func (s *Signer) Headers(id string, at time.Time, body []byte) http.Header {
	sig, _ := s.wh.Sign(id, at, body) // Sign never fails
	h := http.Header{}
	h.Set("svix-id", id)
	h.Set("svix-timestamp", strconv.FormatInt(at.Unix(), 10))
	h.Set("svix-signature", sig)
	h.Set("Content-Type", "application/json")
	return h
}

// Organization describes a Clerk organization for OrganizationEvent and
// MembershipEvent. Zero times become the event's time.
type Organization struct {
	ID             string // "org_…"; NewID("org") when empty
	Name           string
	Slug           string
	ImageURL       string
	PublicMetadata map[string]any
	CreatedBy      string // a user id
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Membership describes one user's membership of an organization. Role is
// Clerk's role key ("org:admin", "org:member"); Permissions default to
// the permissions Clerk gives that role.
type Membership struct {
	ID           string // "orgmem_…"; NewID("orgmem") when empty
	Organization Organization
	User         User
	Role         string
	Permissions  []string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// Invitation describes an invitation to an organization.
type Invitation struct {
	ID           string // "orginv_…"
	Organization Organization
	Email        string
	Role         string
	Status       string // pending, accepted, revoked
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// OrganizationEventTypes are the types OrganizationEvent, MembershipEvent
// and InvitationEvent build.
var OrganizationEventTypes = []string{
	"organization.created", "organization.updated", "organization.deleted",
	"organizationMembership.created", "organizationMembership.updated", "organizationMembership.deleted",
	"organizationInvitation.created", "organizationInvitation.accepted", "organizationInvitation.revoked",
}

// rolePermissions are the system permissions Clerk gives its default roles.
var rolePermissions = map[string][]string{
	"org:admin": {"org:sys_profile:manage", "org:sys_profile:delete", "org:sys_memberships:read",
		"org:sys_memberships:manage", "org:sys_domains:read", "org:sys_domains:manage"},
	"org:member": {"org:sys_memberships:read"},
}

func (o Organization) fill(at time.Time) Organization {
	fillDefaults(&o.ID, "org", &o.CreatedAt, &o.UpdatedAt, at)
	return o
}

// fillDefaults fills what a description left zero: the id with a new id
// of prefix (NewID), the created and updated times with at.
func fillDefaults(id *string, prefix string, created, updated *time.Time, at time.Time) {
	if *id == "" {
		*id = NewID(prefix)
	}
	if created.IsZero() {
		*created = at
	}
	if updated.IsZero() {
		*updated = at
	}
}

// checkType returns an error unless typ is one of types, the types of the
// events about what (a word for the error) a builder builds.
func checkType(typ, what string, types ...string) error {
	if !slices.Contains(types, typ) {
		return fmt.Errorf("cannot build a %q %s event", typ, what)
	}
	return nil
}

func organizationObject(o Organization) map[string]any {
	meta := o.PublicMetadata
	if meta == nil {
		meta = map[string]any{}
	}
	img := o.ImageURL
	if img == "" {
		img = "https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCIsImlpZCI6Imluc18yY1hqVm1FMWx3Zm5HYUhXb0FiNnA3WFBrRFMiLCJyaWQiOiJvcmcifQ"
	}
	return map[string]any{
		"id": o.ID, "object": "organization", "name": o.Name, "slug": nullable(o.Slug),
		"image_url": img, "logo_url": nil, "has_image": o.ImageURL != "",
		"created_by": o.CreatedBy, "public_metadata": meta, "private_metadata": map[string]any{},
		"max_allowed_memberships": 5, "admin_delete_enabled": true,
		"created_at": o.CreatedAt.UnixMilli(), "updated_at": o.UpdatedAt.UnixMilli(),
	}
}

// OrganizationEvent builds the body of an organization.created, .updated
// or .deleted webhook about o, sent at `at` (a deletion carries only the
// id, as Clerk sends it).
func OrganizationEvent(typ string, o Organization, at time.Time) ([]byte, error) {
	o = o.fill(at)
	var data any
	switch typ {
	case "organization.created", "organization.updated":
		data = organizationObject(o)
	case "organization.deleted":
		data = map[string]any{"id": o.ID, "object": "organization", "deleted": true}
	default:
		return nil, fmt.Errorf("cannot build a %q organization event", typ)
	}
	return envelope(typ, data, at)
}

// MembershipEvent builds the body of an organizationMembership.created,
// .updated or .deleted webhook about m, sent at `at`: the membership with
// its organization object and the user's public data, as Clerk sends it
// (deletions too).
func MembershipEvent(typ string, m Membership, at time.Time) ([]byte, error) {
	if err := checkType(typ, "membership", "organizationMembership.created", "organizationMembership.updated", "organizationMembership.deleted"); err != nil {
		return nil, err
	}
	fillDefaults(&m.ID, "orgmem", &m.CreatedAt, &m.UpdatedAt, at)
	if m.User.ID == "" {
		m.User.ID = NewID("user")
	}
	if m.Role == "" {
		m.Role = "org:member"
	}
	perms := m.Permissions
	if perms == nil {
		perms = rolePermissions[m.Role]
	}
	if perms == nil {
		perms = []string{}
	}
	identifier := m.User.Email
	if identifier == "" {
		identifier = m.User.Phone
	}
	data := map[string]any{
		"id": m.ID, "object": "organization_membership",
		"organization": organizationObject(m.Organization.fill(at)),
		"public_user_data": map[string]any{
			"user_id": m.User.ID, "first_name": nullable(m.User.FirstName), "last_name": nullable(m.User.LastName),
			"identifier": identifier, "has_image": false,
			"image_url": "https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCJ9",
		},
		"role": m.Role, "role_name": strings.TrimPrefix(m.Role, "org:"), "permissions": perms,
		"public_metadata": map[string]any{}, "private_metadata": map[string]any{},
		"created_at": m.CreatedAt.UnixMilli(), "updated_at": m.UpdatedAt.UnixMilli(),
	}
	return envelope(typ, data, at)
}

// InvitationEvent builds the body of an organizationInvitation.created,
// .accepted or .revoked webhook about inv, sent at `at`.
func InvitationEvent(typ string, inv Invitation, at time.Time) ([]byte, error) {
	if err := checkType(typ, "invitation", "organizationInvitation.created", "organizationInvitation.accepted", "organizationInvitation.revoked"); err != nil {
		return nil, err
	}
	fillDefaults(&inv.ID, "orginv", &inv.CreatedAt, &inv.UpdatedAt, at)
	o := inv.Organization.fill(at)
	if inv.Role == "" {
		inv.Role = "org:member"
	}
	if inv.Status == "" {
		inv.Status = map[string]string{"organizationInvitation.created": "pending", "organizationInvitation.accepted": "accepted",
			"organizationInvitation.revoked": "revoked"}[typ]
	}
	data := map[string]any{
		"id": inv.ID, "object": "organization_invitation", "email_address": inv.Email,
		"organization_id": o.ID, "role": inv.Role, "role_name": strings.TrimPrefix(inv.Role, "org:"), "status": inv.Status,
		"public_metadata": map[string]any{}, "private_metadata": map[string]any{},
		"created_at": inv.CreatedAt.UnixMilli(), "updated_at": inv.UpdatedAt.UnixMilli(),
		"expires_at": inv.CreatedAt.Add(30 * 24 * time.Hour).UnixMilli(),
	}
	return envelope(typ, data, at)
}
