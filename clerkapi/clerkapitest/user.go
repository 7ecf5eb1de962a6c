package clerkapitest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
)

// User is a Clerk user object as the Backend API renders it (GET /v1/users,
// GET /v1/users/{id}, Clerk-API-Version 2025-04-10): every field of
// clerk-sdk-go's clerk.User plus the ones Clerk sends that the SDK does not
// decode (passkeys, enterprise_accounts, mfa_enabled_at, mfa_disabled_at,
// profile_image_url), in the order Clerk sends them, nulls included.
// Timestamps are Unix milliseconds.
type User struct {
	ID                            string            `json:"id"`
	Object                        string            `json:"object"`
	Username                      *string           `json:"username"`
	FirstName                     *string           `json:"first_name"`
	LastName                      *string           `json:"last_name"`
	ImageURL                      string            `json:"image_url"`
	HasImage                      bool              `json:"has_image"`
	PrimaryEmailAddressID         *string           `json:"primary_email_address_id"`
	PrimaryPhoneNumberID          *string           `json:"primary_phone_number_id"`
	PrimaryWeb3WalletID           *string           `json:"primary_web3_wallet_id"`
	PasswordEnabled               bool              `json:"password_enabled"`
	TwoFactorEnabled              bool              `json:"two_factor_enabled"`
	TOTPEnabled                   bool              `json:"totp_enabled"`
	BackupCodeEnabled             bool              `json:"backup_code_enabled"`
	EmailAddresses                []EmailAddress    `json:"email_addresses"`
	PhoneNumbers                  []PhoneNumber     `json:"phone_numbers"`
	Web3Wallets                   []json.RawMessage `json:"web3_wallets"`
	Passkeys                      []json.RawMessage `json:"passkeys"`
	ExternalAccounts              []ExternalAccount `json:"external_accounts"`
	SAMLAccounts                  []json.RawMessage `json:"saml_accounts"`
	EnterpriseAccounts            []json.RawMessage `json:"enterprise_accounts"`
	PasswordLastUpdatedAt         *int64            `json:"password_last_updated_at"`
	PublicMetadata                json.RawMessage   `json:"public_metadata"`
	PrivateMetadata               json.RawMessage   `json:"private_metadata"`
	UnsafeMetadata                json.RawMessage   `json:"unsafe_metadata"`
	ExternalID                    *string           `json:"external_id"`
	LastSignInAt                  *int64            `json:"last_sign_in_at"`
	Banned                        bool              `json:"banned"`
	Locked                        bool              `json:"locked"`
	LockoutExpiresInSeconds       *int64            `json:"lockout_expires_in_seconds"`
	VerificationAttemptsRemaining *int64            `json:"verification_attempts_remaining"`
	CreatedAt                     int64             `json:"created_at"`
	UpdatedAt                     int64             `json:"updated_at"`
	DeleteSelfEnabled             bool              `json:"delete_self_enabled"`
	CreateOrganizationEnabled     bool              `json:"create_organization_enabled"`
	CreateOrganizationsLimit      *int              `json:"create_organizations_limit"`
	LastActiveAt                  *int64            `json:"last_active_at"`
	MFAEnabledAt                  *int64            `json:"mfa_enabled_at"`
	MFADisabledAt                 *int64            `json:"mfa_disabled_at"`
	LegalAcceptedAt               *int64            `json:"legal_accepted_at"`
	ProfileImageURL               string            `json:"profile_image_url"`
}

// Verification is the verification of an identification.
type Verification struct {
	Status   string `json:"status"`
	Strategy string `json:"strategy"`
	Attempts *int64 `json:"attempts"`
	ExpireAt *int64 `json:"expire_at"`
}

// LinkedTo names the identification an email address is linked to (an OAuth account).
type LinkedTo struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// EmailAddress is an element of email_addresses.
type EmailAddress struct {
	ID                   string       `json:"id"`
	Object               string       `json:"object"`
	EmailAddress         string       `json:"email_address"`
	Reserved             bool         `json:"reserved"`
	Verification         Verification `json:"verification"`
	LinkedTo             []LinkedTo   `json:"linked_to"`
	MatchesSSOConnection bool         `json:"matches_sso_connection"`
	CreatedAt            int64        `json:"created_at"`
	UpdatedAt            int64        `json:"updated_at"`
}

