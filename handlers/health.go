package handlers

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// handleHealthz serves GET /healthz: 200 while the process is up.
func handleHealthz() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

// ReadinessChecker reports whether the service can do its work.
type ReadinessChecker interface {
	// Ready returns nil when the database answers and its migrations are current.
	Ready(ctx context.Context) error
}

// handleReadyz serves GET /readyz: 200 when the database is reachable and its
// migrations are current, 503 with the reason otherwise.
func handleReadyz(log *slog.Logger, ready ReadinessChecker) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := ready.Ready(ctx); err != nil {
			log.WarnContext(r.Context(), "not ready", "err", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": domain.ErrorMessage(err)})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}
