package handlers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/svixsig"
)

// Appender stores a verified delivery and says whether it was new, a
// redelivery of the same body, or a redelivery with another body.
type Appender interface {
	AppendDelivery(ctx context.Context, d domain.Delivery) (domain.AppendResult, error)
}

// Delivery outcomes, as logged and counted.
const (
	OutcomeStored      = "stored"
	OutcomeDuplicate   = "duplicate"
	OutcomeConflict    = "conflict" // same svix-id as a stored delivery, another body: answered as a duplicate, the stored body stays
	OutcomeInvalidSig  = "invalid_signature"
	OutcomeTooLarge    = "too_large"
	OutcomeMalformed   = "malformed"
	OutcomeBusy        = "busy" // every body-reading slot taken: 503, nothing read; Svix retries
	OutcomeUnavailable = "unavailable"
	OutcomeError       = "error"
	OutcomeRateLimited = "rate_limited" // refused before reading (429); Svix retries
)

// Outcomes lists every delivery outcome (metrics start each at 0).
var Outcomes = []string{OutcomeStored, OutcomeDuplicate, OutcomeConflict, OutcomeInvalidSig, OutcomeTooLarge,
	OutcomeMalformed, OutcomeBusy, OutcomeUnavailable, OutcomeRateLimited, OutcomeError}

// DeliveryObserver is told the outcome of every webhook delivery (metrics).
type DeliveryObserver interface {
	ObserveDelivery(outcome string, eventType string, d time.Duration)
}

// DefaultWebhookBodyMemory is the most memory the webhook bodies being read
// (and not yet verified) may take at once unless configured
// (LEDGER_WEBHOOK_BODY_MEMORY): 16 MiB, sixteen bodies of the 1 MiB limit or
// thousands of Clerk's usual few kB.
const DefaultWebhookBodyMemory = 16 << 20

// MinWebhookBodyMemory is the smallest budget: one body of the 1 MiB limit.
const MinWebhookBodyMemory = domain.MaxBodyBytes + 1

// bodyBudget bounds the bytes of webhook bodies being read and verified at
// once. A delivery reserves its Content-Length (the 1 MiB limit when it
// sends none) before its body is read and gives it back once the body is
// verified or refused, so unauthenticated bodies take at most the budget
// however many arrive. It is safe for concurrent use.
type bodyBudget struct {
	mu   sync.Mutex
	free int64
}

func newBodyBudget(n int64) *bodyBudget {
	if n <= 0 {
		n = DefaultWebhookBodyMemory
	}
	return &bodyBudget{free: max(n, MinWebhookBodyMemory)}
}

// tryTake reserves n bytes, or reports false at once when they are not free.
func (b *bodyBudget) tryTake(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n > b.free {
		return false
	}
	b.free -= n
	return true
}

func (b *bodyBudget) give(n int64) {
	b.mu.Lock()
	b.free += n
	b.mu.Unlock()
}

// smallBodyCap is the largest read buffer kept for reuse (Clerk's events are
// a few kB); larger ones are left to the collector, so a flood of large
// bodies leaves no memory held once it ends.
const smallBodyCap = 64 << 10

