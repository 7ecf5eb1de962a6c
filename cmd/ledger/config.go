package main

import (
	"net"
	"net/netip"
	"net/url"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/handlers"
	"github.com/clerk-ledger/clerk-ledger/relay"
	"github.com/spf13/cobra"
)

// config is the service's settings after environment, .env and flags.
type config struct {
	DatabaseURL       string
	WebhookSecrets    []string
	ClerkSecretKey    string
	ClerkJWTKey       string
	PublishableKey    string
	Addr              string
	Auditors          []string
	AuthorizedParties []string
	// Per-client rate limits (LEDGER_WEBHOOK_RATE_LIMIT, LEDGER_API_RATE_LIMIT)
	// and the proxies whose X-Forwarded-For is believed (LEDGER_TRUSTED_PROXIES).
	WebhookRateLimit, APIRateLimit handlers.RateLimit
	TrustedProxies                 []netip.Prefix
	// Dev is set by `ledger dev`: with no Clerk keys on a loopback address
	// the development sign-in is served.
	Dev bool
	// Projectors runs the projectors inside serve (LEDGER_PROJECTORS, default
	// on); off for web-only replicas when `ledger project` runs them.
	Projectors bool

	// Relay is the downstream feed's settings (LEDGER_RELAY_*, relay.go);
	// serve runs the relay when Relay.URL is set.
	Relay relay.Config
}

const defaultAddr = "localhost:4321"

// Default rate limits per client address, "requests per second:burst". The
// webhook's is far above what Svix sends from one of its few addresses (and
// a refusal only delays: Svix retries a 429); the API's is ample for people
// and scripts paging through the audit API.
const (
	defaultWebhookRateLimit = "1000:2000"
	defaultAPIRateLimit     = "20:60"
)

// loadConfig reads the service settings. It validates what it reads but does
// not require anything: the caller decides what is required.
func (a *app) loadConfig(cmd *cobra.Command) (config, error) {
	c := config{
		DatabaseURL:       a.setting(cmd, "database-url", "DATABASE_URL"),
		WebhookSecrets:    strings.Fields(a.setting(cmd, "webhook-secret", "CLERK_WEBHOOK_SIGNING_SECRET")),
		ClerkSecretKey:    a.setting(cmd, "clerk-secret-key", "CLERK_SECRET_KEY"),
		ClerkJWTKey:       a.setting(cmd, "clerk-jwt-key", "CLERK_JWT_KEY"),
		PublishableKey:    a.setting(cmd, "clerk-publishable-key", "PUBLIC_CLERK_PUBLISHABLE_KEY"),
		Addr:              a.setting(cmd, "addr", "LEDGER_ADDR"),
		Auditors:          splitList(a.env("LEDGER_AUDITORS")),
		AuthorizedParties: splitList(a.env("CLERK_AUTHORIZED_PARTIES")),
	}
	if c.PublishableKey == "" {
		c.PublishableKey = strings.TrimSpace(a.env("CLERK_PUBLISHABLE_KEY"))
	}
	if c.Addr == "" {
		c.Addr = defaultAddr
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return c, domain.Errorf(domain.EINVALID, "LEDGER_ADDR %q is not host:port", c.Addr)
	}
	if err := c.loadRateLimits(a.env); err != nil {
		return c, err
	}
	switch v := strings.ToLower(strings.TrimSpace(a.env("LEDGER_PROJECTORS"))); v {
	case "", "on", "true", "1":
		c.Projectors = true
	case "off", "false", "0":
		c.Projectors = false
	default:
		return c, domain.Errorf(domain.EINVALID, "LEDGER_PROJECTORS %q is not on or off", v)
	}
	if c.DatabaseURL != "" {
		if err := checkDatabaseURL(c.DatabaseURL); err != nil {
			return c, err
		}
	}
	if c.ClerkSecretKey != "" && !strings.HasPrefix(c.ClerkSecretKey, "sk_") {
		return c, domain.Errorf(domain.EINVALID, "CLERK_SECRET_KEY is malformed: it must start with sk_")
	}
	if c.PublishableKey != "" && !strings.HasPrefix(c.PublishableKey, "pk_") {
		return c, domain.Errorf(domain.EINVALID, "PUBLIC_CLERK_PUBLISHABLE_KEY is malformed: it must start with pk_")
	}

	// The downstream feed (relay.go).
	relayCfg, err := a.relayConfig(cmd)
	if err != nil {
		return c, err
	}
	c.Relay = relayCfg
	return c, nil
}

// loadRateLimits reads LEDGER_WEBHOOK_RATE_LIMIT, LEDGER_API_RATE_LIMIT
// (defaults above; 0 disables) and LEDGER_TRUSTED_PROXIES.
func (c *config) loadRateLimits(env func(string) string) error {
	or := func(v, def string) string {
		if v = strings.TrimSpace(v); v == "" {
			return def
		}
		return v
	}
	var err error
	if c.WebhookRateLimit, err = handlers.ParseRateLimit("LEDGER_WEBHOOK_RATE_LIMIT", or(env("LEDGER_WEBHOOK_RATE_LIMIT"), defaultWebhookRateLimit)); err != nil {
		return err
	}
	if c.APIRateLimit, err = handlers.ParseRateLimit("LEDGER_API_RATE_LIMIT", or(env("LEDGER_API_RATE_LIMIT"), defaultAPIRateLimit)); err != nil {
		return err
	}
	c.TrustedProxies, err = handlers.ParseTrustedProxies(splitList(env("LEDGER_TRUSTED_PROXIES")))
	return err
}

func checkDatabaseURL(s string) error {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		if _, err := url.Parse(s); err != nil {
			return domain.Errorf(domain.EINVALID, "DATABASE_URL is malformed: not a URL")
		}
		return nil
	}
	if strings.Contains(s, "=") { // key=value form
		return nil
	}
	return domain.Errorf(domain.EINVALID, "DATABASE_URL is malformed: want postgres://user@host:port/db")
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
