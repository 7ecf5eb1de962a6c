package handlers

import (
	"net/http"
)

// addRoutes lists every route the service serves. Nothing else registers routes.
func addRoutes(mux *http.ServeMux, d Deps) {
	mux.Handle("POST /api/webhooks/clerk", handleClerkWebhook(d.Log, d.Verifier, d.Store, d.Observer, d.Now))
	mux.Handle("GET /healthz", handleHealthz())
	mux.Handle("GET /readyz", handleReadyz(d.Log, d.Ready))

	// Auditor workspace: every route behind requireAuditor (401 without a
	// session, 403 for anyone not an auditor).
	auditors := NewAuditors(d.Auditors, d.DB)
	api := func(h http.Handler) http.Handler { return requireAuditor(d.Log, auditors, false, h) }
	page := func(h http.Handler) http.Handler { return requireAuditor(d.Log, auditors, true, h) }
	verify := &verifyRunner{db: d.DB, verifier: d.Verifier}
	pages := newAuditPages(d.Log)
	mux.Handle("GET /api/audit/events", api(handleAuditEvents(d.Log, d.DB, d.Now)))
	mux.Handle("GET /api/audit/users/{id}", api(handleAuditUser(d.Log, d.DB)))
	mux.Handle("GET /api/audit/verify", api(handleAuditVerify(d.Log, verify)))
	mux.Handle("GET /audit", page(handleAuditSearchPage(pages, d.DB)))
	mux.Handle("GET /audit/users/{id}", page(handleAuditUserPage(pages, d.DB)))
	mux.Handle("GET /audit/chain", page(handleAuditChainPage(pages, d.DB, verify)))
	mux.Handle("GET /audit/log", page(handleAuditLogPage(pages, d.DB)))
}
