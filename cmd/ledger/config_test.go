package main

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/handlers"
	"github.com/clerk-ledger/clerk-ledger/projections"
)

// TestRateLimitSettings: defaults when unset, 0 disables, R:B and R parse,
// malformed values stop start-up naming the setting.
func TestRateLimitSettings(t *testing.T) {
	load := func(env map[string]string) (config, error) {
		a := &app{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, env: func(k string) string { return env[k] }}
		cmd := a.serveCmd()
		return a.loadConfig(cmd)
	}
	c, err := load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.WebhookRateLimit.String() != defaultWebhookRateLimit || c.APIRateLimit.String() != defaultAPIRateLimit || len(c.TrustedProxies) != 0 {
		t.Errorf("defaults: webhook %s api %s proxies %v", c.WebhookRateLimit, c.APIRateLimit, c.TrustedProxies)
	}
	c, err = load(map[string]string{"LEDGER_WEBHOOK_RATE_LIMIT": "0", "LEDGER_API_RATE_LIMIT": "2.5",
		"LEDGER_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1 ::1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.WebhookRateLimit.Enabled() || c.APIRateLimit != (handlers.RateLimit{Rate: 2.5, Burst: 3}) {
		t.Errorf("parsed: webhook %+v api %+v", c.WebhookRateLimit, c.APIRateLimit)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}
	if len(c.TrustedProxies) != len(want) {
		t.Fatalf("proxies %v", c.TrustedProxies)
	}
	for i := range want {
		if c.TrustedProxies[i] != want[i] {
			t.Errorf("proxy %d = %v, want %v", i, c.TrustedProxies[i], want[i])
		}
	}
	for k, v := range map[string]string{
		"LEDGER_WEBHOOK_RATE_LIMIT": "fast", "LEDGER_API_RATE_LIMIT": "10:0",
		"LEDGER_TRUSTED_PROXIES": "proxy.local",
	} {
		_, err := load(map[string]string{k: v})
		if domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: %v, want EINVALID naming it", k, v, err)
		}
	}
	for _, v := range []string{"-1", "NaN", "1:-3", "1:2:3"} {
		if _, err := handlers.ParseRateLimit("X", v); err == nil {
			t.Errorf("ParseRateLimit(%q) accepted", v)
		}
	}
}

// TestProjectorsSetting: all on by default, none (off) for web-only
// replicas, or a list of names; anything else refused naming the setting.
func TestProjectorsSetting(t *testing.T) {
	load := func(v string) (config, error) {
		a := &app{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, env: func(k string) string {
			if k == "LEDGER_PROJECTORS" {
				return v
			}
			return ""
		}}
		return a.loadConfig(a.serveCmd())
	}
	all := []string{projections.UsersName, projections.OrganizationsName, projections.TreeName, projections.WorkspaceName}
	for v, want := range map[string][]string{"": all, "on": all, "OFF": nil, "false": nil, "1": all,
		"users": {projections.UsersName}, " tree , Users": {projections.TreeName, projections.UsersName}} {
		c, err := load(v)
		if err != nil || !slices.Equal(c.Projectors, want) {
			t.Errorf("LEDGER_PROJECTORS=%q: projectors %q, %v; want %q", v, c.Projectors, err, want)
		}
	}
	for v, says := range map[string]string{"sometimes": `"sometimes" is no projector`, "users,": `"" is no projector`,
		"users,tree,users": "names users twice", "users;tree": `"users;tree" is no projector`} {
		_, err := load(v)
		if domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), "LEDGER_PROJECTORS") || !strings.Contains(err.Error(), says) {
			t.Errorf("LEDGER_PROJECTORS=%q: %v, want EINVALID saying %s", v, err, says)
		}
	}
}
