package handlers

import (
	"net/http"
)

// webhookPath is the Clerk webhook endpoint: server-to-server and signed, so
// exempt from the Origin check.
const webhookPath = "/api/webhooks/clerk"

// routeMux is what addRoutes registers on: the server's *http.ServeMux, or
// the route security test's recorder.
type routeMux interface {
	Handle(pattern string, handler http.Handler)
}

// addRoutes lists every route the service serves. Nothing else registers
// routes. session verifies the Clerk session (see authenticate); pages and
// API routes that show data wrap their handler in it.
func addRoutes(mux routeMux, d Deps, pg *pages, session func(http.Handler) http.Handler, avatarHosts []string) {
	mux.Handle("POST "+webhookPath, handleClerkWebhook(d.Log, d.Verifier, d.Store, d.Observer, d.Now, d.WebhookBodyMemory))
	mux.Handle("GET /healthz", handleHealthz())
	mux.Handle("GET /readyz", handleReadyz(d.Log, d.Ready))
	if d.Metrics != nil {
		// Unauthenticated, like /healthz: counters and positions only, no
		// personal data. Keep it to the private network (see README).
		mux.Handle("GET /metrics", d.Metrics.Handler())
	}

	mux.Handle("GET /{$}", session(handleHome(d.Log, pg, d.DB, d.Audit, avatarHosts, d.FirstSignIn)))
	mux.Handle("GET /api/me", session(requireAPISession(d.Log, handleMe(d.Log, d.DB, d.FirstSignIn))))
	mux.Handle("GET /static/", handleStatic())

	if d.DevSignIn != nil {
		mux.Handle("GET /dev/sign-in", session(handleDevSignInPage(pg, d.DB)))
		mux.Handle("POST /dev/sign-in", handleDevSignIn(d.Log, pg, d.DevSignIn, d.DB))
		mux.Handle("POST /dev/sign-out", handleDevSignOut())
	}

	// Auditor workspace: every route behind requireAuditor (401 without a
	// session, 403 for anyone not an auditor). Reads are recorded in the
	// access log in the caller's name, so they run only when asked from
	// the workspace's own pages or with a Bearer token (requireOwnPages
	// for the API, mayRecord in the pages); a verification runs only on
	// POST, behind checkOrigin. Pages answer errors with the page error
	// renderer, the API with writeError.
	svc := d.Audit
	api := func(h http.Handler) http.Handler { return session(requireAuditor(d.Log, svc, nil, h)) }
	page := func(h http.Handler) http.Handler { return session(requireAuditor(d.Log, svc, pg, h)) }
	var own origins
	if d.Sessions != nil {
		own = newOrigins(d.Sessions.AuthorizedParties())
	}
	recorded := func(h http.Handler) http.Handler { return api(requireOwnPages(d.Log, own, h)) }
	mux.Handle("GET /api/audit/events", recorded(handleAuditEvents(d.Log, svc, d.ExportIdleTimeout, d.Now)))
	mux.Handle("GET /api/audit/users/{id}", recorded(handleAuditUser(d.Log, svc)))
	mux.Handle("GET /api/audit/users/{id}/organizations", recorded(handleAuditUserOrganizations(d.Log, svc)))
	mux.Handle("GET /api/audit/organizations/{id}", recorded(handleAuditOrganization(d.Log, svc)))
	mux.Handle("GET /api/audit/users/{id}/proof", recorded(handleAuditUserProof(d.Log, svc)))
	mux.Handle("GET /api/audit/events/{position}/proof", recorded(handleAuditEventProof(d.Log, svc)))
	mux.Handle("GET /api/audit/checkpoint", recorded(handleAuditCheckpoint(d.Log, svc)))
	mux.Handle("GET /api/audit/consistency", recorded(handleAuditConsistency(d.Log, svc)))
	mux.Handle("POST /api/audit/verify", api(handleAuditVerify(d.Log, svc)))
	mux.Handle("GET /audit", page(handleAuditOverview(pg, svc, d.Now)))
	mux.Handle("GET /audit/search", page(handleAuditSearchPage(pg, own, svc)))
	mux.Handle("GET /audit/users/{id}", page(handleAuditUserPage(pg, own, svc)))
	mux.Handle("GET /audit/organizations/{id}", page(handleAuditOrganizationPage(pg, own, svc)))
	mux.Handle("GET /audit/chain", page(handleAuditChainPage(pg, svc)))
	mux.Handle("POST /audit/chain", page(handleAuditChainVerify(pg, svc)))
	mux.Handle("POST /audit/users/{id}/erase", page(handleAuditErase(pg, svc)))
	mux.Handle("GET /audit/log", page(handleAuditLogPage(pg, svc)))

	mux.Handle("/", session(handleNotFound(d.Log, pg)))
}

// MetricsRoutes is the handler of a process that serves no pages (`ledger
// project`): GET /metrics from m and GET /healthz, nothing else.
func MetricsRoutes(m *Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("GET /healthz", handleHealthz())
	return mux
}
