// Package clerkapi is the ledger's client for Clerk's Backend API user
// endpoints: list every user a page at a time (ListUsers, ListUsersInto),
// count them (CountUsers) and fetch one (GetUser), each user as the exact
// bytes Clerk sent plus its id, created_at and updated_at; and list
// organizations and their memberships the same way (ListOrganizationsInto,
// ListMembershipsInto). It is what `ledger import`, `ledger reconcile` and
// fetch-on-first-sign-in use.
//
// It speaks the wire format of clerk-sdk-go/v2 (v2.4.2: Clerk-API-Version
// 2025-04-10, the SDK's query parameters and error type), but sends the
// requests itself; see Client for why. It adds what the SDK lacks: retries
// (429 honouring Retry-After, 5xx and network errors with exponential
// backoff and jitter, a bounded number of attempts), a client-side rate
// limiter at Clerk's documented limits, per-item reporting of malformed
// users, and errors in the domain vocabulary:
//
//	EINVALID      bad configuration or arguments; a malformed user (Failure.Err)
//	EUNAUTHORIZED the secret key was refused (HTTP 401/403)
//	ENOTFOUND     no such user (HTTP 404)
//	ERATELIMIT    still 429 after every attempt
//	EUNAVAILABLE  5xx or network errors after every attempt
//	EINTERNAL     an answer that is not what the API sends (not JSON, not a
//	              list, too large); context errors are returned as they are
//
// Secret keys are never logged or put in an error; user objects are never
// logged.
package clerkapi

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk/clerk-sdk-go/v2"
	"golang.org/x/time/rate"
)

// DefaultBaseURL is the Backend API's base URL (the CLI's CLERK_API_URL
// overrides it).
const DefaultBaseURL = "https://api.clerk.com"

// apiVersion is the Clerk-API-Version header clerk-sdk-go v2.4.2 sends
// (its unexported clerkAPIVersion): responses then have the shape the SDK's
// types describe.
const apiVersion = "2025-04-10"

// Defaults for Config's zero values.
const (
	DefaultMaxAttempts   = 5
	DefaultBaseBackoff   = 500 * time.Millisecond
	DefaultMaxBackoff    = 30 * time.Second
	DefaultMaxRetryAfter = 60 * time.Second
	DefaultTimeout       = 30 * time.Second      // per request, when Config.HTTPClient is nil
	DefaultMaxBodyBytes  = 64 << 20              // 500 users with full metadata stay far below
	productionRate       = rate.Limit(1000 / 10) // Clerk: 1,000 requests per 10 s (production instances)
	developmentRate      = rate.Limit(100 / 10)  // Clerk: 100 requests per 10 s (development instances)
)

// Config configures a Client. Only SecretKey is required.
type Config struct {
	// SecretKey is the instance's secret key, sk_test_… (development) or
	// sk_live_… (production).
	SecretKey string
	// BaseURL is the Backend API's base URL without /v1 (a trailing /v1 is
	// accepted); empty means DefaultBaseURL. The CLI sets it from
	// CLERK_API_URL; tests point it at clerkapitest.
	BaseURL string
	// HTTPClient sends the requests; nil means a client with a
	// DefaultTimeout timeout on http.DefaultTransport.
	HTTPClient *http.Client
	// Log receives one warning per retried request (op, attempt, status or
	// error, wait_ms); nil discards.
	Log *slog.Logger
	// MaxAttempts bounds the attempts of one call, the first included
	// (default DefaultMaxAttempts); 1 disables retries.
	MaxAttempts int
	// BaseBackoff and MaxBackoff shape the wait before retry n (n ≥ 1)
	// after a 5xx, a network error or a 429 without Retry-After: a random
	// duration in [d/2, d] with d = min(BaseBackoff·2^(n-1), MaxBackoff).
	BaseBackoff, MaxBackoff time.Duration
	// MaxRetryAfter caps the wait a Retry-After header asks for (default
	// DefaultMaxRetryAfter).
	MaxRetryAfter time.Duration
	// RateLimit is the client-side limit in requests per second (every
	// attempt counts, as it does at Clerk). Zero means Clerk's limit for the
	// key's instance: 100/s for sk_live_ (1,000 per 10 s), 10/s for sk_test_
	// (100 per 10 s). rate.Inf turns it off.
	RateLimit rate.Limit
	// RateBurst is the limiter's burst (default 1, so no 10 s window ever
	// sees more than the limit plus one).
	RateBurst int
	// MaxBodyBytes bounds a response body (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
}

