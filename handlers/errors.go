// Package handlers is clerk-ledger's HTTP surface: routes.go lists every route;
// the Clerk webhook, pages, JSON API, session middleware, health and metrics
// live beside it. Handler makers take their dependencies as arguments.
package handlers

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// statusByCode maps the domain error vocabulary to HTTP status codes: the one
// place that does so.
var statusByCode = map[string]int{
	domain.EINVALID:      http.StatusBadRequest,
	domain.EUNAUTHORIZED: http.StatusUnauthorized,
	domain.EFORBIDDEN:    http.StatusForbidden,
	domain.ENOTFOUND:     http.StatusNotFound,
	domain.ECONFLICT:     http.StatusConflict,
	domain.ETOOLARGE:     http.StatusRequestEntityTooLarge,
	domain.ERATELIMIT:    http.StatusTooManyRequests,
	domain.EUNAVAILABLE:  http.StatusServiceUnavailable,
	domain.EINTERNAL:     http.StatusInternalServerError,
}

// ErrorStatus returns the HTTP status for err's domain code.
func ErrorStatus(err error) int {
	if s, ok := statusByCode[domain.ErrorCode(err)]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// errorBody is the JSON shape of every API error.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeError answers err as JSON with its mapped status. Internal errors are
// logged here, once, and shown to the caller only as "internal error";
// unavailability and rate limiting add Retry-After (5 s unless the caller
// set one) so webhook senders retry.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	if status := ErrorStatus(err); status >= 500 {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	answerError(w, err)
}

// answerError is writeError for a caller that logs the error itself (the
// webhook logs each delivery once, with its outcome).
func answerError(w http.ResponseWriter, err error) {
	status := ErrorStatus(err)
	if (status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests) && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "5")
	}
	var body errorBody
	body.Error.Code = domain.ErrorCode(err)
	body.Error.Message = domain.ErrorMessage(err)
	writeJSON(w, status, body)
}

// writeAnswer answers v, a route's data, as JSON with 200. It encodes v
// before anything is sent, so a value JSON cannot hold (a time past the
// year 9999 read from a stored event) is an internal error, logged by
// writeError, rather than a 200 with an empty body.
func writeAnswer(w http.ResponseWriter, r *http.Request, log *slog.Logger, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, r, log, fmt.Errorf("encode the answer: %w", err))
		return
	}
	jsonHeaders(w)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(b, '\n'))
}

// writeJSON answers v as JSON with status; v must be a value that always
// encodes (an error body, a status), else use writeAnswer.
func writeJSON(w http.ResponseWriter, status int, v any) {
	jsonHeaders(w)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// jsonHeaders sets the headers of every JSON answer: the type, and no
// caching (answers name users and are per auditor).
func jsonHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
}
