package handlers

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/clerksession"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/svixsig"
	"github.com/jmoiron/sqlx"
)

// Deps is everything the HTTP surface needs; run builds it.
type Deps struct {
	Log      *slog.Logger
	Verifier *svixsig.Verifier
	Store    Appender
	Ready    ReadinessChecker
	Observer DeliveryObserver // may be nil
	Now      func() time.Time // default time.Now

	// DB is the ledger database: pages and the API read the users
	// projection and the ledger from it.
	DB *sqlx.DB
	// Sessions verifies Clerk session tokens. Nil: nobody can sign in
	// (pages are signed out, /api/me answers 401).
	Sessions *clerksession.Verifier
	// PublishableKey is Clerk's publishable key: pages load ClerkJS from
	// its Frontend API host and the CSP allows that host. Empty: no ClerkJS.
	// A malformed key is logged and treated as empty (validate it at start
	// with clerksession.FrontendAPIHost).
	PublishableKey string
	// DevSignIn, when not nil, serves the development sign-in under
	// /dev/ (ledger dev only; NewDevSignIn refuses real Clerk keys).
	DevSignIn *clerksession.Dev
	// LoopbackOnly (ledger dev) answers only requests to a loopback host
	// name (see loopbackOnly); always on when DevSignIn is set.
	LoopbackOnly bool
	// Auditors are the Clerk user ids (LEDGER_AUDITORS) allowed into the
	// audit workspace, besides users whose public_metadata.role is "auditor".
	Auditors []string
	// WebhookRateLimit and APIRateLimit limit requests per client address
	// to the webhook and to every other /api/ route (zero: no limit); see
	// rateLimit. TrustedProxies are the reverse proxies whose
	// X-Forwarded-For names the client (none: the TCP peer is the client).
	WebhookRateLimit RateLimit
	APIRateLimit     RateLimit
	TrustedProxies   []netip.Prefix
	// WebhookBodyMemory is how many bytes of webhook bodies may be read
	// (not yet verified) at once (LEDGER_WEBHOOK_BODY_MEMORY; 0:
	// DefaultWebhookBodyMemory, at least MinWebhookBodyMemory). A delivery
	// whose Content-Length does not fit is answered 503 + Retry-After before
	// its body is read.
	WebhookBodyMemory int64
	// Metrics, when not nil, times every request and serves GET /metrics.
	Metrics *Metrics
	// Audit is the audit application the workspace and its API call. Nil:
	// one is built from DB, Verifier, Auditors and AuditConns.
	Audit *audit.Service
	// AuditConns is how many connections of DB the audit reads (exports,
	// verifications, history pages, per-user audit views) may hold at once
	// when Audit is built here (audit.Config.Conns); past it a read waits up
	// to 2 s, then gets 503 + Retry-After. Give the event store and the
	// projectors a pool of their own: no read can take theirs.
	AuditConns int
	// ExportIdleTimeout aborts an export whose client takes no bytes for
	// this long (default DefaultExportIdleTimeout): its transaction rolls
	// back and its connection goes back to the pool.
	ExportIdleTimeout time.Duration
	// FirstSignIn, when not nil (a secret key is configured), fetches a
	// signed-in user the projection does not have yet from Clerk's Backend
	// API (GET / and /api/me show the record at once); nil: "no record yet".
	FirstSignIn UserFetcher
}

// UserFetcher fetches a signed-in user the users projection lacks, stores
// what it fetched and returns the user (clerksync.FirstSignIn). It must be
// safe for concurrent use; an error means "show no record yet".
type UserFetcher interface {
	FetchUser(ctx context.Context, id string) (domain.User, error)
}

// NewServer returns the service's HTTP handler: every route of routes.go
// behind the common middleware (request id, metrics, security headers,
// per-client rate limits on /api/, loopback host names only in ledger dev,
// strict query parsing, Origin check on state-changing requests).
// Every log line written with a request's context carries its request_id.
func NewServer(d Deps) http.Handler {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.ExportIdleTimeout <= 0 {
		d.ExportIdleTimeout = DefaultExportIdleTimeout
	}
	if d.Audit == nil {
		d.Audit = audit.New(audit.Config{DB: d.DB, Verifier: d.Verifier, Auditors: d.Auditors, Conns: d.AuditConns})
	}
	d.Log = slog.New(withRequestID(d.Log.Handler()))
	var clerk clerkJS
	if d.PublishableKey != "" {
		host, err := clerksession.FrontendAPIHost(d.PublishableKey)
		if err != nil {
			d.Log.Error("ClerkJS disabled", "err", err)
		} else {
			clerk = clerkJS{PublishableKey: d.PublishableKey, FrontendAPI: host}
		}
	}
	pg, err := parsePages(d.Log, clerk, d.DevSignIn != nil)
	if err != nil {
		// Unreachable with the embedded templates (tests parse them); pages
		// then answer a plain 500.
		d.Log.Error("page templates do not parse", "err", err)
	}
	var trusted []string
	if d.Sessions != nil {
		trusted = d.Sessions.AuthorizedParties()
	}
	avatarHosts := []string{}
	if clerk.FrontendAPI != "" {
		avatarHosts = append(avatarHosts, clerkImageHost, clerk.FrontendAPI)
	}
	mux := http.NewServeMux()
	addRoutes(mux, d, pg, authenticate(d.Log, d.Sessions, clerk.FrontendAPI != ""), avatarHosts)
	// fail answers what the middleware refuses: JSON under /api/, the
	// error page elsewhere.
	fail := func(w http.ResponseWriter, r *http.Request, err error) {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			writeError(w, r, d.Log, err)
			return
		}
		pg.renderError(w, r, err)
	}
	var h http.Handler = mux
	h = checkOrigin(d.Log, trusted, webhookPath)(h)
	h = checkQuery(fail, webhookPath)(h)
	if d.LoopbackOnly || d.DevSignIn != nil {
		h = loopbackOnly(d.Log, fail, webhookPath)(h)
	}
	h = rateLimit(d.Log, rateLimitConfig{Webhook: d.WebhookRateLimit, API: d.APIRateLimit, Trusted: d.TrustedProxies, Observer: d.Observer, Now: d.Now}, webhookPath)(h)
	h = securityHeaders(clerk.FrontendAPI)(h)
	if d.Metrics != nil {
		h = d.Metrics.instrument(mux)(h)
	}
	h = requestID(d.TrustedProxies)(h)
	return h
}