// Client calls the Backend API. It is safe for concurrent use.
//
// It builds requests with clerk-sdk-go's pieces (clerk.JoinPath,
// user.ListParams for the query, clerk.APIErrorResponse for error bodies)
// but does not send them through the SDK's clerk.Backend or user.Client,
// because for an importer those
//   - decode every user into clerk.User, and re-encoding that is not Clerk's
//     bytes (fields the SDK does not know, such as passkeys or
//     enterprise_accounts, are dropped and the order changes);
//   - make user.List call /v1/users/count for every page (twice the
//     requests against the rate limit);
//   - turn an error body that is not Clerk's error JSON (a load balancer's
//     502 page) into errors.New(body), losing the status code this client
//     needs to decide whether to retry;
//   - read every body with an unbounded io.ReadAll into a fresh slice and
//     scan it twice; this client reads into a reused, bounded buffer;
//   - have no retries, Retry-After or rate limiting.
type Client struct {
	key         string
	users       string // base + /v1/users
	http        *http.Client
	log         *slog.Logger
	maxAttempts int
	baseBackoff time.Duration
	maxBackoff  time.Duration
	maxRetry    time.Duration
	maxBody     int64
	limiter     *rate.Limiter // nil: off

	mu         sync.Mutex
	pauseUntil time.Time // after a 429 every request waits until then
}

// New returns a Client for cfg. It fails (EINVALID, one line, never
// showing the key) when the secret key or the base URL is malformed.
func New(cfg Config) (*Client, error) {
	if err := CheckSecretKey(cfg.SecretKey); err != nil {
		return nil, err
	}
	base, err := cleanBaseURL(cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	users, err := clerk.JoinPath(base, "v1", "users")
	if err != nil {
		return nil, domain.Errorf(domain.EINVALID, "CLERK_API_URL is malformed: it must be an absolute http(s) URL such as %s", DefaultBaseURL)
	}
	c := &Client{
		key:         cfg.SecretKey,
		users:       users,
		http:        cfg.HTTPClient,
		log:         cfg.Log,
		maxAttempts: cfg.MaxAttempts,
		baseBackoff: cfg.BaseBackoff,
		maxBackoff:  cfg.MaxBackoff,
		maxRetry:    cfg.MaxRetryAfter,
		maxBody:     cfg.MaxBodyBytes,
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: DefaultTimeout}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.maxAttempts <= 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.baseBackoff <= 0 {
		c.baseBackoff = DefaultBaseBackoff
	}
	if c.maxBackoff <= 0 {
		c.maxBackoff = DefaultMaxBackoff
	}
	if c.maxRetry <= 0 {
		c.maxRetry = DefaultMaxRetryAfter
	}
	if c.maxBody <= 0 {
		c.maxBody = DefaultMaxBodyBytes
	}
	limit := cfg.RateLimit
	if limit == 0 {
		limit = productionRate
		if strings.HasPrefix(cfg.SecretKey, "sk_test_") {
			limit = developmentRate
		}
	}
	if limit != rate.Inf {
		if limit < 0 {
			return nil, domain.Errorf(domain.EINVALID, "clerk api rate limit must be positive (rate.Inf turns it off)")
		}
		c.limiter = rate.NewLimiter(limit, max(1, cfg.RateBurst))
	}
	return c, nil
}

// CheckSecretKey returns nil for a well-formed Clerk secret key and else an
// EINVALID error naming CLERK_SECRET_KEY and what is wrong, never the key.
func CheckSecretKey(key string) error {
	const want = "it must be sk_test_… (development) or sk_live_… (production) followed by letters and digits"
	switch {
	case key == "":
		return domain.Errorf(domain.EINVALID, "CLERK_SECRET_KEY is not set")
	case strings.TrimSpace(key) != key || strings.ContainsAny(key, " \t\r\n"):
		return domain.Errorf(domain.EINVALID, "CLERK_SECRET_KEY is malformed: it contains spaces or line breaks (copied with a newline?)")
	case strings.HasPrefix(key, "pk_"):
		return domain.Errorf(domain.EINVALID, "CLERK_SECRET_KEY is malformed: that is a publishable key (pk_…); %s", want)
	}
	rest, ok := strings.CutPrefix(key, "sk_test_")
	if !ok {
		rest, ok = strings.CutPrefix(key, "sk_live_")
	}
	if !ok {
		return domain.Errorf(domain.EINVALID, "CLERK_SECRET_KEY is malformed: %s", want)
	}
	if len(rest) < 16 {
		return domain.Errorf(domain.EINVALID, "CLERK_SECRET_KEY is malformed: it is too short; %s", want)
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return domain.Errorf(domain.EINVALID, "CLERK_SECRET_KEY is malformed: %s", want)
		}
	}
	return nil
}

// cleanBaseURL checks an absolute http(s) URL and drops a trailing / or /v1.
func cleanBaseURL(s string) (string, error) {
	if s == "" {
		return DefaultBaseURL, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", domain.Errorf(domain.EINVALID, "CLERK_API_URL is malformed: it must be an absolute http(s) URL such as %s", DefaultBaseURL)
	}
	if u.User != nil {
		return "", domain.Errorf(domain.EINVALID, "CLERK_API_URL is malformed: it must not carry credentials (the secret key goes in CLERK_SECRET_KEY)")
	}
	p := strings.TrimRight(u.Path, "/")
	p = strings.TrimSuffix(p, "/v1")
	return fmt.Sprintf("%s://%s%s", u.Scheme, u.Host, p), nil
}
