package handlers

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"
)

// Deps is everything the HTTP surface needs; run builds it.
type Deps struct {
	Log      *slog.Logger
	Verifier *Verifier
	Store    Appender
	Ready    ReadinessChecker
	Observer DeliveryObserver // may be nil
	Now      func() time.Time // default time.Now
	DB       *sqlx.DB         // the ledger database: audit queries, users projection
	Auditors []string         // LEDGER_AUDITORS: Clerk user ids allowed into the audit workspace
}

// NewServer returns the service's HTTP handler: every route of routes.go
// behind the common middleware.
func NewServer(d Deps) http.Handler {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	addRoutes(mux, d)
	var h http.Handler = mux
	return h
}