// PhoneNumber is an element of phone_numbers.
type PhoneNumber struct {
	ID                      string       `json:"id"`
	Object                  string       `json:"object"`
	PhoneNumber             string       `json:"phone_number"`
	ReservedForSecondFactor bool         `json:"reserved_for_second_factor"`
	DefaultSecondFactor     bool         `json:"default_second_factor"`
	Reserved                bool         `json:"reserved"`
	Verification            Verification `json:"verification"`
	LinkedTo                []LinkedTo   `json:"linked_to"`
	BackupCodes             []string     `json:"backup_codes"`
	CreatedAt               int64        `json:"created_at"`
	UpdatedAt               int64        `json:"updated_at"`
}

// ExternalAccount is an element of external_accounts (here: Google sign-in).
type ExternalAccount struct {
	Object           string          `json:"object"`
	ID               string          `json:"id"`
	Provider         string          `json:"provider"`
	IdentificationID string          `json:"identification_id"`
	ProviderUserID   string          `json:"provider_user_id"`
	ApprovedScopes   string          `json:"approved_scopes"`
	EmailAddress     string          `json:"email_address"`
	FirstName        string          `json:"first_name"`
	LastName         string          `json:"last_name"`
	AvatarURL        string          `json:"avatar_url"`
	ImageURL         string          `json:"image_url"`
	Username         *string         `json:"username"`
	PhoneNumber      *string         `json:"phone_number"`
	PublicMetadata   json.RawMessage `json:"public_metadata"`
	Label            *string         `json:"label"`
	CreatedAt        int64           `json:"created_at"`
	UpdatedAt        int64           `json:"updated_at"`
	Verification     Verification    `json:"verification"`
}