// readBody reads r to its end into buf (growing it up to limit+1 bytes) and
// returns the filled buffer. contentLength, when known (>= 0), sizes it.
func readBody(r io.Reader, buf []byte, contentLength int64, limit int) ([]byte, error) {
	buf = buf[:0]
	if contentLength >= 0 && int64(cap(buf)) < contentLength+1 {
		buf = make([]byte, 0, min(contentLength+1, int64(limit)+1))
	}
	for {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(max(2*cap(buf), 4096), limit+1))
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// handleClerkWebhook serves POST /api/webhooks/clerk. Before it reads any of
// the body it checks the Svix headers (svixsig.Verifier.CheckHeaders) and the
// Content-Length, and reserves the body's size from a budget of bodyMemory
// bytes; then it reads the body, verifies the signature, gives the
// reservation back and appends the exact verified body to the ledger:
//
//	401 missing Svix headers, svix-timestamp outside the tolerance, or no valid signature ·
//	400 a malformed svix-id, svix-timestamp or svix-signature (the message names it),
//	    or a verified body that is not a Clerk event envelope or holds a value the
//	    ledger cannot store (the message names the field) ·
//	413 body over 1 MiB · 503 + Retry-After the budget is taken (nothing read) ·
//	200 {"status":"stored"} or {"status":"duplicate"} (already stored; with
//	    "conflict":true when the stored body differs: it stays) ·
//	503 + Retry-After when the store cannot commit, whatever the reason (Svix retries).
//
// Nothing is stored unless the answer is 200, and 200 means committed.
func handleClerkWebhook(log *slog.Logger, verifier *svixsig.Verifier, store Appender, obs DeliveryObserver, now func() time.Time, bodyMemory int64) http.HandlerFunc {
	type answer struct {
		Status     string `json:"status"`
		DeliveryID string `json:"delivery_id"`
		Conflict   bool   `json:"conflict,omitempty"`
	}
	budget := newBodyBudget(bodyMemory)
	buffers := sync.Pool{New: func() any { return new([]byte) }}
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id, _, _ := svixsig.HeaderValues(r.Header)
		typ := ""
		outcome := OutcomeError
		status := http.StatusInternalServerError
		var failure error // logged once, on the delivery's own line, when it is a 5xx
		defer func() {
			elapsed := time.Since(start)
			if obs != nil {
				obs.ObserveDelivery(outcome, typ, elapsed)
			}
			level := slog.LevelInfo
			if status >= 500 && failure != nil {
				level = slog.LevelError
			}
			// The attributes are built only when the line is written (at
			// LOG_LEVEL=warn a stored delivery costs no formatting).
			if !log.Enabled(r.Context(), level) {
				return
			}
			attrs := []slog.Attr{slog.String("delivery_id", truncate(id, 64)), slog.String("type", truncate(typ, 64)), slog.String("outcome", outcome),
				slog.Int("status", status), slog.Float64("latency_ms", float64(elapsed.Microseconds())/1000)}
			if level == slog.LevelError {
				attrs = append(attrs, slog.Any("err", failure))
			}
			log.LogAttrs(r.Context(), level, "webhook delivery", attrs...)
		}()
		fail := func(o string, err error) {
			outcome, status, failure = o, ErrorStatus(err), err
			answerError(w, err)
		}
		failInput := func(err error) {
			switch domain.ErrorCode(err) {
			case domain.EUNAUTHORIZED:
				fail(OutcomeInvalidSig, err)
			case domain.ETOOLARGE:
				fail(OutcomeTooLarge, err)
			default:
				fail(OutcomeMalformed, err)
			}
		}

		// Nothing of the body is read before the headers are good; a refused
		// connection is closed rather than drained.
		dh, err := verifier.CheckHeaders(r.Header, now())
		if err != nil {
			w.Header().Set("Connection", "close")
			failInput(err)
			return
		}
		if r.ContentLength > domain.MaxBodyBytes {
			w.Header().Set("Connection", "close")
			fail(OutcomeTooLarge, domain.Errorf(domain.ETOOLARGE, "body is larger than %d bytes", domain.MaxBodyBytes))
			return
		}
		reserve := r.ContentLength + 1
		if r.ContentLength < 0 {
			reserve = domain.MaxBodyBytes + 1
		}
		if !budget.tryTake(reserve) {
			w.Header().Set("Connection", "close")
			fail(OutcomeBusy, domain.Errorf(domain.EUNAVAILABLE, "too many webhook bodies are being read; retry later"))
			return
		}
		body, err := func() ([]byte, error) {
			defer budget.give(reserve)
			pooled := buffers.Get().(*[]byte)
			buf, err := readBody(http.MaxBytesReader(w, r.Body, domain.MaxBodyBytes), *pooled, r.ContentLength, domain.MaxBodyBytes)
			defer func() {
				if cap(buf) <= smallBodyCap {
					*pooled = buf[:0]
					buffers.Put(pooled)
				}
			}()
			if err != nil {
				var tooLarge *http.MaxBytesError
				if errors.As(err, &tooLarge) {
					return nil, domain.Errorf(domain.ETOOLARGE, "body is larger than %d bytes", domain.MaxBodyBytes)
				}
				return nil, domain.Errorf(domain.EINVALID, "could not read the body")
			}
			if err := verifier.VerifyBody(dh, buf); err != nil {
				return nil, err
			}
			return bytes.Clone(buf), nil // verified: it leaves the slot's buffer
		}()
		if err != nil {
			failInput(err)
			return
		}
		d, err := domain.NewDelivery(dh.ID, dh.Timestamp, dh.Signature, body)
		if err != nil {
			failInput(err)
			return
		}
		typ = d.Type
		res, err := store.AppendDelivery(r.Context(), d)
		switch domain.ErrorCode(err) {
		case "":
		case domain.EINVALID, domain.ETOOLARGE:
			// The database refused this delivery's own values.
			fail(OutcomeMalformed, err)
			return
		case domain.EUNAVAILABLE:
			fail(OutcomeUnavailable, err)
			return
		default:
			// Not the delivery's fault (a bug, a configuration error): answer
			// like an outage so that Svix retries, and count it as an error.
			fail(OutcomeError, fmt.Errorf("%w: %w", domain.Errorf(domain.EUNAVAILABLE, "the ledger could not store this delivery; retry later"), err))
			return
		}
		outcome, status = OutcomeStored, http.StatusOK
		a := answer{Status: OutcomeStored, DeliveryID: d.ID}
		switch res {
		case domain.AppendDuplicate:
			outcome, a.Status = OutcomeDuplicate, OutcomeDuplicate
		case domain.AppendConflict:
			outcome, a.Status, a.Conflict = OutcomeConflict, OutcomeDuplicate, true
			log.WarnContext(r.Context(), "webhook redelivery differs from the stored delivery; the stored body is kept", "delivery_id", d.ID)
		}
		writeJSON(w, http.StatusOK, a)
	}
}

// truncate returns at most n bytes of s, cut at a character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
