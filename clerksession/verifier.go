// Package clerksession verifies Clerk session tokens: networkless with the
// instance's PEM key (CLERK_JWT_KEY) or through its JWKS (CLERK_SECRET_KEY),
// with the checks clerk-sdk-go's jwt.Verify leaves out (exp required, azp,
// pinned issuer, RS256 only), and mints development session tokens for
// `ledger dev` (Dev) that the same verification accepts. HTTP middleware
// that puts a session in a request lives in handlers.
package clerksession

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk/clerk-sdk-go/v2"
	"github.com/clerk/clerk-sdk-go/v2/jwks"
	clerkjwt "github.com/clerk/clerk-sdk-go/v2/jwt"
	josejwt "github.com/go-jose/go-jose/v3/jwt"
)

// Config configures a Verifier.
type Config struct {
	// JWTKey is the instance's PEM public key (CLERK_JWT_KEY). When set,
	// tokens are verified without any network call.
	JWTKey string
	// SecretKey is the Clerk secret key (CLERK_SECRET_KEY). Used only when
	// JWTKey is empty, to fetch the instance's JWKS.
	SecretKey string
	// APIURL is the Clerk Backend API base URL; default https://api.clerk.com/v1.
	APIURL string
	// HTTPClient fetches the JWKS; default a client with a 5 s timeout.
	HTTPClient *http.Client
	// JWKSTTL is how long a fetched JWKS is used: a fixed expiry from the
	// fetch, never extended by use. Default 1 h.
	JWKSTTL time.Duration
	// PublishableKey, when set, pins the issuer: iss must be
	// https://<the key's Frontend API host>.
	PublishableKey string
	// AuthorizedParties are the origins a token's azp must be one of
	// (CLERK_AUTHORIZED_PARTIES, default the app's own origin). Required.
	AuthorizedParties []string
	// Leeway is the clock skew allowed on exp, nbf and iat; default 10 s.
	Leeway time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Verifier verifies Clerk session tokens with clerk-sdk-go's
// jwt.Verify plus the checks it leaves out: exp is required, azp must be an
// authorized party, the issuer is pinned when the Frontend API host is known,
// and only RS256 is accepted. It is safe for concurrent use.
type Verifier struct {
	key     *clerk.JSONWebKey // static key (CLERK_JWT_KEY or the dev key), or nil
	jwks    *jwksCache        // when key is nil
	issuer  string            // "" accepts Clerk's issuer patterns
	parties map[string]bool
	list    []string
	leeway  time.Duration
	now     func() time.Time
}

// Session is who a verified session token names.
type Session struct {
	UserID    string // sub
	SessionID string // sid
}

// Errors of Verify, compared with ==. ErrExpired is only returned for a
// token whose signature and claims are otherwise valid.
var (
	ErrNoToken  = domain.Errorf(domain.EUNAUTHORIZED, "no session token")
	ErrExpired  = domain.Errorf(domain.EUNAUTHORIZED, "session token has expired")
	errBadToken = domain.Errorf(domain.EUNAUTHORIZED, "invalid session token")
)

// NewVerifier returns a Verifier for c. It returns EINVALID
// naming the setting when neither key is set, the PEM key or publishable key
// is malformed, or no authorized party is given.
func NewVerifier(c Config) (*Verifier, error) {
	v := &Verifier{leeway: c.Leeway, now: c.Now, parties: map[string]bool{}}
	if v.leeway <= 0 {
		v.leeway = 10 * time.Second
	}
	if v.now == nil {
		v.now = time.Now
	}
	for _, p := range c.AuthorizedParties {
		p = strings.TrimRight(strings.TrimSpace(p), "/")
		if p == "" {
			continue
		}
		if !strings.HasPrefix(p, "http://") && !strings.HasPrefix(p, "https://") {
			return nil, domain.Errorf(domain.EINVALID, "CLERK_AUTHORIZED_PARTIES: %q is not an origin like https://app.example.com", p)
		}
		if !v.parties[p] {
			v.list = append(v.list, p)
		}
		v.parties[p] = true
	}
	if len(v.parties) == 0 {
		return nil, domain.Errorf(domain.EINVALID, "CLERK_AUTHORIZED_PARTIES is empty: name the origin(s) the app is served from")
	}
	if c.PublishableKey != "" {
		host, err := FrontendAPIHost(c.PublishableKey)
		if err != nil {
			return nil, err
		}
		v.issuer = "https://" + host
	}
	switch {
	case strings.TrimSpace(c.JWTKey) != "":
		k, err := clerk.JSONWebKeyFromPEM(normalizePEM(c.JWTKey))
		if err != nil {
			return nil, domain.Errorf(domain.EINVALID, "CLERK_JWT_KEY is malformed: want the PEM public key from the Clerk dashboard (API keys > JWT public key): %v", err)
		}
		if _, ok := k.Key.(*rsa.PublicKey); !ok {
			return nil, domain.Errorf(domain.EINVALID, "CLERK_JWT_KEY is not an RSA public key")
		}
		v.key = k
	case c.SecretKey != "":
		v.jwks = newJWKSCache(c.SecretKey, c.APIURL, c.HTTPClient, c.JWKSTTL, v.now)
	default:
		return nil, domain.Errorf(domain.EINVALID, "neither CLERK_JWT_KEY nor CLERK_SECRET_KEY is set: sessions cannot be verified")
	}
	return v, nil
}

// AuthorizedParties returns the origins tokens may be issued to.
func (v *Verifier) AuthorizedParties() []string {
	return append([]string(nil), v.list...)
}

// normalizePEM accepts the key as pasted into an environment variable: with
// literal \n sequences, or the bare base64 body without the PEM armour.
func normalizePEM(s string) string {
	s = strings.TrimSpace(strings.ReplaceAll(s, `\n`, "\n"))
	if !strings.Contains(s, "-----BEGIN") {
		s = "-----BEGIN PUBLIC KEY-----\n" + s + "\n-----END PUBLIC KEY-----\n"
	}
	return s
}

type clock func() time.Time

func (c clock) Now() time.Time { return c().UTC() }

// Verify checks a token as a browser presents it, in the __session cookie,
// and returns its session. Its azp must be one of the authorized parties:
// ClerkJS gets its tokens in a page, whose origin Clerk always writes into
// azp, so a cookie token without azp was not made for this site's pages.
//
// It never calls the network when the verifier has a static key; with a
// JWKS it fetches at most when the cached set has expired or the token names
// an unknown key (rate limited).
//
// Errors (all EUNAUTHORIZED unless noted): ErrNoToken for "",
// ErrExpired for a genuine token past exp + leeway, errBadToken for
// anything else wrong (signature, alg, missing exp, nbf/iat in the future,
// issuer, azp, subject, a pending session); EUNAVAILABLE when the JWKS cannot be fetched.
func (v *Verifier) Verify(ctx context.Context, token string) (Session, error) {
	return v.verify(ctx, token, true)
}

// VerifyBearer checks a token sent as "Authorization: Bearer" and returns
// its session: as Verify, except that a token without azp is accepted.
// Clerk leaves azp out when the request that made the token had no Origin
// (native iOS, Android and Expo apps), and its backend SDKs check azp only
// when it is present; a present azp must still be an authorized party.
// Nothing is lost: azp is not a secret, and a browser never sends this
// header on its own.
func (v *Verifier) VerifyBearer(ctx context.Context, token string) (Session, error) {
	return v.verify(ctx, token, false)
}

func (v *Verifier) verify(ctx context.Context, token string, requireAZP bool) (Session, error) {
	if token == "" {
		return Session{}, ErrNoToken
	}
	if len(token) > 8<<10 || strings.Count(token, ".") != 2 {
		return Session{}, errBadToken // compact JWS only
	}
	key := v.key
	if key == nil {
		kid, err := tokenKeyID(token)
		if err != nil {
			return Session{}, errBadToken
		}
		if key, err = v.jwks.key(ctx, kid); err != nil {
			return Session{}, err
		}
	}
	claims, err := clerkjwt.Verify(ctx, &clerkjwt.VerifyParams{
		Token:                   token,
		JWK:                     key,
		Leeway:                  v.leeway,
		Clock:                   clock(v.now),
		CustomClaimsConstructor: func(context.Context) any { return &statusClaim{} },
	})
	if errors.Is(err, josejwt.ErrExpired) {
		return Session{}, ErrExpired
	}
	if err != nil {
		return Session{}, fmt.Errorf("%w: %v", errBadToken, err)
	}
	// jwt.Verify accepts a token without exp (a token valid forever).
	if claims.Expiry == nil {
		return Session{}, fmt.Errorf("%w: no exp claim", errBadToken)
	}
	if v.issuer != "" && claims.Issuer != v.issuer {
		return Session{}, fmt.Errorf("%w: issuer %q", errBadToken, claims.Issuer)
	}
	if (requireAZP || claims.AuthorizedParty != "") && !v.parties[claims.AuthorizedParty] {
		return Session{}, fmt.Errorf("%w: azp %q is not an authorized party", errBadToken, claims.AuthorizedParty)
	}
	if claims.Subject == "" {
		return Session{}, fmt.Errorf("%w: no sub claim", errBadToken)
	}
	// A session with pending tasks (sts "pending", e.g. choose an
	// organization) is not signed in yet, as Clerk's SDKs treat it.
	if st, _ := claims.Custom.(*statusClaim); st != nil && st.Status == "pending" {
		return Session{}, fmt.Errorf("%w: session is pending", errBadToken)
	}
	return Session{UserID: claims.Subject, SessionID: claims.SessionID}, nil
}

// statusClaim is the session status claim of Clerk session tokens v2.
type statusClaim struct {
	Status string `json:"sts"`
}

// tokenKeyID returns the kid of a compact JWS without verifying anything.
func tokenKeyID(token string) (string, error) {
	t, err := clerkjwt.Decode(context.Background(), &clerkjwt.DecodeParams{Token: token})
	if err != nil {
		return "", err
	}
	if t.KeyID == "" {
		return "", errors.New("no kid header")
	}
	return t.KeyID, nil
}

// jwksCache holds the instance's signing keys fetched from the Backend API.
// Unlike clerk-sdk-go's middleware cache (issue 544), its expiry is fixed at
// fetch time and never slides with use: a key Clerk has rotated out stops
// being trusted at most ttl after the fetch. A token naming an unknown kid
// triggers a refetch at most once per minRefetch, so forged kids cannot make
// the server hammer the API.
type jwksCache struct {
	client     *jwks.Client
	ttl        time.Duration
	minRefetch time.Duration
	now        func() time.Time

	mu        sync.Mutex
	keys      map[string]*clerk.JSONWebKey
	fetchedAt time.Time // zero: never fetched successfully
	attempted time.Time
}

func newJWKSCache(secretKey, apiURL string, hc *http.Client, ttl time.Duration, now func() time.Time) *jwksCache {
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	if ttl <= 0 {
		ttl = time.Hour
	}
	cfg := &clerk.ClientConfig{}
	cfg.HTTPClient = hc
	cfg.Key = clerk.String(secretKey)
	if apiURL != "" {
		cfg.URL = clerk.String(apiURL)
	}
	return &jwksCache{client: jwks.NewClient(cfg), ttl: ttl, minRefetch: time.Minute, now: now}
}

// key returns the RS256 key with that kid. Errors: EUNAUTHORIZED for a kid
// the instance does not have; EUNAVAILABLE when the JWKS is needed and
// cannot be fetched.
func (c *jwksCache) key(ctx context.Context, kid string) (*clerk.JSONWebKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	fresh := !c.fetchedAt.IsZero() && now.Before(c.fetchedAt.Add(c.ttl))
	if k, ok := c.keys[kid]; ok && fresh {
		return k, nil
	}
	if !fresh || now.Sub(c.attempted) >= c.minRefetch {
		c.attempted = now
		if err := c.fetch(ctx); err != nil {
			if !fresh {
				c.keys = nil // an expired set is never used again
			}
			return nil, err
		}
	}
	if k, ok := c.keys[kid]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("%w: unknown key id", errBadToken)
}

func (c *jwksCache) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	set, err := c.client.Get(ctx, &jwks.GetParams{})
	if err != nil {
		return domain.Errorf(domain.EUNAVAILABLE, "cannot fetch Clerk's session signing keys (JWKS): %v", err)
	}
	keys := map[string]*clerk.JSONWebKey{}
	for _, k := range set.Keys {
		if k == nil || k.KeyID == "" || k.Algorithm != "RS256" {
			continue
		}
		if _, ok := k.Key.(*rsa.PublicKey); !ok {
			continue
		}
		keys[k.KeyID] = k
	}
	c.keys, c.fetchedAt = keys, c.now()
	return nil
}

// FrontendAPIHost returns the Clerk Frontend API host encoded in a
// publishable key: pk_test_ or pk_live_ followed by the base64 of
// "<host>$". Errors: EINVALID when the key is not of that form.
func FrontendAPIHost(publishableKey string) (string, error) {
	bad := domain.Errorf(domain.EINVALID, "PUBLIC_CLERK_PUBLISHABLE_KEY is malformed: want pk_test_... or pk_live_... from the Clerk dashboard")
	rest, ok := strings.CutPrefix(publishableKey, "pk_test_")
	if !ok {
		if rest, ok = strings.CutPrefix(publishableKey, "pk_live_"); !ok {
			return "", bad
		}
	}
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(rest, "="))
	if err != nil {
		return "", bad
	}
	host, ok := strings.CutSuffix(string(b), "$")
	if !ok || host == "" || len(host) > 253 {
		return "", bad
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
			return "", bad
		}
	}
	return strings.ToLower(host), nil
}
