package handlers

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	svix "github.com/svix/svix-webhooks/go"
)

// Verifier checks Svix webhook signatures against one or more signing
// secrets (several during a secret rotation). It is safe for concurrent use.
type Verifier struct {
	hooks []*svix.Webhook
}

// NewVerifier returns a Verifier for the given whsec_ secrets. It returns
// EINVALID naming the setting when there is none or one is malformed.
func NewVerifier(secrets []string) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET is not set")
	}
	v := &Verifier{}
	for i, s := range secrets {
		if !strings.HasPrefix(s, "whsec_") {
			return nil, domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET #%d is malformed: it must start with whsec_", i+1)
		}
		wh, err := svix.NewWebhook(s)
		if err != nil {
			return nil, domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET #%d is malformed: not base64 after whsec_", i+1)
		}
		v.hooks = append(v.hooks, wh)
	}
	return v, nil
}

// svixHeaders returns the delivery's id, timestamp and signature headers,
// from svix-* or, as Svix also sends them, webhook-*.
func svixHeaders(h http.Header) (id, ts, sig string) {
	id, ts, sig = h.Get("svix-id"), h.Get("svix-timestamp"), h.Get("svix-signature")
	if id == "" || ts == "" || sig == "" {
		id, ts, sig = h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	}
	return id, ts, sig
}

const svixTolerance = 5 * time.Minute

// Verify checks body against the Svix headers in h with every secret, with
// Svix's 5-minute timestamp tolerance against now. It returns an
// EUNAUTHORIZED error saying what is wrong when no secret matches.
func (v *Verifier) Verify(body []byte, h http.Header, now time.Time) error {
	id, ts, sig := svixHeaders(h)
	if id == "" || ts == "" || sig == "" {
		return domain.Errorf(domain.EUNAUTHORIZED, "missing svix-id, svix-timestamp or svix-signature header")
	}
	if len(id) > 200 {
		return domain.Errorf(domain.EUNAUTHORIZED, "svix-id header is too long")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return domain.Errorf(domain.EUNAUTHORIZED, "svix-timestamp header is not a unix timestamp")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > svixTolerance || d < -svixTolerance {
		return domain.Errorf(domain.EUNAUTHORIZED, "svix-timestamp is outside the 5 minute tolerance")
	}
	return v.VerifyIgnoringTimestamp(body, h) // the age is checked above, against now
}

// VerifyIgnoringTimestamp checks the signature with every secret but not its
// age: for re-checking stored deliveries. It returns EUNAUTHORIZED when no
// secret matches.
func (v *Verifier) VerifyIgnoringTimestamp(body []byte, h http.Header) error {
	for _, wh := range v.hooks {
		if wh.VerifyIgnoringTimestamp(body, h) == nil {
			return nil
		}
	}
	return domain.Errorf(domain.EUNAUTHORIZED, "no valid signature for this body")
}

// Appender stores a verified delivery and reports whether it was new.
type Appender interface {
	Append(ctx context.Context, d domain.Delivery) (stored bool, err error)
}

// Delivery outcomes, as logged and counted.
const (
	OutcomeStored      = "stored"
	OutcomeDuplicate   = "duplicate"
	OutcomeInvalidSig  = "invalid_signature"
	OutcomeTooLarge    = "too_large"
	OutcomeMalformed   = "malformed"
	OutcomeUnavailable = "unavailable"
	OutcomeError       = "error"
	OutcomeRateLimited = "rate_limited" // refused before reading (429); Svix retries
)

// DeliveryObserver is told the outcome of every webhook delivery (metrics).
type DeliveryObserver interface {
	ObserveDelivery(outcome string, eventType string, d time.Duration)
}

// handleClerkWebhook serves POST /api/webhooks/clerk. It verifies the Svix
// signature, then appends the exact verified body to the ledger:
//
//	413 body over 1 MiB · 401 missing/invalid signature or stale timestamp ·
//	400 verified but not a Clerk event envelope · 200 stored or already stored ·
//	503 + Retry-After when the store cannot commit (Svix retries).
//
// Nothing is stored unless the answer is 200, and 200 means committed.
func handleClerkWebhook(log *slog.Logger, verifier *Verifier, store Appender, obs DeliveryObserver, now func() time.Time) http.HandlerFunc {
	type answer struct {
		Status     string `json:"status"`
		DeliveryID string `json:"delivery_id"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id, _, _ := svixHeaders(r.Header)
		typ := ""
		outcome := OutcomeError
		status := http.StatusInternalServerError
		defer func() {
			elapsed := time.Since(start)
			if obs != nil {
				obs.ObserveDelivery(outcome, typ, elapsed)
			}
			log.InfoContext(r.Context(), "webhook delivery",
				"delivery_id", truncate(id, 64), "type", truncate(typ, 64), "outcome", outcome,
				"status", status, "latency_ms", float64(elapsed.Microseconds())/1000)
		}()
		fail := func(o string, err error) {
			outcome, status = o, ErrorStatus(err)
			writeError(w, r, log, err)
		}

		if r.ContentLength > domain.MaxBodyBytes {
			fail(OutcomeTooLarge, domain.Errorf(domain.ETOOLARGE, "body is larger than %d bytes", domain.MaxBodyBytes))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, domain.MaxBodyBytes))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				fail(OutcomeTooLarge, domain.Errorf(domain.ETOOLARGE, "body is larger than %d bytes", domain.MaxBodyBytes))
				return
			}
			fail(OutcomeMalformed, domain.Errorf(domain.EINVALID, "could not read the body"))
			return
		}
		if err := verifier.Verify(body, r.Header, now()); err != nil {
			fail(OutcomeInvalidSig, err)
			return
		}
		_, tsHeader, sig := svixHeaders(r.Header)
		ts, _ := strconv.ParseInt(tsHeader, 10, 64) // checked by Verify
		d, err := domain.NewDelivery(id, ts, sig, body)
		if err != nil {
			fail(OutcomeMalformed, err)
			return
		}
		typ = d.Type
		stored, err := store.Append(r.Context(), d)
		if err != nil {
			if domain.ErrorCode(err) == domain.EINTERNAL {
				// Still answer so that Svix retries: a 5xx is never taken as delivered.
				fail(OutcomeError, err)
				return
			}
			fail(OutcomeUnavailable, err)
			return
		}
		outcome, status = OutcomeStored, http.StatusOK
		if !stored {
			outcome = OutcomeDuplicate
		}
		writeJSON(w, http.StatusOK, answer{Status: outcome, DeliveryID: d.ID})
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
