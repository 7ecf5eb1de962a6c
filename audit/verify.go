package audit

import (
	"context"
	"net/http"
	"strconv"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// VerifyOptions says what Verify checks.
type VerifyOptions struct {
	Digest     *domain.Digest // the kept digest the chain must reach, if any
	Signatures bool           // also re-check every stored delivery's Svix signature
}

// VerifyResult is the outcome of Verify.
type VerifyResult struct {
	OK         bool                    `json:"ok"`
	Chain      schema.ChainReport      `json:"-"`
	Signatures *schema.SignatureReport `json:"-"`
}

// Message returns "OK ..." or the first problem, for people.
func (r VerifyResult) Message() string {
	if !r.Chain.OK {
		return "FAIL: " + r.Chain.Problem
	}
	if r.Signatures != nil && !r.Signatures.OK {
		return "FAIL: event at position " + strconv.FormatInt(r.Signatures.FirstBad, 10) + " does not carry a valid Svix signature for its stored bytes (" +
			strconv.FormatInt(r.Signatures.Failed, 10) + " of " + strconv.FormatInt(r.Signatures.Checked, 10) + " fail)"
	}
	msg := "OK: " + strconv.FormatInt(r.Chain.Checked, 10) + " links match"
	if r.Chain.Head.Position > 0 {
		msg += ", head " + r.Chain.Head.String()
	}
	if r.Chain.Digest != nil {
		msg += ", reaches the kept digest"
	}
	if r.Signatures != nil {
		msg += ", " + strconv.FormatInt(r.Signatures.Checked, 10) + " signatures valid"
	}
	return msg
}

// FirstBad is the first position that does not match, 0 when OK.
func (r VerifyResult) FirstBad() int64 {
	if !r.Chain.OK {
		return r.Chain.FirstBad
	}
	if r.Signatures != nil && !r.Signatures.OK {
		return r.Signatures.FirstBad
	}
	return 0
}

// Verify recomputes the hash chain (schema.VerifyChainParts, in as many
// ranges at once as the audit slots allow), optionally re-checks every
// stored delivery's signature ignoring its age, and records the outcome in
// the verification log as a's. One verification runs at a time: another
// is refused with ERATELIMIT. Errors mean the check could not run or could
// not be recorded (EINVALID for Signatures without a Verifier); a mismatch
// is an OK=false result.
func (s *Service) Verify(ctx context.Context, a Actor, o VerifyOptions) (VerifyResult, error) {
	if o.Signatures && s.verifier == nil {
		return VerifyResult{}, domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET is not set: cannot re-check signatures")
	}
	if !s.verifyMu.TryLock() {
		return VerifyResult{}, domain.Errorf(domain.ERATELIMIT, "a verification is already running; try again when it is done")
	}
	defer s.verifyMu.Unlock()
	parts, weight := s.slots.verifyParts()
	release, err := s.slots.acquire(ctx, weight)
	if err != nil {
		return VerifyResult{}, err
	}
	defer release()
	var res VerifyResult
	chain, err := schema.VerifyChainParts(ctx, s.db, o.Digest, parts)
	if err != nil {
		return res, err
	}
	res.Chain = chain
	res.OK = chain.OK
	rec := schema.Verification{
		Actor: a.ID, Channel: a.Channel, OK: chain.OK, Checked: chain.Checked, Head: chain.Head,
		FirstBad: chain.FirstBad, Problem: chain.Problem, Duration: chain.Duration,
	}
	if o.Digest != nil {
		rec.Digest = o.Digest.String()
	}
	if o.Signatures {
		h := http.Header{}
		sigs, err := schema.VerifySignatures(ctx, s.db, func(e domain.Event) error {
			h.Set("svix-id", e.DeliveryID)
			h.Set("svix-timestamp", strconv.FormatInt(e.SvixTimestamp, 10))
			h.Set("svix-signature", e.SvixSignature)
			return s.verifier.VerifyIgnoringTimestamp(e.Body, h)
		})
		if err != nil {
			return res, err
		}
		res.Signatures = &sigs
		res.OK = res.OK && sigs.OK
		rec.SignaturesChecked, rec.SignaturesFailed = sigs.Checked, sigs.Failed
		rec.Duration += sigs.Duration
		if rec.OK && !sigs.OK {
			rec.OK, rec.FirstBad, rec.Problem = false, sigs.FirstBad, res.Message()
		}
	}
	if err := schema.RecordVerification(context.WithoutCancel(ctx), s.db, rec); err != nil {
		return res, err
	}
	return res, nil
}
