package handlers

import (
	"net/http"
)

// addRoutes lists every route the service serves. Nothing else registers routes.
func addRoutes(mux *http.ServeMux, d Deps) {
	mux.Handle("POST /api/webhooks/clerk", handleClerkWebhook(d.Log, d.Verifier, d.Store, d.Observer, d.Now))
	mux.Handle("GET /healthz", handleHealthz())
	mux.Handle("GET /readyz", handleReadyz(d.Log, d.Ready))
}
