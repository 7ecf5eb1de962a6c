package main

import (
	"net"
	"net/url"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/domain"
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
	// Dev is set by `ledger dev`: with no Clerk keys on a loopback address
	// the development sign-in is served.
	Dev bool
}

const defaultAddr = "localhost:4321"

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
	return c, nil
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