// Render returns u as the Backend API sends it (compact JSON, fields in
// Clerk's order). It fails only when a metadata field is not valid JSON.
func (u *User) Render() ([]byte, error) {
	b, err := json.Marshal(u)
	if err != nil {
		return nil, fmt.Errorf("render user %s: %w", u.ID, err)
	}
	return b, nil
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// instanceID is the fake instance's id (image URLs carry it).
const instanceID = "ins_2cXjVmE1lwfnGaHWoAb6p7XPkDS"

// newID returns a Clerk-style id (prefix_ + 27 base62) drawn from r, so a
// seeded generator gives the same ids every run (clerkgen.NewID is random).
func newID(r *rand.Rand, prefix string) string {
	var b strings.Builder
	b.Grow(len(prefix) + 28)
	b.WriteString(prefix)
	b.WriteByte('_')
	for range 27 {
		b.WriteByte(base62[r.IntN(len(base62))])
	}
	return b.String()
}

func ptr[T any](v T) *T { return &v }

// defaultImage is the URL of Clerk's generated avatar: img.clerk.com plus
// the base64 of {"type":"default","iid":instance,"rid":user}.
func defaultImage(id string) string {
	return "https://img.clerk.com/" + base64.RawStdEncoding.EncodeToString(
		[]byte(`{"type":"default","iid":"`+instanceID+`","rid":"`+id+`"}`))
}

var (
	firstNames = []string{"Ada", "Grace", "Alan", "Edsger", "Barbara", "José", "Zoë", "Søren", "Aiko", "Mohammed",
		"Priya", "Chinedu", "Ingrid", "Mateo", "Olga", "Wei", "Fatima", "Liam", "Noor", "Kenji", "Amélie", "Björn"}
	lastNames = []string{"Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "García", "Müller", "Kierkegaard",
		"Tanaka", "Al-Khwarizmi", "Patel", "Okafor", "Johansson", "Rossi", "Ivanova", "Zhang", "O'Brien", "Nguyen"}
	domains = []string{"example.com", "example.org", "mail.example.net", "corp.example.com"}
)

func pick(r *rand.Rand, s []string) string { return s[r.IntN(len(s))] }

// emailLocal turns a name into an address's local part (ASCII only).
func emailLocal(first, last string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(first + "." + last) {
		switch {
		case c >= 'a' && c <= 'z', c == '.':
			b.WriteRune(c)
		case c == 'é' || c == 'ë':
			b.WriteByte('e')
		case c == 'ø' || c == 'ö':
			b.WriteByte('o')
		case c == 'ü':
			b.WriteByte('u')
		case c == 'í':
			b.WriteByte('i')
		}
	}
	return b.String()
}

// generate builds a realistic user created at createdAt (ms): mostly email
// users with a password, some signed in with Google, some phone-only, some
// with a second factor, banned or locked, a username, an external id,
// metadata; names are null for some, non-ASCII for others.
func generate(r *rand.Rand, n int, createdAt int64) User {
	id := newID(r, "user")
	updatedAt := createdAt + r.Int64N(90*24*3600*1000)
	first, last := pick(r, firstNames), pick(r, lastNames)
	u := User{
		ID: id, Object: "user",
		FirstName: ptr(first), LastName: ptr(last),
		ImageURL: defaultImage(id), ProfileImageURL: "https://www.gravatar.com/avatar?d=mp",
		EmailAddresses: []EmailAddress{}, PhoneNumbers: []PhoneNumber{},
		Web3Wallets: []json.RawMessage{}, Passkeys: []json.RawMessage{}, ExternalAccounts: []ExternalAccount{},
		SAMLAccounts: []json.RawMessage{}, EnterpriseAccounts: []json.RawMessage{},
		PublicMetadata: json.RawMessage(`{}`), PrivateMetadata: json.RawMessage(`{}`), UnsafeMetadata: json.RawMessage(`{}`),
		VerificationAttemptsRemaining: ptr(int64(100)),
		CreatedAt:                     createdAt, UpdatedAt: updatedAt,
		DeleteSelfEnabled: true, CreateOrganizationEnabled: true,
	}
	if r.IntN(100) < 8 { // signed up without a name
		u.FirstName, u.LastName = nil, nil
	}
	if r.IntN(100) < 30 {
		u.Username = ptr(fmt.Sprintf("%s%d", strings.Trim(emailLocal(first, ""), "."), n))
	}
	phoneOnly := r.IntN(100) < 5
	google := !phoneOnly && r.IntN(100) < 30
	if !phoneOnly {
		e := EmailAddress{
			ID: newID(r, "idn"), Object: "email_address",
			EmailAddress: fmt.Sprintf("%s%d@%s", emailLocal(first, last), n, pick(r, domains)),
			Verification: Verification{Status: "verified", Strategy: "email_code", Attempts: ptr(int64(1)), ExpireAt: ptr(createdAt + 600_000)},
			LinkedTo:     []LinkedTo{}, CreatedAt: createdAt, UpdatedAt: createdAt + 30_000,
		}
		if google {
			eac := ExternalAccount{
				Object: "external_account", ID: newID(r, "eac"), Provider: "oauth_google", IdentificationID: newID(r, "idn"),
				ProviderUserID: fmt.Sprintf("1%020d", r.Int64N(1e18)), ApprovedScopes: "email https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile openid profile",
				EmailAddress: e.EmailAddress, FirstName: first, LastName: last,
				AvatarURL:      "https://lh3.googleusercontent.com/a/ACg8ocK" + newID(r, "a")[2:] + "=s1000-c",
				PublicMetadata: json.RawMessage(`{}`), CreatedAt: createdAt, UpdatedAt: createdAt,
				Verification: Verification{Status: "verified", Strategy: "oauth_google", ExpireAt: ptr(createdAt + 600_000)},
			}
			eac.ImageURL = "https://img.clerk.com/" + base64.RawStdEncoding.EncodeToString([]byte(`{"type":"proxy","src":"`+eac.AvatarURL+`"}`))
			e.Verification = Verification{Status: "verified", Strategy: "from_oauth_google"}
			e.LinkedTo = []LinkedTo{{Type: "oauth_google", ID: eac.IdentificationID}}
			u.ExternalAccounts = append(u.ExternalAccounts, eac)
			u.ImageURL, u.HasImage = eac.ImageURL, true
		} else {
			u.PasswordEnabled = true
			u.PasswordLastUpdatedAt = ptr(createdAt)
		}
		u.EmailAddresses = append(u.EmailAddresses, e)
		u.PrimaryEmailAddressID = ptr(e.ID)
	}
	if phoneOnly || r.IntN(100) < 15 {
		p := PhoneNumber{
			ID: newID(r, "idn"), Object: "phone_number", PhoneNumber: fmt.Sprintf("+1555%07d", r.IntN(1e7)),
			Verification: Verification{Status: "verified", Strategy: "phone_code", Attempts: ptr(int64(1)), ExpireAt: ptr(createdAt + 600_000)},
			LinkedTo:     []LinkedTo{}, CreatedAt: createdAt, UpdatedAt: createdAt + 40_000,
		}
		u.PhoneNumbers = append(u.PhoneNumbers, p)
		u.PrimaryPhoneNumberID = ptr(p.ID)
	}
	if r.IntN(100) < 10 {
		u.TwoFactorEnabled, u.TOTPEnabled, u.BackupCodeEnabled = true, true, true
		u.MFAEnabledAt = ptr(createdAt + r.Int64N(updatedAt-createdAt+1))
	}
	switch k := r.IntN(100); {
	case k < 50:
	case k < 80:
		u.PublicMetadata = json.RawMessage(`{"role":"member"}`)
	case k < 95:
		u.PublicMetadata = json.RawMessage(fmt.Sprintf(`{"plan":"pro","seats":%d,"onboarded":true}`, 1+r.IntN(20)))
	case k < 99:
		u.PublicMetadata = json.RawMessage(`{"role":"admin","teams":["core","billing"]}`)
	default:
		u.PublicMetadata = json.RawMessage(`{"role":"auditor"}`)
	}
	if r.IntN(100) < 40 {
		u.PrivateMetadata = json.RawMessage(`{"stripe_customer_id":"cus_` + newID(r, "x")[2:16] + `"}`)
	}
	if r.IntN(100) < 5 {
		u.UnsafeMetadata = json.RawMessage(`{"theme":"dark","newsletter":false}`)
	}
	if r.IntN(100) < 10 {
		u.ExternalID = ptr(fmt.Sprintf("legacy-%d", 100000+n))
	}
	if r.IntN(100) < 95 { // 5% never signed in after sign-up
		u.LastSignInAt = ptr(updatedAt - r.Int64N(3600*1000))
		u.LastActiveAt = ptr(updatedAt)
		u.LegalAcceptedAt = ptr(createdAt)
	}
	if r.IntN(100) < 1 {
		u.Banned = true
	}
	if r.IntN(200) < 1 {
		u.Locked = true
		u.LockoutExpiresInSeconds = ptr(int64(1800))
		u.VerificationAttemptsRemaining = ptr(int64(0))
	}
	return u
}

// UserFrom renders a clerkgen.User (the description webhook tests use) as
// the Backend API's user object, so a test can import the same user that its
// webhooks are about. Empty names become null; an empty Email makes a
// phone-only user.
func UserFrom(g clerkgen.User) User {
	h := fnv.New64a()
	h.Write([]byte(g.ID))
	r := rand.New(rand.NewPCG(h.Sum64(), uint64(g.CreatedAt.UnixNano())))
	at := g.CreatedAt
	if at.IsZero() {
		at = time.Now()
	}
	up := g.UpdatedAt
	if up.IsZero() {
		up = at
	}
	u := generate(r, 0, at.UnixMilli())
	if g.ID != "" {
		u.ID = g.ID
		u.ImageURL, u.HasImage = defaultImage(g.ID), false
	}
	u.UpdatedAt = up.UnixMilli()
	nullable := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	u.FirstName, u.LastName, u.Username = nullable(g.FirstName), nullable(g.LastName), nullable(g.Username)
	u.ExternalAccounts = []ExternalAccount{}
	u.EmailAddresses, u.PrimaryEmailAddressID = []EmailAddress{}, nil
	if g.Email != "" {
		e := EmailAddress{ID: newID(r, "idn"), Object: "email_address", EmailAddress: g.Email,
			Verification: Verification{Status: "verified", Strategy: "email_code", Attempts: ptr(int64(1)), ExpireAt: ptr(u.CreatedAt + 600_000)},
			LinkedTo:     []LinkedTo{}, CreatedAt: u.CreatedAt, UpdatedAt: u.CreatedAt}
		u.EmailAddresses, u.PrimaryEmailAddressID = []EmailAddress{e}, &e.ID
	}
	u.PhoneNumbers, u.PrimaryPhoneNumberID = []PhoneNumber{}, nil
	if g.Phone != "" {
		p := PhoneNumber{ID: newID(r, "idn"), Object: "phone_number", PhoneNumber: g.Phone,
			Verification: Verification{Status: "verified", Strategy: "phone_code", Attempts: ptr(int64(1)), ExpireAt: ptr(u.CreatedAt + 600_000)},
			LinkedTo:     []LinkedTo{}, CreatedAt: u.CreatedAt, UpdatedAt: u.CreatedAt}
		u.PhoneNumbers, u.PrimaryPhoneNumberID = []PhoneNumber{p}, &p.ID
	}
	u.PublicMetadata = json.RawMessage(`{}`)
	if g.PublicMetadata != nil {
		b, err := json.Marshal(g.PublicMetadata)
		if err == nil {
			u.PublicMetadata = b
		}
	}
	return u
}
