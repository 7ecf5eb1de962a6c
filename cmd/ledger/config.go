package main

import (
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
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
	// WebhookBodyMemory bounds the bytes of webhook bodies read at once
	// (LEDGER_WEBHOOK_BODY_MEMORY, default handlers.DefaultWebhookBodyMemory).
	WebhookBodyMemory int64
	// Dev is set by `ledger dev`: with no Clerk keys on a loopback address
	// the development sign-in is served.
	Dev bool
	// BenchUnsealed is set by serve's hidden --bench-unsealed (bench ingest
	// --unsealed's child only): no master key, bodies stored in clear, on a
	// database holding no event (serveKeyring).
	BenchUnsealed bool
	// Projectors are the names of the projectors serve runs in its process
	// (LEDGER_PROJECTORS, parseProjectors: all by default; none, "off", for
	// web-only replicas when `ledger project` runs them).
	Projectors []string
	// Pools is the database connection budget (LEDGER_DB_*_CONNS,
	// LEDGER_EXPORT_IDLE_TIMEOUT); see loadPools.
	Pools pools

	// Log is the verifiable log's settings (LEDGER_LOG_KEY, …; logkey.go).
	Log logConfig

	// Relay is the downstream feed's settings (LEDGER_RELAY_*, relay.go);
	// serve runs the relay when Relay.URL is set.
	Relay relay.Config

	// EraseAfterDelete, when not 0, is how long after a user.deleted (or
	// reconcile's user.snapshot_deleted) serve erases the user
	// (LEDGER_ERASE_AFTER_DELETE; erase.go).
	EraseAfterDelete time.Duration
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
	err := c.loadRateLimits(a.env)
	if err != nil {
		return c, err
	}
	if c.WebhookBodyMemory, err = parseBodyMemory(a.env("LEDGER_WEBHOOK_BODY_MEMORY")); err != nil {
		return c, err
	}
	pools, err := loadPools(a.env)
	if err != nil {
		return c, err
	}
	c.Pools = pools
	if c.Projectors, err = parseProjectors(a.env("LEDGER_PROJECTORS")); err != nil {
		return c, err
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

	if c.Log, err = loadLogConfig(a.env); err != nil {
		return c, err
	}

	if c.EraseAfterDelete, err = parseEraseAfterDelete(a.env("LEDGER_ERASE_AFTER_DELETE")); err != nil {
		return c, err
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

// maxWebhookBodyMemory caps LEDGER_WEBHOOK_BODY_MEMORY.
const maxWebhookBodyMemory = 4 << 30

// parseBodyMemory reads LEDGER_WEBHOOK_BODY_MEMORY: empty for the default,
// else bytes with an optional unit (B, KiB, MiB, GiB), from one body of the
// 1 MiB limit to 4 GiB.
func parseBodyMemory(v string) (int64, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return handlers.DefaultWebhookBodyMemory, nil
	}
	n, err := parseByteSize(v)
	if err != nil || n < handlers.MinWebhookBodyMemory || n > maxWebhookBodyMemory {
		return 0, domain.Errorf(domain.EINVALID, "LEDGER_WEBHOOK_BODY_MEMORY %q is malformed: want bytes with an optional unit (B, KiB, MiB, GiB) from 1MiB+1B (one body of the limit) to 4GiB, e.g. 16MiB", v)
	}
	return n, nil
}

// pools is serve's database connection budget: the ingest pool (the event
// store's group commits, the in-process projectors, /readyz) that no read can
// take from, the web pool (pages and the API), the web connections the audit
// reads may hold at once, and how long an export may stall.
type pools struct {
	IngestConns, WebConns, AuditConns int
	ExportIdleTimeout                 time.Duration
}

// Default connection budget: 32 connections per serve, as before the split.
const (
	defaultIngestConns = 8
	defaultWebConns    = 24
)

// loadPools reads LEDGER_DB_INGEST_CONNS (default 8, at least 4: two group
// commits in flight, the projectors, /readyz), LEDGER_DB_WEB_CONNS (default
// 24, at least 2), LEDGER_DB_AUDIT_CONNS (default 8, fewer than the web
// connections) and LEDGER_EXPORT_IDLE_TIMEOUT (a Go duration, default 30s,
// at least 1s).
func loadPools(env func(string) string) (pools, error) {
	p := pools{IngestConns: defaultIngestConns, WebConns: defaultWebConns, AuditConns: audit.DefaultConns, ExportIdleTimeout: handlers.DefaultExportIdleTimeout}
	for _, s := range []struct {
		name string
		min  int
		dst  *int
	}{{"LEDGER_DB_INGEST_CONNS", 4, &p.IngestConns}, {"LEDGER_DB_WEB_CONNS", 2, &p.WebConns}, {"LEDGER_DB_AUDIT_CONNS", 1, &p.AuditConns}} {
		v := strings.TrimSpace(env(s.name))
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < s.min || n > 1000 {
			return p, domain.Errorf(domain.EINVALID, "%s %q is not a whole number from %d to 1000", s.name, v, s.min)
		}
		*s.dst = n
	}
	if p.AuditConns >= p.WebConns {
		return p, domain.Errorf(domain.EINVALID, "LEDGER_DB_AUDIT_CONNS (%d) must be less than LEDGER_DB_WEB_CONNS (%d): the audit reads must leave connections for sign-ins and pages", p.AuditConns, p.WebConns)
	}
	if v := strings.TrimSpace(env("LEDGER_EXPORT_IDLE_TIMEOUT")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			return p, domain.Errorf(domain.EINVALID, "LEDGER_EXPORT_IDLE_TIMEOUT %q is not a duration of at least 1s (e.g. 30s, 2m)", v)
		}
		p.ExportIdleTimeout = d
	}
	return p, nil
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

// parseProjectors reads LEDGER_PROJECTORS: "", on, true or 1 is every
// projector (projections.Default, in its order); off, false or 0 none; any
// other value a comma-separated list of projector names, each at most once,
// run in this process while another process (`ledger project` with the
// rest) runs the others. Errors: EINVALID naming the setting and the name it
// does not know, or the one given twice.
func parseProjectors(v string) ([]string, error) {
	switch v = strings.ToLower(strings.TrimSpace(v)); v {
	case "", "on", "true", "1":
		return projectorNames(), nil
	case "off", "false", "0":
		return nil, nil
	}
	var names []string
	for _, n := range strings.Split(v, ",") {
		n = strings.TrimSpace(n)
		switch {
		case !slices.Contains(projectorNames(), n):
			return nil, domain.Errorf(domain.EINVALID, "LEDGER_PROJECTORS %q: %q is no projector (on, off, or a list of: %s)", v, n, strings.Join(projectorNames(), ", "))
		case slices.Contains(names, n):
			return nil, domain.Errorf(domain.EINVALID, "LEDGER_PROJECTORS %q names %s twice", v, n)
		}
		names = append(names, n)
	}
	return names, nil
}
