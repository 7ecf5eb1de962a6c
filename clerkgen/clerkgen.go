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
	if u.ID == "" {
		u.ID = NewID("user")
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = at
	}
	if u.UpdatedAt.IsZero() {
		u.UpdatedAt = at
	}
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
			"verification": map[string]any{"status": "verified", "strategy": "email_code", "attempts": 1, "expire_at": u.CreatedAt.Add(10 * time.Minute).UnixMilli()},
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
	return map[string]any{
		"id": u.ID, "object": "user",
		"username": nullable(u.Username), "first_name": nullable(u.FirstName), "last_name": nullable(u.LastName),
		"image_url":                "https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCIsImlpZCI6Imluc18yY1hqVm1FMWx3Zm5HYUhXb0FiNnA3WFBrRFMifQ",
		"has_image":                false,
		"primary_email_address_id": primaryEmail, "primary_phone_number_id": primaryPhone,
		"primary_web3_wallet_id": nil,
		"email_addresses":        emails, "phone_numbers": phones, "web3_wallets": []any{}, "external_accounts": []any{},
		"password_enabled": true, "two_factor_enabled": false, "totp_enabled": false, "backup_code_enabled": false,
		"public_metadata": meta, "private_metadata": map[string]any{}, "unsafe_metadata": map[string]any{},
		"external_id": nil, "banned": false, "locked": false,
		"last_sign_in_at": u.UpdatedAt.UnixMilli(), "last_active_at": u.UpdatedAt.UnixMilli(),
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
